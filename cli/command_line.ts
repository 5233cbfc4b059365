// The command line: the flag table, parsing, and the checks across flags.

import { parseArgs } from "node:util";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../lib/log.ts";
import { parseHostPort } from "../server/metrics.ts";
import { isValidTimeZone } from "../protocol.ts";
import { parseAddress } from "../lib/net.ts";
import { DEFAULTS, type ServerOptions } from "../server/server.ts";
import { attachNegativeValues, UsageError } from "../lib/usage.ts";
import { parseCidr } from "../server/access.ts";
import { libcMissing } from "../lib/libc.ts";
import { type NtsFlags, parseNtsFlags } from "../nts/setup.ts";
import { COMMAND_LINE_DEFAULTS, RATE_DEFAULTS, WORKERS_PER_CPU } from "./help.ts";
import { checkPortClashes } from "./port_clashes.ts";
import { type FlagName, FLAGS, SETTINGS, type Source } from "../config/flags.ts";
import { type ConfigFile, type ParseToml, readConfigFile } from "../config/file.ts";

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
    /** The config file read (`--config`), when one was given. */
    readonly config?: string;
    /** Roughtime's long-term key file (`--roughtime-key`), read or made at start. */
    readonly roughtimeKeyFile?: string;
  };

/** The flags' values as `parseArgs` gives them. */
type Values = {
  [K in FlagName]?: (typeof FLAGS)[K] extends { multiple: true } ? string[]
    : (typeof FLAGS)[K] extends { type: "boolean" } ? boolean
    : string;
};

/** The flags' values from the command line and the config file, and where each came from. */
export interface GatheredFlags {
  readonly values: Values;
  /** The source of each flag given: on the command line, in the file, or `PORT`. */
  readonly sources: ReadonlyMap<FlagName, Source>;
  /** The config file read, or null without `--config`. */
  readonly file: ConfigFile | null;
  /** The values taken from the environment: `PORT`, when neither flag nor file gives one. */
  readonly environment: { readonly port?: string };
}

/**
 * How a config file is read: its text (`Deno.readTextFileSync` but for tests), and the
 * TOML parser, loaded beforehand with `loadTomlParser` since it is fetched only when needed.
 */
export interface ConfigReader {
  readonly readText?: (path: string) => string;
  readonly parseToml?: ParseToml;
}

/**
 * Reads the command line and, with `--config FILE`, that file: a flag given on the
 * command line overrides the file's key, and `PORT` from the environment overrides
 * the file's port too. Throws {@linkcode UsageError} for a flag or file that is wrong.
 */
export function gatherFlags(
  args: string[],
  env: { PORT?: string } = {},
  reader: ConfigReader = {},
): GatheredFlags {
  let values, tokens;
  try {
    ({ values, tokens } = parseArgs({
      args: attachNegativeValues(args, FLAGS),
      options: FLAGS,
      strict: true,
      allowPositionals: false,
      tokens: true,
    }));
  } catch (error) {
    throw UsageError.fromParseArgs(error);
  }
  UsageError.givenOnce(tokens, FLAGS);
  const given: Values = { ...values };
  const sources = new Map<FlagName, Source>();
  for (const flag of Object.keys(given) as FlagName[]) sources.set(flag, "flag");
  const fromEnv = given.port === undefined && env.PORT !== undefined && env.PORT !== "";
  let file: ConfigFile | null = null;
  if (given.config !== undefined && !given.help && !given.version) {
    if (reader.parseToml === undefined) throw new TypeError("--config: no TOML parser given");
    const text = readConfigText(given.config, reader.readText ?? Deno.readTextFileSync);
    file = readConfigFile(given.config, text, reader.parseToml);
    for (const [flag, value] of Object.entries(file.values) as [FlagName, never][]) {
      if (given[flag] !== undefined || (flag === "port" && fromEnv)) continue;
      given[flag] = value;
      sources.set(flag, "file");
    }
  }
  if (fromEnv && given.port === undefined) {
    sources.set("port", "environment");
    return { values: given, sources, file, environment: { port: env.PORT } };
  }
  return { values: given, sources, file, environment: {} };
}

/** The config file's text, or a UsageError saying why it cannot be read. */
function readConfigText(path: string, readText: (path: string) => string): string {
  try {
    return readText(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`--config ${path}: no such file`);
    }
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(
        `--config ${path}: not readable here (${error.message.split("\n")[0]})`,
      );
    }
    if (error instanceof Deno.errors.IsADirectory) {
      throw new UsageError(`--config ${path}: is a folder, not a file`);
    }
    throw new UsageError(`--config ${path}: ${error instanceof Error ? error.message : error}`);
  }
}

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
  { flag: "roughtime-port", option: "roughtimePort", range: [0, 65535] },
];

/** What the command line checks of the machine; tests pass their own. */
export interface Platform {
  readonly os: string;
  readonly cpus: number;
  /** What libc through FFI lacks here (see `libcMissing`); asked of the machine when absent. */
  readonly libcMissing?: string | null;
}

/** `--workers auto|N`: more than 1 only on Linux, or throws saying why. */
function parseWorkers(text: string, platform: Platform): number {
  const workers = text === "auto" ? platform.cpus : readWorkers(text, platform.cpus);
  if (workers > 1 && platform.os !== "linux") {
    throw new UsageError(
      `--workers above 1 needs Linux, whose SO_REUSEPORT spreads connections over the workers; ` +
        `on ${platform.os} every connection would go to one of them`,
    );
  }
  return workers;
}

/** `--metrics HOST:PORT`, or throws saying what it takes. */
function parseMetrics(text: string): { hostname: string; port: number } {
  const metrics = parseHostPort(text);
  if (metrics === null) {
    throw new UsageError(
      `--metrics must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464, got "${text}"`,
    );
  }
  return metrics;
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

/**
 * Turns the command line (and `PORT` from the environment) into what to do.
 * Throws {@linkcode UsageError} with a one-line message for any mistake.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCommandLine } from "./command_line.ts";
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
  reader: ConfigReader = {},
): Invocation {
  const gathered = gatherFlags(args, env, reader);
  try {
    return interpret(gathered.values, env, platform, gathered.file?.path);
  } catch (error) {
    throw error instanceof UsageError ? inFile(error, gathered) : error;
  }
}

/**
 * A mistake in a value the config file gave, said of the file: its path, the line, and
 * the key in place of the flag, as `time-server.toml:3: [line] port must be …`.
 */
function inFile(error: UsageError, { sources, file }: GatheredFlags): UsageError {
  const flag = error.message.match(/^--([a-z-]+)/)?.[1] as FlagName | undefined;
  if (file === null || flag === undefined || sources.get(flag) !== "file") return error;
  // The other settings it names, by their keys too: `[time] kod needs [time] rate-limit`.
  const rest = error.message.slice(flag.length + 2).replace(/--([a-z-]+)/g, (text, name) => {
    const setting = SETTINGS.find((setting) => setting.flag === name);
    return setting ? `[${setting.section}] ${setting.key}` : text;
  });
  const setting = SETTINGS.find((setting) => setting.flag === flag)!;
  const key = `[${setting.section}] ${setting.key}`;
  return new UsageError(`${file.path}:${file.lines.get(flag) ?? 1}: ${key}${rest}`);
}

/** The serving invocation (or help, or version) that the gathered values ask for. */
function interpret(
  values: Values,
  env: { PORT?: string },
  platform: Platform,
  config: string | undefined,
): Invocation {
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
  if (values["no-fairness"]) options.fairness = false;
  parseTcpEngine(values["tcp-engine"], options, platform);
  parseTimeProtocolFlags(values, options, platform);
  const workers = values.workers === undefined
    ? COMMAND_LINE_DEFAULTS.workers
    : parseWorkers(values.workers, platform);
  const metrics = values.metrics === undefined ? null : parseMetrics(values.metrics);
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
  const invocation = {
    action: "serve",
    options,
    logLevel,
    logFormat,
    workers,
    metrics,
    nts,
  } as const;
  const keyFile = roughtimeKeyFile(values, options);
  return {
    ...invocation,
    ...(config === undefined ? {} : { config }),
    ...(keyFile === null ? {} : { roughtimeKeyFile: keyFile }),
  };
}

/** `--roughtime-key`, which `--roughtime-port` needs and nothing else takes. */
function roughtimeKeyFile(values: Values, options: ServerOptions): string | null {
  const file = values["roughtime-key"];
  if (options.roughtimePort === undefined) {
    if (file !== undefined) throw new UsageError("--roughtime-key needs --roughtime-port");
    return null;
  }
  if (file === undefined || file === "") {
    throw new UsageError(
      "--roughtime-port needs --roughtime-key FILE: the long-term key responses are signed " +
        "under (made there if missing; time-server roughtime-keys FILE prints its public key)",
    );
  }
  return file;
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
  const udp = ntp || values["daytime-port"] !== undefined || values["time-port"] !== undefined ||
    values["roughtime-port"] !== undefined;
  const needs = (flag: keyof typeof FLAGS, what: string, given: boolean) => {
    if (values[flag] !== undefined && !given) throw new UsageError(`--${flag} needs ${what}`);
  };
  const udpService = "a UDP service: --daytime-port, --time-port, --ntp-port or --roughtime-port";
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
  const interval = UsageError.seconds("--rate-limit", text("rate-limit")!, { aboveZero: true });
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
