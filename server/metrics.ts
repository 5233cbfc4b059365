// Prometheus metrics: the text exposition format, and a small HTTP endpoint serving it.

import type { Logger } from "../lib/log.ts";
import type { ServerStats } from "./stats.ts";

/** What the metrics describe besides the counters. */
export interface MetricsInfo {
  /** The server's version, for `timeserver_build_info`. */
  version: string;
  /** When the process started, in seconds since the epoch. */
  startTimeSeconds: number;
}

/**
 * Formats counters in the Prometheus text exposition format (version 0.0.4).
 *
 * @example
 * ```ts ignore
 * import { formatMetrics } from "./metrics.ts";
 *
 * const text = formatMetrics(server.stats, { version: "1.0.0", startTimeSeconds: 1764000000 });
 * // "# HELP timeserver_connections_open Connections being served now.\n# TYPE …"
 * ```
 */
export function formatMetrics(stats: ServerStats, info: MetricsInfo): string {
  const lines: string[] = [];
  const metric = (
    name: string,
    type: "gauge" | "counter",
    help: string,
    samples: [labels: string, value: number][],
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  metric("timeserver_connections_open", "gauge", "Connections being served now.", [
    ["", stats.connectionsOpen],
  ]);
  metric(
    "timeserver_connections_total",
    "counter",
    "Connections accepted, including those then closed for the per-client limit or a bad PROXY header.",
    [["", stats.connectionsTotal]],
  );
  metric(
    "timeserver_addresses_tracked",
    "gauge",
    "Client addresses with connections counted now.",
    [["", stats.addressesTracked]],
  );
  metric("timeserver_requests_total", "counter", "Request lines answered, by command.", [
    ['{command="time"}', stats.requestsTime],
    ['{command="quit"}', stats.requestsQuit],
    ['{command="unknown"}', stats.requestsUnknown],
  ]);
  metric(
    "timeserver_errors_total",
    "counter",
    "Connections refused, closed early or failed at accept, by kind.",
    [
      ['{kind="line_too_long"}', stats.closedLineTooLong],
      ['{kind="busy"}', stats.refusedBusy],
      ['{kind="evicted"}', stats.closedEvicted],
      ['{kind="per_ip"}', stats.refusedPerIp],
      ['{kind="idle_timeout"}', stats.closedIdle],
      ['{kind="reset"}', stats.closedReset],
      ['{kind="proxy_header"}', stats.closedProxyHeader],
      ['{kind="accept_aborted"}', stats.acceptAborted],
      ['{kind="accept_exhausted"}', stats.acceptExhausted],
      ['{kind="denied"}', stats.closedDenied],
      ['{kind="udp"}', stats.udpErrors],
    ],
  );
  metric(
    "timeserver_protocol_answers_total",
    "counter",
    "Answers sent by the standard time protocols (Daytime and Time over TCP and UDP; SNTP), by protocol.",
    [
      ['{protocol="daytime"}', stats.requestsDaytime],
      ['{protocol="time"}', stats.requestsRfc868],
      ['{protocol="ntp"}', stats.requestsNtp],
    ],
  );
  metric(
    "timeserver_udp_dropped_total",
    "counter",
    "Datagrams dropped unanswered: a denied client, a service's source port (Daytime, Time), or (NTP) not a client request we answer, by protocol.",
    [
      ['{protocol="daytime"}', stats.droppedDaytime],
      ['{protocol="time"}', stats.droppedRfc868],
      ['{protocol="ntp"}', stats.droppedNtp],
    ],
  );
  metric(
    "timeserver_ntp_control_dropped_total",
    "counter",
    "NTP mode 6 and 7 queries (ntpq, ntpdc, monlist) dropped; also counted in timeserver_udp_dropped_total.",
    [["", stats.droppedNtpControl]],
  );
  metric(
    "timeserver_udp_loop_dropped_total",
    "counter",
    "Daytime and Time datagrams from a service's port (below 1024, or this server's own), dropped so that no two servers answer each other forever; also counted in timeserver_udp_dropped_total.",
    [["", stats.droppedLoop]],
  );
  metric(
    "timeserver_rate_limited_total",
    "counter",
    "Datagrams over their client's rate limit, dropped or (NTP) answered with a Kiss-o'-Death, by protocol.",
    [
      ['{protocol="daytime"}', stats.rateLimitedDaytime],
      ['{protocol="time"}', stats.rateLimitedRfc868],
      ['{protocol="ntp"}', stats.rateLimitedNtp],
    ],
  );
  metric("timeserver_ntp_kiss_of_death_total", "counter", "Kiss-o'-Death RATE replies sent.", [
    ["", stats.kissOfDeathSent],
  ]);
  metric(
    "timeserver_rate_limit_clients",
    "gauge",
    "Client addresses the UDP rate limiter remembers now.",
    [["", stats.clientsTracked]],
  );
  metric("timeserver_bytes_received_total", "counter", "Bytes read from clients.", [
    ["", stats.bytesReceived],
  ]);
  metric("timeserver_bytes_sent_total", "counter", "Bytes written to clients.", [
    ["", stats.bytesSent],
  ]);
  metric("timeserver_build_info", "gauge", "The running version; always 1.", [
    [`{version="${info.version.replace(/["\\\n]/g, "_")}"}`, 1],
  ]);
  metric(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since unix epoch in seconds.",
    [["", info.startTimeSeconds]],
  );
  return lines.join("\n") + "\n";
}

/**
 * Parses `HOST:PORT` (or `[IPv6]:PORT`) as `--metrics` takes it; returns null when
 * it is not of that form.
 */
export function parseHostPort(text: string): { hostname: string; port: number } | null {
  const match = text.match(/^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/) ??
    text.match(/^([^:\[\]]+):(\d{1,5})$/);
  if (!match || Number(match[2]) > 65535) return null;
  return { hostname: match[1], port: Number(match[2]) };
}

/**
 * Serves `GET /metrics` on its own HTTP listener; every other path is 404. The servers
 * count anyway, so with one server a scrape only reads its counters; with workers it
 * sends each worker one message and waits for its counters.
 */
export function serveMetrics(
  address: { hostname: string; port: number },
  collect: () => Promise<ServerStats> | ServerStats,
  info: MetricsInfo,
  logger: Logger,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: address.hostname,
    port: address.port,
    onListen: () => {},
    onError: (error) => {
      logger.error("metrics request failed", { error: String(error) });
      return new Response("internal error\n", { status: 500 });
    },
  }, async (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics") return new Response("not found; try /metrics\n", { status: 404 });
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    return new Response(formatMetrics(await collect(), info), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
}
