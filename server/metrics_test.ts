// Tests of the Prometheus metrics: the text format, and a scrape during real load.

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { formatMetrics, METRIC_FAMILIES, parseHostPort, serveMetrics } from "./metrics.ts";
import { serve } from "./server.ts";
import { newServerStats, type ServerStats, sumStats } from "./stats.ts";
import { engineTest, JAM_LINE, LineClient } from "../testing/test_util.ts";

const zero: ServerStats = newServerStats();

/** Reads `name{labels} value` samples out of the text format. */
function samples(text: string): Map<string, number> {
  const result = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    result.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return result;
}

Deno.test("metrics are written in the Prometheus text format with the documented names", () => {
  const text = formatMetrics({
    ...zero,
    requestsTime: 5,
    refusedBusy: 2,
    connectionsOpen: 1,
    requestsNtp: 7,
    rateLimitedNtp: 3,
  }, {
    version: "1.2.3",
    startTimeSeconds: 1764000000,
  });
  assert.ok(text.endsWith("\n"));
  const values = samples(text);
  assert.deepEqual([...values.keys()], [
    "timeserver_connections_open",
    "timeserver_connections_total",
    "timeserver_addresses_tracked",
    'timeserver_requests_total{command="time"}',
    'timeserver_requests_total{command="quit"}',
    'timeserver_requests_total{command="unknown"}',
    'timeserver_errors_total{kind="line_too_long"}',
    'timeserver_errors_total{kind="busy"}',
    'timeserver_errors_total{kind="evicted"}',
    'timeserver_errors_total{kind="fairness"}',
    'timeserver_errors_total{kind="per_ip"}',
    'timeserver_errors_total{kind="idle_timeout"}',
    'timeserver_errors_total{kind="reset"}',
    'timeserver_errors_total{kind="proxy_header"}',
    'timeserver_errors_total{kind="accept_aborted"}',
    'timeserver_errors_total{kind="accept_exhausted"}',
    'timeserver_errors_total{kind="denied"}',
    'timeserver_errors_total{kind="udp"}',
    'timeserver_protocol_answers_total{protocol="daytime"}',
    'timeserver_protocol_answers_total{protocol="time"}',
    'timeserver_protocol_answers_total{protocol="ntp"}',
    'timeserver_udp_dropped_total{protocol="daytime"}',
    'timeserver_udp_dropped_total{protocol="time"}',
    'timeserver_udp_dropped_total{protocol="ntp"}',
    "timeserver_ntp_control_dropped_total",
    "timeserver_udp_loop_dropped_total",
    'timeserver_rate_limited_total{protocol="daytime"}',
    'timeserver_rate_limited_total{protocol="time"}',
    'timeserver_rate_limited_total{protocol="ntp"}',
    "timeserver_ntp_interleaved_total",
    "timeserver_ntp_timestamps_held",
    'timeserver_ntp_kernel_tx_timestamps_total{result="received"}',
    'timeserver_ntp_kernel_tx_timestamps_total{result="missing"}',
    "timeserver_ntp_kiss_of_death_total",
    'timeserver_nts_ke_total{result="ok"}',
    'timeserver_nts_ke_total{result="bad_request"}',
    'timeserver_nts_ke_total{result="tls_error"}',
    'timeserver_nts_ke_total{result="timeout"}',
    'timeserver_nts_ke_total{result="refused"}',
    'timeserver_nts_ke_total{result="made_room"}',
    "timeserver_nts_ke_sessions",
    'timeserver_nts_requests_total{result="answered"}',
    'timeserver_nts_requests_total{result="nak"}',
    'timeserver_nts_requests_total{result="malformed"}',
    "timeserver_nts_cookies_issued_total",
    "timeserver_nts_key_rotations_total",
    "timeserver_nts_certificate_expiry_seconds",
    'timeserver_roughtime_requests_total{result="answered"}',
    'timeserver_roughtime_requests_total{result="short"}',
    'timeserver_roughtime_requests_total{result="malformed"}',
    'timeserver_roughtime_requests_total{result="version"}',
    'timeserver_roughtime_requests_total{result="server"}',
    'timeserver_roughtime_requests_total{result="refused"}',
    "timeserver_roughtime_signatures_total",
    "timeserver_roughtime_delegation_expiry_seconds",
    "timeserver_ntp_stratum",
    "timeserver_ntp_leap",
    "timeserver_ntp_synchronized",
    "timeserver_ntp_root_dispersion_seconds",
    "timeserver_rate_limit_clients",
    "timeserver_bytes_received_total",
    "timeserver_bytes_sent_total",
    'timeserver_build_info{version="1.2.3"}',
    "process_start_time_seconds",
  ]);
  assert.equal(values.get('timeserver_requests_total{command="time"}'), 5);
  assert.equal(values.get('timeserver_errors_total{kind="busy"}'), 2);
  assert.equal(values.get("timeserver_connections_open"), 1);
  assert.equal(values.get('timeserver_protocol_answers_total{protocol="ntp"}'), 7);
  assert.equal(values.get('timeserver_rate_limited_total{protocol="ntp"}'), 3);
  assert.match(text, /^# TYPE timeserver_connections_open gauge$/m);
  assert.match(text, /^# TYPE timeserver_requests_total counter$/m);
});

Deno.test("metrics add up the counters of several workers", () => {
  const total = sumStats([{ ...zero, requestsTime: 2, connectionsOpen: 1 }, {
    ...zero,
    requestsTime: 3,
    connectionsOpen: 4,
  }]);
  assert.equal(total.requestsTime, 5);
  assert.equal(total.connectionsOpen, 5);
});

Deno.test("metrics show what every worker reads of the one clock once, not added up", () => {
  const clock = { ntpStratum: 16, ntpLeap: 3, ntpSynchronized: 0, ntpRootDispersion: 0.5 };
  const total = sumStats([{ ...zero, ...clock }, { ...zero, ...clock }]);
  assert.deepEqual(
    [total.ntpStratum, total.ntpLeap, total.ntpSynchronized, total.ntpRootDispersion],
    [16, 3, 0, 0.5],
  );
});

Deno.test("metrics address is HOST:PORT or [IPv6]:PORT", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:9464"), { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseHostPort("[::1]:9464"), { hostname: "::1", port: 9464 });
  assert.deepEqual(parseHostPort("localhost:0"), { hostname: "localhost", port: 0 });
  for (const bad of ["9464", ":9464", "::1:9464", "host:", "host:99999", "[::1]"]) {
    assert.equal(parseHostPort(bad), null, bad);
  }
});

async function scrape(port: number): Promise<{ text: string; contentType: string | null }> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return { text: await response.text(), contentType: response.headers.get("content-type") };
}

engineTest(
  "metrics scraped during a small load add up to what the clients did",
  async (tcpEngine) => {
    const logger = createLogger({ level: "error" });
    await using server = serve({ tcpEngine, hostname: "127.0.0.1", port: 0, logger, maxLine: 16 });
    const metrics = serveMetrics({ hostname: "127.0.0.1", port: 0 }, () => server.stats, {
      version: "9.9.9",
      startTimeSeconds: 1764000000,
    }, logger);
    try {
      const clients = 20;
      await Promise.all(Array.from({ length: clients }, async () => {
        using client = await LineClient.connect(server.addr.port);
        for (let i = 0; i < 3; i++) {
          assert.match(await client.time(), JAM_LINE);
        }
        await client.send("HELLO\r\n");
        assert.equal(await client.readLine(), "ERR unknown command\r\n");
        await client.send("QUIT\r\n");
        assert.equal(await client.readAll(), "");
      }));
      using long = await LineClient.connect(server.addr.port);
      await long.send("x".repeat(17));
      assert.equal(await long.readAll(), "ERR line too long\r\n");

      const { text, contentType } = await scrape(metrics.addr.port);
      assert.equal(contentType, "text/plain; version=0.0.4; charset=utf-8");
      const values = samples(text);
      assert.equal(values.get("timeserver_connections_total"), clients + 1);
      assert.equal(values.get('timeserver_requests_total{command="time"}'), clients * 3);
      assert.equal(values.get('timeserver_requests_total{command="unknown"}'), clients);
      assert.equal(values.get('timeserver_requests_total{command="quit"}'), clients);
      assert.equal(values.get('timeserver_errors_total{kind="line_too_long"}'), 1);
      assert.equal(values.get("timeserver_bytes_received_total"), clients * (3 * 6 + 7 + 6) + 17);
      assert.equal(
        values.get("timeserver_bytes_sent_total"),
        clients * (3 * 14 + "ERR unknown command\r\n".length) + "ERR line too long\r\n".length,
      );
      assert.equal(values.get('timeserver_build_info{version="9.9.9"}'), 1);

      const notFound = await fetch(`http://127.0.0.1:${metrics.addr.port}/`);
      assert.equal(notFound.status, 404);
      await notFound.body?.cancel();
    } finally {
      await metrics.shutdown();
    }
  },
);

Deno.test("/healthz answers 200 while the server serves and 503 once it drains", async () => {
  const stopping = new AbortController();
  const metrics = serveMetrics(
    { hostname: "127.0.0.1", port: 0 },
    () => newServerStats(),
    { version: "9.9.9", startTimeSeconds: 1764000000, stopping: stopping.signal },
    createLogger({ level: "error" }),
  );
  const health = async (method = "GET") => {
    const response = await fetch(`http://127.0.0.1:${metrics.addr.port}/healthz`, { method });
    return [response.status, await response.text()];
  };
  try {
    assert.deepEqual(await health(), [200, "serving\n"]);
    assert.deepEqual(await health("HEAD"), [200, ""]);
    stopping.abort();
    assert.deepEqual(await health(), [503, "draining\n"]);
    assert.deepEqual(await health("POST"), [405, "method not allowed\n"]);
  } finally {
    await metrics.shutdown();
  }
});

function hasPromtool(): boolean {
  try {
    return new Deno.Command("promtool", { args: ["--version"] }).outputSync().success;
  } catch {
    return false;
  }
}

const promtool = hasPromtool();
if (!promtool) console.log("metrics_test.ts: skipping promtool check: promtool is not installed");

Deno.test({ name: "metrics pass promtool check metrics", ignore: !promtool }, async () => {
  const text = formatMetrics({ ...zero, requestsTime: 7 }, {
    version: "1.0.0",
    startTimeSeconds: 1764000000,
  });
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const output = await child.output();
  const report = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, report);
  assert.equal(report.trim(), "", "no lint warnings");
});

Deno.test("every server counter is in exactly one metric family, and every family reads a counter", () => {
  const counters = Object.keys(newServerStats()).sort();
  const shown = METRIC_FAMILIES.flatMap((family) => family.samples.map(([, counter]) => counter));
  assert.deepEqual([...shown].sort(), counters);
  assert.equal(new Set(METRIC_FAMILIES.map((family) => family.name)).size, METRIC_FAMILIES.length);
});
