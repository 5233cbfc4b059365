// Tests of the server against hostile clients, each with a bystander that must keep being served.

import assert from "node:assert/strict";
import net from "node:net";
import { createLogger } from "../../lib/log.ts";
import { serve, type ServerOptions, type TimeServer } from "../server.ts";
import type { TcpEngine } from "./host.ts";
import {
  engineTest,
  exchangeFrom,
  freePort,
  JAM_LINE,
  LineClient,
  mainModule,
  onEngine,
  resetStorm,
  scrapeSample,
  silentFrom,
  startServerProcess,
  until,
  within,
  workersCommand,
} from "../../testing/test_util.ts";

const linux = Deno.build.os === "linux";

/** Starts a server on a free loopback port with a quiet logger. */
function start(tcpEngine: TcpEngine, options: ServerOptions = {}): TimeServer {
  return serve({
    tcpEngine,
    hostname: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

/** One bystander visit from `localAddress`: TIME, then QUIT; true if it got a JAM answer. */
async function bystanderServed(port: number, localAddress = "127.0.0.2"): Promise<boolean> {
  const answer = await exchangeFrom(localAddress, port, "TIME\r\nQUIT\r\n").catch(() => "");
  return JAM_LINE.test(answer);
}

/** Waits until `condition` holds, checking every 10 ms; rejects after `ms`. */
/**
 * Silence is the behaviour under test: waiting out `seconds` of it is the only way
 * to produce it. Nothing else waits with a timer.
 */
function silence(seconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/** A client that asks TIME every `everyMs` until stopped, and counts what it got. */
function chatty(port: number, everyMs: number) {
  let stop = false;
  const answers: string[] = [];
  const done = (async () => {
    using client = await LineClient.connect(port);
    while (!stop) {
      answers.push(await client.time());
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    answers,
    async stop() {
      stop = true;
      await done;
    },
  };
}

engineTest({
  name: "a storm of clients that reset before accept does not hold up the next client",
  ignore: !linux, // SIGSTOP, and 127.0.0.2 on loopback
}, async (tcpEngine) => {
  const metricsPort = freePort();
  await using server = await startServerProcess(...onEngine(tcpEngine, [
    "--host",
    "127.0.0.1",
    "--metrics",
    `127.0.0.1:${metricsPort}`,
  ]));
  // Stopped, the server accepts nothing: every storm connection completes in the
  // listen queue and is reset there, so each one fails at accept.
  Deno.kill(server.child.pid, "SIGSTOP");
  try {
    await resetStorm(server.port, 400);
  } finally {
    Deno.kill(server.child.pid, "SIGCONT");
  }
  assert.ok(
    await within(1000, bystanderServed(server.port), "a bystander after the storm"),
    "the bystander was answered",
  );
  // Deno's accept asks for the peer's address, which fails for a connection reset in the
  // queue; accept4 hands such a connection over, and its first read reports the reset.
  const kind = tcpEngine === "deno" ? "accept_aborted" : "reset";
  const aborted = await scrapeSample(metricsPort, `timeserver_errors_total{kind="${kind}"}`);
  assert.ok(aborted >= 300, `${aborted} connections counted as ${kind}, each reset in the queue`);
  assert.equal(
    await scrapeSample(metricsPort, 'timeserver_errors_total{kind="accept_exhausted"}'),
    0,
  );

  // And while a storm is under way, every bystander visit is answered promptly.
  let storming = true;
  const storm = (async () => {
    for (let round = 0; round < 10; round++) await resetStorm(server.port, 200);
    storming = false;
  })();
  let visits = 0;
  while (storming) {
    assert.ok(
      await within(1000, bystanderServed(server.port), "a bystander during the storm"),
      "the bystander was answered",
    );
    visits++;
  }
  await storm;
  assert.ok(visits >= 1);
});

engineTest({
  name: "silent connections make room: a newcomer is served while the server is full of them",
  ignore: !linux, // 127.0.0.x on loopback
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 40, evictAfter: 0.3 });
  const port = server.addr.port;
  const talker = chatty(port, 100);
  // 110% of the slots, from ten addresses; the last few find the server full.
  const hogs = await Promise.all(
    Array.from({ length: 44 }, (_, i) => silentFrom(`127.0.0.${10 + (i % 10)}`, port)),
  );
  try {
    await until(() => server.stats.connectionsOpen >= 40, 5000, "the hogs holding every slot");
    await silence(0.5);
    let served = 0;
    for (let visit = 0; visit < 20; visit++) {
      if (await bystanderServed(port)) served++;
    }
    assert.ok(served >= 19, `the bystander was served ${served} times out of 20`);
    // Each visit that found the server full closed one hog; a visit frees its slot on QUIT.
    const evicted = server.stats.closedEvicted;
    assert.ok(evicted >= 1, `${evicted} evicted`);
    // The client asking every 100 ms still holds its connection after every eviction.
    const asked = talker.answers.length;
    await until(() => talker.answers.length > asked, 5000, "the talker's next answer");
    // Closing the rest settles every hog's transcript; the evicted ones heard why.
    await Promise.all(hogs.map((hog) => hog.close()));
    const heard = await Promise.all(hogs.map((hog) => hog.received));
    const told = heard.filter((text) => text === "ERR idle, closed to make room\r\n").length;
    assert.equal(told, server.stats.closedEvicted, "every evicted hog is told why");
  } finally {
    await Promise.all(hogs.map((hog) => hog.close()));
    await talker.stop();
  }
  // The client that asked every 100 ms was never closed to make room: a closed one reads "".
  assert.ok(talker.answers.length >= 2, `${talker.answers.length} answers`);
  for (const answer of talker.answers) assert.match(answer, JAM_LINE);
});

engineTest({
  name: "with --workers 2 silent connections make room as well, whichever worker holds them",
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
    "0.3",
    "--metrics",
    `127.0.0.1:${metricsPort}`,
  ], workersCommand));
  const hogs = await Promise.all(
    Array.from({ length: 22 }, (_, i) => silentFrom(`127.0.0.${10 + (i % 10)}`, server.port)),
  );
  try {
    const open = () => scrapeSample(metricsPort, "timeserver_connections_open");
    for (let held = await open(); held < 20; held = await open()) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await silence(0.5);
    let served = 0;
    for (let visit = 0; visit < 20; visit++) {
      if (await bystanderServed(server.port)) served++;
    }
    assert.ok(served >= 19, `the bystander was served ${served} times out of 20`);
    const evicted = await scrapeSample(metricsPort, 'timeserver_errors_total{kind="evicted"}');
    assert.ok(evicted >= 1, `${evicted} evicted`);
  } finally {
    await Promise.all(hogs.map((hog) => hog.close()));
  }
});

engineTest({
  name: "silent connections that never sent their PROXY header make room too",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, {
    maxConnections: 10,
    evictAfter: 0.2,
    proxyProtocol: true,
  });
  const port = server.addr.port;
  const hogs = await Promise.all(
    Array.from({ length: 10 }, (_, i) => silentFrom(`127.0.0.${10 + i}`, port)),
  );
  try {
    await until(() => server.stats.connectionsOpen >= 10, 5000, "the hogs holding every slot");
    await silence(0.3);
    using client = await LineClient.connect(port);
    await client.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 45000\r\nTIME\r\n");
    assert.match((await client.readLine())!, JAM_LINE);
    // One made room for it, at accept or in the sweep (full is past the high-water mark).
    assert.ok(server.stats.closedEvicted >= 1, `${server.stats.closedEvicted} evicted`);
  } finally {
    await Promise.all(hogs.map((hog) => hog.close()));
  }
});

engineTest(
  "a server full of clients that keep asking refuses a newcomer with ERR server busy",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxConnections: 8, evictAfter: 0.3 });
    const port = server.addr.port;
    const talkers = Array.from({ length: 8 }, () => chatty(port, 50));
    try {
      await until(() => server.stats.connectionsOpen >= 8, 5000, "the talkers holding every slot");
      await silence(0.4);
      using newcomer = await LineClient.connect(port);
      assert.equal(await newcomer.readAll(), "ERR server busy\r\n");
      assert.equal(server.stats.closedEvicted, 0);
    } finally {
      await Promise.all(talkers.map((talker) => talker.stop()));
    }
    for (const talker of talkers) {
      for (const answer of talker.answers) assert.match(answer, JAM_LINE);
    }
  },
);

engineTest(
  "a client that asks within the eviction silence is never closed to make room",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxConnections: 2, evictAfter: 60 });
    const port = server.addr.port;
    using first = await LineClient.connect(port);
    using second = await LineClient.connect(port);
    assert.match(await first.time(), JAM_LINE);
    assert.match(await second.time(), JAM_LINE);
    using third = await LineClient.connect(port);
    assert.equal(await third.readAll(), "ERR server busy\r\n");
    assert.match(await first.time(), JAM_LINE);
    assert.match(await second.time(), JAM_LINE);
  },
);

engineTest({
  name: "past the high-water mark, the longest-silent connections are closed first",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, { maxConnections: 20, evictAfter: 0.2 });
  const port = server.addr.port;
  const older = await Promise.all(
    Array.from({ length: 10 }, (_, i) => silentFrom(`127.0.0.${10 + i}`, port)),
  );
  await until(() => server.stats.connectionsOpen >= 10, 5000, "the first ten");
  await silence(0.3);
  const newer = await Promise.all(
    Array.from({ length: 10 }, (_, i) => silentFrom(`127.0.0.${10 + i}`, port)),
  );
  try {
    // Full (20 of 20) is two past the mark (18), where the idle timeout has shrunk to
    // evictAfter: two connections go, the two silent the longest.
    // The evicted hear their line and then the server's FIN, which settles their
    // transcripts: wait for those, not for the counter, which runs ahead of the client.
    const hogs = [...older, ...newer];
    const ended: number[] = [];
    hogs.forEach((hog, i) => hog.received.then(() => ended.push(i)));
    await until(() => ended.length >= 2, 5000, "two evicted connections told and closed");
    await until(() => server.stats.connectionsOpen <= 18, 5000, "the evicted gone");
    assert.equal(server.stats.closedEvicted, 2, "no more than needed to get back under the mark");
    assert.equal(ended.length, 2);
    assert.ok(ended.every((i) => i < older.length), `the two closed are among the older: ${ended}`);
    for (const i of ended) {
      assert.equal(await hogs[i].received, "ERR idle, closed to make room\r\n");
    }
    // Closing the rest settles every other transcript: none heard anything.
    await Promise.all(hogs.map((hog) => hog.close()));
    const told = (await Promise.all(hogs.map((hog) => hog.received))).filter((text) => text !== "");
    assert.equal(told.length, 2);
  } finally {
    await Promise.all([...older, ...newer].map((hog) => hog.close()));
  }
});

engineTest(
  "connections that quit and never close linger within a bounded budget",
  async (tcpEngine) => {
    // The lingering budget is a tenth of --max-connections, at least 16.
    await using server = start(tcpEngine, { maxConnections: 10 });
    const port = server.addr.port;
    const clients: LineClient[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        const client = await LineClient.connect(port);
        clients.push(client);
        await client.send("QUIT\r\n");
        assert.equal(await client.readAll(), "", "the server sent FIN");
      }
      assert.ok(
        server.stats.connectionsOpen <= 16,
        `${server.stats.connectionsOpen} lingering connections`,
      );
      using bystander = await LineClient.connect(port);
      assert.match(await bystander.time(), JAM_LINE);
    } finally {
      for (const client of clients) client.close();
    }
  },
);

/**
 * Open file descriptors of this process, from /proc (Deno grants /proc/self only with
 * --allow-all, so another process lists it).
 */
function openDescriptors(): number {
  const { stdout } = new Deno.Command("ls", { args: [`/proc/${Deno.pid}/fd`] }).outputSync();
  return new TextDecoder().decode(stdout).split("\n").filter((name) => name !== "").length;
}

engineTest({
  name: "after an attack, connections, tables and descriptors return to their idle size",
  ignore: !linux,
}, async (tcpEngine) => {
  await using server = start(tcpEngine, {
    maxConnections: 50,
    maxConnectionsPerIp: 8,
    maxLine: 64,
    evictAfter: 0.2,
  });
  const port = server.addr.port;
  assert.match(await exchangeFrom("127.0.0.2", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
  await until(() => server.stats.connectionsOpen === 0, 5000, "the warm-up client gone");
  const baseline = openDescriptors();

  const hogs = await Promise.all(
    Array.from({ length: 60 }, (_, i) => silentFrom(`127.0.0.${10 + (i % 10)}`, port)),
  );
  const garbage = Array.from(
    { length: 20 },
    (_, i) =>
      exchangeFrom(`127.0.0.${30 + i}`, port, "\x00\xff garbage ".repeat(20)).catch(() => ""),
  );
  const quitters = Array.from(
    { length: 20 },
    (_, i) => exchangeFrom(`127.0.0.${50 + i}`, port, "TIME\r\nQUIT\r\n").catch(() => ""),
  );
  await resetStorm(port, 100);
  await silence(0.3);
  assert.ok(await bystanderServed(port), "the bystander was served during the attack");
  await Promise.all([...garbage, ...quitters]);
  assert.ok(server.stats.addressesTracked <= 50, `${server.stats.addressesTracked} addresses`);
  await Promise.all(hogs.map((hog) => hog.close()));

  await until(() => server.stats.connectionsOpen === 0, 10000, "every connection closed");
  assert.equal(server.stats.addressesTracked, 0, "the per-client table is empty");
  await until(() => openDescriptors() <= baseline, 5000, "descriptors back to the baseline");
  assert.ok(await bystanderServed(port), "the bystander is served after the attack");
});

engineTest({
  name: "out of file descriptors, the server warns once, keeps serving, and recovers by itself",
  ignore: !linux,
}, async (tcpEngine) => {
  const metricsPort = freePort();
  // A descriptor limit of 64 leaves room for about 35 connections next to Deno's own.
  await using server = await startServerProcess(
    ...onEngine(tcpEngine, [
      "--host",
      "127.0.0.1",
      "--metrics",
      `127.0.0.1:${metricsPort}`,
      "--log-format",
      "json",
    ], [
      "prlimit",
      "--nofile=64:64",
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-env=PORT",
      mainModule,
    ]),
  );
  using held = await LineClient.connect(server.port);
  assert.match(await held.time(), JAM_LINE);
  const hogs = [];
  try {
    for (let i = 0; i < 60; i++) hogs.push(await LineClient.connect(server.port));
    await server.logged(/out of file descriptors/);
    // A connection served before the shortage is still served during it.
    assert.match(await held.time(), JAM_LINE);
    // Waiting in the listen queue, a newcomer is served once descriptors are freed.
    using newcomer = await LineClient.connect(server.port);
    await newcomer.send("TIME\r\n");
    for (const hog of hogs.splice(0)) hog.close();
    assert.match((await within(5000, newcomer.readLine(), "the newcomer's answer"))!, JAM_LINE);
  } finally {
    for (const hog of hogs) hog.close();
  }
  const exhausted = await scrapeSample(
    metricsPort,
    'timeserver_errors_total{kind="accept_exhausted"}',
  );
  assert.ok(exhausted >= 1, `${exhausted} accepts failed for want of descriptors`);
  const warnings = server.text().split("\n").filter((line) => line.includes("out of file"));
  assert.equal(warnings.length, 1, "one warning, though every freed descriptor ended a streak");
});

/** Asks TIME (and QUIT, with `quit`), reads until the answer (and the server's FIN), then resets. */
function askThenReset(port: number, quit: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.write(quit ? "TIME\r\nQUIT\r\n" : "TIME\r\n");
    });
    socket.setEncoding("latin1");
    socket.on("error", reject);
    const reset = () => {
      socket.removeAllListeners("data");
      socket.once("close", () => resolve(text));
      socket.resetAndDestroy();
    };
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (!quit && text.endsWith("\n")) reset();
    });
    // After QUIT, the server's FIN: the client then resets instead of closing.
    socket.on("end", () => quit && reset());
  });
}

engineTest(
  "a client that resets after the server's last word is not counted as a reset, as HAProxy's checks do",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    const port = server.addr.port;
    for (let i = 0; i < 5; i++) assert.match(await askThenReset(port, true), JAM_LINE);
    await until(() => server.stats.connectionsOpen === 0, 5000, "the checks closed");
    assert.equal(server.stats.closedReset, 0, "a reset after QUIT's answers loses nothing");
    // One that resets while it could still ask is counted.
    assert.match(await askThenReset(port, false), JAM_LINE);
    await until(() => server.stats.connectionsOpen === 0, 5000, "the reset one closed");
    assert.equal(server.stats.closedReset, 1);
  },
);
