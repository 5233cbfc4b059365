// Tests of admission when every slot is busy: per-address fairness on both engines, with workers and behind PROXY.

import assert from "node:assert/strict";
import net from "node:net";
import { createLogger } from "../../lib/log.ts";
import { serve, type ServerOptions, type TimeServer } from "../server.ts";
import type { TcpEngine } from "./host.ts";
import { PROXY_V2_SIGNATURE } from "./proxy.ts";
import {
  engineTest,
  exchangeFrom,
  freePort,
  holdFrom,
  JAM_LINE,
  onEngine,
  scrapeSample,
  startServerProcess,
  until,
  within,
  workersCommand,
} from "../../testing/test_util.ts";

const linux = Deno.build.os === "linux";
const ERR_BUSY_EVICTED = "ERR busy, closed to make room\r\n";

/** A server on a free loopback port where nothing is ever silent long enough to be evicted. */
function start(tcpEngine: TcpEngine, options: ServerOptions = {}): TimeServer {
  return serve({
    tcpEngine,
    hostname: "127.0.0.1",
    port: 0,
    evictAfter: 60,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

/** A client that keeps asking, as {@linkcode busyFrom} opens it. */
interface BusyClient {
  /** Resolves with the first answer; rejects with the first line if that is not one. */
  readonly ready: Promise<void>;
  /** Everything the server sent, once the connection has closed. */
  readonly received: Promise<string>;
  /** Whether the connection has closed. */
  closed(): boolean;
  /** How many answers came. */
  answers(): number;
  close(): Promise<void>;
}

/**
 * A client from `localAddress` (after `header`, behind PROXY) that asks TIME again as
 * soon as each answer comes, or `everyMs` after it, and never reconnects.
 */
async function busyFrom(
  port: number,
  localAddress: string,
  { everyMs = 0, header }: { everyMs?: number; header?: Uint8Array } = {},
): Promise<BusyClient> {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let text = "", partial = "", answers = 0, closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ready = Promise.withResolvers<void>();
  const ask = () => {
    if (!closed) socket.write("TIME\r\n");
  };
  socket.setEncoding("latin1");
  socket.on("error", () => {});
  socket.on("data", (chunk: string) => {
    text += chunk;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      if (!JAM_LINE.test(line + "\n")) {
        ready.reject(new Error(`${localAddress} heard ${JSON.stringify(line)}`));
        continue;
      }
      if (++answers === 1) ready.resolve();
      if (everyMs === 0) ask();
      else timer = setTimeout(ask, everyMs);
    }
  });
  const received = new Promise<string>((resolve) =>
    socket.once("close", () => {
      closed = true;
      clearTimeout(timer);
      ready.reject(new Error(`${localAddress} was closed first: ${JSON.stringify(text)}`));
      resolve(text);
    })
  );
  ready.promise.catch(() => {});
  if (header) socket.write(header);
  ask();
  return {
    ready: ready.promise,
    received,
    closed: () => closed,
    answers: () => answers,
    async close() {
      closed = true;
      clearTimeout(timer);
      socket.destroy();
      await received;
    },
  };
}

/** Opens `count` busy clients from `address`, one after another, so the first is the oldest. */
async function busyMany(
  port: number,
  address: string,
  count: number,
  options?: { everyMs?: number; header?: Uint8Array },
): Promise<BusyClient[]> {
  const clients: BusyClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await busyFrom(port, address, options);
    clients.push(client);
    await within(5000, client.ready, `${address}'s client ${i} admitted`);
  }
  return clients;
}

/** What a client closed to make room heard: its answers, then the line saying why. */
function assertMadeRoom(text: string, who: string): void {
  const lines = text.split("\r\n");
  assert.equal(lines.pop(), "", `${who}: the transcript ends with a line`);
  assert.equal(lines.pop() + "\r\n", ERR_BUSY_EVICTED, `${who} is told why`);
  for (const line of lines) assert.match(line + "\r\n", JAM_LINE, `${who}: answers before`);
}

/** Refused: a visit (after `header`, behind PROXY) that hears `ERR server busy` and nothing else. */
async function assertRefused(port: number, localAddress: string, header?: Uint8Array) {
  const heard = await new Promise<string>((resolve, reject) => {
    let text = "";
    const socket = net.connect({ host: "127.0.0.1", port, localAddress }, () => {
      if (header) socket.write(header);
      socket.write("TIME\r\n");
    });
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => text += chunk);
    socket.on("error", reject);
    socket.on("close", () => resolve(text));
  });
  assert.equal(heard, "ERR server busy\r\n", `a newcomer from ${localAddress}`);
}

engineTest({
  name:
    "a few busy addresses fill the table: newcomers from other addresses are served until every address holds one",
  ignore: !linux, // 127.0.0.x on loopback
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 12 });
  const port = server.addr.port;
  const hogs = new Map<string, BusyClient[]>();
  const newcomers: BusyClient[] = [];
  try {
    // Four addresses, three connections each, every one asking again the moment it is answered.
    for (let i = 3; i <= 6; i++) hogs.set(`127.0.0.${i}`, await busyMany(port, `127.0.0.${i}`, 3));
    for (let i = 0; i < 8; i++) {
      const newcomer = await busyFrom(port, `127.0.0.${20 + i}`, { everyMs: 20 });
      newcomers.push(newcomer);
      await within(5000, newcomer.ready, `newcomer ${i} served`);
      assert.equal(server.stats.closedFairness, i + 1);
    }
    // Twelve addresses hold one each now: nobody gives way to a thirteenth.
    await assertRefused(port, "127.0.0.40");
    assert.equal(server.stats.closedFairness, 8);
    assert.equal(server.stats.closedEvicted, 0);
    for (const [address, clients] of hogs) {
      await until(() => clients.filter((c) => c.closed()).length === 2, 5000, `${address}'s two`);
      for (const client of clients.filter((client) => client.closed())) {
        assertMadeRoom(await client.received, address);
      }
      const kept = clients.find((client) => !client.closed())!;
      const answered = kept.answers();
      await until(() => kept.answers() > answered, 5000, `${address}'s last one still answered`);
    }
  } finally {
    await Promise.all([...[...hogs.values()].flat(), ...newcomers].map((c) => c.close()));
  }
});

engineTest({
  name:
    "the oldest connection of the largest holder makes room, and nobody else's; a newcomer from it, or one that would then hold as many, is refused",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 12 });
  const port = server.addr.port;
  const clients: BusyClient[] = [];
  try {
    const largest = await busyMany(port, "127.0.0.3", 6, { everyMs: 20 });
    const next = await busyMany(port, "127.0.0.4", 5, { everyMs: 20 });
    const small = await busyMany(port, "127.0.0.5", 1, { everyMs: 20 });
    clients.push(...largest, ...next, ...small);
    await assertRefused(port, "127.0.0.3");
    await assertRefused(port, "127.0.0.4"); // 5 + 1 is not fewer than 6
    assert.equal(server.stats.closedFairness, 0);
    const newcomer = await busyFrom(port, "127.0.0.6", { everyMs: 20 });
    clients.push(newcomer);
    await within(5000, newcomer.ready, "the newcomer served");
    assert.equal(server.stats.closedFairness, 1);
    assertMadeRoom(await within(5000, largest[0].received, "the oldest closed"), "the oldest");
    assert.deepEqual(clients.filter((client) => client.closed()), [largest[0]]);
    // The others are still answered.
    const counts = clients.map((client) => client.answers());
    await until(
      () => clients.every((client, i) => client.closed() || client.answers() > counts[i]),
      5000,
      "every other client answered again",
    );
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});

engineTest({
  name: "a connection closed to make room first gets every answer it is owed",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 3 });
  const port = server.addr.port;
  const { stats } = server;
  // The victim pipelines 2,000,000 requests and reads nothing: its answers (28 MB) stall
  // in the socket buffers, so the server is writing when the newcomer comes.
  const victim = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.3" });
  victim.on("error", () => {});
  await new Promise((resolve) => victim.once("connect", resolve));
  victim.pause();
  victim.write("TIME\r\n".repeat(2_000_000));
  await until(() => stats.requestsTime > 0, 5000, "the victim's first answers");
  const others = [await holdFrom("127.0.0.3", port), await holdFrom("127.0.0.4", port)];
  try {
    // A stall can only be told by waiting: no answer more for 300 ms, bounded at 20 s.
    const deadline = performance.now() + 20_000;
    for (let seen = -1; seen !== stats.requestsTime && performance.now() < deadline;) {
      seen = stats.requestsTime;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    assert.match(await exchangeFrom("127.0.0.5", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
    assert.equal(stats.closedFairness, 1);
    // Now the victim reads: every answer owed, then the line, then the end.
    const chunks: string[] = [];
    victim.setEncoding("latin1");
    victim.on("data", (chunk: string) => chunks.push(chunk));
    victim.resume();
    await within(20_000, new Promise((resolve) => victim.once("close", resolve)), "the close");
    const text = chunks.join("");
    assertMadeRoom(text, "the victim");
    const answered = text.split("\r\n").length - 2;
    // Every TIME the server counted was answered: the victim's, the holders' and the newcomer's.
    assert.equal(answered, stats.requestsTime - 3);
    assert.ok(answered > 100_000, `${answered} answers were owed`);
  } finally {
    victim.destroy();
    await Promise.all(others.map((other) => other.close()));
  }
});

engineTest({
  name: "many addresses with one busy connection each: nobody is closed, and a newcomer is refused",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 8 });
  const port = server.addr.port;
  const clients: BusyClient[] = [];
  try {
    for (let i = 0; i < 8; i++) clients.push(...await busyMany(port, `127.0.0.${10 + i}`, 1));
    for (let i = 0; i < 5; i++) await assertRefused(port, `127.0.0.${30 + i}`);
    assert.equal(server.stats.closedFairness, 0);
    assert.ok(clients.every((client) => !client.closed()));
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});

/** A PROXY header announcing `source` (IPv4 or IPv6): v1 text, or v2 binary. */
function proxyHeader(version: 1 | 2, source: string): Uint8Array {
  const v6 = source.includes(":");
  if (version === 1) {
    const family = v6 ? "TCP6" : "TCP4";
    return new TextEncoder().encode(
      `PROXY ${family} ${source} ${v6 ? "::1" : "127.0.0.1"} 40000 45000\r\n`,
    );
  }
  const address = (text: string) =>
    v6 ? expandIPv6(text).flatMap((word) => [word >> 8, word & 0xff]) : text.split(".").map(Number);
  const body = [
    ...address(source),
    ...address(v6 ? "::1" : "127.0.0.1"),
    40000 >> 8,
    40000 & 0xff,
    45000 >> 8,
    45000 & 0xff,
  ];
  return Uint8Array.of(
    ...PROXY_V2_SIGNATURE,
    0x21,
    v6 ? 0x21 : 0x11,
    body.length >> 8,
    body.length & 0xff,
    ...body,
  );
}

/** The eight 16-bit words of an IPv6 address written with `::`. */
function expandIPv6(text: string): number[] {
  const [head, tail = ""] = text.split("::");
  const words = (part: string) => part === "" ? [] : part.split(":").map((w) => parseInt(w, 16));
  const first = words(head), last = words(tail);
  return [...first, ...new Array(8 - first.length - last.length).fill(0), ...last];
}

for (const version of [1, 2] as const) {
  // v1 announces IPv4 clients, v2 IPv6 ones, grouped by /64.
  const [hog, other, stranger, sameHost] = version === 1
    ? ["203.0.113.1", "203.0.113.2", "198.51.100.9", "203.0.113.1"]
    : ["2001:db8:1:2::1", "2001:db8:1:9::1", "2001:db8:1:3::1", "2001:db8:1:2::99"];
  engineTest({
    name: `behind PROXY v${version}, room is made by the client's real address, not the balancer's`,
    ignore: !linux,
  }, async (tcpEngine) => {
    await using server = start(tcpEngine, { maxConnections: 6, proxyProtocol: true });
    const port = server.addr.port;
    const header = (source: string) => proxyHeader(version, source);
    const clients: BusyClient[] = [];
    try {
      const hogs = await busyMany(port, "127.0.0.1", 4, { everyMs: 20, header: header(hog) });
      clients.push(...hogs, ...await busyMany(port, "127.0.0.1", 2, { header: header(other) }));
      await assertRefused(port, "127.0.0.1", header(sameHost));
      assert.equal(server.stats.closedFairness, 0);
      const newcomer = await busyFrom(port, "127.0.0.1", { everyMs: 20, header: header(stranger) });
      clients.push(newcomer);
      await within(5000, newcomer.ready, "the newcomer served");
      assertMadeRoom(await within(5000, hogs[0].received, "the oldest hog closed"), "the hog");
      assert.deepEqual(clients.filter((client) => client.closed()), [hogs[0]]);
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });
}

engineTest({
  name: "with --workers 2, busy addresses make room for newcomers whichever worker holds them",
  ignore: !linux,
}, async (tcpEngine) => {
  const metricsPort = freePort();
  await using server = await startServerProcess(...onEngine(tcpEngine, [
    "--host",
    "127.0.0.1",
    "--workers",
    "2",
    "--max-connections",
    "20",
    "--evict-after",
    "60",
    "--metrics",
    `127.0.0.1:${metricsPort}`,
  ], workersCommand));
  const clients: BusyClient[] = [];
  try {
    for (let i = 3; i <= 6; i++) {
      clients.push(...await busyMany(server.port, `127.0.0.${i}`, 5, { everyMs: 20 }));
    }
    for (let i = 0; i < 4; i++) {
      const newcomer = await busyFrom(server.port, `127.0.0.${30 + i}`, { everyMs: 20 });
      clients.push(newcomer);
      await within(5000, newcomer.ready, `newcomer ${i} served`);
    }
    assert.equal(await scrapeSample(metricsPort, 'timeserver_errors_total{kind="fairness"}'), 4);
    await until(() => clients.filter((c) => c.closed()).length === 4, 5000, "four made room");
    for (const client of clients.filter((client) => client.closed())) {
      assertMadeRoom(await client.received, "a hog");
    }
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});

engineTest({
  name: "with fairness off, a server full of busy addresses refuses a newcomer as before",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 4, fairness: false });
  const port = server.addr.port;
  const clients = await busyMany(port, "127.0.0.3", 4, { everyMs: 20 });
  try {
    await assertRefused(port, "127.0.0.4");
    assert.equal(server.stats.closedFairness, 0);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});
