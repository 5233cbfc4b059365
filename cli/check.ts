// `time-server check`: validates a configuration and prints it, each value with where it came from.

import { SECTIONS, type SettingFlag, SETTINGS, type Source } from "../config/flags.ts";
import { DEFAULTS } from "../server/server.ts";
import { DEFAULT_KE_RATE } from "../nts/setup.ts";
import { COMMAND_LINE_DEFAULTS, RATE_DEFAULTS, VERSION } from "./help.ts";
import type { GatheredFlags } from "./command_line.ts";

/** A setting's default as the file would write it; a string in parentheses says "not set". */
const DEFAULT_VALUES: Record<SettingFlag, string | number | boolean | string[]> = {
  host: DEFAULTS.hostname,
  port: DEFAULTS.port,
  tz: "(the system's local time zone)",
  "max-line": DEFAULTS.maxLine,
  "idle-timeout": DEFAULTS.idleTimeout,
  "proxy-protocol": DEFAULTS.proxyProtocol,
  "tcp-engine": DEFAULTS.tcpEngine,
  workers: COMMAND_LINE_DEFAULTS.workers,
  "max-connections": DEFAULTS.maxConnections,
  "max-connections-per-ip": DEFAULTS.maxConnectionsPerIp,
  "evict-after": DEFAULTS.evictAfter,
  "no-fairness": false,
  "shutdown-timeout": DEFAULTS.shutdownTimeout,
  allow: DEFAULTS.allow,
  deny: DEFAULTS.deny,
  "daytime-port": "(off)",
  "time-port": "(off)",
  "ntp-port": "(off)",
  "ntp-stratum": DEFAULTS.ntpStratum,
  "ntp-clock": DEFAULTS.ntpClock,
  "udp-engine": DEFAULTS.udpEngine,
  "rate-limit": "(off: SNTP unlimited, Daytime and Time 1 s, burst 8)",
  "rate-burst": RATE_DEFAULTS.burst,
  "rate-leak": DEFAULTS.rateLeak,
  kod: DEFAULTS.kissOfDeath,
  "max-clients": DEFAULTS.maxClients,
  "nts-ke-port": "(off)",
  "nts-cert": "(none)",
  "nts-key": "(none)",
  "nts-keys-file": "(none: cookies die with the process)",
  "nts-ke-rate": DEFAULT_KE_RATE,
  "nts-ntp-server": "(the address NTS-KE was reached on)",
  "roughtime-port": "(off)",
  "roughtime-key": "(none)",
  "log-level": COMMAND_LINE_DEFAULTS.logLevel,
  "log-format": COMMAND_LINE_DEFAULTS.logFormat,
  metrics: "(off)",
};

/** A value as TOML writes it: numbers bare, text quoted, lists in brackets. */
function toml(value: string | number | boolean | string[]): string {
  if (Array.isArray(value)) return `[${value.map((item) => JSON.stringify(item)).join(", ")}]`;
  if (typeof value === "string" && /^\d+(\.\d+)?$/.test(value)) return value;
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/**
 * The effective configuration as a config file, each key with a comment saying where
 * its value came from: `default`, `file` (with the line), `flag` or `environment`. A
 * setting that is off is a comment, so that the text is a config file itself.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gatherFlags } from "./command_line.ts";
 * import { describeConfiguration } from "./check.ts";
 *
 * const text = describeConfiguration(gatherFlags(["--port", "4000"], {}));
 * assert.match(text, /^port = 4000 +# flag$/m);
 * assert.match(text, /^# time-port = \(off\) +# default$/m);
 * ```
 */
export function describeConfiguration(
  { values, sources, file, environment }: GatheredFlags,
): string {
  const lines = [`# time-server ${VERSION}: the configuration a server would run with`];
  if (file !== null) lines.push(`# read from ${file.path}`);
  for (const section of SECTIONS) {
    lines.push("", `[${section}]`);
    for (const setting of SETTINGS.filter((setting) => setting.section === section)) {
      const given = values[setting.flag] ??
        (setting.flag === "port" ? environment.port : undefined);
      const source: Source = sources.get(setting.flag) ?? "default";
      let value = given ?? DEFAULT_VALUES[setting.flag];
      if (setting.inverted) value = value !== true;
      const off = typeof value === "string" && value.startsWith("(");
      const entry = `${off ? "# " : ""}${setting.key} = ${off ? value : toml(value)}`;
      const line = source === "file" ? `, line ${file?.lines.get(setting.flag)}` : "";
      lines.push(`${entry.padEnd(40)} # ${source}${line}`);
    }
  }
  return lines.join("\n");
}

/** The command line of `time-server check`, for its help. */
export const CHECK_HELP = `Usage: time-server check [--config FILE] [options]

Checks a configuration as the server would read it (the file, then the flags given,
which override it), and prints it with where each value came from: default, file, flag
or environment. Exit codes: 0 valid, 2 not.`;
