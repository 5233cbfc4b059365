// Workers making room for each other: a full worker asks, through shared memory, the others to evict.

import { NO_SLOT } from "./activity_list.ts";
import type { ConnectionTable } from "./connections.ts";
import { SHARED_EVICTIONS_WANTED, SHARED_OPEN } from "./limits.ts";

/**
 * With workers: how long a new connection that found the server full, and nothing
 * silent in its own worker, waits for another worker to make room.
 */
const PEER_EVICTION_WAIT_MS = 50;
/** How many such connections may wait at once per worker; the others get `ERR server busy`. */
const PEER_EVICTION_WAITERS = 64;

/**
 * One worker's side of making room across workers. A full worker with no connection
 * silent long enough counts an eviction wanted in the shared array and waits briefly
 * for the open count to drop; every worker watches that slot with `Atomics.waitAsync`
 * and, when it has a connection silent long enough, takes one request and evicts.
 */
export class PeerEviction {
  readonly #shared: Int32Array;
  readonly #table: ConnectionTable;
  readonly #evict: () => boolean;
  #waiters = 0;

  /**
   * @param evict Closes this worker's longest-silent connection if it has been silent
   * long enough; tells whether it did.
   */
  constructor(shared: Int32Array, table: ConnectionTable, evict: () => boolean) {
    this.#shared = shared;
    this.#table = table;
    this.#evict = evict;
  }

  /**
   * Whether a newcomer from `address` may ask the others: only one from an address
   * that holds nothing here (the others cannot see this worker's counts), and while
   * fewer than {@linkcode PEER_EVICTION_WAITERS} wait.
   */
  mayAsk(addressHoldsHere: number): boolean {
    return addressHoldsHere === 0 && this.#waiters < PEER_EVICTION_WAITERS;
  }

  /**
   * Asks the other workers for room and waits up to {@linkcode PEER_EVICTION_WAIT_MS}
   * for `take()` to succeed; resolves with whether it did.
   */
  async ask(take: () => boolean, signal: AbortSignal): Promise<boolean> {
    const shared = this.#shared;
    this.#waiters++;
    try {
      Atomics.add(shared, SHARED_EVICTIONS_WANTED, 1);
      Atomics.notify(shared, SHARED_EVICTIONS_WANTED);
      const deadline = performance.now() + PEER_EVICTION_WAIT_MS;
      while (!signal.aborted) {
        if (take()) return true;
        const left = deadline - performance.now();
        if (left <= 0) break;
        const wait = Atomics.waitAsync(
          shared,
          SHARED_OPEN,
          Atomics.load(shared, SHARED_OPEN),
          left,
        );
        if (wait.async) await wait.value;
      }
      // Nobody made room: take the request back, unless another worker already took it.
      const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
      if (wanted > 0) Atomics.compareExchange(shared, SHARED_EVICTIONS_WANTED, wanted, wanted - 1);
      return false;
    } finally {
      this.#waiters--;
    }
  }

  /** Answers the other workers' requests until `signal` aborts. */
  async answer(signal: AbortSignal): Promise<void> {
    const shared = this.#shared;
    while (!signal.aborted) {
      const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
      if (wanted > 0) {
        this.#table.tick();
        const table = this.#table;
        const oldest = table.oldestSilent();
        if (
          oldest !== NO_SLOT && table.lastActive(oldest) < table.silentBefore() &&
          Atomics.compareExchange(shared, SHARED_EVICTIONS_WANTED, wanted, wanted - 1) === wanted
        ) {
          this.#evict();
          continue;
        }
      }
      // Wakes when a worker asks; the timeout lets a stopping server leave the loop.
      const wait = Atomics.waitAsync(shared, SHARED_EVICTIONS_WANTED, wanted, 200);
      if (wait.async) await wait.value;
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}
