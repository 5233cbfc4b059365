// Admission: the connection limit (this server's, or shared by workers) and the count per client address.

import type { ServerStats } from "./stats.ts";

/** The slots of a shared array: the connections counted by all workers, and evictions asked for. */
export const SHARED_OPEN = 0;
/** How many evictions full workers with nothing silent of their own ask the others for. */
export const SHARED_EVICTIONS_WANTED = 1;
/** How many `Int32` slots a `sharedConnections` array needs. */
export const SHARED_CONNECTION_SLOTS = 2;

/** What {@linkcode Limits} keeps on each connection it counts. */
export interface Counted {
  /** True while the connection counts against the limit. */
  counted: boolean;
  /** The client address it counts under, once it does. */
  ipKey: string | null;
}

/**
 * Counts connections against `maxConnections` (shared through Atomics when workers
 * share one array) and under their client address, and lets go of both in one place,
 * {@linkcode Limits.release}.
 */
export class Limits {
  readonly #max: number;
  readonly #maxPerAddress: number;
  readonly #shared: Int32Array | undefined;
  readonly #stats: ServerStats;
  readonly #perAddress = new Map<string, number>();
  #active = 0;

  constructor(
    options: { max: number; maxPerAddress: number; shared?: Int32Array },
    stats: ServerStats,
  ) {
    this.#max = options.max;
    this.#maxPerAddress = options.maxPerAddress;
    this.#shared = options.shared;
    this.#stats = stats;
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
   * Counts one more connection against the limit; false, and nothing counted, when
   * full. The connection then starts with `counted` true.
   */
  take(): boolean {
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
    return true;
  }

  /** How many connections `address` holds here (0 for null: not known yet). */
  holds(address: string | null): number {
    return address === null ? 0 : this.#perAddress.get(address) ?? 0;
  }

  /** Counts `entry` under `address`; false if the address already holds `maxConnectionsPerIp`. */
  takeAddress(entry: Counted, address: string): boolean {
    const count = this.holds(address);
    if (this.#maxPerAddress > 0 && count >= this.#maxPerAddress) return false;
    this.#perAddress.set(address, count + 1);
    this.#stats.addressesTracked = this.#perAddress.size;
    entry.ipKey = address;
    return true;
  }

  /** Stops counting `entry`, against the limit and under its address; safe to call twice. */
  release(entry: Counted): void {
    if (entry.counted) {
      entry.counted = false;
      this.#active--;
      if (this.#shared) {
        Atomics.sub(this.#shared, SHARED_OPEN, 1);
        Atomics.notify(this.#shared, SHARED_OPEN);
      }
    }
    if (entry.ipKey !== null) {
      const count = this.#perAddress.get(entry.ipKey)! - 1;
      if (count === 0) this.#perAddress.delete(entry.ipKey);
      else this.#perAddress.set(entry.ipKey, count);
      this.#stats.addressesTracked = this.#perAddress.size;
      entry.ipKey = null;
    }
  }
}
