// Workers making room for each other: a full worker asks, through shared memory, the others to evict.

import { SHARED_EVICTIONS_WANTED, SHARED_OPEN } from "./limits.ts";

/**
 * With workers: how long a new connection that found the server full, and nothing
 * silent in its own worker, waits for another worker to make room.
 */
const PEER_EVICTION_WAIT_MS = 50;
/** How many such connections may wait at once per worker; the others get `ERR server busy`. */
const PEER_EVICTION_WAITERS = 64;
/**
 * The requests are counted in one shared word, so that taking one is a single
 * compare-and-swap: requests any silent connection may answer in the low 16 bits, and
 * in the bits above, those a busy one may answer too (fairness).
 */
const SILENT_ONLY = 1;
const FAIR = 0x10000;

/** What one worker can do for another's newcomer. */
export interface RoomMaker {
  /** Whether a connection here has been silent long enough to make room. */
  hasSilent(): boolean;
  /** Closes the connection silent the longest, as {@linkcode hasSilent} found it. */
  evictSilent(): void;
  /**
   * Whether a busy connection here may be closed for a newcomer it cannot see, by
   * per-address fairness: the address holding the most here holds two or more.
   */
  hasFairVictim(): boolean;
  /** Closes the oldest connection of that address. */
  closeFairVictim(): void;
}

/**
 * One worker's side of making room across workers. A full worker that cannot make room
 * among its own connections counts a request in the shared array and waits briefly for
 * the open count to drop; every worker watches that word with `Atomics.waitAsync` and,
 * when it can, takes one request and closes a connection: its longest-silent one if
 * that has been silent long enough, or else, for a newcomer whose address is known (not
 * behind PROXY before the header), the oldest of its own largest holder's connections,
 * if that address holds two or more there. The newcomer's count in the asking worker is
 * not seen by the others: the asker only asks for one whose address holds none there.
 */
export class PeerEviction {
  readonly #shared: Int32Array;
  readonly #room: RoomMaker;
  #waiters = 0;

  constructor(shared: Int32Array, room: RoomMaker) {
    this.#shared = shared;
    this.#room = room;
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
   * for `take()` to succeed; resolves with whether it did. `fair`: a busy connection
   * may be closed for it too, as well as a silent one.
   */
  async ask(take: () => boolean, fair: boolean, signal: AbortSignal): Promise<boolean> {
    const shared = this.#shared, unit = fair ? FAIR : SILENT_ONLY;
    this.#waiters++;
    try {
      Atomics.add(shared, SHARED_EVICTIONS_WANTED, unit);
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
      for (;;) {
        const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
        if (count(wanted, unit) === 0) break;
        const seen = Atomics.compareExchange(
          shared,
          SHARED_EVICTIONS_WANTED,
          wanted,
          wanted - unit,
        );
        if (seen === wanted) break;
      }
      return false;
    } finally {
      this.#waiters--;
    }
  }

  /** Answers the other workers' requests until `signal` aborts. */
  async answer(signal: AbortSignal): Promise<void> {
    const shared = this.#shared, room = this.#room;
    while (!signal.aborted) {
      const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
      const silentOnly = count(wanted, SILENT_ONLY), fair = count(wanted, FAIR);
      if (silentOnly + fair > 0) {
        // A silent connection answers either kind: the silent-only first, which nothing else can.
        if (room.hasSilent()) {
          if (take(shared, wanted, silentOnly > 0 ? SILENT_ONLY : FAIR)) room.evictSilent();
          continue;
        }
        if (fair > 0 && room.hasFairVictim()) {
          if (take(shared, wanted, FAIR)) room.closeFairVictim();
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

/** How many requests of the kind `unit` the shared word `wanted` counts. */
function count(wanted: number, unit: number): number {
  return unit === FAIR ? wanted >>> 16 : wanted & 0xffff;
}

/** Takes one request of the kind `unit`, if the word is still `wanted`. */
function take(shared: Int32Array, wanted: number, unit: number): boolean {
  return Atomics.compareExchange(shared, SHARED_EVICTIONS_WANTED, wanted, wanted - unit) === wanted;
}
