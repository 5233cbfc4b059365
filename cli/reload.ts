// Reloading on SIGHUP: what of a new configuration applies live, and what waits for a restart.

import { type SettingFlag, SETTINGS } from "../config/flags.ts";
import type { NtsOptions, ServerOptions } from "../server/server.ts";
import type { Invocation } from "./command_line.ts";

/** A serving invocation: what the server runs with. */
export type Serving = Invocation & { action: "serve" };

/**
 * Each setting and how to read it from an invocation; `restart` marks those a running
 * server cannot change, because they need a new socket, thread or clock reader, or the
 * answers' format would change under clients (`tz`, `max-line`).
 */
const FIELDS: readonly { flag: SettingFlag; read: (s: Serving) => unknown; restart?: true }[] = [
  { flag: "host", read: (s) => s.options.hostname, restart: true },
  { flag: "port", read: (s) => s.options.port, restart: true },
  { flag: "tz", read: (s) => s.options.timeZone, restart: true },
  { flag: "max-line", read: (s) => s.options.maxLine, restart: true },
  { flag: "idle-timeout", read: (s) => s.options.idleTimeout },
  { flag: "proxy-protocol", read: (s) => s.options.proxyProtocol, restart: true },
  { flag: "tcp-engine", read: (s) => s.options.tcpEngine, restart: true },
  { flag: "workers", read: (s) => s.workers, restart: true },
  { flag: "max-connections", read: (s) => s.options.maxConnections },
  { flag: "max-connections-per-ip", read: (s) => s.options.maxConnectionsPerIp },
  { flag: "evict-after", read: (s) => s.options.evictAfter },
  { flag: "no-fairness", read: (s) => s.options.fairness },
  { flag: "shutdown-timeout", read: (s) => s.options.shutdownTimeout },
  { flag: "allow", read: (s) => s.options.allow },
  { flag: "deny", read: (s) => s.options.deny },
  { flag: "daytime-port", read: (s) => s.options.daytimePort, restart: true },
  { flag: "time-port", read: (s) => s.options.timePort, restart: true },
  { flag: "ntp-port", read: (s) => s.options.ntpPort, restart: true },
  { flag: "ntp-stratum", read: (s) => s.options.ntpStratum },
  { flag: "ntp-clock", read: (s) => s.options.ntpClock, restart: true },
  { flag: "udp-engine", read: (s) => s.options.udpEngine, restart: true },
  { flag: "rate-limit", read: (s) => s.options.rateLimit?.interval },
  { flag: "rate-burst", read: (s) => s.options.rateLimit?.burst },
  { flag: "rate-leak", read: (s) => s.options.rateLeak },
  { flag: "kod", read: (s) => s.options.kissOfDeath },
  { flag: "max-clients", read: (s) => s.options.maxClients },
  { flag: "nts-ke-port", read: (s) => s.nts?.kePort, restart: true },
  { flag: "nts-cert", read: (s) => s.nts?.certFile },
  { flag: "nts-key", read: (s) => s.nts?.keyFile },
  { flag: "nts-keys-file", read: (s) => s.nts?.keysFile, restart: true },
  { flag: "nts-ke-rate", read: (s) => s.nts?.keRate },
  { flag: "nts-ntp-server", read: (s) => s.nts?.ntpServer },
  { flag: "roughtime-port", read: (s) => s.options.roughtimePort, restart: true },
  { flag: "roughtime-key", read: (s) => s.roughtimeKeyFile, restart: true },
  { flag: "log-level", read: (s) => s.logLevel },
  { flag: "log-format", read: (s) => s.logFormat },
  { flag: "metrics", read: (s) => s.metrics, restart: true },
];

/** A setting as the config file names it: `[limits] max-connections`. */
function keyOf(flag: SettingFlag): string {
  const setting = SETTINGS.find((setting) => setting.flag === flag)!;
  return `[${setting.section}] ${setting.key}`;
}

/** What a reload changes, by key: live, and what keeps its running value until a restart. */
export interface ReloadPlan {
  readonly live: string[];
  readonly restart: string[];
  /** What the running server is reconfigured with: the new options, less what waits. */
  readonly invocation: Serving;
}

/**
 * Compares the running configuration with the one just read, and says what changes.
 * The invocation it returns is the new one with every setting that needs a restart
 * kept at its running value, so the two never disagree about, say, the port.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCommandLine } from "./command_line.ts";
 * import { planReload, type Serving } from "./reload.ts";
 *
 * const running = parseCommandLine(["--port", "4000"]) as Serving;
 * const next = parseCommandLine(["--port", "4001", "--max-connections", "50"]) as Serving;
 * const plan = planReload(running, next);
 * assert.deepEqual(plan.live, ["[limits] max-connections"]);
 * assert.deepEqual(plan.restart, ["[line] port"]);
 * assert.equal(plan.invocation.options.port, 4000);
 * ```
 */
export function planReload(running: Serving, next: Serving): ReloadPlan {
  const live: string[] = [], restart: string[] = [];
  for (const field of FIELDS) {
    const same = JSON.stringify(field.read(running)) === JSON.stringify(field.read(next));
    if (!same) (field.restart ? restart : live).push(keyOf(field.flag));
  }
  const options: ServerOptions = {
    ...next.options,
    hostname: running.options.hostname,
    port: running.options.port,
    timeZone: running.options.timeZone,
    maxLine: running.options.maxLine,
    proxyProtocol: running.options.proxyProtocol,
    tcpEngine: running.options.tcpEngine,
    daytimePort: running.options.daytimePort,
    timePort: running.options.timePort,
    ntpPort: running.options.ntpPort,
    ntpClock: running.options.ntpClock,
    roughtimePort: running.options.roughtimePort,
    udpEngine: running.options.udpEngine,
  };
  // NTS stays on or off as it runs, on its port, with its master key.
  const nts = running.nts === null || next.nts === null
    ? running.nts
    : { ...next.nts, kePort: running.nts.kePort, keysFile: running.nts.keysFile };
  const invocation = { ...next, options, nts, workers: running.workers, metrics: running.metrics };
  return { live, restart, invocation };
}

/** The running NTS options with what a reload may change taken from `next`. */
export function reloadedNts(running: NtsOptions, next: Serving["nts"]): NtsOptions {
  if (next === null) return running;
  const { certFile, keyFile, keRate, ntpServer } = next;
  return { ...running, certFile, keyFile, keRate, ntpServer };
}
