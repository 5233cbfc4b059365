// A wall clock with sub-millisecond resolution that still follows steps of the system clock.

/** Where {@linkcode PreciseClock} reads time; both in milliseconds. Injected in tests. */
export interface ClockSources {
  /** The system's wall clock, ms since the epoch, whole ms (`Date.now`). */
  wall(): number;
  /** A monotonic clock with sub-µs resolution, any origin (`performance.now`). */
  monotonic(): number;
}

const SYSTEM_SOURCES: ClockSources = {
  wall: Date.now,
  monotonic: () => performance.now(),
};

/**
 * How far the precise clock may drift from `Date.now()` before it recalibrates, in ms
 * beyond the millisecond `Date.now()` truncates. A step of the system clock is found
 * within one check.
 */
const STEP_TOLERANCE_MS = 0.25;
/** Calibrations tried at most, each spinning up to a millisecond. */
const CALIBRATION_ATTEMPTS = 5;
/** A calibration this tight (ms) needs no second try. */
const GOOD_ENOUGH_MS = 0.01;
/** The longest a calibration spins waiting for `Date.now()` to tick, in ms. */
const SPIN_LIMIT_MS = 3;
/** A calibration looser than this (ms) is tried again at the next {@linkcode PreciseClock.tighten}. */
const LOOSE_MS = 0.05;

/**
 * The system's wall clock with the monotonic clock's resolution: `Date.now()` has whole
 * milliseconds; `performance.timeOrigin + performance.now()` has about 0.1 µs but its
 * origin is only ms-accurate and it does not follow steps of the system clock.
 *
 * Calibration waits for `Date.now()` to tick to the next millisecond and notes the
 * monotonic time at that edge: the offset between the two is then known to within one
 * loop turn (well under a µs), not the 1 ms of a plain reading. Linux slews both clocks
 * alike, so the offset holds until the system clock is stepped; {@linkcode check}
 * compares the two (cheaply, no spin) and recalibrates when they disagree.
 *
 * @example With injected sources
 * ```ts
 * import assert from "node:assert/strict";
 * import { PreciseClock } from "./clock.ts";
 *
 * let monotonic = 0;
 * const wallOffset = 1_700_000_000_000.4; // the wall clock, exactly
 * const sources = {
 *   monotonic: () => (monotonic += 0.01),
 *   wall: () => Math.floor(monotonic + wallOffset),
 * };
 * const clock = new PreciseClock(sources);
 * assert.ok(Math.abs(clock.now() - (monotonic + wallOffset)) < 0.02);
 * ```
 */
export class PreciseClock {
  readonly #sources: ClockSources;
  #offset = 0;
  /** Half the monotonic time between the last two wall readings of the calibration. */
  #uncertainty = 1;
  #calibratedAt = 0;
  #calibrations = 0;
  /** Whether the last calibration saw the wall clock tick (else it is a plain reading). */
  #ticked = true;

  constructor(sources: ClockSources = SYSTEM_SOURCES) {
    this.#sources = sources;
    this.calibrate();
  }

  /** Milliseconds since the epoch, with the monotonic clock's resolution. */
  now(): number {
    return this.#sources.monotonic() + this.#offset;
  }

  /** How far {@linkcode now} may be from the system clock, in ms, as the calibration found. */
  get uncertainty(): number {
    return this.#uncertainty;
  }

  /** When the clock was last calibrated, ms since the epoch. */
  get calibratedAt(): number {
    return this.#calibratedAt;
  }

  /** How many times the clock has calibrated (once at start, then after each step). */
  get calibrations(): number {
    return this.#calibrations;
  }

  /**
   * Compares with the system clock and recalibrates when they disagree by more than the
   * millisecond `Date.now()` truncates (plus a margin): the system clock was stepped.
   * Returns whether it recalibrated. Costs two clock reads unless it does.
   */
  check(): boolean {
    const { wall, monotonic } = this.#sources;
    // The wall reading is bracketed by two monotonic ones, so that a pause of the thread
    // between the reads (a busy machine) widens the bracket instead of looking like a step.
    const before = monotonic();
    const reading = wall();
    const after = monotonic();
    // `reading` is the true time truncated to the ms, taken between `before` and `after`:
    // the clock agrees when [before, after] + offset overlaps [reading, reading + 1).
    const earliest = before + this.#offset - reading;
    const latest = after + this.#offset - reading;
    if (earliest < 1 + STEP_TOLERANCE_MS && latest >= -STEP_TOLERANCE_MS) return false;
    this.calibrate();
    return true;
  }

  /**
   * Recalibrates when the last calibration was loose (a busy machine paused every try of
   * it), so that the clock does not keep that error until the next step or periodic
   * recalibration. Returns whether it recalibrated. Meant for a periodic check, like
   * {@linkcode check}; costs nothing while the calibration is tight.
   */
  tighten(): boolean {
    // A wall clock that did not tick is no better on a second try: leave the fallback be.
    if (this.#uncertainty <= LOOSE_MS || !this.#ticked) return false;
    this.calibrate();
    return true;
  }

  /**
   * Finds the offset from the next tick of `Date.now()`; spins up to about 1 ms (at most
   * {@linkcode SPIN_LIMIT_MS}) per try. Without a tick in that time (a stopped or very
   * coarse wall clock) it falls back to one plain reading, with 1 ms uncertainty.
   */
  calibrate(): void {
    // The first turns of a cold loop, a pause for garbage collection, or the thread being
    // descheduled can straddle the tick, however long the pause: try a few times and keep
    // the tightest. A wall clock that did not tick at all will not tick on a second try.
    let best = this.#measure();
    for (
      let attempt = 1;
      attempt < CALIBRATION_ATTEMPTS && best.ticked && best.uncertainty > GOOD_ENOUGH_MS;
      attempt++
    ) {
      const next = this.#measure();
      if (next.uncertainty < best.uncertainty) best = next;
    }
    this.#offset = best.offset;
    this.#uncertainty = best.uncertainty;
    this.#ticked = best.ticked;
    this.#calibratedAt = this.now();
    this.#calibrations++;
  }

  /**
   * One calibration: the offset at the next tick of the wall clock, how tight it is, and
   * whether the wall clock ticked at all.
   */
  #measure(): { offset: number; uncertainty: number; ticked: boolean } {
    const { wall, monotonic } = this.#sources;
    // `before` is read before `previous`, and `after` after `reading`: a tick between the
    // two wall readings lies between them.
    let before = monotonic();
    let previous = wall();
    const deadline = before + SPIN_LIMIT_MS;
    for (;;) {
      const mark = monotonic();
      const reading = wall();
      const after = monotonic();
      if (reading !== previous) {
        return {
          offset: reading - (before + after) / 2,
          uncertainty: (after - before) / 2,
          ticked: true,
        };
      }
      if (after > deadline) return { offset: reading + 0.5 - after, uncertainty: 1, ticked: false };
      before = mark;
      previous = reading;
    }
  }
}
