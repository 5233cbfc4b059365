// Making room: closing the connections silent the longest, at the limit and past the high-water mark.

import { NO_SLOT } from "./activity_list.ts";
import type { ConnectionTable } from "./connections.ts";
import type { Limits } from "./limits.ts";
import type { Logger } from "../../lib/log.ts";
import { highWaterMark, mayReplace, pressureTimeout } from "./overload.ts";
import type { ServerStats } from "../stats.ts";

/** The settings eviction works by, in milliseconds where a time. */
export interface EvictionSettings {
  maxConnections: number;
  /** The idle timeout that shrinks under pressure; the default one where the server has none. */
  idleTimeoutMs: number;
  /** The least silence that lets a connection be closed to make room. */
  evictAfterMs: number;
  /** How late the coarse clock's stamps may be: one sweep period. */
  slackMs: number;
}

/**
 * Applies the overload policy of `overload.ts` to a server's connections: who makes
 * room for a newcomer at the limit, and who is closed early past the high-water mark.
 * Each closed connection hears `ERR idle, closed to make room` and is counted; with
 * every slot busy, {@linkcode Eviction.makeRoomFor} applies per-address fairness.
 */
export class Eviction {
  readonly #table: ConnectionTable;
  readonly #limits: Limits;
  readonly #stats: ServerStats;
  readonly #logger: Logger;
  readonly #settings: EvictionSettings;

  /**
   * @param logger Where each eviction is logged at debug level, asked at each eviction
   * (not per request), so that a reload that turns debug on or off applies at once.
   */
  constructor(
    table: ConnectionTable,
    limits: Limits,
    stats: ServerStats,
    logger: Logger,
    settings: EvictionSettings,
  ) {
    this.#table = table;
    this.#limits = limits;
    this.#stats = stats;
    this.#logger = logger;
    this.#settings = settings;
  }

  /**
   * Closes the connection silent the longest, if it has been silent `evictAfter` and a
   * newcomer from `address` (null: not known yet) may replace it ({@linkcode mayReplace}).
   */
  evictOldest(address: string | null): boolean {
    const table = this.#table;
    const oldest = table.oldestSilent();
    if (oldest === NO_SLOT || table.lastActive(oldest) >= table.silentBefore()) return false;
    const limits = this.#limits;
    const newcomer = { address, holds: limits.holds(address) };
    const victim = limits.addressOf(oldest);
    if (!mayReplace(newcomer, { address: victim, holds: limits.holds(victim) })) return false;
    this.#evict(oldest);
    return true;
  }

  /**
   * Closes a busy connection for a newcomer from `address` (null: one another worker
   * holds, not known here), by per-address max-min fairness: the oldest of the address
   * holding the most, if the newcomer would still hold fewer ({@linkcode Limits.victimFor}).
   */
  makeRoomFor(address: string | null): boolean {
    const victim = this.#limits.victimFor(address);
    if (victim === NO_SLOT) return false;
    this.#stats.closedFairness++;
    if (this.#logger.enabled("debug")) {
      this.#logger.debug("closed to make room", {
        peer: this.#table.peer(victim),
        for: address ?? "another worker's newcomer",
      });
    }
    this.#table.makeRoom(victim);
    return true;
  }

  /**
   * Past the high-water mark, as Envoy's overload manager does, the idle timeout
   * shrinks with how full the server is ({@linkcode pressureTimeout}). Connections
   * silent longer than that are closed, the longest-silent first, until the server is
   * back under the mark. `now` is the coarse clock's time.
   */
  relievePressure(now: number): void {
    const { maxConnections, idleTimeoutMs, evictAfterMs, slackMs } = this.#settings;
    const open = this.#limits.open;
    const over = open - highWaterMark(maxConnections);
    if (over <= 0) return;
    const timeout = pressureTimeout(open, maxConnections, idleTimeoutMs, evictAfterMs);
    const deadline = Math.min(now - timeout - slackMs, this.#table.silentBefore());
    for (let left = over; left > 0; left--) {
      const oldest = this.#table.oldestSilent();
      if (oldest === NO_SLOT || this.#table.lastActive(oldest) >= deadline) return;
      this.#evict(oldest);
    }
  }

  #evict(slot: number): void {
    this.#stats.closedEvicted++;
    if (this.#logger.enabled("debug")) {
      this.#logger.debug("evicted to make room", { peer: this.#table.peer(slot) });
    }
    this.#table.evict(slot);
  }
}
