// Tests of Roughtime as the server serves it: our client's checks on its answers, batches, and hostile senders.

import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";
import { serve, type ServerOptions } from "../server.ts";
import { exchangeDatagram, UDP_ENGINES, udpClient } from "../../testing/time_clients.ts";
import { makeRequest, MIN_REQUEST, VERSION_DRAFT, VERSION_RFC } from "../../roughtime/request.ts";
import { generateKeyPair } from "../../roughtime/response.ts";
import { verifyResponse } from "../../roughtime/verify.ts";
import { buildMessage, buildPacket, TAGS } from "../../roughtime/message.ts";

const longTerm = generateKeyPair();
const quiet = createLogger({ level: "error" });
const options = (udpEngine: "deno" | "mmsg"): ServerOptions => ({
  hostname: "127.0.0.1",
  port: 0,
  roughtimePort: 0,
  roughtimeKey: longTerm.seed,
  udpEngine,
  logger: quiet,
});
const nonce = () => crypto.getRandomValues(new Uint8Array(32));

for (const engine of UDP_ENGINES) {
  Deno.test(`[${engine}] Roughtime answers are signed time our client verifies, in the RFC's version and the drafts'`, async () => {
    await using server = serve(options(engine));
    using client = udpClient();
    for (const versions of [[VERSION_RFC], [VERSION_DRAFT], [VERSION_RFC, VERSION_DRAFT]]) {
      const request = makeRequest(nonce(), { versions, serverKey: longTerm.publicKey });
      const before = Math.floor(Date.now() / 1000);
      const response = await exchangeDatagram(client, server.ports.roughtime!, request);
      assert.ok(response !== null, `an answer to ${versions}`);
      const time = verifyResponse(request, response, longTerm.publicKey);
      assert.equal(time.version, versions.includes(VERSION_RFC) ? VERSION_RFC : VERSION_DRAFT);
      assert.ok(Math.abs(time.midpoint - before) <= 1, `${time.midpoint} vs ${before}`);
      assert.ok(time.radius >= 3);
      assert.ok(response.length <= request.length);
    }
    assert.equal(server.stats.requestsRoughtime, 3);
    assert.ok(server.stats.roughtimeDelegationExpiry > Date.now() / 1000 + 86400);
  });

  Deno.test(`[${engine}] Roughtime drops what it must not answer, and a bystander keeps getting verified time`, async () => {
    await using server = serve(options(engine));
    const port = server.ports.roughtime!;
    using attacker = udpClient();
    using bystander = udpClient();
    const good = makeRequest(nonce());
    const unpadded = buildPacket(buildMessage([
      [TAGS.VER, Uint8Array.of(1, 0, 0, 0)],
      [TAGS.NONC, nonce()],
      [TAGS.TYPE, new Uint8Array(4)],
    ]));
    const swapped = good.slice();
    swapped.copyWithin(12 + 16, 12 + 20, 12 + 24); // NONC's tag over VER's: out of order
    const offset = good.slice();
    new DataView(offset.buffer).setUint32(12 + 4, 0xfff0, true);
    const hostile = [
      good.subarray(0, MIN_REQUEST - 1),
      unpadded,
      swapped,
      offset,
      makeRequest(nonce(), { versions: [0x80000001] }),
      makeRequest(nonce(), { serverKey: generateKeyPair().publicKey }),
      new Uint8Array(MIN_REQUEST),
    ];
    for (const request of hostile) {
      await attacker.send(request, { transport: "udp", hostname: "127.0.0.1", port });
    }
    const request = makeRequest(nonce(), { serverKey: longTerm.publicKey });
    const response = await exchangeDatagram(bystander, port, request);
    assert.ok(response !== null);
    verifyResponse(request, response, longTerm.publicKey);
    const { stats } = server;
    const dropped = stats.roughtimeShort + stats.roughtimeMalformed + stats.roughtimeVersion +
      stats.roughtimeServer;
    assert.equal(dropped, hostile.length);
    assert.deepEqual(
      [stats.roughtimeShort, stats.roughtimeVersion, stats.roughtimeServer],
      [2, 1, 1], // short: the truncated one and the one without padding
    );
    assert.equal(stats.requestsRoughtime, 1, "only the bystander was answered");
  });
}
