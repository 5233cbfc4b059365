// The server's own time source: which clock stamps SNTP replies, and what those replies claim of it.

import type { Logger } from "../lib/log.ts";
import { PreciseClock } from "./clock.ts";
import { type KernelClockState, readKernelClock } from "./kernel_clock.ts";
import {
  kernelSyncInfo,
  measurePrecision,
  type NtpServerInfo,
  referenceId,
  rootDispersion,
} from "./ntp.ts";

/** How often the precise clock is compared with the system clock, to follow its steps. */
const CLOCK_CHECK_MS = 1000;
/** The precise clock recalibrates at least this often. */
const RECALIBRATE_MS = 64_000;

/** Options of {@linkcode TimeSource}. */
export interface TimeSourceOptions {
  /** Whether SNTP is served: only then is the precise clock calibrated and checked. */
  ntp: boolean;
  /** The stratum replies claim while the clock is synchronised. */
  stratum: number;
  /** `local`: always synchronised, as chrony's `local stratum`; `kernel`: what adjtimex says. */
  source: "local" | "kernel";
  /** A clock to stamp replies with instead of the system's (tests). */
  clock?: { now(): number };
  /** The answers' clock, ms since the epoch (tests); it stamps replies when `clock` is not given. */
  now?: () => number;
  /** Reads the kernel's clock state (tests); adjtimex by default. */
  kernelClock?: () => KernelClockState | null;
  logger: Logger;
  /** Where what replies claim is shown (the server's counters, for the metrics). */
  gauges?: ClockGauges;
}

/** What SNTP replies claim of the clock, as gauges: see `ServerStats`. */
export interface ClockGauges {
  ntpStratum: number;
  ntpLeap: number;
  ntpSynchronized: number;
  ntpRootDispersion: number;
}

/**
 * The one owner of the time SNTP replies carry: it chooses the clock (sub-ms and
 * calibrated when SNTP is served), keeps what replies claim of it (leap, stratum,
 * dispersion, reference time) up to date once a second, and follows steps of the system
 * clock. Nothing else changes {@linkcode TimeSource.info}. This is chrony's
 * `reference.c`, ntpd-rs's `SystemSnapshot`.
 */
export class TimeSource {
  /** The clock SNTP timestamps are read from, ms since the epoch with sub-ms resolution. */
  readonly clock: { now(): number };
  /** What SNTP replies say about the clock, kept up to date. */
  readonly info: NtpServerInfo;
  /** Whether `clock` is the system clock, so the kernel's receive timestamps may stand in for it. */
  readonly isSystemClock: boolean;
  readonly #precise: PreciseClock | null;
  readonly #source: "local" | "kernel";
  #stratum: number;
  readonly #readKernel: () => KernelClockState | null;
  readonly #logger: Logger;
  readonly #gauges: ClockGauges | null;
  readonly #timer: ReturnType<typeof setInterval> | null = null;

  constructor(options: TimeSourceOptions) {
    const system = !options.clock && !options.now;
    this.#precise = options.ntp && system ? new PreciseClock() : null;
    this.clock = options.clock ?? this.#precise ?? { now: options.now ?? Date.now };
    this.isSystemClock = system;
    this.#source = options.source;
    this.#stratum = options.stratum;
    this.#readKernel = options.kernelClock ?? readKernelClock;
    this.#logger = options.logger;
    this.#gauges = options.gauges ?? null;
    this.info = {
      leap: 0,
      stratum: options.stratum,
      referenceId: referenceId("LOCL"),
      precision: measurePrecision(() => this.clock.now()),
      rootDispersion: 0.001,
      referenceTime: this.clock.now(),
    };
    if (this.#precise !== null || options.source === "kernel") {
      this.#update();
      this.#timer = setInterval(() => this.#update(), CLOCK_CHECK_MS);
    }
    this.#show();
  }

  /** Changes the stratum claimed while the clock is synchronised (a reload), at once. */
  setStratum(stratum: number): void {
    this.#stratum = stratum;
    if (this.info.leap !== 3) this.info.stratum = stratum;
    this.#show();
  }

  /** Copies what replies claim to the gauges. */
  #show(): void {
    const gauges = this.#gauges, info = this.info;
    if (gauges === null) return;
    gauges.ntpStratum = info.stratum;
    gauges.ntpLeap = info.leap;
    gauges.ntpSynchronized = info.leap === 3 ? 0 : 1;
    gauges.ntpRootDispersion = info.rootDispersion;
  }

  /** Stops the one-second check; safe to call twice. */
  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
  }

  /**
   * Follows steps of the system clock, and says in NTP replies how well it is known: from
   * the calibration, and with `ntpClock: "kernel"` from the kernel's synchronisation state.
   */
  #update(): void {
    const clock = this.#precise;
    const info = this.info;
    let own = 2 ** info.precision;
    if (clock !== null) {
      if (clock.check()) {
        this.#logger.warn("system clock stepped; recalibrated", {
          calibrations: clock.calibrations,
        });
      }
      // A calibration a busy machine made loose is tried again, not kept for a minute.
      if (clock.tighten() && this.#logger.enabled("debug")) {
        this.#logger.debug("clock calibration was loose; recalibrated", {
          uncertaintyUs: Math.round(clock.uncertainty * 1000),
        });
      }
      const now = clock.now();
      // Recalibrate now and then anyway, so the drift allowance claimed stays small.
      if (now - clock.calibratedAt > RECALIBRATE_MS) clock.calibrate();
      info.referenceTime = clock.calibratedAt;
      own = rootDispersion(clock.uncertainty, info.precision, now - clock.calibratedAt);
    }
    if (this.#source !== "kernel") {
      info.rootDispersion = own;
      return this.#show();
    }
    let kernel: KernelClockState | null = null;
    let unreadable = "no FFI for libc";
    try {
      kernel = this.#readKernel();
    } catch (error) {
      unreadable = error instanceof Error ? error.message : String(error);
    }
    const claimed = kernel === null
      ? { leap: 3, stratum: 16, rootDispersion: own } // unknown: claim nothing
      : kernelSyncInfo(kernel, this.#stratum, own);
    if (claimed.leap === 3 && info.leap !== 3) {
      if (kernel === null) {
        this.#logger.warn(
          "cannot read the kernel's clock state; SNTP replies say the clock is not synchronised",
          { error: unreadable },
        );
      } else {
        this.#logger.warn(
          "the kernel says the system clock is not synchronised; SNTP replies say so",
        );
      }
    }
    info.leap = claimed.leap;
    info.stratum = claimed.stratum;
    info.rootDispersion = claimed.rootDispersion;
    this.#show();
  }
}
