// Tests of `time-server status`: a running server's metrics, read and summed up.

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { serve } from "../server/server.ts";
import { serveMetrics } from "../server/metrics.ts";
import { fetchSamples, parseStatusArgs, summarize } from "./status.ts";
import { LineClient } from "../testing/test_util.ts";
import { exchangeDatagram, ntpRequest, udpClient } from "../testing/time_clients.ts";
import { UsageError } from "../lib/usage.ts";

Deno.test("time-server status sums up a running server from its metrics", async () => {
  const logger = createLogger({ level: "error" });
  await using server = serve({
    hostname: "127.0.0.1",
    port: 0,
    ntpPort: 0,
    ntpClock: "kernel",
    kernelClock: () => ({ state: 5, synchronised: false, maxError: 16, estimatedError: 16 }),
    logger,
  });
  const metrics = serveMetrics({ hostname: "127.0.0.1", port: 0 }, () => server.stats, {
    version: "9.9.9",
    startTimeSeconds: Math.floor(Date.now() / 1000) - 3725,
  }, logger);
  try {
    using client = await LineClient.connect(server.addr.port);
    await client.time();
    await client.time();
    using udp = udpClient();
    await exchangeDatagram(udp, server.ports.ntp!, ntpRequest());
    const samples = await fetchSamples({ hostname: "127.0.0.1", port: metrics.addr.port });
    assert.ok(typeof samples !== "string", String(samples));
    const text = summarize(samples, Date.now());
    assert.match(text, /^version +9\.9\.9$/m);
    assert.match(text, /^uptime +1h 2m$/m);
    assert.match(text, /^connections +1 open, 1 since start$/m);
    assert.match(text, /^answers +TIME 2, Daytime 0, Time 0, SNTP 1, NTS 0$/m);
    assert.match(text, /^clock +NOT synchronised, stratum 16, leap 3, /m);
    assert.doesNotMatch(text, /certificate/, "no NTS, no certificate line");
  } finally {
    await metrics.shutdown();
  }
});

Deno.test("time-server status says when nothing answers at the metrics address", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await fetchSamples({ hostname: "127.0.0.1", port });
  assert.match(String(result), new RegExp(`^no metrics at http://127.0.0.1:${port}/metrics: `));
});

Deno.test("time-server status takes --metrics HOST:PORT and nothing else", () => {
  assert.deepEqual(parseStatusArgs(["--metrics", "[::1]:9464"]), { hostname: "::1", port: 9464 });
  assert.deepEqual(parseStatusArgs(["--metrics=127.0.0.1:1"]), { hostname: "127.0.0.1", port: 1 });
  assert.equal(parseStatusArgs(["--help"]), null);
  for (const args of [[], ["--metrics"], ["--metrics", "nowhere"], ["--port", "1"]]) {
    assert.throws(() => parseStatusArgs(args), UsageError, args.join(" "));
  }
});
