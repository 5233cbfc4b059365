// The Time protocol's answer (RFC 868): seconds since 1900 as 32 bits, big-endian.

/** Seconds from 1900-01-01 00:00 UTC (the NTP and RFC 868 epoch) to the Unix epoch. */
export const SECONDS_1900_TO_1970 = 2_208_988_800;

/** The RFC 868 answer's length in bytes. */
export const RFC868_LENGTH = 4;

/**
 * Seconds since 1900-01-01 00:00 UTC, modulo 2³²: the RFC 868 value for an instant. The
 * count wraps on 2036-02-07 06:28:16 UTC (the start of era 1) back to 0; clients resolve
 * the era from their own idea of the date, as RFC 4330 describes for NTP.
 *
 * @example The wrap in 2036
 * ```ts
 * import assert from "node:assert/strict";
 * import { secondsSince1900 } from "./rfc868.ts";
 *
 * assert.equal(secondsSince1900(Date.UTC(1970, 0, 1)), 2_208_988_800);
 * assert.equal(secondsSince1900(Date.UTC(2036, 1, 7, 6, 28, 15)), 4_294_967_295);
 * assert.equal(secondsSince1900(Date.UTC(2036, 1, 7, 6, 28, 16)), 0);
 * ```
 */
export function secondsSince1900(epochMilliseconds: number): number {
  return (Math.floor(epochMilliseconds / 1000) + SECONDS_1900_TO_1970) >>> 0;
}

/**
 * Makes the RFC 868 answer from a clock, into a fresh 4-byte array each second (so an
 * array handed to an asynchronous write is never changed).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Rfc868Answer } from "./rfc868.ts";
 *
 * const answer = new Rfc868Answer(() => Date.UTC(2026, 10, 25));
 * const seconds = new DataView(answer.current().buffer).getUint32(0);
 * assert.equal(seconds, Date.UTC(2026, 10, 25) / 1000 + 2_208_988_800);
 * ```
 */
export class Rfc868Answer {
  readonly #now: () => number;
  #second = NaN;
  #bytes: Uint8Array = new Uint8Array(RFC868_LENGTH);

  /** @param now The clock, ms since the epoch; `Date.now` when left out. */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The answer for the clock's current second. */
  current(): Uint8Array {
    const ms = this.#now();
    const second = Math.floor(ms / 1000);
    if (second !== this.#second) {
      const bytes = new Uint8Array(RFC868_LENGTH);
      new DataView(bytes.buffer).setUint32(0, secondsSince1900(ms));
      this.#bytes = bytes;
      this.#second = second;
    }
    return this.#bytes;
  }
}
