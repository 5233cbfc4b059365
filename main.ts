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
import { startWorkers, unreadableModules, WorkerStartError } from "./server/workers.ts";
import { isValidTimeZone } from "./protocol.ts";
import { formatAddress, parseAddress } from "./lib/net.ts";
import {
  DEFAULTS,
  type NtsOptions,
  ONE_ANSWER_RATE_LIMIT,
  resolveServerOptions,
  serve,
  type ServerOptions,
  ServiceListenError,
  type ServicePorts,
} from "./server/server.ts";
import { REPEAT_WINDOW_MS, type StopSignal, StopSignals, WATCHED_ENV } from "./cli/stop_signals.ts";
import { attachNegativeValues, UsageError } from "./lib/usage.ts";
import { parseCidr } from "./server/access.ts";
import { libcMissing } from "./lib/libc.ts";
import { NtsError } from "./nts/certificate.ts";
import {
  DEFAULT_KE_RATE,
  masterKey,
  type NtsFlags,
  ntsMissing,
  parseNtsFlags,
} from "./nts/setup.ts";
import { askTime, CLIENT_HELP, ClientError, parseClientCommandLine } from "./client/client.ts";

/** The program's version, from `deno.json`. */
export const VERSION: string = config.version;

/** The rate limit's burst when `--rate-limit` is given without `--rate-burst` (chrony's). */
const RATE_DEFAULTS = { burst: 8 } as const;

/** The defaults of the command line's own flags; the server's are {@linkcode DEFAULTS}. */
const COMMAND_LINE_DEFAULTS = { logLevel: "info", logFormat: "text", workers: 1 } as const;

/** The most workers per CPU: more event loops than CPUs add memory (tens of MB each), not speed. */
const WORKERS_PER_CPU = 2;

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
  --tcp-engine ENGINE         deno (Deno.listen) or epoll (one epoll loop, Linux, needs FFI for
                              libc; for very many connections) (default ${DEFAULTS.tcpEngine})
  --workers N|auto            event loops sharing the port, Linux only, at most ${WORKERS_PER_CPU} per CPU
                              (default ${COMMAND_LINE_DEFAULTS.workers}; auto = CPUs)
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

Network Time Security (RFC 8915; needs --ntp-port, and GnuTLS and Nettle through FFI):
  --nts-ke-port PORT          NTS key establishment on TCP (the standard is 4460); turns NTS on
  --nts-cert FILE             the TLS certificate chain, PEM, leaf first (reloaded when it changes)
  --nts-key FILE              its private key, PEM
  --nts-keys-file FILE        the master key of the cookies, 64 hex digits, mode 0600, made if
                              missing; without it, cookies die with the process (default none)
  --nts-ke-rate N             key establishments per second one address may start, 0 = no
                              limit (default ${DEFAULT_KE_RATE})
  --nts-ntp-server HOST       where NTS-KE sends NTP, when not to the address NTS-KE was reached on
                              (NTS-KE behind a TCP balancer) (default: that address)

Who is served (every listener):
  --allow CIDR[,CIDR…]        serve only these address ranges (repeatable; default everyone)
  --deny CIDR[,CIDR…]         never serve these ranges, even if allowed (repeatable)
  --rate-limit SECONDS        UDP: a client may average one request per SECONDS (default: SNTP
                              unlimited; Daytime and Time ${ONE_ANSWER_RATE_LIMIT.interval} s, burst ${ONE_ANSWER_RATE_LIMIT.burst})
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
    /** NTS's flags, or null when NTS is off; the master key is read at start. */
    readonly nts: NtsFlags | null;
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
  "tcp-engine": { type: "string" },
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
  "nts-ke-port": { type: "string" },
  "nts-cert": { type: "string" },
  "nts-key": { type: "string" },
  "nts-keys-file": { type: "string" },
  "nts-ke-rate": { type: "string" },
  "nts-ntp-server": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** The flags that take one value (not a switch, not repeatable). */
type ValueFlag = {
  [K in keyof typeof FLAGS]: (typeof FLAGS)[K] extends { type: "string"; multiple: true } ? never
    : (typeof FLAGS)[K] extends { type: "string" } ? K
    : never;
}[keyof typeof FLAGS];

/** The server options that are numbers, each read once from its flag. */
type NumericOption = {
  [K in keyof ServerOptions]-?: ServerOptions[K] extends number | null | undefined ? K : never;
}[keyof ServerOptions];

/**
 * The numeric flags read the same way: a whole number within `range`, or `seconds`, a
 * number of seconds from 0 to a day. The rate limit's flags are read with `--rate-limit`
 * (`parseRateFlags`), whose value they shape.
 */
const NUMERIC_FLAGS: readonly {
  flag: ValueFlag;
  option: NumericOption;
  range: readonly [min: number, max: number] | "seconds";
}[] = [
  { flag: "port", option: "port", range: [0, 65535] },
  { flag: "max-line", option: "maxLine", range: [1, 1048576] },
  { flag: "idle-timeout", option: "idleTimeout", range: "seconds" },
  { flag: "max-connections", option: "maxConnections", range: [1, 10_000_000] },
  { flag: "evict-after", option: "evictAfter", range: "seconds" },
  { flag: "shutdown-timeout", option: "shutdownTimeout", range: "seconds" },
  { flag: "max-connections-per-ip", option: "maxConnectionsPerIp", range: [0, 10_000_000] },
  { flag: "daytime-port", option: "daytimePort", range: [0, 65535] },
  { flag: "time-port", option: "timePort", range: [0, 65535] },
  { flag: "ntp-port", option: "ntpPort", range: [0, 65535] },
  { flag: "ntp-stratum", option: "ntpStratum", range: [1, 15] },
];

/** What the command line checks of the machine; tests pass their own. */
export interface Platform {
  readonly os: string;
  readonly cpus: number;
  /** What libc through FFI lacks here (see `libcMissing`); asked of the machine when absent. */
  readonly libcMissing?: string | null;
}

/** `--workers N`: from 1 to twice the CPUs (at least 2), or throws saying why. */
function readWorkers(text: string, cpus: number): number {
  const max = Math.max(2, WORKERS_PER_CPU * cpus);
  const workers = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(workers >= 1 && workers <= max)) {
    throw new UsageError(
      `--workers must be auto or a whole number from 1 to ${max} (${WORKERS_PER_CPU} per CPU, ` +
        `${cpus} here: more event loops than CPUs only add memory), got "${text}"`,
    );
  }
  return workers;
}

/** Whether two listening addresses can collide on one port: equal, or one of them a wildcard. */
function hostsOverlap(a: string, b: string): boolean {
  const wildcard = (host: string) => host === "::" || host === "0.0.0.0";
  return a === b || wildcard(a) || wildcard(b);
}

/**
 * Rejects two of the server's own listeners on one port and transport: the second bind
 * would fail only after the first had started. Port 0 picks a free port for each.
 */
function checkPortClashes(
  options: ServerOptions,
  portFlag: string,
  metrics: { hostname: string; port: number } | null,
  nts: NtsFlags | null,
): void {
  const host = options.hostname ?? DEFAULTS.hostname;
  const uses = [
    {
      flag: options.port === undefined ? `the default port (${DEFAULTS.port})` : portFlag,
      port: options.port ?? DEFAULTS.port,
      tcp: true,
      udp: false,
    },
    { flag: "--daytime-port", port: options.daytimePort, tcp: true, udp: true },
    { flag: "--time-port", port: options.timePort, tcp: true, udp: true },
    { flag: "--ntp-port", port: options.ntpPort, tcp: false, udp: true },
    { flag: "--nts-ke-port", port: nts?.kePort, tcp: true, udp: false },
  ];
  if (metrics !== null && hostsOverlap(host, metrics.hostname)) {
    uses.push({ flag: "--metrics", port: metrics.port, tcp: true, udp: false });
  }
  for (let i = 0; i < uses.length; i++) {
    for (const other of uses.slice(i + 1)) {
      const use = uses[i];
      if (!use.port || use.port !== other.port) continue;
      if ((use.tcp && other.tcp) || (use.udp && other.udp)) {
        const transport = use.tcp && other.tcp ? "TCP" : "UDP";
        throw new UsageError(
          `${use.flag} and ${other.flag} both ask for ${transport} port ${use.port}: give each its own`,
        );
      }
    }
  }
}

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
  platform: Platform = { os: Deno.build.os, cpus: navigator.hardwareConcurrency },
): Invocation {
  let values;
  try {
    ({ values } = parseArgs({
      args: attachNegativeValues(args, FLAGS),
      options: FLAGS,
      strict: true,
      allowPositionals: false,
    }));
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
  for (const { flag, option, range } of NUMERIC_FLAGS) {
    const text = values[flag];
    if (text === undefined) continue;
    options[option] = range === "seconds"
      ? UsageError.seconds(`--${flag}`, text)
      : UsageError.integer(`--${flag}`, text, range[0], range[1]);
  }
  if (values.port === undefined && env.PORT !== undefined && env.PORT !== "") {
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
  if (values["proxy-protocol"]) options.proxyProtocol = true;
  parseTcpEngine(values["tcp-engine"], options, platform);
  parseTimeProtocolFlags(values, options, platform);
  let workers: number = COMMAND_LINE_DEFAULTS.workers;
  if (values.workers !== undefined) {
    workers = values.workers === "auto"
      ? platform.cpus
      : readWorkers(values.workers, platform.cpus);
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
  const nts = parseNtsFlags(values);
  checkPortClashes(
    options,
    values.port === undefined ? "PORT (environment)" : "--port",
    metrics,
    nts,
  );
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
  return { action: "serve", options, logLevel, logFormat, workers, metrics, nts };
}

/** `--tcp-engine`, into `options`: epoll where it can run, on a literal address. */
function parseTcpEngine(
  value: string | undefined,
  options: ServerOptions,
  platform: Platform,
): void {
  if (value === undefined) return;
  options.tcpEngine = UsageError.oneOf("--tcp-engine", value, TCP_ENGINES);
  if (options.tcpEngine !== "epoll") return;
  const lacking = platform.libcMissing !== undefined ? platform.libcMissing : libcMissing();
  if (lacking !== null) throw new UsageError(`--tcp-engine epoll needs ${lacking}`);
  const host = options.hostname ?? DEFAULTS.hostname;
  if (parseAddress(host) === null) {
    throw new UsageError(
      `--tcp-engine epoll needs --host as an IP address such as 127.0.0.1 or ::, got "${host}"`,
    );
  }
}

/** The flags of the standard time protocols and of who is served, into `options`. */
function parseTimeProtocolFlags(
  values: Partial<Record<keyof typeof FLAGS, string | string[] | boolean>>,
  options: ServerOptions,
  platform: Platform,
): void {
  const text = (name: keyof typeof FLAGS) => values[name] as string | undefined;
  const missing = () => platform.libcMissing !== undefined ? platform.libcMissing : libcMissing();
  if (text("ntp-clock") !== undefined) {
    options.ntpClock = UsageError.oneOf("--ntp-clock", text("ntp-clock")!, NTP_CLOCKS);
    const lacking = options.ntpClock === "kernel" ? missing() : null;
    if (lacking !== null) {
      throw new UsageError(`--ntp-clock kernel calls adjtimex in libc, so it needs ${lacking}`);
    }
  }
  if (text("udp-engine") !== undefined) {
    options.udpEngine = UsageError.oneOf("--udp-engine", text("udp-engine")!, UDP_ENGINES);
    const lacking = options.udpEngine === "mmsg" ? missing() : null;
    if (lacking !== null) throw new UsageError(`--udp-engine mmsg needs ${lacking}`);
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
  parseRateFlags(values, options);
  rejectFlagsWithoutEffect(values);
}

/** A flag that would change nothing is a mistake, as `--kod` without `--rate-limit` is. */
function rejectFlagsWithoutEffect(
  values: Partial<Record<keyof typeof FLAGS, string | string[] | boolean>>,
): void {
  const ntp = values["ntp-port"] !== undefined;
  const udp = ntp || values["daytime-port"] !== undefined || values["time-port"] !== undefined;
  const needs = (flag: keyof typeof FLAGS, what: string, given: boolean) => {
    if (values[flag] !== undefined && !given) throw new UsageError(`--${flag} needs ${what}`);
  };
  const udpService = "a UDP service: --daytime-port, --time-port or --ntp-port";
  needs("ntp-stratum", "--ntp-port: it is what SNTP replies claim", ntp);
  needs("ntp-clock", "--ntp-port: it is what SNTP replies claim", ntp);
  needs("udp-engine", udpService, udp);
  needs("rate-limit", `${udpService} (it limits UDP only)`, udp);
  needs("kod", "--ntp-port: a Kiss-o'-Death is an SNTP reply", ntp);
}

/** `--rate-limit` and the flags that shape it, into `options`. */
function parseRateFlags(
  values: Partial<Record<keyof typeof FLAGS, string | string[] | boolean>>,
  options: ServerOptions,
): void {
  const text = (name: keyof typeof FLAGS) => values[name] as string | undefined;
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

/** The values `--tcp-engine` takes. */
const TCP_ENGINES = ["deno", "epoll"] as const;

/** The values `--udp-engine` takes. */
const UDP_ENGINES = ["auto", "mmsg", "deno"] as const;

/** The warning when `PORT` may be set but cannot be read; `deno task start` and the binary grant it. */
const PORT_UNREADABLE = "PORT from the environment is not read without --allow-env=PORT";

/** `PORT` from the environment, and whether it could be read at all. */
function readPort(): { env: { PORT?: string }; readable: boolean } {
  const permission = Deno.permissions.querySync({ name: "env", variable: "PORT" });
  if (permission.state !== "granted") return { env: {}, readable: false };
  return { env: { PORT: Deno.env.get("PORT") }, readable: true };
}

/** Linux's default range for the ports of client sockets (`net.ipv4.ip_local_port_range`). */
const CLIENT_PORTS = { from: 32768, to: 60999 } as const;

/**
 * Why a listener could not bind, in the project's words. `name` stands for the error
 * when it came from a worker, as a name; `port` is the one asked for.
 */
function describeListenError(error: unknown, port: number, name?: string): string {
  const is = (type: new (...args: never[]) => Error) => error instanceof type || name === type.name;
  if (is(Deno.errors.AddrInUse)) {
    if (Deno.build.os !== "linux" || port < CLIENT_PORTS.from || port > CLIENT_PORTS.to) {
      return "address already in use";
    }
    return `address already in use; ${port} is inside Linux's range for client sockets ` +
      `(${CLIENT_PORTS.from}-${CLIENT_PORTS.to} by default), where an outgoing connection ` +
      `can hold it even when nothing listens: see ss -tan | grep ':${port} '`;
  }
  if (is(Deno.errors.AddrNotAvailable)) {
    return "this machine has no such address (--host takes one of its own, or :: or 0.0.0.0 for all)";
  }
  if (is(Deno.errors.PermissionDenied)) {
    return "permission denied (ports below 1024 need privileges)";
  }
  if (is(Deno.errors.NotCapable)) return "network access not granted (run with --allow-net)";
  return error instanceof Error ? error.message : String(error);
}

/** The one line that says why the server (or a worker of the pool) could not start. */
function describeStartError(error: unknown, settings: { hostname: string; port: number }): string {
  if (error instanceof NtsError) return error.message;
  if (error instanceof WorkerStartError && error.errorName === "NtsError") return error.message;
  if (error instanceof ServiceListenError) {
    return `cannot listen on ${error.where}: ${describeListenError(error.cause, error.port)}`;
  }
  if (error instanceof WorkerStartError) {
    const { errorName, listener } = error;
    if (listener !== null) {
      return `cannot listen on ${listener.where}: ${
        describeListenError(error, listener.port, errorName)
      }`;
    }
    if (errorName === "WorkerError") return `a worker could not start: ${error.message}`;
  }
  const name = error instanceof WorkerStartError ? error.errorName : undefined;
  const where = formatAddress({ transport: "tcp", ...settings });
  return `cannot listen on ${where}: ${describeListenError(error, settings.port, name)}`;
}

/** Runs `time-server client`: prints each answer; exit code 0, 1 (failure) or 2 (usage). */
async function runClient(args: string[]): Promise<number> {
  let options;
  const port = readPort();
  try {
    options = parseClientCommandLine(args, port.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server client: ${error.message} (see --help)`);
    return 2;
  }
  if (options === null) {
    console.log(CLIENT_HELP);
    return 0;
  }
  if (!port.readable && options.port === undefined) {
    console.error(`time-server client: ${PORT_UNREADABLE}; asking port ${DEFAULTS.port}`);
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
  const port = readPort();
  try {
    invocation = parseCommandLine(args, port.env);
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
  return await runServer(invocation, port.readable);
}

/**
 * NTS's options from its flags: the libraries checked, the master key read (or made).
 * A string says why NTS cannot start.
 */
function ntsOptions(flags: NtsFlags): { options: NtsOptions; keySource: string } | string {
  const lacking = ntsMissing();
  if (lacking !== null) return `NTS (--nts-ke-port) needs ${lacking}`;
  try {
    const { key, source } = masterKey(flags.keysFile);
    const { kePort, certFile, keyFile, keRate, ntpServer } = flags;
    return {
      options: { kePort, certFile, keyFile, keRate, ntpServer, masterKey: key },
      keySource: source,
    };
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** Says, once the server runs, where the NTS master key came from when that matters. */
function logKeySource(source: string | null, keysFile: string | null, logger: Logger): void {
  if (source === "random") {
    logger.warn(
      "NTS cookies are sealed under a key made for this run: they die with it " +
        "(--nts-keys-file keeps them across restarts)",
    );
  } else if (source === "created") {
    logger.info("NTS master key made", { keysFile: keysFile ?? undefined });
  }
}

/** Runs the server (or pool) and its metrics until a signal stops them; the exit code. */
async function runServer(
  invocation: Invocation & { action: "serve" },
  portReadable: boolean,
): Promise<number> {
  const logger = createLogger({ level: invocation.logLevel, format: invocation.logFormat });
  const { workers } = invocation;
  let options = invocation.options;
  let keySource: string | null = null;
  if (invocation.nts !== null) {
    const nts = ntsOptions(invocation.nts);
    if (typeof nts === "string") {
      console.error(`time-server: ${nts}`);
      return 1;
    }
    options = { ...options, nts: nts.options };
    keySource = nts.keySource;
  }
  const settings = resolveServerOptions(options);
  const stop = listenForStop(logger);
  if (!portReadable && options.port === undefined) {
    logger.warn(`${PORT_UNREADABLE}; serving on the default port`, { port: settings.port });
  }
  const unreadable = workers > 1 ? unreadableModules() : null;
  if (unreadable !== null) {
    console.error(
      `time-server: --workers needs read access to the server's modules: run with ` +
        `--allow-read=${unreadable} (deno task start grants it)`,
    );
    return 1;
  }
  let running: Running;
  try {
    running = workers > 1
      ? await startPool(workers, options, invocation.logLevel, invocation.logFormat)
      : startSingle(options, logger);
  } catch (error) {
    console.error(`time-server: ${describeStartError(error, settings)}`);
    return 1;
  }
  warnOfPortableEngine(running, options, logger);
  logKeySource(keySource, invocation.nts?.keysFile ?? null, logger);
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
      const reason = describeListenError(error, invocation.metrics.port);
      console.error(`time-server: cannot serve metrics on ${address}: ${reason}`);
      return 1;
    }
  }
  logger.info("listening", listeningFields(running, invocation, metrics));
  await stop.requested;
  const last = await running.stop();
  stop.finished();
  await metrics?.shutdown();
  if (workers > 1) {
    last.forEach((stats, worker) =>
      logger.info("worker stopped", {
        worker,
        connectionsTotal: stats.connectionsTotal,
        requestsTime: stats.requestsTime,
        requestsNtp: stats.requestsNtp || undefined,
        requestsNts: stats.requestsNts || undefined,
      })
    );
  }
  logger.info("stopped", { ...sumStats(last) });
  return 0;
}

/**
 * Says once why UDP is served by the portable engine when `auto` could not choose the
 * batched one for want of FFI: a slower, less accurate server should not be a surprise.
 */
function warnOfPortableEngine(running: Running, options: ServerOptions, logger: Logger): void {
  const udp = Object.values(running.ports).some((port) => port !== null);
  if (!udp || running.udpEngine !== "deno" || (options.udpEngine ?? "auto") !== "auto") return;
  const lacking = libcMissing();
  if (lacking?.startsWith("FFI")) {
    logger.warn(`UDP is served by the portable engine: the batched one needs ${lacking}`);
  }
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
    tcpEngine: settings.tcpEngine,
    shutdownTimeout: settings.shutdownTimeout,
    metrics: metrics ? `http://${formatAddress(metrics.addr)}/metrics` : undefined,
    daytimePort: running.ports.daytime ?? undefined,
    timePort: running.ports.time ?? undefined,
    ntpPort: running.ports.ntp ?? undefined,
    ntpStratum: running.ports.ntp === null ? undefined : settings.ntpStratum,
    ntpClock: running.ports.ntp === null ? undefined : settings.ntpClock,
    ntsKePort: running.ports.ntsKe ?? undefined,
    udpEngine: Object.values(running.ports).some((port) => port !== null)
      ? running.udpEngine
      : undefined,
    allow: settings.allow.length > 0 ? settings.allow.join(",") : undefined,
    deny: settings.deny.length > 0 ? settings.deny.join(",") : undefined,
    rateLimit: settings.rateLimit
      ? `${settings.rateLimit.interval}s burst ${settings.rateLimit.burst} leak ${settings.rateLeak}` +
        (settings.kissOfDeath ? " kod" : "")
      : running.ports.daytime !== null || running.ports.time !== null
      ? `daytime and time ${ONE_ANSWER_RATE_LIMIT.interval}s burst ${ONE_ANSWER_RATE_LIMIT.burst}`
      : undefined,
  };
}

/** The stop signals as {@linkcode listenForStop} hears them. */
interface StopRequest {
  /** Resolves with the first SIGINT or SIGTERM. */
  readonly requested: Promise<Deno.Signal>;
  /** Says the stop is over: signals from now on are ignored, the process exits 0. */
  finished(): void;
}

/**
 * Listens for SIGINT and SIGTERM from before the server starts until the process
 * exits. The first asks for the stop; a second exits at once with code 1, unless it
 * comes within {@linkcode REPEAT_WINDOW_MS} of the first: `deno task` passes on a signal
 * that its process group has already delivered, and one Ctrl-C must not count twice.
 * Under `deno task dev` SIGINT belongs to `--watch`'s watcher, whose SIGTERM stops the
 * server (see {@linkcode StopSignals}).
 *
 * The listeners are never removed: removing Deno's last one restores the signal's
 * default action, so a copy passed on late, after a quick drain, would kill the
 * process before it exits 0 (exit code 143, seen under load). Installed before the
 * "listening" line, they also stop a server signalled the moment it says it listens.
 */
function listenForStop(logger: Logger): StopRequest {
  const requested = Promise.withResolvers<Deno.Signal>();
  const signals: StopSignal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const policy = new StopSignals({ watched: readWatched() });
  let finished = false;
  const onSignal = (signal: StopSignal) => () => {
    const verdict = policy.receive(signal, performance.now());
    if (verdict === "watcher") {
      logger.debug("SIGINT left to deno's watcher, whose SIGTERM stops the server", { signal });
      return;
    }
    if (finished || verdict === "repeat") {
      logger.debug("another signal at once, or after the stop; taken as the same stop", {
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
    requested.resolve(signal);
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal(signal));
  return { requested: requested.promise, finished: () => finished = true };
}

/** Whether `deno task dev` says that `--watch`'s watcher owns SIGINT ({@linkcode WATCHED_ENV}). */
function readWatched(): boolean {
  const permission = Deno.permissions.querySync({ name: "env", variable: WATCHED_ENV });
  return permission.state === "granted" && Deno.env.get(WATCHED_ENV) === "1";
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
