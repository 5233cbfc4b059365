// Accepting from a listener: a connection that died in the queue is skipped, a shortage of
// descriptors or memory backs off until a connection closes, and a warning says why.

import { concernsOneConnection, shortageWarning } from "./accept_errors.ts";
import type { Logger } from "../../lib/log.ts";
import { delay } from "../../lib/net.ts";
import type { ServerStats } from "../stats.ts";

/** The shortest time between two warnings that accepting failed for want of resources. */
const SHORTAGE_LOG_EVERY_MS = 10000;

/** What the shortage warning reports of the server's load. */
export interface AcceptLoad {
  connections: number;
  maxConnections: number;
}

/**
 * Runs accept loops, as Go's runtime and mini-redis's `Listener` do: an error that
 * concerns one connection (a reset before accept) costs a counter and the next accept
 * follows at once; a shortage of the process backs off exponentially (5 ms to 1 s), but
 * retries as soon as {@linkcode Acceptor.freed} says a descriptor is free again.
 */
export class Acceptor {
  readonly #stats: ServerStats;
  readonly #logger: Logger;
  readonly #load: () => AcceptLoad;
  /** Wakes an accept loop backing off for want of descriptors. */
  #wake: (() => void) | null = null;
  #lastShortageLog = -Infinity;

  constructor(stats: ServerStats, logger: Logger, load: () => AcceptLoad) {
    this.#stats = stats;
    this.#logger = logger;
    this.#load = load;
  }

  /** A descriptor was freed (a connection closed): a loop backing off tries again now. */
  freed(): void {
    this.#wake?.();
  }

  /** Accepts from `listener` until `signal` aborts or the listener closes; each connection goes to `accepted`. */
  async run(
    listener: Deno.TcpListener,
    signal: AbortSignal,
    accepted: (conn: Deno.TcpConn) => void,
  ): Promise<void> {
    let backoff = 0;
    while (!signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
        backoff = 0;
      } catch (error) {
        if (signal.aborted || error instanceof Deno.errors.BadResource) break;
        if (concernsOneConnection(error)) {
          // That connection died in the queue; the next one may be fine. Backing off
          // here would let a storm of resets hold up everyone queued behind it.
          this.#stats.acceptAborted++;
          continue;
        }
        // Out of descriptors or memory: back off, but retry as soon as a connection closes.
        backoff = this.shortage(error, backoff);
        await this.#waitForDescriptor(backoff, signal);
        continue;
      }
      accepted(conn);
    }
  }

  /**
   * Counts an accept that failed for want of descriptors or memory, and warns of it once
   * per streak (at most every 10 s: each freed descriptor can end a streak). Returns how
   * long to back off: 5 ms after `backoff` 0 (the streak's first), then doubling to 1 s.
   */
  shortage(error: unknown, backoff: number): number {
    this.#stats.acceptExhausted++;
    if (backoff === 0 && performance.now() - this.#lastShortageLog >= SHORTAGE_LOG_EVERY_MS) {
      this.#lastShortageLog = performance.now();
      const [msg, fields] = shortageWarning(error, this.#load());
      this.#logger.warn(msg, fields);
    }
    return Math.min(1000, backoff === 0 ? 5 : backoff * 2);
  }

  /** Resolves after `ms`, when a connection closes, or when accepting stops. */
  async #waitForDescriptor(ms: number, signal: AbortSignal): Promise<void> {
    const freed = new AbortController();
    this.#wake = () => freed.abort();
    await delay(ms, AbortSignal.any([signal, freed.signal]));
    this.#wake = null;
  }
}
