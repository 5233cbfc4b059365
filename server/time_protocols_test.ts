// Integration tests of Daytime, Time and SNTP on real loopback sockets: answers, hostile
// datagrams, access lists and rate limits, each with a bystander that must keep being served.

import assert from "node:assert/strict";
import net from "node:net";
import { createLogger } from "../lib/log.ts";
import { engineTest } from "../testing/test_util.ts";
import { ONE_ANSWER_RATE_LIMIT, serve, type ServerOptions, type TimeServer } from "./server.ts";
import { mmsgSupported } from "./udp/mmsg.ts";
import { readKernelClock } from "../time/kernel_clock.ts";
import { JAM_LINE, LineClient, until, within } from "../testing/test_util.ts";
import { delay } from "../lib/net.ts";
import {
  exchangeDatagram,
  ntpRequest,
  parseNtpReply,
  receiveWithin,
  skipUnless,
  udpClient,
} from "../testing/time_clients.ts";
import { sendSpoofed, spoofingAllowed } from "../testing/spoof.ts";

const ENGINES = mmsgSupported() ? ["deno", "mmsg"] as const : ["deno"] as const;
if (!mmsgSupported()) console.log("SKIPPED: the mmsg engine (needs Linux and FFI for libc)");
const decoder = new TextDecoder();

function start(options: ServerOptions = {}): TimeServer {
  return serve({
    hostname: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

/** Reads a TCP connection to its end. */
async function readAll(port: number, send?: string): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  if (send !== undefined) await conn.write(new TextEncoder().encode(send));
  const chunks: Uint8Array[] = [];
  for await (const chunk of conn.readable) chunks.push(chunk);
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) all.set(chunk, (at += chunk.length) - chunk.length);
  return all;
}

/** Connects from a given loopback address, sends TIME, and counts the bytes until the close. */
function bytesFrom(localAddress: string, port: number): Promise<number> {
  return new Promise((resolve) => {
    let count = 0;
    const socket = net.connect({ host: "127.0.0.1", port, localAddress }, () => {
      socket.write("TIME\r\n");
    });
    socket.on("data", (chunk) => count += chunk.length);
    socket.on("error", () => {});
    socket.on("close", () => resolve(count));
  });
}

/** A Daytime and Time client on UDP, from `hostname`, that must still be answered. */
async function assertUdpBystanderServed(server: TimeServer, hostname = "127.0.0.1") {
  using bystander = udpClient(hostname);
  const { daytime, time } = server.ports as { daytime: number; time: number };
  assert.ok(await exchangeDatagram(bystander, daytime, new Uint8Array(0)), "daytime answered");
  assert.ok(await exchangeDatagram(bystander, time, new Uint8Array(0)), "time answered");
}

/** A JAM client that must still be answered. */
async function assertBystanderServed(server: TimeServer): Promise<void> {
  using bystander = await LineClient.connect(server.addr.port);
  assert.match(await within(2000, bystander.time(), "the bystander's answer"), JAM_LINE);
}

engineTest(
  "daytime over TCP sends one ctime line in the zone asked for, then closes",
  async (tcpEngine) => {
    const at = Date.UTC(2026, 10, 5, 3, 5, 47);
    await using server = start({
      tcpEngine,
      daytimePort: 0,
      timeZone: "Asia/Jakarta",
      now: () => at,
    });
    const answer = await within(2000, readAll(server.ports.daytime!), "the daytime answer");
    assert.equal(decoder.decode(answer), "Thu Nov  5 10:05:47 2026\r\n");
    // Whatever the client sends is ignored: still one line, then the close.
    const again = await within(2000, readAll(server.ports.daytime!, "hello?\r\n"), "the answer");
    assert.equal(decoder.decode(again), "Thu Nov  5 10:05:47 2026\r\n");
    await assertBystanderServed(server);
    assert.equal(server.stats.requestsDaytime, 2);
  },
);

engineTest(
  "the Time protocol over TCP counts seconds from 1900 and wraps in 2036",
  async (tcpEngine) => {
    let now = Date.UTC(2036, 1, 7, 6, 28, 15);
    await using server = start({ tcpEngine, timePort: 0, now: () => now });
    const before = await readAll(server.ports.time!);
    assert.equal(before.length, 4);
    assert.equal(new DataView(before.buffer).getUint32(0), 0xffffffff);
    now += 1000;
    const after = await readAll(server.ports.time!);
    assert.equal(new DataView(after.buffer).getUint32(0), 0, "era 1 starts at 0");
  },
);

for (const engine of ENGINES) {
  Deno.test(`[${engine}] daytime and time over UDP answer any datagram, even an empty one`, async () => {
    const at = Date.UTC(2026, 10, 25, 3, 5, 47);
    await using server = start({
      daytimePort: 0,
      timePort: 0,
      now: () => at,
      udpEngine: engine,
    });
    assert.equal(server.udpEngine, engine);
    using client = udpClient();
    for (
      const payload of [new Uint8Array(0), new TextEncoder().encode("x"), new Uint8Array(1000)]
    ) {
      const daytime = await exchangeDatagram(client, server.ports.daytime!, payload);
      assert.equal(decoder.decode(daytime!), "Wed Nov 25 03:05:47 2026\r\n");
      const time = await exchangeDatagram(client, server.ports.time!, payload);
      assert.equal(
        new DataView(time!.buffer, time!.byteOffset).getUint32(0),
        at / 1000 + 2_208_988_800,
      );
    }
    assert.equal(server.stats.requestsDaytime, 3);
    assert.equal(server.stats.requestsRfc868, 3);
  });

  Deno.test(`[${engine}] shutting down the UDP services answers and counts nothing that was not sent`, async () => {
    const server = start({ daytimePort: 0, timePort: 0, ntpPort: 0, udpEngine: engine });
    await server.shutdown();
    const { stats } = server;
    const counted = {
      requests: stats.requestsDaytime + stats.requestsRfc868 + stats.requestsNtp,
      dropped: stats.droppedDaytime + stats.droppedRfc868 + stats.droppedNtp,
      udpErrors: stats.udpErrors,
      bytesSent: stats.bytesSent,
    };
    assert.deepEqual(counted, { requests: 0, dropped: 0, udpErrors: 0, bytesSent: 0 });
  });

  Deno.test(`[${engine}] an SNTP reply copies version, poll and transmit, and is timed by the server's clock`, async () => {
    await using server = start({ ntpPort: 0, udpEngine: engine });
    using client = udpClient();
    for (const version of [3, 4]) {
      const request = ntpRequest({ version, poll: 10 });
      const before = Date.now();
      const bytes = await exchangeDatagram(client, server.ports.ntp!, request);
      const after = Date.now();
      const reply = parseNtpReply(bytes!);
      assert.equal(reply.length, 48);
      assert.equal(reply.mode, 4);
      assert.equal(reply.version, version);
      assert.equal(reply.poll, 10);
      assert.equal(reply.leap, 0);
      assert.equal(reply.stratum, 10);
      assert.equal(reply.referenceId, "LOCL");
      assert.ok(reply.precision < -10, `precision ${reply.precision}`);
      assert.deepEqual(reply.originate, request.subarray(40, 48));
      assert.ok(reply.receive >= before - 1 && reply.receive <= after + 1, "receive timestamp");
      assert.ok(
        reply.transmit >= reply.receive && reply.transmit <= after + 1,
        "transmit timestamp",
      );
    }
    // A request with extension fields (68 bytes) gets the plain 48-byte reply: never larger.
    const long = await exchangeDatagram(client, server.ports.ntp!, ntpRequest({ length: 68 }));
    assert.equal(long!.length, 48);
  });

  Deno.test(`[${engine}] SNTP timestamps come from an injected clock, past the 2036 wrap`, async () => {
    const at = Date.UTC(2036, 5, 1, 12, 0, 0, 250);
    await using server = start({
      ntpPort: 0,
      udpEngine: engine,
      preciseClock: { now: () => at },
    });
    using client = udpClient();
    const bytes = await exchangeDatagram(client, server.ports.ntp!, ntpRequest());
    const view = new DataView(bytes!.buffer, bytes!.byteOffset);
    const eraSeconds = at / 1000 - 250 / 1000 + 2_208_988_800 - 2 ** 32;
    assert.equal(view.getUint32(40), eraSeconds, "era-1 seconds");
    assert.equal(view.getUint32(44), 2 ** 30, "a quarter second");
  });

  Deno.test(`[${engine}] mode 6 and 7 queries, short packets and garbage get no reply`, async () => {
    await using server = start({ ntpPort: 0, udpEngine: engine });
    using client = udpClient();
    const hostile = [
      ntpRequest({ mode: 6, version: 2 }), // ntpq
      ntpRequest({ mode: 7, version: 2 }), // ntpdc, monlist
      ntpRequest({ mode: 7, version: 2, length: 8 }), // a monlist probe is 8 bytes
      ntpRequest({ length: 47 }),
      ntpRequest({ mode: 4 }), // a server reply sent back at us
      ntpRequest({ mode: 1 }), // symmetric active
      ntpRequest({ version: 0 }),
      ntpRequest({ version: 7 }),
      new Uint8Array(0),
      crypto.getRandomValues(new Uint8Array(48)).map((b, i) => i === 0 ? (b & ~7) | 5 : b),
      new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n".padEnd(64, "x")),
    ];
    const port = server.ports.ntp!;
    for (const packet of hostile) {
      await client.send(packet, { transport: "udp", hostname: "127.0.0.1", port });
    }
    // The server reads its socket in order: the answer to this one comes after all of the above.
    const good = ntpRequest();
    const reply = await exchangeDatagram(client, port, good);
    assert.deepEqual(parseNtpReply(reply!).originate, good.subarray(40, 48), "only the good one");
    assert.equal(server.stats.droppedNtp, hostile.length);
    assert.equal(server.stats.droppedNtpControl, 3);
    assert.equal(server.stats.requestsNtp, 1);
    assert.equal(await receiveWithin(client, 100), null, "nothing else came back");
  });

  Deno.test(`[${engine}] a denied address gets no reply over UDP, while others are answered`, async () => {
    await using server = start({
      ntpPort: 0,
      daytimePort: 0,
      udpEngine: engine,
      hostname: "0.0.0.0",
      deny: ["127.0.0.2/32"],
    });
    using denied = udpClient("127.0.0.2");
    using allowed = udpClient("127.0.0.1");
    const to = (port: number) => ({ transport: "udp" as const, hostname: "127.0.0.1", port });
    await denied.send(ntpRequest(), to(server.ports.ntp!));
    await denied.send(new Uint8Array(1), to(server.ports.daytime!));
    assert.ok(await exchangeDatagram(allowed, server.ports.ntp!, ntpRequest()));
    assert.ok(await exchangeDatagram(allowed, server.ports.daytime!, new Uint8Array(1)));
    assert.equal(server.stats.droppedNtp, 1);
    assert.equal(server.stats.droppedDaytime, 1);
    assert.equal(await receiveWithin(denied, 100), null);
  });

  Deno.test(`[${engine}] a client over the rate limit is limited and kissed; a bystander is not`, async () => {
    await using server = start({
      ntpPort: 0,
      udpEngine: engine,
      hostname: "0.0.0.0",
      rateLimit: { interval: 60, burst: 3 },
      rateLeak: 0,
      kissOfDeath: true,
    });
    const port = server.ports.ntp!;
    using abuser = udpClient("127.0.0.3");
    const replies = [];
    for (let i = 0; i < 20; i++) {
      await abuser.send(ntpRequest(), { transport: "udp", hostname: "127.0.0.1", port });
    }
    using bystander = udpClient("127.0.0.1");
    for (let i = 0; i < 3; i++) {
      const reply = parseNtpReply((await exchangeDatagram(bystander, port, ntpRequest()))!);
      assert.equal(reply.stratum, 10, "the bystander gets the time");
    }
    // All 20 were handled before the bystander's requests: 3 answers and one kiss are queued.
    for (;;) {
      const bytes = await receiveWithin(abuser, 100);
      if (bytes === null) break;
      replies.push(parseNtpReply(bytes));
    }
    assert.equal(replies.filter((reply) => reply.stratum === 10).length, 3);
    const kisses = replies.filter((reply) => reply.stratum === 0);
    assert.equal(kisses.length, 1);
    assert.equal(kisses[0].referenceId, "RATE");
    assert.equal(kisses[0].leap, 3);
    assert.equal(server.stats.rateLimitedNtp, 17);
    assert.equal(server.stats.kissOfDeathSent, 1);
    assert.equal(server.stats.clientsTracked, 2);
  });
}

engineTest(
  "a denied address is closed at once over TCP, on every listener, while others are served",
  async (tcpEngine) => {
    await using server = start({
      tcpEngine,
      daytimePort: 0,
      hostname: "0.0.0.0",
      deny: ["127.0.0.2"],
    });
    for (const port of [server.addr.port, server.ports.daytime!]) {
      const received = await within(2000, bytesFrom("127.0.0.2", port), "the close");
      assert.equal(received, 0, "closed without a byte");
    }
    assert.equal(server.stats.closedDenied, 2);
    await assertBystanderServed(server);
  },
);

engineTest("with an allow list, only its ranges are served", async (tcpEngine) => {
  await using server = start({
    tcpEngine,
    daytimePort: 0,
    hostname: "0.0.0.0",
    allow: ["127.0.0.1/32"],
  });
  using outsider = udpClient("127.0.0.4");
  await outsider.send(new Uint8Array(1), {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.ports.daytime!,
  });
  using insider = udpClient("127.0.0.1");
  assert.ok(await exchangeDatagram(insider, server.ports.daytime!, new Uint8Array(1)));
  assert.equal(server.stats.droppedDaytime, 1);
  await assertBystanderServed(server);
});

Deno.test("a UDP flood from a thousand addresses keeps the rate limiter's table bounded", async () => {
  await using server = start({
    ntpPort: 0,
    hostname: "0.0.0.0",
    rateLimit: { interval: 8, burst: 2 },
    maxClients: 100,
  });
  const port = server.ports.ntp!;
  for (let i = 0; i < 1000; i++) {
    using spoof = udpClient(`127.0.${1 + (i >> 8)}.${(i & 0xff) || 1}`);
    await spoof.send(ntpRequest(), { transport: "udp", hostname: "127.0.0.1", port });
  }
  using bystander = udpClient("127.0.9.9");
  assert.ok(await exchangeDatagram(bystander, port, ntpRequest()));
  assert.ok(server.stats.clientsTracked <= 100, `${server.stats.clientsTracked} clients tracked`);
});

engineTest(
  "Daytime and Time over TCP share the connection limit and the PROXY protocol",
  async (tcpEngine) => {
    await using server = start({
      tcpEngine,
      daytimePort: 0,
      proxyProtocol: true,
      hostname: "0.0.0.0",
      deny: ["192.0.2.1"],
    });
    const port = server.ports.daytime!;
    // Behind a balancer the address in the header is the client: this one is denied.
    const denied = await readAll(port, "PROXY TCP4 192.0.2.1 127.0.0.1 5000 13\r\n");
    assert.equal(denied.length, 0);
    const allowed = await readAll(port, "PROXY TCP4 198.51.100.1 127.0.0.1 5000 13\r\n");
    assert.match(decoder.decode(allowed), /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$/);
    assert.equal(server.stats.closedDenied, 1);
  },
);

Deno.test({
  name: "with --ntp-clock kernel, replies carry the kernel's synchronisation state",
  ignore: skipUnless(mmsgSupported(), "adjtimex needs Linux and FFI for libc"),
  async fn() {
    await using server = start({ ntpPort: 0, ntpClock: "kernel", ntpStratum: 3 });
    using client = udpClient();
    const reply = parseNtpReply((await exchangeDatagram(client, server.ports.ntp!, ntpRequest()))!);
    const kernel = readKernelClock()!;
    if (kernel.synchronised) {
      assert.ok(reply.leap !== 3, `leap ${reply.leap} from a synchronised kernel`);
      assert.equal(reply.stratum, 3);
    } else {
      // This machine's clock is not disciplined: the server must not claim it is.
      assert.equal(reply.leap, 3);
      assert.equal(reply.stratum, 16);
    }
  },
});

Deno.test("with --ntp-clock kernel, replies and metrics follow the kernel's state: a leap second, synchronised, or not", async () => {
  const cases = [
    { kernel: { state: 1, synchronised: true }, leap: 1, stratum: 3, warning: null },
    { kernel: { state: 0, synchronised: true }, leap: 0, stratum: 3, warning: null },
    {
      kernel: { state: 5, synchronised: false },
      leap: 3,
      stratum: 16,
      warning: /the kernel says the system clock is not synchronised/,
    },
  ];
  for (const { kernel, leap, stratum, warning } of cases) {
    const warnings: string[] = [];
    await using server = start({
      ntpPort: 0,
      ntpClock: "kernel",
      ntpStratum: 3,
      kernelClock: () => ({ ...kernel, maxError: 0.25, estimatedError: 0.001 }),
      logger: createLogger({ level: "warn", write: (line) => warnings.push(line) }),
    });
    using client = udpClient();
    const reply = await exchangeDatagram(client, server.ports.ntp!, ntpRequest());
    const parsed = parseNtpReply(reply!);
    assert.deepEqual([parsed.leap, parsed.stratum], [leap, stratum], JSON.stringify(kernel));
    // The kernel's maximum error joins the root dispersion (16.16 seconds at bytes 8–11).
    const dispersion = new DataView(reply!.buffer, reply!.byteOffset).getUint32(8) / 65536;
    if (kernel.synchronised) assert.ok(dispersion >= 0.25, `root dispersion ${dispersion} s`);
    // The metrics say what the replies claim: an unsynchronised clock is not only a warning.
    const { ntpLeap, ntpStratum, ntpSynchronized, ntpRootDispersion } = server.stats;
    const synchronised = kernel.synchronised ? 1 : 0;
    assert.deepEqual([ntpLeap, ntpStratum, ntpSynchronized], [leap, stratum, synchronised]);
    if (kernel.synchronised) assert.ok(ntpRootDispersion >= 0.25, `${ntpRootDispersion} s`);
    if (warning === null) assert.deepEqual(warnings, []);
    else assert.match(warnings.join("\n"), warning);
  }
});

Deno.test("with --ntp-clock kernel, a kernel that refuses adjtimex makes replies say unsynchronised, and the log says why", async () => {
  const warnings: string[] = [];
  const refusal = "adjtimex was refused (EPERM): a seccomp filter, such as systemd's " +
    "ProtectClock=yes, blocks it even for reading";
  await using server = start({
    ntpPort: 0,
    ntpClock: "kernel",
    kernelClock: () => {
      throw new Error(refusal);
    },
    logger: createLogger({ level: "warn", write: (line) => warnings.push(line) }),
  });
  using client = udpClient();
  const reply = parseNtpReply((await exchangeDatagram(client, server.ports.ntp!, ntpRequest()))!);
  assert.deepEqual([reply.leap, reply.stratum], [3, 16], "a clock nobody can vouch for");
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], /cannot read the kernel's clock state/);
  assert.match(warnings[0], /ProtectClock=yes/);
  assert.doesNotMatch(warnings[0], /the kernel says/);
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] on "::" SNTP answers IPv6 and IPv4 clients, and IPv4 rules match mapped addresses`, async () => {
    await using server = start({
      hostname: "::",
      ntpPort: 0,
      udpEngine: engine,
      deny: ["127.0.0.2"],
    });
    const port = server.ports.ntp!;
    using six = udpClient("::1");
    const fromSix = await exchangeDatagram(six, port, ntpRequest(), 2000, "::1");
    assert.equal(parseNtpReply(fromSix!).mode, 4);
    using four = udpClient("127.0.0.1");
    assert.ok(await exchangeDatagram(four, port, ntpRequest()));
    using denied = udpClient("127.0.0.2");
    await denied.send(ntpRequest(), { transport: "udp", hostname: "127.0.0.1", port });
    assert.ok(await exchangeDatagram(four, port, ntpRequest()), "answered after the denied one");
    assert.equal(server.stats.droppedNtp, 1, "::ffff:127.0.0.2 matched the IPv4 rule");
  });
}

/**
 * A UDP socket on a well-known port (below 1024) of a loopback address, as another server's
 * service would send from; null where this process may not bind one (not root).
 */
function lowPortSocket(hostname: string): (Deno.DatagramConn & Disposable) | null {
  for (const port of [7, 19, 13, 37, 17, 69, 53, 161]) {
    try {
      const socket = Deno.listenDatagram({ hostname, port, transport: "udp" });
      return Object.assign(socket, { [Symbol.dispose]: () => socket.close() });
    } catch (error) {
      if (error instanceof Deno.errors.PermissionDenied) return null;
      // In use: try the next.
    }
  }
  return null;
}
const lowPortsAllowed = (() => {
  using socket = lowPortSocket("127.0.0.4");
  return socket !== null;
})();

for (const engine of ENGINES) {
  Deno.test(`[${engine}] daytime and time over UDP ignore another instance's service port, so two servers cannot loop`, async () => {
    await using server = start({ daytimePort: 0, timePort: 0, udpEngine: engine });
    const { daytime, time } = server.ports as { daytime: number; time: number };
    // Another server at 127.0.0.2 on the same ports: a datagram spoofed from it would make
    // the two answer each other forever, and so would one from our own Time port to Daytime.
    const twins = [daytime, time].map((port) =>
      Deno.listenDatagram({ hostname: "127.0.0.2", port, transport: "udp" })
    );
    try {
      for (const twin of twins) {
        for (const port of [daytime, time]) {
          await twin.send(new Uint8Array(1), { transport: "udp", hostname: "127.0.0.1", port });
        }
      }
      // Each socket is read in order: the bystander's answers come after the twins' datagrams.
      using bystander = udpClient("127.0.0.1");
      assert.ok(await exchangeDatagram(bystander, daytime, new Uint8Array(1)), "daytime");
      assert.ok(await exchangeDatagram(bystander, time, new Uint8Array(1)), "time");
      assert.equal(server.stats.droppedDaytime, 2);
      assert.equal(server.stats.droppedRfc868, 2);
      assert.equal(server.stats.droppedLoop, 4);
      assert.equal(server.stats.requestsDaytime, 1);
      assert.equal(server.stats.requestsRfc868, 1);
      for (const twin of twins) assert.equal(await receiveWithin(twin, 100), null);
    } finally {
      for (const twin of twins) twin.close();
    }
  });

  Deno.test({
    name:
      `[${engine}] one datagram forged between two instances' Daytime and Time ports gets one answer, not a loop`,
    ignore: skipUnless(spoofingAllowed(), "forging a datagram's source needs a raw socket (root)"),
    async fn() {
      // Two servers on unprivileged ports, as anyone may run them: each pairing of their
      // services gets one datagram that claims to come from the other's service.
      await using a = start({ daytimePort: 0, timePort: 0, udpEngine: engine });
      await using b = start({ daytimePort: 0, timePort: 0, udpEngine: engine });
      const [pa, pb] = [a.ports, b.ports] as { daytime: number; time: number }[];
      const forged: [from: number, to: number][] = [
        [pa.daytime, pb.time], // the pairing of the report: 67,226 answers in 3 s
        [pa.time, pb.daytime],
        [pa.time, pb.time],
        [pa.daytime, pb.daytime],
      ];
      const began = performance.now();
      for (const [from, to] of forged) sendSpoofed(from, to, new Uint8Array(0));
      const answers = () =>
        [a, b].reduce((n, s) => n + s.stats.requestsDaytime + s.stats.requestsRfc868, 0);
      // Each answer reaches the other instance, which sees an answer and drops it.
      await until(() => a.stats.droppedLoop === forged.length, 3000, "A dropping B's answers");
      // A loop would go on: watch for 3 s from the forgery, as the report measured.
      await delay(3000 - (performance.now() - began));
      assert.equal(answers(), forged.length, "one answer per forged datagram");
      assert.equal(b.stats.requestsDaytime + b.stats.requestsRfc868, forged.length);
      assert.equal(b.stats.droppedLoop, 0);
      await assertUdpBystanderServed(a);
      await assertUdpBystanderServed(b);
    },
  });

  Deno.test(`[${engine}] a flood of datagrams from one address gets Daytime and Time's default limit, and a bystander is answered`, async () => {
    await using server = start({
      hostname: "0.0.0.0",
      daytimePort: 0,
      timePort: 0,
      udpEngine: engine,
    });
    const ports = server.ports as { daytime: number; time: number };
    const { stats } = server;
    const seen = () =>
      stats.requestsDaytime + stats.requestsRfc868 + stats.rateLimitedDaytime +
      stats.rateLimitedRfc868;
    using flooder = udpClient("127.0.0.2");
    const began = performance.now();
    let sent = 0;
    // In chunks the server has read before the next, so that none is lost to a full
    // socket buffer: every datagram is then either answered or limited.
    for (let chunk = 0; chunk < 20; chunk++) {
      for (let i = 0; i < 100; i++, sent++) {
        const port = sent % 2 === 0 ? ports.daytime : ports.time;
        await flooder.send(new Uint8Array(0), { transport: "udp", hostname: "127.0.0.1", port });
      }
      await until(() => seen() >= sent, 3000, `the server reading ${sent} datagrams`);
      if (chunk === 10) await assertUdpBystanderServed(server, "127.0.0.3");
    }
    const seconds = (performance.now() - began) / 1000;
    const answered = stats.requestsDaytime + stats.requestsRfc868 - 2; // less the bystander's
    const { burst, interval } = ONE_ANSWER_RATE_LIMIT;
    assert.ok(
      answered <= burst + Math.ceil(seconds / interval),
      `${answered} of ${sent} answered in ${seconds.toFixed(2)} s`,
    );
    assert.ok(answered >= burst, `${answered} answered: the burst is served`);
    assert.equal(seen(), sent + 2);
  });

  Deno.test({
    name:
      `[${engine}] daytime and time over UDP ignore well-known ports, while SNTP answers ntpd's port`,
    ignore: skipUnless(lowPortsAllowed, "binding ports below 1024 needs root"),
    async fn() {
      await using server = start({ daytimePort: 0, timePort: 0, ntpPort: 0, udpEngine: engine });
      const { daytime, time, ntp } = server.ports as { daytime: number; time: number; ntp: number };
      using service = lowPortSocket("127.0.0.3")!;
      for (const port of [daytime, time]) {
        await service.send(new Uint8Array(1), { transport: "udp", hostname: "127.0.0.1", port });
      }
      // ntpd asks from port 123: NTP answers only client mode with server mode, so it cannot loop.
      const request = ntpRequest();
      const reply = await exchangeDatagram(service, ntp, request);
      assert.deepEqual(parseNtpReply(reply!).originate, request.subarray(40, 48));
      using bystander = udpClient("127.0.0.1");
      assert.ok(await exchangeDatagram(bystander, daytime, new Uint8Array(1)), "daytime");
      assert.ok(await exchangeDatagram(bystander, time, new Uint8Array(1)), "time");
      assert.equal(server.stats.droppedLoop, 2);
      assert.equal(await receiveWithin(service, 100), null, "daytime and time said nothing");
    },
  });
}
