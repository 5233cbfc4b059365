// Logging an event once per client address, within a budget, so that no client can flood the log.

/**
 * Says whether an event from an address should be logged: the first time that address is
 * seen (in a table of at most `maxAddresses`, the least recently seen forgotten first), and
 * then only within `perMinute` lines a minute in all. Many addresses cost a bounded table
 * and a bounded log.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OncePerAddress } from "./once_per_address.ts";
 *
 * let now = 0;
 * const once = new OncePerAddress({ perMinute: 2 }, () => now);
 * assert.equal(once.shouldLog("192.0.2.1"), true);
 * assert.equal(once.shouldLog("192.0.2.1"), false); // said already
 * assert.equal(once.shouldLog("192.0.2.2"), true);
 * assert.equal(once.shouldLog("192.0.2.3"), false); // over the minute's budget
 * now += 60_000;
 * assert.equal(once.shouldLog("192.0.2.3"), true);
 * ```
 */
export class OncePerAddress {
  readonly #seen = new Set<string>();
  readonly #maxAddresses: number;
  readonly #perMinute: number;
  readonly #now: () => number;
  #minuteStart = -Infinity;
  #inMinute = 0;

  /** @param now A monotonic clock in ms; `performance.now` when left out. */
  constructor(
    { maxAddresses = 4096, perMinute = 10 } = {},
    now: () => number = () => performance.now(),
  ) {
    this.#maxAddresses = maxAddresses;
    this.#perMinute = perMinute;
    this.#now = now;
  }

  /** Whether to log this address's event now; counts it if so. */
  shouldLog(address: string): boolean {
    const seen = this.#seen;
    if (seen.has(address)) return false;
    const now = this.#now();
    if (now - this.#minuteStart >= 60_000) {
      this.#minuteStart = now;
      this.#inMinute = 0;
    }
    if (this.#inMinute >= this.#perMinute) return false;
    this.#inMinute++;
    if (seen.size >= this.#maxAddresses) seen.delete(seen.values().next().value!);
    seen.add(address);
    return true;
  }
}
