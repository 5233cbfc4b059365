// The server: what its TCP and UDP sides share, the ports they listen on, and one order to stop them.

import { AccessList } from "./access.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { closeQuietly, formatAddress } from "../lib/net.ts";
import { TimeAnswer } from "../protocol.ts";
import {
  ONE_ANSWER_RATE_LIMIT,
  resolveServerOptions,
  type ServerOptions,
  type ServerSettings,
  type ServicePorts,
  tcpSettings,
} from "./server_options.ts";
import { newServerStats, type ServerStats } from "./stats.ts";
import { RateLimiter, type RateLimitOptions } from "./udp/rate_limit.ts";
import type { TcpEngine, TcpService } from "./tcp/host.ts";
import { TcpServer } from "./tcp/server.ts";
import {
  chooseUdpEngine,
  listenUdp,
  type UdpHost,
  type UdpListener,
  type UdpProtocol,
} from "./udp/services.ts";
import { type NtsHost, NtsService } from "./nts/service.ts";
import { NtsError } from "../nts/certificate.ts";
import { DaytimeAnswer } from "../time/daytime.ts";
import { TimeSource } from "../time/time_source.ts";
import { Rfc868Answer } from "../time/rfc868.ts";
import { RoughtimeService } from "./roughtime/service.ts";
import { keyPairFromSeed } from "../roughtime/response.ts";

export {
  DEFAULTS,
  type NtsOptions,
  ONE_ANSWER_RATE_LIMIT,
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
  /** Which TCP engine serves the line protocol: `deno` (`Deno.listen`) or `epoll` (FFI). */
  readonly tcpEngine: TcpEngine;
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
  /**
   * Applies new options while serving (a reload), for what changes without a new
   * socket: who is served (`allow`, `deny`), the UDP rate limit and Kiss-o'-Death, the
   * TCP limits, timeouts and fairness, `shutdownTimeout`, `ntpStratum`, and NTS-KE's
   * rate, `ntpServer` and certificate (reloaded if its files changed); and the debug
   * log, as the logger's owner has set it. The rest (addresses, ports, engines,
   * `maxLine`, `proxyProtocol`, `timeZone`, `ntpClock`, the NTS master key) stays as
   * started. Nothing open is closed, no cookie or key dropped. Throws, changing nothing,
   * when an access list or the certificate does not load.
   */
  reconfigure(options: ServerOptions): void;
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

function isSetupError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse ||
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}

/**
 * Binds with `bind` on the settings' host; where the host was left to its default `::`
 * and IPv6 is off, on IPv4 instead, with a warning.
 */
function bindWithFallback<T>(
  settings: ServerSettings,
  logger: Logger,
  fallback: boolean,
  bind: (hostname: string) => T,
): T {
  try {
    return bind(settings.hostname);
  } catch (error) {
    if (!fallback || isSetupError(error)) throw error;
    logger.warn("IPv6 is unavailable; listening on IPv4 only", {
      error: error instanceof Error ? error.message : String(error),
    });
    return bind("0.0.0.0");
  }
}

function listen(
  settings: ServerSettings,
  logger: Logger,
  fallback: boolean,
  port = settings.port,
): Deno.TcpListener {
  const reusePort = settings.reusePort;
  return bindWithFallback(
    settings,
    logger,
    fallback,
    (hostname) => Deno.listen({ hostname, port, transport: "tcp", reusePort }),
  );
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

/** NTS, when it is on; throws when it is asked for without the SNTP service it protects. */
function ntsService(
  settings: ServerSettings,
  host: Omit<NtsHost, "now" | "fairness"> & { now?: () => number },
): NtsService | null {
  if (settings.nts === null) return null;
  if (settings.ntpPort === null) {
    throw new TypeError("nts needs ntpPort: NTS protects the SNTP service's replies");
  }
  const fairness = settings.fairness;
  return new NtsService(settings.nts, { ...host, fairness, now: host.now ?? Date.now });
}

/** The time source: the clock SNTP stamps with and what it claims, shown in `stats`. */
function timeSource(
  settings: ServerSettings,
  options: ServerOptions,
  logger: Logger,
  stats: ServerStats,
): TimeSource {
  return new TimeSource({
    ntp: settings.ntpPort !== null,
    stratum: settings.ntpStratum,
    source: settings.ntpClock,
    clock: options.preciseClock,
    now: options.now,
    kernelClock: options.kernelClock,
    logger,
    gauges: settings.ntpPort === null ? undefined : stats,
  });
}

/** Roughtime, when its port is given; throws when it is asked for without its key. */
function roughtimeService(
  settings: ServerSettings,
  stats: ServerStats,
  logger: Logger,
  time: TimeSource,
): RoughtimeService | null {
  if (settings.roughtimePort === null) return null;
  if (settings.roughtimeKey === null) {
    throw new TypeError(
      "roughtimePort needs roughtimeKey: the long-term key responses are signed under",
    );
  }
  return new RoughtimeService(keyPairFromSeed(settings.roughtimeKey), {
    stats,
    logger,
    clock: () => ({
      now: time.clock.now(),
      rootDispersion: time.info.rootDispersion,
      synchronised: time.info.leap !== 3,
    }),
  });
}

/**
 * The UDP services' per-address rate limiter: `--rate-limit`'s, which every UDP service
 * obeys; or, without it, {@linkcode ONE_ANSWER_RATE_LIMIT} for Daytime and Time alone,
 * when either is on. Null when neither applies.
 */
function udpRateLimits(settings: ServerSettings): RateLimitOptions | null {
  const { rateLimit, maxClients } = settings;
  if (rateLimit !== null) {
    return {
      interval: rateLimit.interval,
      burst: rateLimit.burst,
      leak: settings.rateLeak,
      kissOfDeath: settings.kissOfDeath,
      maxClients,
    };
  }
  if (settings.daytimePort === null && settings.timePort === null) return null;
  return { ...ONE_ANSWER_RATE_LIMIT, leak: 0, kissOfDeath: false, maxClients };
}

/**
 * Composes the server: what both sides share (counters, logs, answers, who is served,
 * the time source), the ports bound, the TCP side and the UDP services; and stops them
 * in one order, written here.
 */
class Server implements TimeServer {
  readonly stats: ServerStats = newServerStats();
  readonly addr: Deno.NetAddr;
  readonly ports: ServicePorts = {
    daytime: null,
    time: null,
    ntp: null,
    ntsKe: null,
    roughtime: null,
  };
  readonly finished: Promise<void>;
  readonly udpEngine: "deno" | "mmsg";
  readonly tcpEngine: TcpEngine;
  readonly #settings: ServerSettings;
  readonly #logger: Logger;
  readonly #tcp: TcpServer;
  readonly #udpHost: UdpHost;
  readonly #access: AccessList;
  readonly #udp: UdpListener[] = [];
  readonly #timeSource: TimeSource;
  readonly #nts: NtsService | null;
  readonly #roughtime: RoughtimeService | null;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  #shutdown: Promise<void> | null = null;

  constructor(options: ServerOptions) {
    const settings = this.#settings = resolveServerOptions(options);
    const logger = this.#logger = options.logger ?? createLogger({ level: "warn" });
    const { timeZone, now } = options;
    const daytimeAnswer = new DaytimeAnswer({ timeZone, now });
    const rfc868Answer = new Rfc868Answer(now);
    const access = this.#access = AccessList.parse(settings.allow, settings.deny);
    const limits = udpRateLimits(settings);
    this.#timeSource = timeSource(settings, options, logger, this.stats);
    this.udpEngine = chooseUdpEngine(settings.udpEngine, settings.hostname);
    const nts = this.#nts = ntsService(settings, { stats: this.stats, logger, access, now });
    this.#udpHost = {
      stats: this.stats,
      logger,
      access,
      limiter: limits === null ? null : new RateLimiter(limits),
      limitNtp: settings.rateLimit !== null,
      daytimeAnswer,
      rfc868Answer,
      ntpTime: this.#timeSource,
      ports: this.ports,
      nts: nts?.responder ?? null,
      roughtime: this.#roughtime = roughtimeService(settings, this.stats, logger, this.#timeSource),
    };
    this.#tcp = new TcpServer(tcpSettings(settings), {
      stats: this.stats,
      logger,
      jamAnswer: new TimeAnswer({ timeZone, now }),
      daytimeAnswer,
      rfc868Answer,
      access,
      roughtime: this.#roughtime,
      sharedConnections: options.sharedConnections,
    });
    const fallback = options.hostname === undefined;
    const tcpListeners: [Deno.TcpListener, TcpService][] = [];
    this.tcpEngine = settings.tcpEngine;
    let bound = false;
    try {
      if (settings.tcpEngine === "epoll") {
        this.addr = bindWithFallback(
          settings,
          logger,
          fallback,
          (hostname) => this.#tcp.listenEpoll(hostname, settings.port),
        );
      } else {
        const jam = listen(settings, logger, fallback);
        tcpListeners.push([jam, "jam"]);
        this.addr = jam.addr;
      }
      bound = true;
      this.#listenServices(fallback, tcpListeners);
    } catch (error) {
      for (const [listener] of tcpListeners) closeQuietly(listener);
      for (const service of this.#udp) service.close();
      void nts?.close();
      this.#roughtime?.close();
      this.#timeSource.close();
      void this.#tcp.drain();
      if (!bound) throw error;
      throw error instanceof ServiceListenError || error instanceof NtsError
        ? error
        : new ServiceListenError("a service", 0, error);
    }
    for (const [listener, service] of tcpListeners) this.#tcp.serve(listener, service);
    this.finished = Promise.all([this.#tcp.finished, ...this.#udp.map((udp) => udp.done)])
      .then(() => {});
    if (settings.statsInterval > 0 && logger.enabled("info")) {
      this.#timers.push(logSummaries(this.stats, logger, settings.statsInterval));
    }
  }

  /**
   * Binds the Daytime, Time and Roughtime listeners (TCP and, unless `udp` is off, UDP on
   * the same port number) and the SNTP socket. Port 0 picks a number free for both transports.
   */
  #listenServices(fallback: boolean, tcp: [Deno.TcpListener, TcpService][]): void {
    const settings = this.#settings;
    const hostname = this.addr.hostname;
    const where = (transport: string, protocol: string, port: number) =>
      `${formatAddress({ transport: "tcp", hostname, port })} (${protocol}, ${transport})`;
    const both = (protocol: "daytime" | "time" | "roughtime", wanted: number) => {
      for (let attempt = 0;; attempt++) {
        let listener: Deno.TcpListener;
        try {
          listener = listen(settings, this.#logger, fallback, wanted);
        } catch (error) {
          throw new ServiceListenError(where("TCP", protocol, wanted), wanted, error);
        }
        const port = listener.addr.port;
        try {
          if (settings.udp) this.#addUdp(protocol, hostname, port);
          tcp.push([listener, protocol]);
          this.ports[protocol] = port;
          return;
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
    if (settings.roughtimePort !== null) both("roughtime", settings.roughtimePort);
    if (this.#nts !== null && settings.nts !== null) {
      try {
        this.#nts.listen(hostname, this.ports.ntp ?? 123);
      } catch (error) {
        if (error instanceof NtsError) throw error;
        const port = settings.nts.kePort;
        throw new ServiceListenError(where("TCP", "NTS-KE", port), port, error);
      }
      this.ports.ntsKe = this.#nts.kePort ?? settings.nts.kePort;
    }
  }

  #addUdp(protocol: UdpProtocol, hostname: string, port: number): UdpListener {
    const reusePort = this.#settings.reusePort;
    const where = { hostname, port, reusePort };
    const service = listenUdp(this.udpEngine, protocol, where, this.#udpHost);
    this.#udp.push(service);
    return service;
  }

  reconfigure(options: ServerOptions): void {
    const running = this.#settings;
    const next = resolveServerOptions({
      ...options,
      daytimePort: running.daytimePort,
      timePort: running.timePort,
    });
    AccessList.parse(next.allow, next.deny);
    if (next.nts !== null) this.#nts?.reconfigure(next.nts, next.fairness);
    this.#access.replace(next.allow, next.deny);
    const host = this.#udpHost;
    const limits = udpRateLimits(next);
    if (limits !== null && host.limiter !== null) host.limiter.configure(limits);
    else host.limiter = limits === null ? null : new RateLimiter(limits);
    host.limitNtp = next.rateLimit !== null;
    this.#tcp.reconfigure(tcpSettings(next));
    this.#timeSource.setStratum(next.ntpStratum);
  }

  /** Stops, in this order: accepting and the TCP drain, the UDP services, the clock's timers. */
  shutdown(): Promise<void> {
    if (this.#shutdown) return this.#shutdown;
    const drained = this.#tcp.drain();
    for (const service of this.#udp) service.close();
    const nts = this.#nts?.close();
    this.#roughtime?.close();
    for (const timer of this.#timers) clearInterval(timer);
    this.#timeSource.close();
    this.#shutdown = Promise.all([drained, this.finished, nts]).then(() => {});
    return this.#shutdown;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}
