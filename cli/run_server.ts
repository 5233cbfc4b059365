// Running the server, or a pool of workers, with its metrics, until a signal stops it.

import {
  type ConfigurableLogger,
  createLogger,
  type LogFormat,
  type Logger,
  type LogLevel,
  withLogSettings,
} from "../lib/log.ts";
import { serveMetrics } from "../server/metrics.ts";
import { type ServerStats, sumStats } from "../server/stats.ts";
import { startWorkers, unreadableModules } from "../server/workers.ts";
import { formatAddress } from "../lib/net.ts";
import {
  type NtsOptions,
  resolveServerOptions,
  serve,
  type ServerOptions,
  type ServicePorts,
} from "../server/server.ts";
import { effectiveUid, libcMissing } from "../lib/libc.ts";
import { encodePublicKey, readLongTermKey } from "../roughtime/key_file.ts";
import type { RawKeyPair } from "../roughtime/response.ts";
import { masterKey, type NtsFlags, ntsMissing } from "../nts/setup.ts";
import type { Invocation } from "./command_line.ts";
import { VERSION } from "./help.ts";
import { listenForStop } from "./stop.ts";
import { describeListenError, explainStartError } from "./start_errors.ts";
import { PORT_UNREADABLE } from "./environment.ts";
import { listeningFields } from "./listening.ts";
import { planReload, reloadedNts, type Serving } from "./reload.ts";
import { notifySocket, notifySystemd, reloadingMessage } from "../lib/systemd.ts";

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

/**
 * The server's options with the keys read from their files: NTS's (libraries checked,
 * master key read or made) and Roughtime's long-term key. A string says why not.
 */
function withKeys(invocation: Invocation & { action: "serve" }): {
  options: ServerOptions;
  keySource: string | null;
  roughtime: (RawKeyPair & { created: boolean }) | null;
} | string {
  let options = invocation.options;
  let keySource: string | null = null;
  if (invocation.nts !== null) {
    const nts = ntsOptions(invocation.nts);
    if (typeof nts === "string") return nts;
    options = { ...options, nts: nts.options };
    keySource = nts.keySource;
  }
  let roughtime: (RawKeyPair & { created: boolean }) | null = null;
  if (invocation.roughtimeKeyFile !== undefined) {
    const read = roughtimeKey(invocation.roughtimeKeyFile);
    if (typeof read === "string") return read;
    options = { ...options, roughtimeKey: read.seed };
    roughtime = read;
  }
  return { options, keySource, roughtime };
}

/** Roughtime's long-term key from its file (made if missing), or why it cannot be had. */
function roughtimeKey(path: string): (RawKeyPair & { created: boolean }) | string {
  const lacking = libcMissing();
  if (lacking !== null) {
    return `--roughtime-key checks who owns the key file, which needs ${lacking}`;
  }
  try {
    return readLongTermKey(path, effectiveUid());
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

/**
 * How the server says it cannot start, in one line: `time-server: why` on stderr, or with
 * `--log-format json` an error event like every other line it logs. Returns exit code 1.
 */
function startFailure(logger: Logger, format: LogFormat): (why: string) => number {
  return (why) => {
    if (format === "json") logger.error("cannot start", { error: why });
    else console.error(`time-server: ${why}`);
    return 1;
  };
}

/**
 * Runs the server (or pool) and its metrics until a signal stops them; the exit code.
 * With `reread`, which reads the configuration anew (the config file and the same
 * flags), SIGHUP reloads it: see {@linkcode reloader}.
 */
export async function runServer(
  invocation: Invocation & { action: "serve" },
  portReadable: boolean,
  reread: (() => Invocation) | null = null,
): Promise<number> {
  const logger = createLogger({ level: invocation.logLevel, format: invocation.logFormat });
  const fail = startFailure(logger, invocation.logFormat);
  const { workers } = invocation;
  const keys = withKeys(invocation);
  if (typeof keys === "string") return fail(keys);
  const { options, keySource, roughtime } = keys;
  const settings = resolveServerOptions(options);
  const stop = listenForStop(logger);
  if (!portReadable && options.port === undefined) {
    logger.warn(`${PORT_UNREADABLE}; serving on the default port`, { port: settings.port });
  }
  const unreadable = workers > 1 ? unreadableModules() : null;
  if (unreadable !== null) {
    return fail(
      `--workers needs read access to the server's modules: run with ` +
        `--allow-read=${unreadable} (deno task start grants it)`,
    );
  }
  let running: Running;
  try {
    running = workers > 1
      ? await startPool(workers, options, logger)
      : startSingle(options, logger);
  } catch (error) {
    return fail(await explainStartError(error, settings));
  }
  warnOfPortableEngine(running, options, logger);
  logKeySource(keySource, invocation.nts?.keysFile ?? null, logger);
  if (roughtime !== null) {
    logger.info(roughtime.created ? "Roughtime long-term key made" : "Roughtime long-term key", {
      keyFile: invocation.roughtimeKeyFile,
      publicKey: encodePublicKey(roughtime.publicKey),
    });
  }
  let metrics: Deno.HttpServer<Deno.NetAddr> | undefined;
  const draining = new AbortController();
  if (invocation.metrics) {
    try {
      metrics = serveMetrics(invocation.metrics, running.stats, {
        version: VERSION,
        startTimeSeconds: Math.round(performance.timeOrigin / 1000),
        stopping: draining.signal,
      }, logger);
    } catch (error) {
      await running.stop();
      const address = formatAddress({ transport: "tcp", ...invocation.metrics });
      const reason = describeListenError(error, invocation.metrics.port);
      return fail(`cannot serve metrics on ${address}: ${reason}`);
    }
  }
  logger.info("listening", listeningFields(running, invocation, metrics));
  const tell = systemdTeller(logger);
  tell(() => `READY=1\nSTATUS=serving on ${running.address}`);
  if (reread !== null) stop.onReload(reloader(invocation, options, running, reread, logger, tell));
  await stop.requested;
  tell(() => "STOPPING=1");
  draining.abort();
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

/**
 * Tells systemd (`Type=notify`, through `$NOTIFY_SOCKET`) how the service is doing; a
 * no-op when it is not there. A message that cannot be sent is logged as a warning.
 */
function systemdTeller(logger: Logger): (message: () => string) => void {
  return (message) => {
    if (notifySocket() === null) return;
    const why = notifySystemd(message());
    if (why !== null) logger.warn(`cannot tell systemd: ${why}`);
  };
}

/**
 * What SIGHUP does with a config file: reads it again with the same flags, applies what
 * can change live to the server (every worker), names in one warning what needs a
 * restart and keeps it as it runs, and logs the change. A configuration that does not
 * read, or a certificate that does not load, is logged as an error and changes nothing.
 * Reloads run one after the other, never two at once.
 */
function reloader(
  started: Serving,
  startOptions: ServerOptions,
  running: Running,
  reread: () => Invocation,
  logger: Logger,
  tell: (message: () => string) => void,
): () => void {
  let current = started;
  let options = startOptions;
  let queue = Promise.resolve();
  const failed = (error: unknown) =>
    logger.error("reload failed; the running configuration stays", {
      error: error instanceof Error ? error.message : String(error),
    });
  const reload = async () => {
    let next: Invocation;
    try {
      next = reread();
    } catch (error) {
      return failed(error);
    }
    if (next.action !== "serve") return failed("the configuration asks for no server");
    const plan = planReload(current, next);
    if (plan.restart.length > 0) {
      logger.warn(`reload: needs a restart to change ${plan.restart.join(", ")}; kept as running`);
    }
    const nts = options.nts ? reloadedNts(options.nts, plan.invocation.nts) : null;
    const nextOptions = { ...options, ...plan.invocation.options, nts };
    const log = { level: plan.invocation.logLevel, format: plan.invocation.logFormat };
    try {
      await running.reconfigure(nextOptions, log);
    } catch (error) {
      return failed(error);
    }
    current = plan.invocation;
    options = nextOptions;
    logger.info("reloaded", { changed: plan.live.join(", ") || "nothing" });
  };
  return () => {
    logger.info("SIGHUP: reloading the configuration");
    queue = queue.then(async () => {
      tell(reloadingMessage);
      await reload();
      tell(() => "READY=1");
    });
  };
}

/** A server or a pool of workers, as main() runs it. */
export interface Running {
  readonly address: string;
  readonly port: number;
  readonly ports: ServicePorts;
  readonly udpEngine: "deno" | "mmsg";
  stats(): ServerStats | Promise<ServerStats>;
  /** Drains and stops; resolves with the last counters of each server. */
  stop(): Promise<ServerStats[]>;
  /** Reloads (see `TimeServer.reconfigure`) every server, and the log settings. */
  reconfigure(options: ServerOptions, log: { level: LogLevel; format: LogFormat }): Promise<void>;
}

function startSingle(options: ServerOptions, logger: ConfigurableLogger): Running {
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
    reconfigure: (next, log) => {
      withLogSettings(logger, log, () => server.reconfigure(next));
      return Promise.resolve();
    },
  };
}

async function startPool(
  count: number,
  options: ServerOptions,
  logger: ConfigurableLogger,
): Promise<Running> {
  const { level, format } = logger;
  const pool = await startWorkers(count, options, { level, format });
  const host = resolveServerOptions(options).hostname;
  return {
    address: formatAddress({ transport: "tcp", hostname: host, port: pool.port }),
    port: pool.port,
    ports: pool.ports,
    udpEngine: pool.udpEngine,
    stats: () => pool.stats(),
    stop: () => pool.shutdown(),
    reconfigure: async (next, log) => {
      await pool.reconfigure(next, log);
      logger.configure(log);
    },
  };
}
