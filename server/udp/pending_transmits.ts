// Matching the kernel's transmit timestamps to the replies that asked for them.

/** Sends awaiting their timestamp at most; the kernel gives them within one flush or two. */
const PENDING = 1024;

/**
 * The replies sent with a request for the kernel's transmit timestamp, by the number the
 * kernel gave each (`SOF_TIMESTAMPING_OPT_ID`), with what is needed to put the time where
 * it belongs: the reply's store slot and receive timestamp, and the clock just before the
 * send. A time from before that instant cannot be this reply's (a number reused after a
 * restart of the count): it is refused, so a mismatch never becomes a wrong time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PendingTransmits } from "./pending_transmits.ts";
 *
 * const pending = new PendingTransmits();
 * pending.expect(0, 7, 0xea000001, 9, 1_700_000_000_000);
 * assert.equal(pending.match(0, 1_700_000_000, 5_000), 7); // 5 µs after the clock read
 * assert.ok(Math.abs(pending.lag - 0.005) < 0.001); // ms, read as doubles
 * assert.equal(pending.match(0, 1_700_000_000, 5_000), -2); // once
 * ```
 */
export class PendingTransmits {
  readonly #ids = new Float64Array(PENDING).fill(-1);
  readonly #slots = new Int32Array(PENDING);
  readonly #rxHi = new Uint32Array(PENDING);
  readonly #rxLo = new Uint32Array(PENDING);
  readonly #before = new Float64Array(PENDING);
  readonly #meant = new Float64Array(PENDING);
  /** Sends whose timestamp never came: overwritten or dropped while still awaited. */
  missing = 0;

  /**
   * Awaits the timestamp of send number `id`: the reply saved in store slot `slot` (-1
   * for one sent only to measure), with receive timestamp (`rxHi`, `rxLo`), sent after the
   * clock read `before` (ms since the epoch), and whose transmit timestamp was meant for
   * `meant` (`before` unless the reply was sealed earlier).
   */
  expect(
    id: number,
    slot: number,
    rxHi: number,
    rxLo: number,
    before: number,
    meant: number = before,
  ): void {
    const at = id % PENDING;
    if (this.#ids[at] !== -1) this.missing++;
    this.#ids[at] = id;
    this.#slots[at] = slot;
    this.#rxHi[at] = rxHi;
    this.#rxLo[at] = rxLo;
    this.#before[at] = before;
    this.#meant[at] = meant;
  }

  /**
   * Finds send number `id`, whose time the kernel gives as `seconds` and `nanoseconds`
   * since the Unix epoch: returns its store slot (-1 for none), or -2 when none awaits it
   * or the time is from before its send. Then {@linkcode rxHi} and {@linkcode rxLo} give
   * its receive timestamp, and {@linkcode lag} how long after the time its transmit
   * timestamp was meant for it left (ms).
   */
  match(id: number, seconds: number, nanoseconds: number): number {
    const at = id % PENDING;
    if (this.#ids[at] !== id) return -2;
    this.#ids[at] = -1;
    // The clock is read in ms as a double: allow its rounding, well under a microsecond.
    const time = seconds * 1000 + nanoseconds / 1e6;
    if (time < this.#before[at] - 0.001) {
      this.missing++;
      return -2;
    }
    this.rxHi = this.#rxHi[at];
    this.rxLo = this.#rxLo[at];
    this.lag = time - this.#meant[at];
    return this.#slots[at];
  }

  /** The receive timestamp of the reply {@linkcode match} found last. */
  rxHi = 0;
  rxLo = 0;
  /** How long after the time meant the reply {@linkcode match} found last left, ms. */
  lag = 0;

  /** Gives up on every send still awaited (the kernel's numbering restarted). */
  forget(): void {
    for (let at = 0; at < PENDING; at++) {
      if (this.#ids[at] !== -1) {
        this.missing++;
        this.#ids[at] = -1;
      }
    }
  }
}

/** Samples {@linkcode SendLag} keeps: the median of the last nine. */
const LAG_SAMPLES = 9;

/**
 * How long a reply takes to leave after its transmit timestamp is read, ms: the median
 * of the last nine the kernel showed, each at most `limit`. A median, because a pause of
 * the thread makes one sample huge and leaves the next as it was; nine, so that it
 * follows a change of load within a few samples (one each 10 ms under load).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SendLag } from "./pending_transmits.ts";
 *
 * const lag = new SendLag(0.1);
 * for (const sample of [0.002, 0.003, 5, 0.002, 0.004]) lag.add(sample);
 * assert.equal(lag.value, 0.003);
 * ```
 */
export class SendLag {
  readonly #limit: number;
  readonly #samples = new Float64Array(LAG_SAMPLES);
  readonly #sorted = new Float64Array(LAG_SAMPLES);
  #count = 0;
  /** The current estimate, ms; 0 before any sample. */
  value = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Adds one sample, ms: bounded to [0, limit]. Sorts nine numbers in place; allocates nothing. */
  add(lag: number): void {
    this.#samples[this.#count % LAG_SAMPLES] = Math.min(Math.max(lag, 0), this.#limit);
    this.#count++;
    const n = Math.min(this.#count, LAG_SAMPLES);
    const sorted = this.#sorted;
    for (let i = 0; i < n; i++) {
      const sample = this.#samples[i];
      let j = i;
      for (; j > 0 && sorted[j - 1] > sample; j--) sorted[j] = sorted[j - 1];
      sorted[j] = sample;
    }
    this.value = sorted[n >> 1];
  }
}
