// Prometheus metrics: the text exposition format, and a small HTTP endpoint serving it.

import type { Logger } from "../lib/log.ts";
import type { ServerStats } from "./stats.ts";

/** What the metrics describe besides the counters. */
export interface MetricsInfo {
  /** The server's version, for `timeserver_build_info`. */
  version: string;
  /** When the process started, in seconds since the epoch. */
  startTimeSeconds: number;
  /** Aborts when the server starts to drain: `/healthz` then answers 503. */
  stopping?: AbortSignal;
}

/** One metric family: its name, type and help, and which counter each sample reads. */
export interface MetricFamily {
  readonly name: string;
  readonly type: "gauge" | "counter";
  readonly help: string;
  /** The samples: their labels (`{kind="busy"}`, or "" for none) and the counter they show. */
  readonly samples: readonly (readonly [labels: string, counter: keyof ServerStats])[];
}

/** Every counter of {@linkcode ServerStats}, each in exactly one family (a test checks it). */
export const METRIC_FAMILIES: readonly MetricFamily[] = [
  {
    name: "timeserver_connections_open",
    type: "gauge",
    help: "Connections being served now.",
    samples: [["", "connectionsOpen"]],
  },
  {
    name: "timeserver_connections_total",
    type: "counter",
    help:
      "Connections accepted, including those then closed for the per-client limit or a bad PROXY header.",
    samples: [["", "connectionsTotal"]],
  },
  {
    name: "timeserver_addresses_tracked",
    type: "gauge",
    help: "Client addresses with connections counted now.",
    samples: [["", "addressesTracked"]],
  },
  {
    name: "timeserver_requests_total",
    type: "counter",
    help: "Request lines answered, by command.",
    samples: [['{command="time"}', "requestsTime"], ['{command="quit"}', "requestsQuit"], [
      '{command="unknown"}',
      "requestsUnknown",
    ]],
  },
  {
    name: "timeserver_errors_total",
    type: "counter",
    help: "Connections refused, closed early or failed at accept, by kind.",
    samples: [
      ['{kind="line_too_long"}', "closedLineTooLong"],
      ['{kind="busy"}', "refusedBusy"],
      ['{kind="evicted"}', "closedEvicted"],
      ['{kind="fairness"}', "closedFairness"],
      ['{kind="per_ip"}', "refusedPerIp"],
      ['{kind="idle_timeout"}', "closedIdle"],
      ['{kind="reset"}', "closedReset"],
      ['{kind="proxy_header"}', "closedProxyHeader"],
      ['{kind="accept_aborted"}', "acceptAborted"],
      ['{kind="accept_exhausted"}', "acceptExhausted"],
      ['{kind="denied"}', "closedDenied"],
      ['{kind="udp"}', "udpErrors"],
    ],
  },
  {
    name: "timeserver_protocol_answers_total",
    type: "counter",
    help:
      "Answers sent by the standard time protocols (Daytime and Time over TCP and UDP; SNTP), by protocol.",
    samples: [
      ['{protocol="daytime"}', "requestsDaytime"],
      ['{protocol="time"}', "requestsRfc868"],
      ['{protocol="ntp"}', "requestsNtp"],
    ],
  },
  {
    name: "timeserver_udp_dropped_total",
    type: "counter",
    help:
      "Datagrams dropped unanswered: a denied client, a service's source port (Daytime, Time), or (NTP) not a client request we answer, by protocol.",
    samples: [['{protocol="daytime"}', "droppedDaytime"], ['{protocol="time"}', "droppedRfc868"], [
      '{protocol="ntp"}',
      "droppedNtp",
    ]],
  },
  {
    name: "timeserver_ntp_control_dropped_total",
    type: "counter",
    help:
      "NTP mode 6 and 7 queries (ntpq, ntpdc, monlist) dropped; also counted in timeserver_udp_dropped_total.",
    samples: [["", "droppedNtpControl"]],
  },
  {
    name: "timeserver_udp_loop_dropped_total",
    type: "counter",
    help:
      "Daytime and Time datagrams from a service's port (below 1024, or this server's own), or that are themselves a Daytime or Time answer, dropped so that no two servers answer each other forever; also counted in timeserver_udp_dropped_total.",
    samples: [["", "droppedLoop"]],
  },
  {
    name: "timeserver_rate_limited_total",
    type: "counter",
    help:
      "Datagrams over their client's rate limit, dropped or (NTP) answered with a Kiss-o'-Death, by protocol.",
    samples: [['{protocol="daytime"}', "rateLimitedDaytime"], [
      '{protocol="time"}',
      "rateLimitedRfc868",
    ], ['{protocol="ntp"}', "rateLimitedNtp"]],
  },
  {
    name: "timeserver_ntp_interleaved_total",
    type: "counter",
    help:
      "SNTP and NTS replies in interleaved mode (RFC 9769), with the true transmit time of the reply before.",
    samples: [["", "ntpInterleaved"]],
  },
  {
    name: "timeserver_ntp_timestamps_held",
    type: "gauge",
    help: "Receive and transmit timestamp pairs saved for clients in interleaved mode.",
    samples: [["", "ntpTimestampsHeld"]],
  },
  {
    name: "timeserver_ntp_kernel_tx_timestamps_total",
    type: "counter",
    help:
      "Kernel transmit timestamps of replies a client may ask about, by result: received, or missing (the server's own estimate stands in).",
    samples: [['{result="received"}', "kernelTxTimestamps"], [
      '{result="missing"}',
      "kernelTxMissing",
    ]],
  },
  {
    name: "timeserver_ntp_kiss_of_death_total",
    type: "counter",
    help: "Kiss-o'-Death RATE replies sent.",
    samples: [["", "kissOfDeathSent"]],
  },
  {
    name: "timeserver_nts_ke_total",
    type: "counter",
    help:
      "NTS key establishments by result: ok (cookies given), bad_request (an Error record), tls_error, timeout, refused (before TLS: denied, over the rate, or full), made_room (cut off for a newcomer from an address holding fewer).",
    samples: [
      ['{result="ok"}', "keOk"],
      ['{result="bad_request"}', "keBadRequest"],
      ['{result="tls_error"}', "keTlsError"],
      ['{result="timeout"}', "keTimeout"],
      ['{result="refused"}', "keRefused"],
      ['{result="made_room"}', "keMadeRoom"],
    ],
  },
  {
    name: "timeserver_nts_ke_sessions",
    type: "gauge",
    help: "NTS key establishments in progress.",
    samples: [["", "keSessions"]],
  },
  {
    name: "timeserver_nts_requests_total",
    type: "counter",
    help:
      "NTS requests by result: answered (authenticated time; also counted as SNTP answers), nak (NTSN: the cookie did not open or the request was not authentic), malformed (dropped).",
    samples: [
      ['{result="answered"}', "requestsNts"],
      ['{result="nak"}', "ntsNaks"],
      ['{result="malformed"}', "droppedNts"],
    ],
  },
  {
    name: "timeserver_nts_cookies_issued_total",
    type: "counter",
    help: "NTS cookies issued, in key establishments and in NTS replies.",
    samples: [["", "ntsCookiesIssued"]],
  },
  {
    name: "timeserver_nts_key_rotations_total",
    type: "counter",
    help: "Times the server key that seals new NTS cookies changed (daily).",
    samples: [["", "ntsKeyRotations"]],
  },
  {
    name: "timeserver_nts_certificate_expiry_seconds",
    type: "gauge",
    help: "When the NTS-KE certificate expires, in seconds since the epoch (0 without NTS).",
    samples: [["", "ntsCertificateExpiry"]],
  },
  {
    name: "timeserver_roughtime_requests_total",
    type: "counter",
    help:
      "Roughtime requests by result: answered, or dropped as short (under 1024 bytes), malformed, version (none served), server (SRV names another key) or refused (access list, rate limit).",
    samples: [
      ['{result="answered"}', "requestsRoughtime"],
      ['{result="short"}', "roughtimeShort"],
      ['{result="malformed"}', "roughtimeMalformed"],
      ['{result="version"}', "roughtimeVersion"],
      ['{result="server"}', "roughtimeServer"],
      ['{result="refused"}', "roughtimeRefused"],
    ],
  },
  {
    name: "timeserver_roughtime_signatures_total",
    type: "counter",
    help:
      "Roughtime SREP signatures: one per batch answered; answered / signatures is the batch size.",
    samples: [["", "roughtimeSignatures"]],
  },
  {
    name: "timeserver_roughtime_delegation_expiry_seconds",
    type: "gauge",
    help:
      "When the Roughtime online key's delegation ends (MAXT), seconds since the epoch (0 without Roughtime).",
    samples: [["", "roughtimeDelegationExpiry"]],
  },
  {
    name: "timeserver_ntp_stratum",
    type: "gauge",
    help: "The stratum SNTP replies claim (16: not synchronised; 0 without SNTP).",
    samples: [["", "ntpStratum"]],
  },
  {
    name: "timeserver_ntp_leap",
    type: "gauge",
    help:
      "The leap indicator SNTP replies carry: 0 none, 1 a leap second inserted, 2 deleted, 3 not synchronised.",
    samples: [["", "ntpLeap"]],
  },
  {
    name: "timeserver_ntp_synchronized",
    type: "gauge",
    help: "1 while SNTP replies say the clock is synchronised, else 0.",
    samples: [["", "ntpSynchronized"]],
  },
  {
    name: "timeserver_ntp_root_dispersion_seconds",
    type: "gauge",
    help: "The root dispersion SNTP replies claim: how far off the clock may be.",
    samples: [["", "ntpRootDispersion"]],
  },
  {
    name: "timeserver_rate_limit_clients",
    type: "gauge",
    help: "Client addresses the UDP rate limiter remembers now.",
    samples: [["", "clientsTracked"]],
  },
  {
    name: "timeserver_bytes_received_total",
    type: "counter",
    help: "Bytes read from clients.",
    samples: [["", "bytesReceived"]],
  },
  {
    name: "timeserver_bytes_sent_total",
    type: "counter",
    help: "Bytes written to clients.",
    samples: [["", "bytesSent"]],
  },
];

/**
 * Formats counters in the Prometheus text exposition format (version 0.0.4).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatMetrics } from "./metrics.ts";
 * import { newServerStats } from "./stats.ts";
 *
 * const stats = { ...newServerStats(), connectionsOpen: 3 };
 * const text = formatMetrics(stats, { version: "1.0.0", startTimeSeconds: 1764000000 });
 * assert.match(text, /^timeserver_connections_open 3$/m);
 * ```
 */
export function formatMetrics(stats: Readonly<ServerStats>, info: MetricsInfo): string {
  const lines: string[] = [];
  const family = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  for (const { name, type, help, samples } of METRIC_FAMILIES) {
    family(name, type, help, samples.map(([labels, counter]) => [labels, stats[counter]]));
  }
  const version = info.version.replace(/["\\\n]/g, "_");
  family("timeserver_build_info", "gauge", "The running version; always 1.", [
    [`{version="${version}"}`, 1],
  ]);
  family(
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
 * Serves `GET /metrics` on its own HTTP listener, and `GET /healthz`: 200 `serving`, or
 * 503 `draining` once `info.stopping` aborts, so that a balancer or an orchestrator sends
 * no one new to a server on its way out. Every other path is 404. The servers count
 * anyway, so with one server a scrape only reads its counters; with workers it sends each
 * worker one message and waits for its counters.
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
    if (path !== "/metrics" && path !== "/healthz") {
      return new Response("not found; try /metrics or /healthz\n", { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (path === "/healthz") {
      const draining = info.stopping?.aborted ?? false;
      return new Response(draining ? "draining\n" : "serving\n", { status: draining ? 503 : 200 });
    }
    return new Response(formatMetrics(await collect(), info), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
}
