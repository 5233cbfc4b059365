// The TCP server: listening, accepting and admitting, sweeping, and shutting down.

import { concernsOneConnection, shortageWarning } from "./accept_errors.ts";
import { AccessList } from "./access.ts";
import {
  type CloseReason,
  Connection,
  type ConnectionHost,
  type TcpService,
} from "./connection.ts";
import { ConnectionTable } from "./connections.ts";
import { Limits } from "./limits.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { clientHost, closeQuietly, delay, formatAddress } from "../lib/net.ts";
import { Eviction } from "./eviction.ts";
import { PeerEviction } from "./peers.ts";
import { ERR_SERVER_BUSY, TimeAnswer } from "../protocol.ts";
import {
  DEFAULTS,
  resolveServerOptions,
  type ServerOptions,
  type ServerSettings,
  type ServicePorts,
} from "./server_options.ts";
import { newServerStats, type ServerStats } from "./stats.ts";
import { RateLimiter } from "./rate_limit.ts";
import { chooseUdpEngine, listenUdp, type UdpListener, type UdpProtocol } from "./udp.ts";
import { DaytimeAnswer } from "../time/daytime.ts";
import { TimeSource } from "../time/time_source.ts";
import { Rfc868Answer } from "../time/rfc868.ts";

export {
  DEFAULTS,
  resolveServerOptions,
  type ServerOptions,
  type ServicePorts,
} from "./server_options.ts";

export interface TimeServer extends AsyncDisposable {
  /** The address the server listens on, with the port it was given. */
  readonly addr: Deno.NetAddr;
  /** The ports of the Daytime, Time and SNTP services, null for those that are off. */
  readonly ports: Readonly<ServicePorts>;
  /** Which UDP engine serves the UDP services: `mmsg` (batched, FFI) or `deno`. */
  readonly udpEngine: "deno" | "mmsg";
  /** Live counters; read them, do not change them. */
  readonly stats: Readonly<ServerStats>;
  /** Settles when the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, lets every connection send the answers it owes, closes it,
   * and resolves when all are closed. Connections still busy after `shutdownTimeout`
   * seconds are closed anyway. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
}

/**
 * Thrown by {@linkcode serve} when a Daytime, Time or SNTP port cannot be bound: says which,
 * with what `Deno.listen` or `Deno.listenDatagram` threw as the cause.
 */
export class ServiceListenError extends Error {
  override name = "ServiceListenError";
  /** The address, protocol and transport, e.g. `[::]:123 (SNTP, UDP)`. */
  readonly where: string;
  /** The port asked for (0: any). */
  readonly port: number;

  constructor(where: string, port: number, cause: unknown) {
    super(`cannot listen on ${where}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.where = where;
    this.port = port;
  }
}

/**
 * How long a connection the server is closing keeps reading (and discarding) what the
 * client still sends, at most: see `Connection`'s lingering close.
 */
const LINGER_MS = 5000;
/**
 * Lingering connections do not count against `maxConnections`, so they get a budget
 * of their own, a tenth of it (at least 16): past that the oldest is closed at once.
 * Without it a client that sends QUIT and never closes could pile up descriptors.
 */
const LINGER_SHARE = 0.1;
/** The shortest time between two warnings that accepting failed for want of resources. */
const SHORTAGE_LOG_EVERY_MS = 10000;
/** The sweep's longest period; it also ticks the coarse clock that activity is stamped with. */
const SWEEP_MAX_MS = 250;
/** Accepting ticks the coarse clock too, at most this often, so eviction sees fresh time. */
const ACCEPT_TICK_MS = 10;

function isSetupError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse ||
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}

function listen(
  settings: ServerSettings,
  logger: Logger,
  fallback: boolean,
  port = settings.port,
): Deno.TcpListener {
  const { hostname, reusePort } = settings;
  try {
    return Deno.listen({ hostname, port, transport: "tcp", reusePort });
  } catch (error) {
    if (!fallback || isSetupError(error)) throw error;
    logger.warn("IPv6 is unavailable; listening on IPv4 only", {
      error: error instanceof Error ? error.message : String(error),
    });
    return Deno.listen({ hostname: "0.0.0.0", port, transport: "tcp", reusePort });
  }
}

/**
 * How often the sweep runs, in ms: a quarter of the shortest deadline it enforces, at
 * most {@linkcode SWEEP_MAX_MS}. One sweep over the lists beats a timer per connection
 * reset on every request.
 */
function sweepPeriod(settings: ServerSettings): number {
  const positive = (seconds: number) => seconds > 0 ? seconds * 1000 : Infinity;
  const shortest = Math.min(
    positive(settings.idleTimeout),
    settings.proxyProtocol ? positive(settings.proxyHeaderTimeout) : Infinity,
    positive(settings.evictAfter),
  );
  return Math.min(SWEEP_MAX_MS, Math.max(5, shortest / 4));
}

/** Logs the counters at info level every `seconds`, when they changed; returns the timer. */
function logSummaries(
  stats: ServerStats,
  logger: Logger,
  seconds: number,
): ReturnType<typeof setInterval> {
  let last = "";
  return setInterval(() => {
    const summary = JSON.stringify(stats);
    if (summary !== last) logger.info("summary", { ...stats });
    last = summary;
  }, seconds * 1000);
}

/**
 * Starts a time server and returns at once; the server runs until
 * {@linkcode TimeServer.shutdown}. Throws what `Deno.listen` throws when it cannot
 * listen (`Deno.errors.AddrInUse`, `Deno.errors.PermissionDenied`, …).
 *
 * @example A server on a free port, stopped with `await using`
 * ```ts ignore
 * import { serve } from "./server.ts";
 *
 * await using server = serve({ hostname: "127.0.0.1", port: 0 });
 * console.log(`listening on port ${server.addr.port}`);
 * ```
 */
export function serve(options: ServerOptions = {}): TimeServer {
  return new Server(options);
}

class Server implements TimeServer, ConnectionHost {
  readonly stats: ServerStats = newServerStats();
  readonly logger: Logger;
  readonly debug: boolean;
  readonly time: TimeAnswer;
  readonly daytime: DaytimeAnswer;
  readonly rfc868: Rfc868Answer;
  readonly access: AccessList;
  readonly limiter: RateLimiter | null;
  readonly ntpTime: TimeSource;
  readonly maxLine: number;
  readonly proxyProtocol: boolean;
  readonly limits: Limits;
  readonly table: ConnectionTable;
  readonly addr: Deno.NetAddr;
  readonly ports: ServicePorts = { daytime: null, time: null, ntp: null };
  readonly finished: Promise<void>;
  readonly #settings: ServerSettings;
  readonly #listener: Deno.TcpListener;
  readonly #listeners: Deno.TcpListener[] = [];
  readonly #udp: UdpListener[] = [];
  readonly #udpEngine: "deno" | "mmsg";
  readonly #eviction: Eviction;
  readonly #peers: PeerEviction | null;
  readonly #stopAccepting = new AbortController();
  readonly stopping: AbortSignal = this.#stopAccepting.signal;
  readonly #drained = Promise.withResolvers<void>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  readonly #sweepEveryMs: number;
  /** Wakes an accept loop backing off for want of descriptors: a connection closed. */
  #descriptorFreed: (() => void) | null = null;
  #lastShortageLog = -Infinity;
  #shutdown: Promise<void> | null = null;

  constructor(options: ServerOptions) {
    const settings = this.#settings = resolveServerOptions(options);
    this.logger = options.logger ?? createLogger({ level: "warn" });
    this.debug = this.logger.enabled("debug");
    this.time = new TimeAnswer({ timeZone: options.timeZone, now: options.now });
    this.daytime = new DaytimeAnswer({ timeZone: options.timeZone, now: options.now });
    this.rfc868 = new Rfc868Answer(options.now);
    this.access = AccessList.parse(settings.allow, settings.deny);
    this.limiter = settings.rateLimit === null ? null : new RateLimiter({
      interval: settings.rateLimit.interval,
      burst: settings.rateLimit.burst,
      leak: settings.rateLeak,
      kissOfDeath: settings.kissOfDeath,
      maxClients: settings.maxClients,
    });
    this.ntpTime = new TimeSource({
      ntp: settings.ntpPort !== null,
      stratum: settings.ntpStratum,
      source: settings.ntpClock,
      clock: options.clock,
      now: options.now,
      kernelClock: options.kernelClock,
      logger: this.logger,
    });
    this.#udpEngine = chooseUdpEngine(settings.udpEngine, settings.hostname);
    this.maxLine = settings.maxLine;
    this.proxyProtocol = settings.proxyProtocol;
    this.limits = new Limits({
      max: settings.maxConnections,
      maxPerAddress: settings.maxConnectionsPerIp,
      shared: options.sharedConnections,
    }, this.stats);
    this.table = new ConnectionTable(this.limits, {
      maxLingering: Math.max(16, Math.ceil(settings.maxConnections * LINGER_SHARE)),
      evictAfterMs: settings.evictAfter * 1000,
    });
    this.#sweepEveryMs = sweepPeriod(settings);
    this.#eviction = new Eviction(
      this.table,
      this.limits,
      this.stats,
      this.debug ? this.logger : null,
      {
        maxConnections: settings.maxConnections,
        idleTimeoutMs: (settings.idleTimeout || DEFAULTS.idleTimeout) * 1000,
        evictAfterMs: settings.evictAfter * 1000,
        slackMs: this.#sweepEveryMs,
      },
    );
    const shared = options.sharedConnections;
    this.#peers = shared
      ? new PeerEviction(shared, this.table, () => this.#eviction.evictOldest(null))
      : null;

    const fallback = options.hostname === undefined;
    this.#listener = listen(settings, this.logger, fallback);
    this.#listeners.push(this.#listener);
    try {
      this.#listenServices(settings, fallback);
    } catch (error) {
      for (const listener of this.#listeners) closeQuietly(listener);
      for (const service of this.#udp) service.close();
      throw error instanceof ServiceListenError
        ? error
        : new ServiceListenError("a service", 0, error);
    }
    this.addr = this.#listener.addr;
    const accepting = Promise.all([
      this.#acceptLoop(this.#listener, "jam"),
      ...this.#listeners.slice(1).map((listener, i) =>
        this.#acceptLoop(listener, this.#tcpServices[i])
      ),
      ...this.#udp.map((service) => service.done),
    ]);
    this.finished = Promise.all([accepting, this.#drained.promise]).then(() => {});
    this.#peers?.answer(this.stopping);
    this.#timers.push(setInterval(() => this.#sweep(), this.#sweepEveryMs));
    if (settings.statsInterval > 0 && this.logger.enabled("info")) {
      this.#timers.push(logSummaries(this.stats, this.logger, settings.statsInterval));
    }
  }

  /**
   * Binds the Daytime and Time listeners (TCP and, unless `udp` is off, UDP on the same
   * port number) and the SNTP socket. Port 0 picks a number free for both transports.
   */
  #listenServices(settings: ServerSettings, fallback: boolean): void {
    const hostname = this.#listener.addr.hostname;
    const where = (transport: string, protocol: string, port: number) =>
      `${formatAddress({ transport: "tcp", hostname, port })} (${protocol}, ${transport})`;
    const both = (protocol: "daytime" | "time", wanted: number) => {
      for (let attempt = 0;; attempt++) {
        let listener: Deno.TcpListener;
        try {
          listener = listen(settings, this.logger, fallback, wanted);
        } catch (error) {
          throw new ServiceListenError(where("TCP", protocol, wanted), wanted, error);
        }
        const port = listener.addr.port;
        if (!settings.udp) return this.#addTcp(listener, protocol, port);
        try {
          this.#addUdp(protocol, hostname, port);
          return this.#addTcp(listener, protocol, port);
        } catch (error) {
          closeQuietly(listener);
          // Port 0: the number free for TCP was taken for UDP; try another.
          if (wanted !== 0 || !(error instanceof Deno.errors.AddrInUse) || attempt >= 20) {
            throw new ServiceListenError(where("UDP", protocol, port), port, error);
          }
        }
      }
    };
    if (settings.daytimePort !== null) both("daytime", settings.daytimePort);
    if (settings.timePort !== null) both("time", settings.timePort);
    if (settings.ntpPort !== null && settings.udp) {
      try {
        this.ports.ntp = this.#addUdp("ntp", hostname, settings.ntpPort).port;
      } catch (error) {
        throw new ServiceListenError(
          where("UDP", "SNTP", settings.ntpPort),
          settings.ntpPort,
          error,
        );
      }
    } else if (settings.ntpPort !== null) this.ports.ntp = settings.ntpPort;
  }

  /** What each listener after the first serves, in order. */
  readonly #tcpServices: TcpService[] = [];

  #addTcp(listener: Deno.TcpListener, protocol: "daytime" | "time", port: number): void {
    this.#listeners.push(listener);
    this.#tcpServices.push(protocol);
    this.ports[protocol] = port;
  }

  #addUdp(protocol: UdpProtocol, hostname: string, port: number): UdpListener {
    const reusePort = this.#settings.reusePort;
    const service = listenUdp(this.#udpEngine, protocol, { hostname, port, reusePort }, this);
    this.#udp.push(service);
    return service;
  }

  /** Which UDP engine serves: `mmsg` (batched, FFI) or `deno` (`Deno.listenDatagram`). */
  get udpEngine(): "deno" | "mmsg" {
    return this.#udpEngine;
  }

  shutdown(): Promise<void> {
    if (this.#shutdown) return this.#shutdown;
    this.#stopAccepting.abort();
    for (const listener of this.#listeners) closeQuietly(listener);
    for (const service of this.#udp) service.close();
    for (const timer of this.#timers) clearInterval(timer);
    this.ntpTime.close();
    // A client waiting for a request is owed nothing, nor is one lingering after its last
    // answer: its pending read has drained what it sent, so closing it resets nothing.
    // Connections still writing close after their last write, and linger as usual, since
    // requests they have not read yet would turn an immediate close into a reset.
    for (const connection of this.table) {
      const state = connection.state;
      if (state === "reading" || state === "header" || state === "lingering") {
        this.table.close(connection, "shutdown");
      }
    }
    if (this.table.size === 0) this.#drained.resolve();
    const force = setTimeout(() => {
      let busy = 0;
      for (const connection of this.table) if (connection.state === "writing") busy++;
      if (busy > 0) {
        this.logger.warn("shutdown timeout; closing connections still busy", {
          connections: busy,
          lingering: this.table.size - busy || undefined,
        });
      }
      for (const connection of this.table) this.table.close(connection, "shutdown timeout");
    }, this.#settings.shutdownTimeout * 1000);
    this.#shutdown = this.finished.finally(() => clearTimeout(force));
    return this.#shutdown;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  async #acceptLoop(listener: Deno.TcpListener, service: TcpService): Promise<void> {
    const signal = this.stopping;
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
          this.stats.acceptAborted++;
          continue;
        }
        // Out of descriptors or memory: back off, but retry as soon as a connection closes.
        this.stats.acceptExhausted++;
        // Log once per streak, at most every 10 s: each freed descriptor can end a streak.
        if (backoff === 0 && performance.now() - this.#lastShortageLog >= SHORTAGE_LOG_EVERY_MS) {
          this.#lastShortageLog = performance.now();
          const context = { connections: this.table.size, maxConnections: this.limits.max };
          const [msg, fields] = shortageWarning(error, context);
          this.logger.warn(msg, fields);
        }
        backoff = Math.min(1000, backoff === 0 ? 5 : backoff * 2);
        await this.#waitForDescriptor(backoff, signal);
        continue;
      }
      if (performance.now() - this.table.clock >= ACCEPT_TICK_MS) this.table.tick();
      this.#admit(conn, service);
    }
  }

  /** Resolves after `ms`, when a connection closes, or when accepting stops. */
  async #waitForDescriptor(ms: number, signal: AbortSignal): Promise<void> {
    const freed = new AbortController();
    this.#descriptorFreed = () => freed.abort();
    await delay(ms, AbortSignal.any([signal, freed.signal]));
    this.#descriptorFreed = null;
  }

  /**
   * Counts a new connection against `maxConnections` and serves it. At the limit, the
   * connection silent the longest makes room if it has been silent long enough and the
   * newcomer may take its place; with workers, the others may make room instead.
   * Otherwise the newcomer hears `ERR server busy`.
   */
  #admit(conn: Deno.TcpConn, service: TcpService): void {
    if (this.limits.take()) return this.#serve(conn, service);
    this.table.tick();
    // Behind a balancer the client's address comes later, in the PROXY header.
    const address = this.proxyProtocol ? null : clientHost(conn.remoteAddr.hostname);
    if (this.#eviction.evictOldest(address) && this.limits.take()) {
      return this.#serve(conn, service);
    }
    if (this.#peers?.mayAsk(this.limits.holds(address))) {
      this.#peers.ask(() => this.limits.take(), this.stopping).then((taken) =>
        taken ? this.#serve(conn, service) : this.#refuse(conn)
      );
      return;
    }
    this.#refuse(conn);
  }

  #refuse(conn: Deno.TcpConn): void {
    this.stats.refusedBusy++;
    if (this.debug) {
      this.logger.debug("connection refused: server busy", {
        peer: formatAddress(conn.remoteAddr),
      });
    }
    // The answer fits in any socket buffer, so the write does not wait for the client.
    conn.write(ERR_SERVER_BUSY).catch(() => {}).finally(() => {
      closeQuietly(conn);
      this.#descriptorFreed?.();
    });
  }

  #serve(conn: Deno.TcpConn, service: TcpService): void {
    const connection = new Connection(conn, this, service);
    this.table.add(connection);
    this.stats.connectionsOpen = this.table.size;
    this.stats.connectionsTotal++;
    connection.serve();
  }

  /** A connection is closed and done with (its `serve()` is ending). */
  ended(connection: Connection, reason: CloseReason): void {
    this.table.delete(connection);
    this.stats.connectionsOpen = this.table.size;
    this.#descriptorFreed?.();
    if (this.debug) this.logger.debug("connection closed", { peer: connection.peer(), reason });
    if (this.table.size === 0 && this.stopping.aborted) this.#drained.resolve();
  }

  /**
   * Closes connections past their deadline, oldest first in each list, so the sweep
   * costs what it closes: idle readers and stuck writers after the idle timeout (or
   * sooner under pressure), slow PROXY headers, and lingering connections.
   */
  #sweep(): void {
    const table = this.table;
    table.tick();
    const now = table.clock;
    // Stamps lag the truth by up to one sweep: allow for that, so nothing closes early.
    const slack = this.#sweepEveryMs;
    const { idleTimeout, proxyHeaderTimeout } = this.#settings;
    if (idleTimeout > 0) {
      const deadline = now - idleTimeout * 1000 - slack;
      const counted = (connection: Connection) => {
        this.stats.closedIdle++;
        if (this.debug) this.logger.debug("idle timeout", { peer: connection.peer() });
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
