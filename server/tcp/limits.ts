// Admission: the connection limit (this server's, or shared by workers), the count per client address, and fair shares.

import { FairShares } from "../fairness.ts";
import type { ServerStats } from "../stats.ts";

/** The slots of a shared array: the connections counted by all workers, and evictions asked for. */
export const SHARED_OPEN = 0;
/** The evictions full workers that cannot make room among their own ask the others for (`peers.ts`). */
export const SHARED_EVICTIONS_WANTED = 1;
/** How many `Int32` slots a `sharedConnections` array needs. */
export const SHARED_CONNECTION_SLOTS = 2;

/** The address number of a slot that counts under none. */
const NO_ADDRESS = -1;

/**
 * Counts connections against `maxConnections` (shared through Atomics when workers
 * share one array) and under their client address, and lets go of both in one place,
 * {@linkcode Limits.release}. Connections are numbered slots: what is kept of each is
 * a byte and a number in typed arrays, and each address's name is held once, however
 * many connections it has.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limits } from "./limits.ts";
 * import { newServerStats } from "../stats.ts";
 *
 * const limits = new Limits({ max: 2, maxPerAddress: 1 }, newServerStats());
 * assert.ok(limits.take(0) && limits.takeAddress(0, "192.0.2.1"));
 * assert.ok(limits.take(1));
 * assert.ok(!limits.takeAddress(1, "192.0.2.1"), "one per address");
 * assert.ok(!limits.take(2), "two in all");
 * limits.release(0);
 * assert.equal(limits.holds("192.0.2.1"), 0);
 * ```
 */
export class Limits {
  #max: number;
  #maxPerAddress: number;
  readonly #shared: Int32Array | undefined;
  readonly #stats: ServerStats;
  /** Whether each slot counts against the limit. */
  #counted = new Uint8Array(1024);
  /** The address number each slot counts under, or {@linkcode NO_ADDRESS}. */
  #addressOf = new Int32Array(1024).fill(NO_ADDRESS);
  readonly #numbers = new Map<string, number>();
  /** By address number: its name and how many slots count under it. */
  readonly #names: string[] = [];
  readonly #counts: number[] = [];
  readonly #freeNumbers: number[] = [];
  /** The slots counted under an address, by fairness group; kept with fairness off too. */
  readonly #shares = new FairShares();
  #fairness: boolean;
  #active = 0;

  /**
   * @param options `fairness`: whether {@linkcode victimFor} names anyone (default true).
   */
  constructor(
    options: { max: number; maxPerAddress: number; shared?: Int32Array; fairness?: boolean },
    stats: ServerStats,
  ) {
    this.#max = options.max;
    this.#maxPerAddress = options.maxPerAddress;
    this.#shared = options.shared;
    this.#fairness = options.fairness !== false;
    this.#stats = stats;
  }

  /**
   * Takes new limits (a reload). Connections already counted stay, even past a lower
   * limit: newcomers wait for room as the count falls.
   */
  configure(options: { max: number; maxPerAddress: number; fairness?: boolean }): void {
    this.#max = options.max;
    this.#maxPerAddress = options.maxPerAddress;
    this.#fairness = options.fairness !== false;
  }

  /** The limit: `maxConnections`. */
  get max(): number {
    return this.#max;
  }

  /** Connections counted now, by every worker sharing the limit. */
  get open(): number {
    return this.#shared ? Atomics.load(this.#shared, SHARED_OPEN) : this.#active;
  }

  /**
   * Counts one more connection, in `slot`, against the limit; false, and nothing
   * counted, when full.
   */
  take(slot: number): boolean {
    const shared = this.#shared;
    if (shared) {
      if (Atomics.add(shared, SHARED_OPEN, 1) >= this.#max) {
        Atomics.sub(shared, SHARED_OPEN, 1);
        return false;
      }
    } else if (this.#active >= this.#max) {
      return false;
    }
    this.#active++;
    if (slot >= this.#counted.length) this.#grow(slot);
    this.#counted[slot] = 1;
    return true;
  }

  /** How many connections `address` holds here (0 for null: not known yet). */
  holds(address: string | null): number {
    if (address === null) return 0;
    const number = this.#numbers.get(address);
    return number === undefined ? 0 : this.#counts[number];
  }

  /** The address `slot` counts under, or null. */
  addressOf(slot: number): string | null {
    const number = slot < this.#addressOf.length ? this.#addressOf[slot] : NO_ADDRESS;
    return number === NO_ADDRESS ? null : this.#names[number];
  }

  /** Counts `slot` under `address`; false if the address already holds `maxConnectionsPerIp`. */
  takeAddress(slot: number, address: string): boolean {
    let number = this.#numbers.get(address);
    if (number === undefined) {
      number = this.#freeNumbers.pop() ?? this.#names.length;
      this.#names[number] = address;
      this.#counts[number] = 0;
      this.#numbers.set(address, number);
      this.#stats.addressesTracked = this.#numbers.size;
    } else if (this.#maxPerAddress > 0 && this.#counts[number] >= this.#maxPerAddress) {
      return false;
    }
    this.#counts[number]++;
    if (slot >= this.#addressOf.length) this.#grow(slot);
    this.#addressOf[slot] = number;
    this.#shares.join(slot, address);
    return true;
  }

  /**
   * The slot to close for a newcomer from `address` when every slot is busy, by
   * per-address max-min fairness (`FairShares.victimFor`): the oldest of the largest
   * holder's, if the newcomer would still hold fewer. -1 for none, and always with
   * fairness off. Null: an address this worker does not know, taken to hold nothing.
   */
  victimFor(address: string | null): number {
    return this.#fairness ? this.#shares.victimFor(address) : -1;
  }

  /** Stops counting `slot`, against the limit and under its address; safe to call twice. */
  release(slot: number): void {
    if (slot >= this.#counted.length) return;
    if (this.#counted[slot] === 1) {
      this.#counted[slot] = 0;
      this.#active--;
      if (this.#shared) {
        Atomics.sub(this.#shared, SHARED_OPEN, 1);
        Atomics.notify(this.#shared, SHARED_OPEN);
      }
    }
    const number = this.#addressOf[slot];
    if (number !== NO_ADDRESS) {
      this.#addressOf[slot] = NO_ADDRESS;
      this.#shares.leave(slot);
      if (--this.#counts[number] === 0) {
        this.#numbers.delete(this.#names[number]);
        this.#names[number] = "";
        this.#freeNumbers.push(number);
        this.#stats.addressesTracked = this.#numbers.size;
      }
    }
  }

  #grow(slot: number): void {
    const capacity = Math.max(slot + 1, this.#counted.length * 2);
    const counted = new Uint8Array(capacity);
    counted.set(this.#counted);
    this.#counted = counted;
    const addressOf = new Int32Array(capacity).fill(NO_ADDRESS);
    addressOf.set(this.#addressOf);
    this.#addressOf = addressOf;
  }
}
