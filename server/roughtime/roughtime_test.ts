// Tests of Roughtime as the server serves it: our client's checks on its answers, batches, and hostile senders.

import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";
import { serve, type ServerOptions } from "../server.ts";
import { engineTest } from "../../testing/test_util.ts";
import {
  exchangeDatagram,
  receiveWithin,
  UDP_ENGINES,
  udpClient,
} from "../../testing/time_clients.ts";
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
    const padded = (pairs: [number, Uint8Array][]) =>
      buildPacket(buildMessage([...pairs, [TAGS.ZZZZ, new Uint8Array(MIN_REQUEST)]]));
    const ver = Uint8Array.of(1, 0, 0, 0);
    const duplicated = padded([[TAGS.VER, ver], [TAGS.NONC, nonce()], [
      TAGS.TYPE,
      new Uint8Array(4),
    ], [
      TAGS.TYPE,
      new Uint8Array(4),
    ]]);
    // A response's TYPE: never taken for a request, so two servers cannot answer each other.
    const typeOne = padded([[TAGS.VER, ver], [TAGS.NONC, nonce()], [TAGS.TYPE, ver]]);
    const hostile = [
      duplicated,
      typeOne,
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

  Deno.test(`[${engine}] a Roughtime flood from one address is rate-limited, and a bystander keeps getting verified time`, async () => {
    await using server = serve({
      ...options(engine),
      hostname: "0.0.0.0",
      rateLimit: { interval: 60, burst: 3 },
      rateLeak: 0,
    });
    const port = server.ports.roughtime!;
    using flooder = udpClient("127.0.0.3");
    const flood = Array.from({ length: 40 }, () => makeRequest(nonce()));
    for (const request of flood) {
      await flooder.send(request, { transport: "udp", hostname: "127.0.0.1", port });
    }
    using bystander = udpClient("127.0.0.1");
    for (let i = 0; i < 3; i++) {
      const request = makeRequest(nonce(), { serverKey: longTerm.publicKey });
      const response = await exchangeDatagram(bystander, port, request);
      assert.ok(response !== null, `the bystander's answer ${i}`);
      verifyResponse(request, response, longTerm.publicKey);
    }
    // The flood was handled before the bystander's requests: its answers are queued.
    const answers: Uint8Array[] = [];
    for (let bytes; (bytes = await receiveWithin(flooder, 100)) !== null;) answers.push(bytes);
    assert.equal(answers.length, 3, "the burst, then nothing");
    for (const response of answers) {
      const request = flood.find((r) => {
        try {
          return verifyResponse(r, response, longTerm.publicKey) !== null;
        } catch {
          return false;
        }
      });
      assert.ok(request !== undefined, "each answer verifies for one of the flood's requests");
      assert.ok(response.length <= request.length);
    }
    assert.equal(server.stats.roughtimeRefused, flood.length - 3);
    assert.equal(server.stats.requestsRoughtime, 3 + 3);
  });
}

/** Reads `count` whole ROUGHTIM packets from a TCP connection. */
async function readPackets(conn: Deno.TcpConn, count: number): Promise<Uint8Array[]> {
  const packets: Uint8Array[] = [];
  let buffered = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  while (packets.length < count) {
    const n = await conn.read(chunk);
    if (n === null) throw new Error(`closed after ${packets.length} packets`);
    const all = new Uint8Array(buffered.length + n);
    all.set(buffered);
    all.set(chunk.subarray(0, n), buffered.length);
    buffered = all;
    while (buffered.length >= 12) {
      const size = 12 + new DataView(buffered.buffer, 8, 4).getUint32(0, true);
      if (buffered.length < size) break;
      packets.push(buffered.slice(0, size));
      buffered = buffered.slice(size);
    }
  }
  return packets;
}

engineTest(
  "Roughtime over TCP answers pipelined requests in order, each verified, on the UDP port's number",
  async (tcpEngine) => {
    await using server = serve({ ...options("mmsg"), tcpEngine });
    const port = server.ports.roughtime!;
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const requests = [VERSION_RFC, VERSION_DRAFT, VERSION_RFC].map((version) =>
      makeRequest(nonce(), { versions: [version], serverKey: longTerm.publicKey })
    );
    const all = new Uint8Array(requests.reduce((sum, r) => sum + r.length, 0));
    requests.reduce((at, r) => (all.set(r, at), at + r.length), 0);
    // Split across writes, mid-packet, as a stream may be.
    await conn.write(all.subarray(0, 1500));
    await conn.write(all.subarray(1500));
    const responses = await readPackets(conn, 3);
    responses.forEach((response, i) => {
      const time = verifyResponse(requests[i], response, longTerm.publicKey);
      assert.equal(time.version, i === 1 ? VERSION_DRAFT : VERSION_RFC);
    });
    // The same connection goes on being served.
    const more = makeRequest(nonce());
    await conn.write(more);
    verifyResponse(more, (await readPackets(conn, 1))[0], longTerm.publicKey);
    assert.equal(server.stats.requestsRoughtime, 4);
  },
);

engineTest(
  "Roughtime over TCP closes a stream that is not Roughtime, and a bystander is served",
  async (tcpEngine) => {
    await using server = serve({ ...options("mmsg"), tcpEngine });
    const port = server.ports.roughtime!;
    const closedAfter = async (bytes: Uint8Array) => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(bytes);
      const buffer = new Uint8Array(64);
      return await conn.read(buffer);
    };
    assert.equal(await closedAfter(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")), null);
    const huge = makeRequest(nonce()).slice(0, 12);
    new DataView(huge.buffer).setUint32(8, 1 << 20, true); // a 1 MiB packet announced
    assert.equal(await closedAfter(huge), null);
    using bystander = await Deno.connect({ hostname: "127.0.0.1", port });
    const request = makeRequest(nonce());
    await bystander.write(request);
    verifyResponse(request, (await readPackets(bystander, 1))[0], longTerm.publicKey);
  },
);
