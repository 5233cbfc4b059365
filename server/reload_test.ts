// Tests of reconfiguring a running server (a reload): what changes at once, and that nothing open is lost.

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { serve, type ServerOptions } from "./server.ts";
import { engineTest, exchangeFrom, holdFrom, JAM_LINE, LineClient } from "../testing/test_util.ts";
import { exchangeDatagram, ntpRequest, parseNtpReply, udpClient } from "../testing/time_clients.ts";
import { haveOpenssl, keExchange, makeCertificate, startNtsServer } from "../testing/nts.ts";
import { ntsMissing } from "../nts/setup.ts";

const quiet = createLogger({ level: "error" });
const base = (tcpEngine: "deno" | "epoll"): ServerOptions => ({
  hostname: "127.0.0.1",
  port: 0,
  tcpEngine,
  logger: quiet,
});

engineTest(
  "a reload changes who is served at once, and keeps open connections served",
  async (engine) => {
    const options = { ...base(engine), deny: ["127.0.0.2"] };
    await using server = serve(options);
    const port = server.addr.port;
    using open = await LineClient.connect(port);
    assert.match(await open.time(), JAM_LINE);
    // A denied client is closed at once: it sends nothing, or its request would turn the close into a reset.
    assert.equal(await exchangeFrom("127.0.0.2", port, ""), "", "denied before");

    server.reconfigure({ ...options, deny: ["127.0.0.3"] });
    assert.match(await exchangeFrom("127.0.0.2", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
    assert.equal(await exchangeFrom("127.0.0.3", port, ""), "", "denied after");
    assert.match(await open.time(), JAM_LINE, "the connection open across the reload");
  },
);

engineTest(
  "a reload raises max-connections for newcomers, and a lower one closes nobody",
  async (engine) => {
    const options = { ...base(engine), maxConnections: 2, evictAfter: 3600 };
    await using server = serve(options);
    const port = server.addr.port;
    const held = [await holdFrom("127.0.0.1", port), await holdFrom("127.0.0.1", port)];
    assert.match(await exchangeFrom("127.0.0.1", port, "TIME\r\n"), /^ERR server busy/);

    server.reconfigure({ ...options, maxConnections: 3 });
    using third = await LineClient.connect(port);
    assert.match(await third.time(), JAM_LINE);

    server.reconfigure({ ...options, maxConnections: 1 });
    assert.match(await third.time(), JAM_LINE, "over the new limit, still served");
    assert.equal(server.stats.connectionsOpen, 3);
    // From the address that holds them all: fairness makes no room for it.
    assert.match(await exchangeFrom("127.0.0.1", port, "TIME\r\n"), /^ERR server busy/);
    for (const socket of held) await socket.close();
  },
);

engineTest("a reload that does not load changes nothing", async (engine) => {
  const options = { ...base(engine), deny: ["127.0.0.2"], maxConnections: 5 };
  await using server = serve(options);
  const port = server.addr.port;
  assert.throws(
    () => server.reconfigure({ ...options, deny: ["127.0.0.300"], maxConnections: 50 }),
    SyntaxError,
  );
  assert.equal(await exchangeFrom("127.0.0.2", port, ""), "", "still denied");
  assert.match(await exchangeFrom("127.0.0.3", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
});

Deno.test("a reload changes the stratum SNTP claims and its rate limit, at once", async () => {
  const options: ServerOptions = { hostname: "127.0.0.1", port: 0, ntpPort: 0, logger: quiet };
  await using server = serve(options);
  using client = udpClient();
  const ask = async () => {
    const reply = await exchangeDatagram(client, server.ports.ntp!, ntpRequest(), 1000);
    return reply === null ? null : parseNtpReply(reply).stratum;
  };
  assert.equal(await ask(), 10);
  server.reconfigure({ ...options, ntpStratum: 3, rateLimit: { interval: 60, burst: 1 } });
  assert.equal(await ask(), 3);
  assert.equal(await ask(), null, "over the new limit");
  server.reconfigure({ ...options, ntpStratum: 4 });
  assert.equal(await ask(), 4, "the limit lifted");
});

Deno.test({
  name: "a reload loads a new NTS certificate, and one that does not load keeps the one in force",
  ignore: ntsMissing() !== null || !haveOpenssl,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-reload-" });
  try {
    const first = await makeCertificate(dir, "first", { days: 30 });
    const second = await makeCertificate(dir, "second", { days: 90 });
    await using server = startNtsServer(first);
    const kePort = server.ports.ntsKe!;
    const expiry = server.stats.ntsCertificateExpiry;
    assert.ok((await keExchange(kePort, first.cert)).length > 0);
    const nts = {
      kePort: 0,
      certFile: second.cert,
      keyFile: second.key,
      masterKey: new Uint8Array(32),
      keRate: 0,
    };
    const options = { hostname: "127.0.0.1", port: 0, ntpPort: 0, logger: quiet, nts };
    server.reconfigure(options);
    const days = (server.stats.ntsCertificateExpiry - expiry) / 86400;
    assert.ok(days > 59 && days < 61, `the new certificate's expiry, ${days} days later`);
    assert.ok((await keExchange(kePort, second.cert)).length > 0);
    await assert.rejects(keExchange(kePort, first.cert), "the old certificate is gone");

    const missing = { ...nts, certFile: `${dir}/missing.pem` };
    assert.throws(() => server.reconfigure({ ...options, nts: missing }));
    assert.ok((await keExchange(kePort, second.cert)).length > 0, "still the second");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

engineTest(
  "a reload that turns the debug log on shows connections closed to make room",
  async (engine) => {
    const lines: string[] = [];
    const logger = createLogger({ level: "warn", write: (line) => lines.push(line) });
    const options = { ...base(engine), logger, maxConnections: 2, evictAfter: 3600 };
    await using server = serve(options);
    const port = server.addr.port;
    const held = [await holdFrom("127.0.0.1", port), await holdFrom("127.0.0.1", port)];
    logger.configure({ level: "debug" });
    server.reconfigure(options);
    // From an address holding none: the oldest of 127.0.0.1's two makes room, by fairness.
    const newcomer = await holdFrom("127.0.0.2", port);
    assert.equal(server.stats.closedFairness, 1);
    assert.ok(
      lines.some((line) => /closed to make room .*for=127\.0\.0\.2/.test(line)),
      lines.join("\n"),
    );
    // The oldest was closed by the server; the others are closed here.
    for (const socket of [held[1], newcomer]) await socket.close();
  },
);
