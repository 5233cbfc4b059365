// A server's live connections, by state, oldest activity first; and the coarse clock that stamps them.

import { ActivityList } from "./activity_list.ts";
import type { CloseReason, Connection, ConnState } from "./connection.ts";
import type { Limits } from "./limits.ts";
import { closeQuietly } from "../lib/net.ts";
import { ERR_IDLE_EVICTED } from "../protocol.ts";

/**
 * Every live connection, each in the activity list of its state, so that the longest
 * silent one is found in O(1) and a sweep touches only the connections it closes.
 * Entering a state stamps a connection with the coarse clock, which ticks with the
 * sweep and with accepting; the request path reads it instead of the system clock.
 */
export class ConnectionTable {
  readonly #all = new Set<Connection>();
  readonly #lists: Record<Exclude<ConnState, "closed">, ActivityList<Connection>> = {
    header: new ActivityList(),
    reading: new ActivityList(),
    writing: new ActivityList(),
    lingering: new ActivityList(),
  };
  readonly #limits: Limits;
  readonly #maxLingering: number;
  readonly #evictAfterMs: number;
  /**
   * When the clock ticked lately, oldest first, reaching back just past `evictAfter`:
   * a stamp older than the first tick proves that much silence.
   */
  readonly #ticks: number[] = [];
  #clock = performance.now();

  constructor(limits: Limits, options: { maxLingering: number; evictAfterMs: number }) {
    this.#limits = limits;
    this.#maxLingering = options.maxLingering;
    this.#evictAfterMs = options.evictAfterMs;
  }

  /** The coarse activity clock: `performance.now()` as of the last tick. */
  get coarseNow(): number {
    return this.#clock;
  }

  /** How many connections are open, lingering ones included. */
  get size(): number {
    return this.#all.size;
  }

  /** Every open connection. */
  [Symbol.iterator](): IterableIterator<Connection> {
    return this.#all.values();
  }

  add(connection: Connection): void {
    this.#all.add(connection);
  }

  delete(connection: Connection): void {
    this.#all.delete(connection);
  }

  /** Advances the coarse clock, and remembers when it did for {@linkcode silentBefore}. */
  tick(): void {
    const now = this.#clock = performance.now();
    const ticks = this.#ticks;
    ticks.push(now);
    const horizon = now - this.#evictAfterMs;
    while (ticks.length > 1 && ticks[1] <= horizon) ticks.shift();
  }

  /**
   * A stamp below this proves `evictAfter` of silence. A stamp below a tick was made
   * before that tick happened, so a tick at least `evictAfter` ago bounds the silence
   * from below, however late timers run.
   */
  silentBefore(): number {
    const first = this.#ticks[0];
    return first !== undefined && first <= this.#clock - this.#evictAfterMs ? first : -Infinity;
  }

  /**
   * Moves a connection into `state`, at the end of its list, unless it is closed. A
   * connection that starts lingering stops counting against the limits, within a
   * budget of its own: past it, the oldest lingering one is closed.
   */
  enter(connection: Connection, state: Exclude<ConnState, "closed">): void {
    if (connection.state === "closed") return;
    connection.state = state;
    const list = this.#lists[state];
    list.append(connection, this.#clock);
    if (state !== "lingering") return;
    this.#limits.release(connection);
    if (list.size > this.#maxLingering) this.close(list.oldest!, "linger limit");
  }

  /**
   * Closes a connection (at once unless `now` is false), takes it out of its list and
   * the limits, and records why. Closing a closed connection only closes its socket.
   */
  close(connection: Connection, reason: CloseReason, now = true): void {
    connection.list?.remove(connection);
    if (connection.state !== "closed") {
      connection.state = "closed";
      connection.reason = reason;
      this.#limits.release(connection);
    }
    if (now) closeQuietly(connection.conn);
  }

  /**
   * Closes a silent connection to make room, after telling it why. It owes nothing and
   * is owed nothing, so its receive queue is empty and the close is a FIN after the
   * line. A client that does not read could stall that write: it waits in the
   * lingering list, whose deadline closes it then.
   */
  evict(connection: Connection): void {
    const conn = connection.conn;
    this.close(connection, "evicted", false);
    this.#lists.lingering.append(connection, this.#clock);
    conn.write(ERR_IDLE_EVICTED).catch(() => {}).finally(() => closeQuietly(conn));
  }

  /** The connection owing nothing (waiting for a request or a PROXY header) silent the longest. */
  oldestSilent(): Connection | null {
    const reading = this.#lists.reading.oldest;
    const header = this.#lists.header.oldest;
    if (reading === null || header === null) return reading ?? header;
    return header.lastActive < reading.lastActive ? header : reading;
  }

  /**
   * Closes the connections in `state` last active before `deadline`, oldest first;
   * calls `each` before closing each one.
   */
  expire(
    state: Exclude<ConnState, "closed">,
    deadline: number,
    reason: CloseReason,
    each?: (connection: Connection) => void,
  ): void {
    const list = this.#lists[state];
    for (let oldest = list.oldest; oldest !== null && oldest.lastActive < deadline;) {
      each?.(oldest);
      this.close(oldest, reason);
      oldest = list.oldest;
    }
  }
}
