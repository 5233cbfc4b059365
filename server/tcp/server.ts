// The TCP side: admitting or refusing, the connection table and its sweep, and the drain, for both engines.

import { Acceptor } from "./acceptor.ts";
import { Admission } from "./admission.ts";
import type { AccessList } from "../access.ts";
import { type CloseReason, ConnectionTable, type SlotSockets } from "./connections.ts";
import { DenoEngine } from "./deno/engine.ts";
import { EpollEngine } from "./epoll/engine.ts";
import { Eviction, type EvictionSettings } from "./eviction.ts";
import { Limits } from "./limits.ts";
import type { Logger } from "../../lib/log.ts";
import type { TimeAnswer } from "../../protocol.ts";
import type { ServerStats } from "../stats.ts";
import type { AddressVerdict, TcpHost, TcpService } from "./host.ts";
import type { DaytimeAnswer } from "../../time/daytime.ts";
import type { Rfc868Answer } from "../../time/rfc868.ts";
import type { RoughtimeBatcher } from "../roughtime/batcher.ts";

/**
 * How long a connection the server is closing keeps reading (and discarding) what the
 * client still sends, at most: see the lingering close in `Connection` and `EpollConnections`.
 */
const LINGER_MS = 5000;
/**
 * Lingering connections do not count against `maxConnections`, so they get a budget
 * of their own, a tenth of it (at least 16): past that the oldest is closed at once.
 * Without it a client that sends QUIT and never closes could pile up descriptors.
 */
const LINGER_SHARE = 0.1;
/** The sweep's longest period; it also ticks the coarse clock that activity is stamped with. */
const SWEEP_MAX_MS = 250;
/** Accepting ticks the coarse clock too, at most this often, so eviction sees fresh time. */
const ACCEPT_TICK_MS = 10;

/**
 * The settings the TCP side is handed, resolved once by the server (`tcpSettings` in
 * `server_options.ts`): its own, and nothing of the other services'. Seconds, as the
 * options give them; 0 turns a timeout off.
 */
export interface TcpSettings {
  readonly maxLine: number;
  readonly idleTimeout: number;
  /** The idle timeout other workers assume of this one's connections: never 0. */
  readonly peerIdleTimeout: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** Per-address max-min fairness when every slot is busy (`ServerOptions.fairness`). */
  readonly fairness: boolean;
  readonly evictAfter: number;
  readonly proxyProtocol: boolean;
  readonly proxyHeaderTimeout: number;
  readonly shutdownTimeout: number;
  readonly reusePort: boolean;
}

/**
 * How often the sweep runs, in ms: a quarter of the shortest deadline it enforces, at
 * most {@linkcode SWEEP_MAX_MS}. One sweep over the lists beats a timer per connection
 * reset on every request.
 */
function sweepPeriod(settings: TcpSettings): number {
  const positive = (seconds: number) => seconds > 0 ? seconds * 1000 : Infinity;
  const shortest = Math.min(
    positive(settings.idleTimeout),
    settings.proxyProtocol ? positive(settings.proxyHeaderTimeout) : Infinity,
    positive(settings.evictAfter),
  );
  return Math.min(SWEEP_MAX_MS, Math.max(5, shortest / 4));
}

/** What the connection table is set by, from the TCP side's settings. */
function tableOptions(settings: TcpSettings): { maxLingering: number; evictAfterMs: number } {
  return {
    maxLingering: Math.max(16, Math.ceil(settings.maxConnections * LINGER_SHARE)),
    evictAfterMs: settings.evictAfter * 1000,
  };
}

/** What eviction is set by, from the TCP side's settings and the sweep's period. */
function evictionSettings(settings: TcpSettings, sweepEveryMs: number): EvictionSettings {
  return {
    maxConnections: settings.maxConnections,
    idleTimeoutMs: settings.peerIdleTimeout * 1000,
    evictAfterMs: settings.evictAfter * 1000,
    slackMs: sweepEveryMs,
  };
}

/**
 * The TCP side's settings as its parts read them: the table's and eviction's objects
 * and the sweep's period, read at each use and changed in place by a reload.
 */
class Tuning {
  settings: TcpSettings;
  sweepEveryMs: number;
  readonly table: { maxLingering: number; evictAfterMs: number };
  readonly eviction: EvictionSettings;

  constructor(settings: TcpSettings) {
    this.settings = settings;
    this.sweepEveryMs = sweepPeriod(settings);
    this.table = tableOptions(settings);
    this.eviction = evictionSettings(settings, this.sweepEveryMs);
  }

  /** Takes new settings, but for what the sockets were set up with; returns them. */
  update(next: TcpSettings): TcpSettings {
    const { maxLine, proxyProtocol, proxyHeaderTimeout, reusePort } = this.settings;
    const settings = { ...next, maxLine, proxyProtocol, proxyHeaderTimeout, reusePort };
    this.settings = settings;
    this.sweepEveryMs = sweepPeriod(settings);
    Object.assign(this.table, tableOptions(settings));
    Object.assign(this.eviction, evictionSettings(settings, this.sweepEveryMs));
    return settings;
  }
}

/** At the shutdown timeout: closes every connection left, saying how many were still busy. */
function closeEveryone(table: ConnectionTable, logger: Logger): void {
  let busy = 0;
  for (const slot of table) if (table.state(slot) === "writing") busy++;
  if (busy > 0) {
    logger.warn("shutdown timeout; closing connections still busy", {
      connections: busy,
      lingering: table.size - busy || undefined,
    });
  }
  for (const slot of [...table]) table.close(slot, "shutdown timeout");
}

/** What an engine offers the TCP side besides its sockets. */
interface Engine extends SlotSockets {
  /** Stops accepting. */
  stop(): void;
  /** A descriptor was freed: accepting held back for want of one may go on. */
  freed(): void;
  /** Settles when the engine has stopped accepting and let go of its listeners. */
  readonly finished: Promise<void>;
}

/**
 * What the TCP side shares with the rest of the server: counters, logs, the answers, who
 * is served (as its connections see them), and with workers the count all of them share.
 */
export type TcpContext =
  & Pick<
    TcpHost,
    "stats" | "logger" | "jamAnswer" | "daytimeAnswer" | "rfc868Answer" | "access" | "roughtime"
  >
  & { readonly sharedConnections?: Int32Array };

/**
 * The TCP side of the server: it serves the listeners it is handed (the line protocol,
 * Daytime and Time) through an engine, `Deno.listen` or epoll, admits each connection
 * against the limits or makes room by eviction, sweeps deadlines, and drains. The
 * policies it applies (limits, eviction, overload, per-address counts) are their own
 * modules, and both engines' connections live in one table.
 */
export class TcpServer implements TcpHost {
  readonly stats: ServerStats;
  readonly logger: Logger;
  debug: boolean;
  readonly jamAnswer: TimeAnswer;
  readonly daytimeAnswer: DaytimeAnswer;
  readonly rfc868Answer: Rfc868Answer;
  readonly roughtime: RoughtimeBatcher | null;
  readonly access: AccessList;
  readonly maxLine: number;
  readonly proxyProtocol: boolean;
  readonly limits: Limits;
  readonly table: ConnectionTable;
  readonly #tuning: Tuning;
  readonly #eviction: Eviction;
  readonly #admission: Admission;
  readonly #stopAccepting = new AbortController();
  readonly stopping: AbortSignal = this.#stopAccepting.signal;
  readonly #drained = Promise.withResolvers<void>();
  readonly #acceptor: Acceptor;
  readonly #deno: DenoEngine;
  #epoll: EpollEngine | null = null;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #lastSweep = performance.now();
  #drain: Promise<void> | null = null;

  constructor(settings: TcpSettings, context: TcpContext) {
    const tuning = this.#tuning = new Tuning(settings);
    ({
      stats: this.stats,
      logger: this.logger,
      jamAnswer: this.jamAnswer,
      daytimeAnswer: this.daytimeAnswer,
      rfc868Answer: this.rfc868Answer,
      roughtime: this.roughtime,
      access: this.access,
    } = context);
    this.debug = this.logger.enabled("debug");
    this.maxLine = settings.maxLine;
    this.proxyProtocol = settings.proxyProtocol;
    this.limits = new Limits({
      max: settings.maxConnections,
      maxPerAddress: settings.maxConnectionsPerIp,
      shared: context.sharedConnections,
      fairness: settings.fairness,
    }, this.stats);
    const table = this.table = new ConnectionTable(this.limits, tuning.table);
    this.#eviction = new Eviction(table, this.limits, this.stats, this.logger, tuning.eviction);
    this.#admission = new Admission(this.table, this.limits, this.#eviction, this.access, {
      ...settings,
      shared: context.sharedConnections,
    }, this.stopping);
    this.#acceptor = new Acceptor(this.stats, this.logger, () => ({
      connections: this.table.size,
      maxConnections: this.limits.max,
    }));
    this.#deno = new DenoEngine(this, this.#acceptor, () => this.#tickForAccept());
    this.#sweepTimer = setInterval(() => this.#sweep(), tuning.sweepEveryMs);
  }

  /** Serves a `Deno.listen` listener until the drain: its connections speak `service`. */
  serve(listener: Deno.TcpListener, service: TcpService): void {
    this.#deno.serve(listener, service);
  }

  /**
   * Binds the line protocol's listener on the epoll engine and serves it until the
   * drain. From then on that engine's loop drives the sweep, once per batch of events,
   * so that deadlines hold however busy the loop is. Throws what `Deno.listen` would.
   */
  listenEpoll(hostname: string, port: number): Deno.NetAddr {
    const tuning = this.#tuning;
    const epoll = new EpollEngine(this, this.#acceptor, {
      beforeBatch: (now) => this.#beforeBatch(now),
      get waitMs() {
        return tuning.sweepEveryMs;
      },
    });
    const addr = epoll.listen(hostname, port, tuning.settings.reusePort);
    this.#epoll = epoll;
    clearInterval(this.#sweepTimer);
    this.#sweepTimer = undefined;
    return addr;
  }

  /**
   * Takes new settings while serving (a reload): limits, timeouts, fairness and the
   * debug log apply at once, to every connection; what the sockets were set up with
   * (`maxLine`, `proxyProtocol`, `reusePort`) stays. Nothing open is closed for it.
   */
  reconfigure(next: TcpSettings): void {
    const settings = this.#tuning.update(next);
    this.debug = this.logger.enabled("debug");
    this.limits.configure({
      max: settings.maxConnections,
      maxPerAddress: settings.maxConnectionsPerIp,
      fairness: settings.fairness,
    });
    this.#admission.configure(settings);
    if (this.#sweepTimer !== undefined && !this.stopping.aborted) {
      clearInterval(this.#sweepTimer);
      this.#sweepTimer = setInterval(() => this.#sweep(), this.#tuning.sweepEveryMs);
    }
  }

  /** Settles when accepting has stopped and every connection is closed. */
  get finished(): Promise<void> {
    return Promise.all(this.#engines().map((engine) => engine.finished))
      .then(() => this.#drained.promise);
  }

  /**
   * Stops accepting, closes what owes nothing, lets the rest send the answers they owe,
   * and resolves when every connection is closed; those still busy after
   * `shutdownTimeout` are closed anyway. Calling it again returns the same promise.
   */
  drain(): Promise<void> {
    if (this.#drain) return this.#drain;
    this.#stopAccepting.abort();
    for (const engine of this.#engines()) engine.stop();
    clearInterval(this.#sweepTimer);
    const table = this.table;
    // A client waiting for a request is owed nothing, nor is one lingering after its last
    // answer: its pending read has drained what it sent, so closing it resets nothing.
    // Connections still writing close after their last write, and linger as usual, since
    // requests they have not read yet would turn an immediate close into a reset.
    for (const slot of [...table]) {
      const state = table.state(slot);
      if (state === "reading" || state === "header" || state === "lingering") {
        table.close(slot, "shutdown");
      }
    }
    if (table.size === 0) this.#drained.resolve();
    const force = setTimeout(
      () => closeEveryone(table, this.logger),
      this.#tuning.settings.shutdownTimeout * 1000,
    );
    this.#drain = this.finished.finally(() => clearTimeout(force));
    return this.#drain;
  }

  /** Counts a new connection against `maxConnections`, making room if it may: see {@linkcode Admission}. */
  admit(slot: number, address: string | null): boolean | Promise<boolean> {
    return this.#admission.admit(slot, address);
  }

  admitAddress(slot: number, address: string, peer: () => string): AddressVerdict {
    const verdict = this.#admission.admitAddress(slot, address);
    if (verdict === "denied") this.stats.closedDenied++;
    else if (verdict === "busy") this.refused(slot, peer);
    else if (verdict === "per-client") this.stats.refusedPerIp++;
    return verdict;
  }

  opened(_slot: number): void {
    this.stats.connectionsOpen = this.table.size;
    this.stats.connectionsTotal++;
  }

  refused(_slot: number, peer: () => string): void {
    this.stats.refusedBusy++;
    if (this.debug) this.logger.debug("connection refused: server busy", { peer: peer() });
  }

  ended(slot: number, reason: CloseReason): void {
    this.#admission.ended(slot);
    if (this.debug) this.logger.debug("connection closed", { peer: this.table.peer(slot), reason });
    this.table.free(slot);
    this.stats.connectionsOpen = this.table.size;
    for (const engine of this.#engines()) engine.freed();
    if (this.table.size === 0 && this.stopping.aborted) this.#drained.resolve();
  }

  #engines(): Engine[] {
    return this.#epoll === null ? [this.#deno] : [this.#deno, this.#epoll];
  }

  #tickForAccept(): void {
    if (performance.now() - this.table.coarseNow >= ACCEPT_TICK_MS) this.table.tick();
  }

  /** The epoll loop has a batch of events at `now`: tick, and sweep when it is due. */
  #beforeBatch(now: number): void {
    if (now - this.#lastSweep >= this.#tuning.sweepEveryMs) this.#sweep();
    else if (now - this.table.coarseNow >= ACCEPT_TICK_MS) this.table.tick();
  }

  /**
   * Closes connections past their deadline, oldest first in each list, so the sweep
   * costs what it closes: idle readers and stuck writers after the idle timeout (or
   * sooner under pressure), slow PROXY headers, and lingering connections.
   */
  #sweep(): void {
    const table = this.table;
    table.tick();
    const now = this.#lastSweep = table.coarseNow;
    // Stamps lag the truth by up to one sweep: allow for that, so nothing closes early.
    const slack = this.#tuning.sweepEveryMs;
    const { idleTimeout, proxyHeaderTimeout } = this.#tuning.settings;
    if (idleTimeout > 0) {
      const deadline = now - idleTimeout * 1000 - slack;
      const counted = (slot: number) => {
        this.stats.closedIdle++;
        if (this.debug) this.logger.debug("idle timeout", { peer: table.peer(slot) });
      };
      table.expire("reading", deadline, "idle timeout", counted);
      table.expire("writing", deadline, "idle timeout", counted);
    }
    if (this.proxyProtocol) {
      table.expire("header", now - proxyHeaderTimeout * 1000 - slack, "no PROXY header in time");
    }
    table.expire("lingering", now - LINGER_MS - slack, "linger done");
    this.#eviction.relievePressure(now);
  }
}
