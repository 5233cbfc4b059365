// `time-server status`: a running server's metrics, summed up for a person, as `chronyc serverstats` does.

import { parseHostPort } from "../server/metrics.ts";
import { UsageError } from "../lib/usage.ts";
import { formatAddress } from "../lib/net.ts";

/** The help of `time-server status`. */
export const STATUS_HELP = `Usage: time-server status --metrics HOST:PORT

Reads a running server's metrics (its --metrics address) and prints a summary: uptime,
connections, requests by protocol, NTS key establishments and NAKs, what was dropped or
rate-limited, the clock SNTP claims, and the NTS certificate's expiry.
Exit codes: 0 printed, 1 the server did not answer, 2 bad command line.`;

/** Parses the Prometheus text format into its samples, by name with labels. */
export function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** A duration in seconds as people say it: `3d 4h`, `5h 6m`, `7m 8s`. */
function duration(seconds: number): string {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = Math.floor(seconds % 60);
  return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : `${m}m ${s}s`;
}

/**
 * The summary of a server's samples at `now` (ms since the epoch): one line per subject,
 * the services that are off left out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSamples, summarize } from "./status.ts";
 *
 * const samples = parseSamples([
 *   "process_start_time_seconds 1000",
 *   "timeserver_connections_open 3",
 *   "timeserver_connections_total 40",
 *   'timeserver_requests_total{command="time"} 120',
 * ].join("\n"));
 * const text = summarize(samples, 1_000_000 + 3_725_000);
 * assert.match(text, /^uptime +1h 2m$/m);
 * assert.match(text, /^connections +3 open, 40 since start$/m);
 * ```
 */
export function summarize(samples: ReadonlyMap<string, number>, now: number): string {
  const get = (name: string) => samples.get(name) ?? 0;
  const by = (name: string, label: string, value: string) => get(`${name}{${label}="${value}"}`);
  const lines: [string, string][] = [];
  const version = [...samples.keys()].find((key) => key.startsWith("timeserver_build_info"));
  lines.push(["version", version?.match(/version="([^"]*)"/)?.[1] ?? "unknown"]);
  lines.push(["uptime", duration(Math.max(0, now / 1000 - get("process_start_time_seconds")))]);
  lines.push([
    "connections",
    `${get("timeserver_connections_open")} open, ${
      get("timeserver_connections_total")
    } since start`,
  ]);
  const requests = [
    ["TIME", get('timeserver_requests_total{command="time"}')],
    ["Daytime", by("timeserver_protocol_answers_total", "protocol", "daytime")],
    ["Time", by("timeserver_protocol_answers_total", "protocol", "time")],
    ["SNTP", by("timeserver_protocol_answers_total", "protocol", "ntp")],
    ["NTS", by("timeserver_nts_requests_total", "result", "answered")],
  ] as const;
  lines.push(["answers", requests.map(([name, count]) => `${name} ${count}`).join(", ")]);
  const dropped = ["daytime", "time", "ntp"].reduce(
    (sum, protocol) => sum + by("timeserver_udp_dropped_total", "protocol", protocol),
    0,
  );
  const limited = ["daytime", "time", "ntp"].reduce(
    (sum, protocol) => sum + by("timeserver_rate_limited_total", "protocol", protocol),
    0,
  );
  const refused = ["busy", "per_ip", "denied", "evicted", "fairness", "idle_timeout"]
    .map((kind) => `${kind} ${by("timeserver_errors_total", "kind", kind)}`).join(", ");
  lines.push(["TCP closed early", refused]);
  lines.push([
    "UDP",
    `${dropped} dropped, ${limited} rate-limited, ` +
    `${get("timeserver_ntp_kiss_of_death_total")} Kiss-o'-Death sent`,
  ]);
  const stratum = get("timeserver_ntp_stratum");
  if (stratum > 0) {
    const synced = get("timeserver_ntp_synchronized") === 1 ? "synchronised" : "NOT synchronised";
    const dispersion = get("timeserver_ntp_root_dispersion_seconds") * 1000;
    lines.push([
      "clock",
      `${synced}, stratum ${stratum}, leap ${get("timeserver_ntp_leap")}, ` +
      `root dispersion ${dispersion.toFixed(3)} ms`,
    ]);
  }
  const expiry = get("timeserver_nts_certificate_expiry_seconds");
  if (expiry > 0) {
    const ke = ["ok", "bad_request", "tls_error", "timeout", "refused", "made_room"]
      .map((result) => `${result} ${by("timeserver_nts_ke_total", "result", result)}`).join(", ");
    lines.push(["NTS-KE", ke]);
    lines.push(["NTS NAKs", `${by("timeserver_nts_requests_total", "result", "nak")}`]);
    const left = (expiry * 1000 - now) / 86_400_000;
    const when = new Date(expiry * 1000).toISOString();
    lines.push([
      "certificate",
      left <= 0 ? `EXPIRED ${when}` : `expires ${when} (${Math.floor(left)} days left)`,
    ]);
  }
  return lines.map(([name, value]) => `${name.padEnd(17)} ${value}`).join("\n");
}

/** Reads `time-server status`'s arguments: the metrics address. Throws {@linkcode UsageError}. */
export function parseStatusArgs(args: string[]): { hostname: string; port: number } | null {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) return null;
  const value = args[0] === "--metrics" && args.length === 2
    ? args[1]
    : args.length === 1 && args[0].startsWith("--metrics=")
    ? args[0].slice("--metrics=".length)
    : undefined;
  if (value === undefined) throw new UsageError("status takes --metrics HOST:PORT");
  const address = parseHostPort(value);
  if (address === null) {
    throw new UsageError(`--metrics must be HOST:PORT, e.g. 127.0.0.1:9464, got "${value}"`);
  }
  return address;
}

/** Fetches the metrics page at `address`: its samples, or why it could not. */
export async function fetchSamples(
  address: { hostname: string; port: number },
): Promise<Map<string, number> | string> {
  const url = `http://${formatAddress({ transport: "tcp", ...address })}/metrics`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) {
      await response.body?.cancel();
      return `${url} answered ${response.status}`;
    }
    return parseSamples(await response.text());
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause;
    const why = cause instanceof Error ? cause.message : String(error);
    return `no metrics at ${url}: ${why.split("\n")[0]}`;
  }
}
