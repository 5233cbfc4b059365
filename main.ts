// The command line: parse flags, start the server, wire signals and logging.

import { parseArgs } from "node:util";
import config from "./deno.json" with { type: "json" };
import {
  createLogger,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFields,
  type LogFormat,
  type Logger,
  type LogLevel,
} from "./lib/log.ts";
import { parseHostPort, serveMetrics } from "./server/metrics.ts";
import { type ServerStats, sumStats } from "./server/stats.ts";
import { startWorkers, WorkerStartError } from "./server/workers.ts";
import { isValidTimeZone } from "./protocol.ts";
import { formatAddress } from "./lib/net.ts";
import {
  DEFAULTS,
  resolveServerOptions,
  serve,
  type ServerOptions,
  ServiceListenError,
  type ServicePorts,
} from "./server/server.ts";
import { REPEAT_WINDOW_MS, StopSignals } from "./lib/stop_signals.ts";
import { UsageError } from "./lib/usage.ts";
import { parseCidr } from "./server/access.ts";
import { mmsgSupported } from "./server/udp_mmsg.ts";
import { askTime, CLIENT_HELP, ClientError, parseClientCommandLine } from "./client/client.ts";

/** The program's version, from `deno.json`. */
export const VERSION: string = config.version;

/** The rate limit's burst when `--rate-limit` is given without `--rate-burst` (chrony's). */
const RATE_DEFAULTS = { burst: 8 } as const;

/** The defaults of the command line's own flags; the server's are {@linkcode DEFAULTS}. */
const COMMAND_LINE_DEFAULTS = { logLevel: "info", logFormat: "text", workers: 1 } as const;

/** The text `--help` prints. */
export const HELP =
  `time-server ${VERSION}: a TCP time server. TIME is answered with "JAM hh:mm:ss", QUIT closes.

Usage: time-server [options]            run the server
       time-server client [options]     ask a server for the time (see time-server client --help)

Options:
  --host HOST                 address to listen on (default ${DEFAULTS.hostname}, every IPv4 and IPv6 address)
  -p, --port PORT             TCP port, 0 = any free port (default ${DEFAULTS.port}, or $PORT)
  --tz ZONE                   IANA time zone of the answers, e.g. UTC, Asia/Jakarta (default: local)
  --max-line BYTES            longest request line without CR LF (default ${DEFAULTS.maxLine})
  --idle-timeout SECONDS      close a connection with no request for this long, 0 = never (default ${DEFAULTS.idleTimeout})
  --max-connections N         connections served at once (default ${DEFAULTS.maxConnections}); when full, the
                              connection silent the longest makes room, else "ERR server busy"
  --evict-after SECONDS       silence after which a connection may make room when full (default ${DEFAULTS.evictAfter})
  --shutdown-timeout SECONDS  on SIGINT/SIGTERM, wait this long for owed answers (default ${DEFAULTS.shutdownTimeout})
  --log-level LEVEL           ${LOG_LEVELS.join(", ")} (default ${COMMAND_LINE_DEFAULTS.logLevel})
  --log-format FORMAT         ${LOG_FORMATS.join(", ")} (default ${COMMAND_LINE_DEFAULTS.logFormat})
  --max-connections-per-ip N  connections one client address may hold, 0 = no limit (default ${DEFAULTS.maxConnectionsPerIp})
  --proxy-protocol            expect a HAProxy PROXY header (v1 or v2) on every connection
  --workers N|auto            event loops sharing the port, Linux only (default ${COMMAND_LINE_DEFAULTS.workers}; auto = CPUs)
  --metrics HOST:PORT         serve Prometheus metrics at http://HOST:PORT/metrics (default off)

Standard time protocols (each off unless its port is given; 0 = any free port):
  --daytime-port PORT         Daytime (RFC 867) on TCP and UDP: "Wed Nov 25 03:05:47 2026"
  --time-port PORT            Time (RFC 868) on TCP and UDP: seconds since 1900, 4 bytes
  --ntp-port PORT             SNTP (RFC 4330) server on UDP, for ntpdate, chronyd, rdate -n
  --ntp-stratum N             stratum SNTP replies claim, 1-15, reference ID LOCL (default ${DEFAULTS.ntpStratum})
  --ntp-clock SOURCE          what SNTP says of synchronisation: local (always synchronised,
                              as chrony's local stratum) or kernel (adjtimex's state: leap
                              seconds, unsynchronised; Linux, FFI for libc) (default ${DEFAULTS.ntpClock})
  --udp-engine ENGINE         auto, mmsg (batched, Linux, needs FFI for libc) or deno (default ${DEFAULTS.udpEngine})

Who is served (every listener):
  --allow CIDR[,CIDR…]        serve only these address ranges (repeatable; default everyone)
  --deny CIDR[,CIDR…]         never serve these ranges, even if allowed (repeatable)
  --rate-limit SECONDS        UDP: a client may average one request per SECONDS (default off)
  --rate-burst N              UDP: requests a client may send at once within the limit (default ${RATE_DEFAULTS.burst})
  --rate-leak N               UDP: answer 1 in 2^N requests over the limit anyway, 0 = none (default ${DEFAULTS.rateLeak})
  --kod                       NTP: tell a client over the limit to slow down (Kiss-o'-Death RATE)
  --max-clients N             UDP: client addresses the rate limit remembers (default ${DEFAULTS.maxClients})
  -h, --help                  print this help and exit
  -V, --version               print the version and exit

Exit codes: 0 stopped by a signal or --help/--version, 1 could not start, 2 bad command line.`;

/** What the command line asks for, as returned by {@linkcode parseCommandLine}. */
export type Invocation =
  | { readonly action: "help" }
  | { readonly action: "version" }
  | {
    readonly action: "serve";
    readonly options: ServerOptions;
    readonly logLevel: LogLevel;
    readonly logFormat: LogFormat;
    /** How many event loops serve the port (Workers with SO_REUSEPORT). */
    readonly workers: number;
    /** Where to serve Prometheus metrics, or null for nowhere. */
    readonly metrics: { hostname: string; port: number } | null;
  };

const FLAGS = {
  host: { type: "string" },
  port: { type: "string", short: "p" },
  tz: { type: "string" },
  "max-line": { type: "string" },
  "idle-timeout": { type: "string" },
  "max-connections": { type: "string" },
  "evict-after": { type: "string" },
  "shutdown-timeout": { type: "string" },
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  "max-connections-per-ip": { type: "string" },
  "proxy-protocol": { type: "boolean" },
  workers: { type: "string" },
  metrics: { type: "string" },
  "daytime-port": { type: "string" },
  "time-port": { type: "string" },
  "ntp-port": { type: "string" },
  "ntp-stratum": { type: "string" },
  "udp-engine": { type: "string" },
  "ntp-clock": { type: "string" },
  allow: { type: "string", multiple: true },
  deny: { type: "string", multiple: true },
  "rate-limit": { type: "string" },
  "rate-burst": { type: "string" },
  "rate-leak": { type: "string" },
  kod: { type: "boolean" },
  "max-clients": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/**
 * Turns the command line (and `PORT` from the environment) into what to do.
 * Throws {@linkcode UsageError} with a one-line message for any mistake.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCommandLine } from "./main.ts";
 *
 * const invocation = parseCommandLine(["--port", "4000", "--tz", "UTC"]);
 * assert.equal(invocation.action, "serve");
 * if (invocation.action === "serve") {
 *   assert.deepEqual(invocation.options, { port: 4000, timeZone: "UTC" });
 * }
 * ```
 */
export function parseCommandLine(
  args: string[],
  env: { PORT?: string } = {},
  platform: { os: string; cpus: number; mmsg?: boolean } = {
    os: Deno.build.os,
    cpus: navigator.hardwareConcurrency,
  },
): Invocation {
  let values;
  try {
    ({ values } = parseArgs({ args, options: FLAGS, strict: true, allowPositionals: false }));
  } catch (error) {
    throw UsageError.fromParseArgs(error);
  }
  if (values.help) return { action: "help" };
  if (values.version) return { action: "version" };

  const options: ServerOptions = {};
  if (values.host !== undefined) {
    if (values.host === "") throw new UsageError("--host must not be empty");
    options.hostname = values.host;
  }
  if (values.port !== undefined) options.port = UsageError.integer("--port", values.port, 0, 65535);
  else if (env.PORT !== undefined && env.PORT !== "") {
    options.port = UsageError.integer("PORT (environment)", env.PORT, 0, 65535);
  }
  if (values.tz !== undefined) {
    if (!isValidTimeZone(values.tz)) {
      throw new UsageError(
        `--tz must be an IANA time zone such as UTC or Asia/Jakarta, got "${values.tz}"`,
      );
    }
    options.timeZone = values.tz;
  }
  if (values["max-line"] !== undefined) {
    options.maxLine = UsageError.integer("--max-line", values["max-line"], 1, 1048576);
  }
  if (values["idle-timeout"] !== undefined) {
    options.idleTimeout = UsageError.seconds("--idle-timeout", values["idle-timeout"]);
  }
  if (values["max-connections"] !== undefined) {
    options.maxConnections = UsageError.integer(
      "--max-connections",
      values["max-connections"],
      1,
      10000000,
    );
  }
  if (values["evict-after"] !== undefined) {
    options.evictAfter = UsageError.seconds("--evict-after", values["evict-after"]);
  }
  if (values["shutdown-timeout"] !== undefined) {
    options.shutdownTimeout = UsageError.seconds("--shutdown-timeout", values["shutdown-timeout"]);
  }
  if (values["max-connections-per-ip"] !== undefined) {
    options.maxConnectionsPerIp = UsageError.integer(
      "--max-connections-per-ip",
      values["max-connections-per-ip"],
      0,
      10000000,
    );
  }
  if (values["proxy-protocol"]) options.proxyProtocol = true;
  parseTimeProtocolFlags(values, options, platform);
  let workers: number = COMMAND_LINE_DEFAULTS.workers;
  if (values.workers !== undefined) {
    workers = values.workers === "auto"
      ? platform.cpus
      : UsageError.integer("--workers", values.workers, 1, 1024);
    if (workers > 1 && platform.os !== "linux") {
      throw new UsageError(
        `--workers above 1 needs Linux, whose SO_REUSEPORT spreads connections over the workers; ` +
          `on ${platform.os} every connection would go to one of them`,
      );
    }
  }
  let metrics = null;
  if (values.metrics !== undefined) {
    metrics = parseHostPort(values.metrics);
    if (metrics === null) {
      throw new UsageError(
        `--metrics must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464, got "${values.metrics}"`,
      );
    }
  }
  const logLevel = UsageError.oneOf(
    "--log-level",
    values["log-level"] ?? COMMAND_LINE_DEFAULTS.logLevel,
    LOG_LEVELS,
  );
  const logFormat = UsageError.oneOf(
    "--log-format",
    values["log-format"] ?? COMMAND_LINE_DEFAULTS.logFormat,
    LOG_FORMATS,
  );
  return { action: "serve", options, logLevel, logFormat, workers, metrics };
}

/** The flags of the standard time protocols and of who is served, into `options`. */
function parseTimeProtocolFlags(
  values: Partial<Record<keyof typeof FLAGS, string | string[] | boolean>>,
  options: ServerOptions,
  platform: { mmsg?: boolean },
): void {
  const text = (name: keyof typeof FLAGS) => values[name] as string | undefined;
  const ports = { "daytime-port": "daytimePort", "time-port": "timePort", "ntp-port": "ntpPort" };
  for (const [flag, option] of Object.entries(ports) as [keyof typeof ports, "ntpPort"][]) {
    const value = text(flag);
    if (value !== undefined) options[option] = UsageError.integer(`--${flag}`, value, 0, 65535);
  }
  if (text("ntp-stratum") !== undefined) {
    options.ntpStratum = UsageError.integer("--ntp-stratum", text("ntp-stratum")!, 1, 15);
  }
  if (text("ntp-clock") !== undefined) {
    options.ntpClock = UsageError.oneOf("--ntp-clock", text("ntp-clock")!, NTP_CLOCKS);
    if (options.ntpClock === "kernel" && !(platform.mmsg ?? mmsgSupported())) {
      throw new UsageError(
        "--ntp-clock kernel needs Linux and FFI permission for libc, to call adjtimex " +
          "(deno task start and the binary grant it)",
      );
    }
  }
  if (text("udp-engine") !== undefined) {
    options.udpEngine = UsageError.oneOf("--udp-engine", text("udp-engine")!, UDP_ENGINES);
    if (options.udpEngine === "mmsg" && !(platform.mmsg ?? mmsgSupported())) {
      throw new UsageError(
        "--udp-engine mmsg needs Linux on x86_64 or aarch64 and FFI permission for libc " +
          "(deno task start and the binary grant it)",
      );
    }
  }
  for (const name of ["allow", "deny"] as const) {
    const lists = values[name] as string[] | undefined;
    if (lists === undefined) continue;
    const ranges = lists.flatMap((list) => list.split(",")).map((range) => range.trim());
    for (const range of ranges) {
      if (parseCidr(range) === null) {
        throw new UsageError(
          `--${name} takes addresses or CIDR ranges such as 192.0.2.0/24 or 2001:db8::/32, got "${range}"`,
        );
      }
    }
    options[name] = ranges;
  }
  const rateFlags = ["rate-burst", "rate-leak", "kod", "max-clients"] as const;
  if (text("rate-limit") === undefined) {
    const orphan = rateFlags.find((flag) => values[flag] !== undefined);
    if (orphan) throw new UsageError(`--${orphan} needs --rate-limit`);
    return;
  }
  const interval = UsageError.seconds("--rate-limit", text("rate-limit")!);
  if (interval <= 0) {
    throw new UsageError(`--rate-limit must be above 0 seconds, got "${text("rate-limit")}"`);
  }
  const burst = text("rate-burst") === undefined
    ? RATE_DEFAULTS.burst
    : UsageError.integer("--rate-burst", text("rate-burst")!, 1, 1000);
  options.rateLimit = { interval, burst };
  if (text("rate-leak") !== undefined) {
    options.rateLeak = UsageError.integer("--rate-leak", text("rate-leak")!, 0, 16);
  }
  if (values.kod) options.kissOfDeath = true;
  if (text("max-clients") !== undefined) {
    options.maxClients = UsageError.integer("--max-clients", text("max-clients")!, 1, 10000000);
  }
}

/** The values `--ntp-clock` takes. */
const NTP_CLOCKS = ["local", "kernel"] as const;

/** The values `--udp-engine` takes. */
const UDP_ENGINES = ["auto", "mmsg", "deno"] as const;

function readPort(): { PORT?: string } {
  const permission = Deno.permissions.querySync({ name: "env", variable: "PORT" });
  return permission.state === "granted" ? { PORT: Deno.env.get("PORT") } : {};
}

function describeListenError(error: unknown, name?: string): string {
  if (error instanceof Deno.errors.AddrInUse || name === "AddrInUse") {
    return "address already in use";
  }
  if (error instanceof Deno.errors.PermissionDenied || name === "PermissionDenied") {
    return "permission denied (ports below 1024 need privileges)";
  }
  if (error instanceof Deno.errors.NotCapable) {
    return "network access not granted (run with --allow-net)";
  }
  return error instanceof Error ? error.message : String(error);
}

/** Runs `time-server client`: prints each answer; exit code 0, 1 (failure) or 2 (usage). */
async function runClient(args: string[]): Promise<number> {
  let options;
  try {
    options = parseClientCommandLine(args, readPort());
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server client: ${error.message} (see --help)`);
    return 2;
  }
  if (options === null) {
    console.log(CLIENT_HELP);
    return 0;
  }
  try {
    await askTime({ ...options, onAnswer: (answer) => console.log(answer) });
    return 0;
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    console.error(`time-server client: ${error.message}`);
    return 1;
  }
}

/**
 * Runs the program with the given arguments and resolves with its exit code once
 * the server has stopped (after SIGINT or SIGTERM).
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "client") return await runClient(args.slice(1));
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(args, readPort());
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server: ${error.message} (see --help)`);
    return 2;
  }
  if (invocation.action === "help") {
    console.log(HELP);
    return 0;
  }
  if (invocation.action === "version") {
    console.log(`time-server ${VERSION}`);
    return 0;
  }
  return await runServer(invocation);
}

/** Runs the server (or pool) and its metrics until a signal stops them; the exit code. */
async function runServer(invocation: Invocation & { action: "serve" }): Promise<number> {
  const logger = createLogger({ level: invocation.logLevel, format: invocation.logFormat });
  const { options, workers } = invocation;
  const settings = resolveServerOptions(options);
  let running: Running;
  try {
    running = workers > 1
      ? await startPool(workers, options, invocation.logLevel, invocation.logFormat)
      : startSingle(options, logger);
  } catch (error) {
    if (error instanceof ServiceListenError) {
      console.error(
        `time-server: cannot listen on ${error.where}: ${describeListenError(error.cause)}`,
      );
      return 1;
    }
    const name = error instanceof WorkerStartError ? error.errorName : undefined;
    if (name === "ServiceListenError") {
      console.error(`time-server: ${(error as Error).message}`);
      return 1;
    }
    const where = formatAddress({ transport: "tcp", ...settings });
    console.error(`time-server: cannot listen on ${where}: ${describeListenError(error, name)}`);
    return 1;
  }
  let metrics: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (invocation.metrics) {
    try {
      metrics = serveMetrics(invocation.metrics, running.stats, {
        version: VERSION,
        startTimeSeconds: Math.round(performance.timeOrigin / 1000),
      }, logger);
    } catch (error) {
      await running.stop();
      const address = formatAddress({ transport: "tcp", ...invocation.metrics });
      console.error(
        `time-server: cannot serve metrics on ${address}: ${describeListenError(error)}`,
      );
      return 1;
    }
  }
  logger.info("listening", listeningFields(running, invocation, metrics));
  const last = await stopOnSignal(running, logger);
  await metrics?.shutdown();
  if (workers > 1) {
    last.forEach((stats, worker) =>
      logger.info("worker stopped", {
        worker,
        connectionsTotal: stats.connectionsTotal,
        requestsTime: stats.requestsTime,
        requestsNtp: stats.requestsNtp || undefined,
      })
    );
  }
  logger.info("stopped", { ...sumStats(last) });
  return 0;
}

/** What the "listening" line says: where, and every setting in force. */
function listeningFields(
  running: Running,
  invocation: Invocation & { action: "serve" },
  metrics: Deno.HttpServer<Deno.NetAddr> | undefined,
): LogFields {
  const settings = resolveServerOptions(invocation.options);
  return {
    address: running.address,
    port: running.port,
    version: VERSION,
    pid: Deno.pid,
    workers: invocation.workers,
    tz: invocation.options.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone,
    maxLine: settings.maxLine,
    idleTimeout: settings.idleTimeout,
    maxConnections: settings.maxConnections,
    evictAfter: settings.evictAfter,
    maxConnectionsPerIp: settings.maxConnectionsPerIp,
    proxyProtocol: settings.proxyProtocol,
    shutdownTimeout: settings.shutdownTimeout,
    metrics: metrics ? `http://${formatAddress(metrics.addr)}/metrics` : undefined,
    daytimePort: running.ports.daytime ?? undefined,
    timePort: running.ports.time ?? undefined,
    ntpPort: running.ports.ntp ?? undefined,
    ntpStratum: running.ports.ntp === null ? undefined : settings.ntpStratum,
    ntpClock: running.ports.ntp === null ? undefined : settings.ntpClock,
    udpEngine: Object.values(running.ports).some((port) => port !== null)
      ? running.udpEngine
      : undefined,
    allow: settings.allow.length > 0 ? settings.allow.join(",") : undefined,
    deny: settings.deny.length > 0 ? settings.deny.join(",") : undefined,
    rateLimit: settings.rateLimit
      ? `${settings.rateLimit.interval}s burst ${settings.rateLimit.burst} leak ${settings.rateLeak}` +
        (settings.kissOfDeath ? " kod" : "")
      : undefined,
  };
}

/**
 * Waits for SIGINT or SIGTERM, then stops `running` and resolves with its last
 * counters. A second signal exits at once with code 1, unless it comes within
 * {@linkcode REPEAT_WINDOW_MS} of the first: `deno task` passes on a signal that its
 * process group has already delivered, and one Ctrl-C must not count twice.
 */
async function stopOnSignal(running: Running, logger: Logger): Promise<ServerStats[]> {
  const stopped = Promise.withResolvers<ServerStats[]>();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const policy = new StopSignals();
  const onSignal = (signal: Deno.Signal) => () => {
    const verdict = policy.receive(performance.now());
    if (verdict === "repeat") {
      logger.debug("another signal at once; taken as the same stop", {
        signal,
        windowMs: REPEAT_WINDOW_MS,
      });
      return;
    }
    if (verdict === "force") {
      logger.warn("second signal; exiting now", { signal });
      Deno.exit(1);
    }
    logger.info("shutting down", { signal });
    running.stop().then(stopped.resolve, stopped.reject);
  };
  const handlers = signals.map((signal) => [signal, onSignal(signal)] as const);
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  try {
    return await stopped.promise;
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
}

/** A server or a pool of workers, as main() runs it. */
interface Running {
  readonly address: string;
  readonly port: number;
  readonly ports: ServicePorts;
  readonly udpEngine: "deno" | "mmsg";
  stats(): ServerStats | Promise<ServerStats>;
  /** Drains and stops; resolves with the last counters of each server. */
  stop(): Promise<ServerStats[]>;
}

function startSingle(options: ServerOptions, logger: Logger): Running {
  const server = serve({ ...options, logger });
  return {
    address: formatAddress(server.addr),
    port: server.addr.port,
    ports: server.ports,
    udpEngine: server.udpEngine,
    stats: () => server.stats,
    stop: async () => {
      await server.shutdown();
      return [server.stats];
    },
  };
}

async function startPool(
  count: number,
  options: ServerOptions,
  level: LogLevel,
  format: LogFormat,
): Promise<Running> {
  const pool = await startWorkers(count, options, { level, format });
  const host = resolveServerOptions(options).hostname;
  return {
    address: formatAddress({ transport: "tcp", hostname: host, port: pool.port }),
    port: pool.port,
    ports: pool.ports,
    udpEngine: pool.udpEngine,
    stats: () => pool.stats(),
    stop: () => pool.shutdown(),
  };
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
