// Interleaved mode (RFC 9769) on both UDP engines: answers, replays and hostile clients.

import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";
import { serve, type ServerOptions, type TimeServer } from "../server.ts";
import { InterleavedClient } from "../../testing/interleaved_client.ts";
import { parseNtpReply, UDP_ENGINES, udpClient } from "../../testing/time_clients.ts";
import { until } from "../../testing/test_util.ts";
import { DEFAULT_CAPACITY } from "../../time/interleaved.ts";

function start(udpEngine: "deno" | "mmsg", options: ServerOptions = {}): TimeServer {
  return serve({
    hostname: "127.0.0.1",
    port: 0,
    ntpPort: 0,
    udpEngine,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

/** The hand-made client's exchanges with a server on `listen`, from `from`. */
async function exchange(engine: "deno" | "mmsg", listen: string, from: string): Promise<void> {
  await using server = start(engine, { hostname: listen });
  using socket = udpClient(from);
  const client = new InterleavedClient(socket, server.ports.ntp!, from);

  const first = await client.ask();
  const second = await client.ask();
  assert.ok(first.reply && second.reply);
  assert.equal(first.interleaved || second.interleaved, false, "nothing saved yet to interleave");
  const third = await client.ask();
  assert.ok(third.reply);
  assert.ok(third.interleaved, "the third exchange is interleaved");
  const before = parseNtpReply(second.reply);
  const now = parseNtpReply(third.reply);
  // When the second reply left: after its request came, before the third request came.
  assert.ok(now.transmit >= before.receive, `${now.transmit} before ${before.receive}`);
  assert.ok(now.transmit <= now.receive, `${now.transmit} after ${now.receive}`);
  assert.equal(third.reply[47] & 1, 0, "a transmit timestamp is even");
  assert.equal(third.reply[39] & 1, 1, "a receive timestamp is odd");

  const replay = await client.ask(third.request);
  assert.ok(replay.reply);
  assert.equal(replay.interleaved, false, "a replayed request gets basic mode");
  assert.deepEqual(replay.reply.subarray(24, 32), third.request.subarray(40, 48));
  assert.equal(server.stats.ntpInterleaved, 1);
  if (engine === "mmsg") {
    await until(() => server.stats.kernelTxTimestamps >= 2, 2000, "kernel transmit timestamps");
  }
}

for (const engine of UDP_ENGINES) {
  Deno.test(`[${engine}] a client in interleaved mode learns when its previous reply left, once per reply`, async (t) => {
    // IPv4, IPv4 on a dual-stack socket, and IPv6: the kernel's error queue differs.
    for (
      const [listen, from] of [["127.0.0.1", "127.0.0.1"], ["::", "127.0.0.1"], ["::1", "::1"]]
    ) {
      await t.step(
        `listening on ${listen}, asked from ${from}`,
        () => exchange(engine, listen, from),
      );
    }
  });

  Deno.test(`[${engine}] a basic client's requests save nothing, and a version 3 client is never interleaved`, async () => {
    await using server = start(engine);
    using socket = udpClient();
    const client = new InterleavedClient(socket, server.ports.ntp!);
    for (let i = 0; i < 4; i++) {
      const request = client.request();
      request[0] = (3 << 3) | 3;
      const answer = await client.ask(request);
      assert.ok(answer.reply);
      assert.equal(answer.interleaved, false);
    }
    const basic = new Uint8Array(48);
    basic[0] = (4 << 3) | 3;
    basic.set(crypto.getRandomValues(new Uint8Array(8)), 40);
    basic[31] = 0; // origin zero: the first request of any client
    assert.ok((await client.ask(basic)).reply);
    assert.equal(server.stats.ntpTimestampsHeld, 0);
    assert.equal(server.stats.ntpInterleaved, 0);
  });

  Deno.test(`[${engine}] spoofed origins, replays and replies to closed ports leave a bystander interleaved and the store bounded`, async () => {
    await using server = start(engine);
    const port = server.ports.ntp!;
    using socket = udpClient();
    const bystander = new InterleavedClient(socket, port);
    await bystander.ask();
    await bystander.ask();

    // More requests that ask to be saved than the store holds, each naming an origin it never
    // gave, from sockets that close at once (the kernel answers late replies with ICMP port
    // unreachable), and now and then a replay of the bystander's last request. The bystander
    // asks after each round: its reply comes after the round's, which paces the flood.
    const flood = DEFAULT_CAPACITY + 4096;
    const target = { transport: "udp" as const, hostname: "127.0.0.1", port };
    const request = new Uint8Array(48);
    request[0] = (4 << 3) | 3;
    for (let round = 0; server.stats.requestsNtp < flood; round++) {
      const senders = Array.from({ length: 4 }, () => udpClient());
      await Promise.all(senders.map(async (sender) => {
        for (let k = 0; k < 32; k++) {
          crypto.getRandomValues(request.subarray(24, 48));
          request[31] |= 1;
          await sender.send(request, target);
        }
        sender.close();
      }));
      const answer = await bystander.ask();
      assert.ok(answer.interleaved, `round ${round}: the bystander fell back to basic mode`);
      if (round % 64 === 0) {
        const replayed = await bystander.ask(answer.request);
        assert.equal(replayed.interleaved, false, "a replay is answered in basic mode");
      }
    }
    assert.equal(server.stats.ntpTimestampsHeld, DEFAULT_CAPACITY, "held no more than it can");
    const last = await bystander.ask();
    assert.ok(last.interleaved, "still interleaved after the flood");
  });
}
