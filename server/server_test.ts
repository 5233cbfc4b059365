// Integration tests of the server over loopback, in-process on port 0.

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { PROXY_V2_SIGNATURE } from "./tcp/proxy.ts";
import { clientHost, formatAddress } from "../lib/net.ts";
import { serve, type ServerOptions } from "./server.ts";
import type { TcpEngine } from "./tcp/host.ts";
import {
  engineTest,
  exchangeFrom,
  holdFrom,
  JAM_LINE,
  LineClient,
  sendUntilStalled,
  within,
} from "../testing/test_util.ts";

/** Starts a server on a free loopback port with a quiet logger. */
function start(tcpEngine: TcpEngine, options: ServerOptions = {}) {
  return serve({
    tcpEngine,
    hostname: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

engineTest("server answers TIME and closes on QUIT", async (tcpEngine) => {
  await using server = start(tcpEngine);
  using client = await LineClient.connect(server.addr.port);
  assert.match(await client.time(), JAM_LINE);
  await client.send("QUIT\r\n");
  assert.equal(await client.readAll(), "");
});

engineTest("server answers a request sent one byte at a time", async (tcpEngine) => {
  await using server = start(tcpEngine);
  using client = await LineClient.connect(server.addr.port);
  for (const byte of new TextEncoder().encode("TIME threading\r\n")) {
    await client.send(new Uint8Array([byte]));
  }
  assert.match((await client.readLine())!, JAM_LINE);
});

engineTest(
  "server answers pipelined TIME, QUIT, TIME with one answer, then closes",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    using client = await LineClient.connect(server.addr.port);
    await client.send("TIME\r\nQUIT\r\nTIME\r\n");
    const all = await client.readAll();
    assert.match(all, JAM_LINE, "exactly one answer");
  },
);

engineTest(
  "server answers an unknown command and keeps the connection usable",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    using client = await LineClient.connect(server.addr.port);
    await client.send("HELLO\r\n");
    assert.equal(await client.readLine(), "ERR unknown command\r\n");
    await client.send(new Uint8Array([0xff, 0xfe, 0x00, 0x0a]));
    assert.equal(await client.readLine(), "ERR unknown command\r\n");
    await client.send("time\n");
    assert.match((await client.readLine())!, JAM_LINE);
  },
);

engineTest(
  "server closes a client whose line is too long while serving another",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxLine: 64 });
    using other = await LineClient.connect(server.addr.port);
    using abuser = await LineClient.connect(server.addr.port);
    assert.match(await other.time(), JAM_LINE);
    // No line end ever comes: the error must arrive as soon as the limit is passed.
    await abuser.send("x".repeat(65));
    assert.equal(await abuser.readAll(), "ERR line too long\r\n");
    assert.match(await other.time(), JAM_LINE);
    assert.equal(server.stats.closedLineTooLong, 1);
  },
);

engineTest("server accepts a line of exactly --max-line bytes", async (tcpEngine) => {
  await using server = start(tcpEngine, { maxLine: 64 });
  using client = await LineClient.connect(server.addr.port);
  await client.send("TIME" + " ".repeat(60) + "\r\nTIME\r\n");
  assert.match((await client.readLine())!, JAM_LINE);
  assert.match((await client.readLine())!, JAM_LINE);
});

engineTest(
  "server answers the unterminated last line when the client half-closes",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    using client = await LineClient.connect(server.addr.port);
    await client.send("TIME\r\nTIME");
    await client.conn.closeWrite();
    const all = await client.readAll();
    const answers = all.split("\r\n").filter((line) => line !== "");
    assert.equal(answers.length, 2, all);
    for (const answer of answers) assert.match(answer + "\r\n", JAM_LINE);
  },
);

engineTest("server serves 1,000 concurrent clients doing 10 TIMEs each", async (tcpEngine) => {
  await using server = start(tcpEngine);
  const clients = await Promise.all(
    Array.from({ length: 1000 }, () => LineClient.connect(server.addr.port)),
  );
  try {
    await Promise.all(clients.map(async (client) => {
      for (let i = 0; i < 10; i++) {
        assert.match(await client.time(), JAM_LINE);
      }
    }));
    assert.equal(server.stats.connectionsOpen, 1000);
    assert.equal(server.stats.requestsTime, 10000);
  } finally {
    for (const client of clients) client.close();
  }
});

engineTest("server closes connections idle for longer than the idle timeout", async (tcpEngine) => {
  await using server = start(tcpEngine, { idleTimeout: 0.2 });
  using silent = await LineClient.connect(server.addr.port);
  using slowloris = await LineClient.connect(server.addr.port);
  await slowloris.send("TI"); // never completes a request
  await within(5000, Promise.all([silent.closed(), slowloris.closed()]), "idle close");
  assert.equal(server.stats.closedIdle, 2);
});

engineTest("server keeps a connection open while it sends requests", async (tcpEngine) => {
  await using server = start(tcpEngine, { idleTimeout: 0.3 });
  using client = await LineClient.connect(server.addr.port);
  const started = performance.now();
  // Keep asking for longer than the idle timeout; every answer must come.
  while (performance.now() - started < 900) {
    assert.match(await client.time(), JAM_LINE);
  }
  assert.equal(server.stats.closedIdle, 0);
});

engineTest(
  "server refuses connections past --max-connections and keeps serving the others",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxConnections: 2 });
    using first = await LineClient.connect(server.addr.port);
    using second = await LineClient.connect(server.addr.port);
    for (const client of [first, second]) {
      assert.match(await client.time(), JAM_LINE);
    }
    using third = await LineClient.connect(server.addr.port);
    assert.equal(await third.readAll(), "ERR server busy\r\n");
    assert.match(await first.time(), JAM_LINE);
    await first.send("QUIT\r\n");
    await first.closed();
    using fourth = await LineClient.connect(server.addr.port);
    assert.match(await fourth.time(), JAM_LINE);
    assert.equal(server.stats.refusedBusy, 1);
  },
);

engineTest("server stops reading from a client that never reads its answers", async (tcpEngine) => {
  await using server = start(tcpEngine);
  using hog = await LineClient.connect(server.addr.port);
  const limit = 512 * 1024 * 1024;
  const { sent, pending } = await sendUntilStalled(hog.conn, limit);
  assert.ok(sent < limit, `the client could send all ${sent} bytes: nothing pushed back`);
  // What the server took in is bounded by socket buffers, not by what the client sent.
  const received = server.stats.bytesReceived;
  assert.ok(received < 64 * 1024 * 1024, `server read ${received} bytes`);
  // Meanwhile other clients are served as usual.
  using other = await LineClient.connect(server.addr.port);
  assert.match(await other.time(), JAM_LINE);
  assert.equal(server.stats.bytesReceived, received + 6, "the stalled client was not read further");
  hog.close();
  await pending;
});

engineTest(
  "shutdown sends what is owed, closes idle clients at once, and stops accepting",
  async (tcpEngine) => {
    const server = start(tcpEngine, { shutdownTimeout: 30 });
    const port = server.addr.port;
    using idle = await LineClient.connect(port);
    assert.match(await idle.time(), JAM_LINE);

    // A client that sends requests without reading until the server is stuck writing to it.
    using owed = await LineClient.connect(port);
    const { pending } = await sendUntilStalled(owed.conn, 512 * 1024 * 1024);
    const stopping = server.shutdown();
    await within(5000, idle.closed(), "closing the idle client");
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));

    // Now read: every request the server took in is answered before it closes.
    const answers = (await owed.readAll()).split("\r\n").filter((line) => line !== "");
    owed.close();
    await pending;
    await within(5000, stopping, "shutdown");
    assert.ok(answers.length > 100000, `${answers.length} answers`);
    assert.equal(answers.length, server.stats.requestsTime - 1);
    for (const answer of answers) assert.match(answer + "\r\n", JAM_LINE);
  },
);

engineTest("shutdown closes clients still busy after the shutdown timeout", async (tcpEngine) => {
  const warnings: string[] = [];
  const logger = createLogger({ level: "warn", write: (line) => warnings.push(line) });
  const server = start(tcpEngine, { shutdownTimeout: 0.2, logger });
  using hog = await LineClient.connect(server.addr.port);
  const { pending } = await sendUntilStalled(hog.conn, 512 * 1024 * 1024);
  await within(5000, server.shutdown(), "shutdown");
  assert.equal(server.stats.connectionsOpen, 0);
  assert.ok(warnings.some((line) => line.includes("shutdown timeout")), warnings.join("\n"));
  hog.close();
  await pending;
});

engineTest(
  "shutdown closes a client that has had its answers and lingers, at once",
  async (tcpEngine) => {
    const warnings: string[] = [];
    const logger = createLogger({ level: "warn", write: (line) => warnings.push(line) });
    const server = start(tcpEngine, { shutdownTimeout: 30, logger });
    // As `(printf 'TIME\nQUIT\n'; sleep 8) | nc`: answered and closed, but it keeps its side open.
    using done = await LineClient.connect(server.addr.port);
    await done.send("TIME\r\nQUIT\r\n");
    assert.match(await done.readAll(), JAM_LINE);
    using bystander = await LineClient.connect(server.addr.port);
    assert.match(await bystander.time(), JAM_LINE);
    await within(5000, server.shutdown(), "shutdown with a lingering client");
    assert.equal(server.stats.connectionsOpen, 0);
    assert.deepEqual(warnings, []);
  },
);

engineTest(
  "the shutdown timeout's warning counts the busy connections, not the lingering ones",
  async (tcpEngine) => {
    const warnings: string[] = [];
    const logger = createLogger({
      level: "warn",
      format: "json",
      write: (line) => warnings.push(line),
    });
    const server = start(tcpEngine, { shutdownTimeout: 0.2, logger });
    using hog = await LineClient.connect(server.addr.port);
    const { pending } = await sendUntilStalled(hog.conn, 512 * 1024 * 1024);
    using done = await LineClient.connect(server.addr.port);
    await done.send("TIME\r\nQUIT\r\n");
    assert.match(await done.readAll(), JAM_LINE);
    await within(5000, server.shutdown(), "shutdown");
    const warning = warnings.map((line) => JSON.parse(line)).find((event) =>
      event.msg.startsWith("shutdown timeout")
    );
    assert.equal(warning?.connections, 1, warnings.join("\n"));
    hog.close();
    await pending;
  },
);

engineTest(
  "server closes after QUIT without a reset, even with requests still unread",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    using client = await LineClient.connect(server.addr.port);
    // The QUIT is read long before the rest arrives; closing with unread input would reset.
    await client.send("TIME\r\nQUIT\r\n");
    assert.match((await client.readLine())!, JAM_LINE);
    await client.send("TIME\r\n".repeat(100000));
    assert.equal(await client.readAll(), "");
  },
);

engineTest(
  "server delivers the line-too-long error to a client that keeps sending",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxLine: 64 });
    using client = await LineClient.connect(server.addr.port);
    const sending = client.send("x".repeat(4 * 1024 * 1024)).catch(() => {});
    assert.equal(await client.readAll(), "ERR line too long\r\n");
    client.close();
    await sending;
  },
);

engineTest(
  "server answers with the current time, within a second of the test's clock",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { timeZone: "UTC" });
    using client = await LineClient.connect(server.addr.port);
    await client.send("TIME\r\n");
    const before = Date.now();
    const line = (await client.readLine())!;
    const after = Date.now();
    const [hours, minutes, seconds] = line.slice(4, 12).split(":").map(Number);
    const answered = (hours * 3600 + minutes * 60 + seconds) * 1000;
    const day = 86400000;
    const distance = (time: number) => {
      const d = Math.abs((time % day) - answered);
      return Math.min(d, day - d);
    };
    assert.ok(
      Math.min(distance(before), distance(after)) < 1000,
      `${line.trim()} vs ${new Date(before).toISOString()}`,
    );
  },
);

engineTest("server answers in the time zone it was given", async (tcpEngine) => {
  const now = () => Date.parse("2026-06-15T20:30:15Z");
  await using server = start(tcpEngine, { timeZone: "Asia/Jakarta", now });
  using client = await LineClient.connect(server.addr.port);
  await client.send("TIME\r\n");
  assert.equal(await client.readLine(), "JAM 03:30:15\r\n");
});

// Windows sockets are IPv6-only on "::" by default; README says to use --host 0.0.0.0 there.
engineTest({
  name: "server on the default host takes IPv4 and IPv6 clients",
  ignore: Deno.build.os === "windows",
}, async (tcpEngine) => {
  await using server = serve({ tcpEngine, port: 0, logger: createLogger({ level: "error" }) });
  for (const hostname of ["127.0.0.1", "::1"]) {
    using client = await LineClient.connect(server.addr.port, hostname);
    assert.match(await client.time(), JAM_LINE, hostname);
  }
});

engineTest(
  "server logs connections at debug level with the client's IPv4 address",
  async (tcpEngine) => {
    const lines: string[] = [];
    const closed = Promise.withResolvers<void>();
    const logger = createLogger({
      level: "debug",
      format: "json",
      write: (line) => {
        lines.push(line);
        if (line.includes('"msg":"connection closed"')) closed.resolve();
      },
    });
    await using server = serve({ tcpEngine, port: 0, logger });
    using client = await LineClient.connect(server.addr.port, "127.0.0.1");
    await client.send("QUIT\r\n");
    await client.closed();
    client.close();
    // The server lingers until it reads the client's close; a shutdown before that would
    // close the connection with reason "shutdown" instead.
    await within(5000, closed.promise, "the server's close of the connection");
    await server.shutdown();
    const events = lines.map((line) => JSON.parse(line));
    const opened = events.find((event) => event.msg === "connection opened");
    assert.match(opened.peer, /^127\.0\.0\.1:\d+$/);
    assert.ok(events.some((e) => e.msg === "connection closed" && e.reason === "quit"));
  },
);

Deno.test("addresses are formatted for logs with IPv4-mapped IPv6 shown as IPv4", () => {
  assert.equal(clientHost("::ffff:127.0.0.2"), "127.0.0.2");
  assert.equal(clientHost("::1"), "::1");
  assert.equal(
    formatAddress({ transport: "tcp", hostname: "::ffff:10.0.0.1", port: 7 }),
    "10.0.0.1:7",
  );
  assert.equal(formatAddress({ transport: "tcp", hostname: "::1", port: 7 }), "[::1]:7");
});

const linux = Deno.build.os === "linux";

engineTest({
  name: "server refuses a client past --max-connections-per-ip while others are served",
  ignore: !linux, // other systems do not route 127.0.0.2 to loopback by default
}, async (tcpEngine) => {
  // The server's debug log tells when it has let go of a connection.
  const closed = new Map<string, PromiseWithResolvers<void>>();
  const closedPeer = (peer: string) => {
    if (!closed.has(peer)) closed.set(peer, Promise.withResolvers<void>());
    return closed.get(peer)!;
  };
  const logger = createLogger({
    level: "debug",
    format: "json",
    write: (line) => {
      const event = JSON.parse(line);
      if (event.msg === "connection closed") closedPeer(event.peer).resolve();
    },
  });
  await using server = start(tcpEngine, { hostname: "0.0.0.0", maxConnectionsPerIp: 2, logger });
  const port = server.addr.port;
  const first = await holdFrom("127.0.0.1", port);
  const second = await holdFrom("127.0.0.1", port);
  assert.equal(await exchangeFrom("127.0.0.1", port, "TIME\r\n"), "ERR too many connections\r\n");
  assert.match(await exchangeFrom("127.0.0.2", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
  await first.close();
  await within(5000, closedPeer(`127.0.0.1:${first.localPort}`).promise, "the server letting go");
  assert.match(await exchangeFrom("127.0.0.1", port, "TIME\r\nQUIT\r\n"), JAM_LINE);
  await second.close();
  assert.equal(server.stats.refusedPerIp, 1);
});

engineTest("server counts IPv4-mapped IPv6 clients under their IPv4 address", async (tcpEngine) => {
  await using server = serve({
    tcpEngine,
    port: 0,
    maxConnectionsPerIp: 1,
    logger: createLogger({ level: "error" }),
  });
  using held = await LineClient.connect(server.addr.port, "127.0.0.1");
  assert.match(await held.time(), JAM_LINE);
  using refused = await LineClient.connect(server.addr.port, "127.0.0.1");
  assert.equal(await refused.readAll(), "ERR too many connections\r\n");
  using ipv6 = await LineClient.connect(server.addr.port, "::1");
  assert.match(await ipv6.time(), JAM_LINE, "::1 is another client");
});

/** A PROXY v2 header for a TCP over IPv4 client. */
function proxyV2(source: [number, number, number, number], sourcePort: number): Uint8Array {
  const addresses = [...source, 127, 0, 0, 1, sourcePort >> 8, sourcePort & 0xff, 0xaf, 0xc8];
  return new Uint8Array([...PROXY_V2_SIGNATURE, 0x21, 0x11, 0x00, addresses.length, ...addresses]);
}

engineTest(
  "server with --proxy-protocol takes the client address from a v1 or v2 header",
  async (tcpEngine) => {
    const lines: string[] = [];
    const logger = createLogger({
      level: "debug",
      format: "json",
      write: (line) => lines.push(line),
    });
    await using server = start(tcpEngine, { proxyProtocol: true, logger });
    using v1 = await LineClient.connect(server.addr.port);
    await v1.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 45000\r\nTIME\r\n");
    assert.match((await v1.readLine())!, JAM_LINE);
    using v2 = await LineClient.connect(server.addr.port);
    await v2.send(proxyV2([198, 51, 100, 9], 40000));
    assert.match(await v2.time(), JAM_LINE);
    const opened = lines.map((line) => JSON.parse(line)).filter((e) =>
      e.msg === "connection opened"
    );
    assert.deepEqual(opened.map((e) => e.peer).sort(), ["198.51.100.9:40000", "203.0.113.7:51000"]);
    assert.ok(
      opened.every((e) => /^127\.0\.0\.1:\d+$/.test(e.via)),
      "the balancer's address is kept as via",
    );
  },
);

engineTest(
  "server with --proxy-protocol closes connections without a valid header",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { proxyProtocol: true });
    const port = server.addr.port;
    for (
      const input of ["TIME\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\nTIME\r\n", "x".repeat(5000)]
    ) {
      using client = await LineClient.connect(port);
      await client.send(input);
      assert.equal(await client.readAll(), "", JSON.stringify(input.slice(0, 20)));
    }
    assert.equal(server.stats.closedProxyHeader, 3);
    assert.equal(server.stats.requestsTime, 0);
  },
);

engineTest(
  "server with --proxy-protocol closes a connection that sends no header in time",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { proxyProtocol: true, proxyHeaderTimeout: 0.2 });
    using silent = await LineClient.connect(server.addr.port);
    await silent.send("PROXY TCP4 1.2"); // and then nothing
    assert.equal(await within(5000, silent.readAll(), "closing the silent client"), "");
  },
);

engineTest(
  "server applies --max-connections-per-ip to the address from the PROXY header",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { proxyProtocol: true, maxConnectionsPerIp: 1 });
    const port = server.addr.port;
    using first = await LineClient.connect(port);
    await first.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 45000\r\nTIME\r\n");
    assert.match((await first.readLine())!, JAM_LINE);
    using same = await LineClient.connect(port);
    await same.send("PROXY TCP4 203.0.113.7 127.0.0.1 51001 45000\r\nTIME\r\n");
    assert.equal(await same.readAll(), "ERR too many connections\r\n");
    using other = await LineClient.connect(port);
    await other.send("PROXY TCP4 203.0.113.8 127.0.0.1 51002 45000\r\nTIME\r\n");
    assert.match((await other.readLine())!, JAM_LINE);
  },
);

engineTest(
  "server without --proxy-protocol answers a PROXY line as an unknown command",
  async (tcpEngine) => {
    await using server = start(tcpEngine);
    using client = await LineClient.connect(server.addr.port);
    await client.send("PROXY TCP4 203.0.113.7 127.0.0.1 51000 45000\r\nTIME\r\n");
    assert.equal(await client.readLine(), "ERR unknown command\r\n");
    assert.match((await client.readLine())!, JAM_LINE);
  },
);

engineTest(
  "server delivers ERR server busy to a client that sends before reading",
  async (tcpEngine) => {
    await using server = start(tcpEngine, { maxConnections: 1 });
    using first = await LineClient.connect(server.addr.port);
    assert.match(await first.time(), JAM_LINE);
    using refused = await LineClient.connect(server.addr.port);
    await refused.send("TIME\r\n".repeat(1000));
    assert.equal(await refused.readAll(), "ERR server busy\r\n");
  },
);

engineTest(
  "server logs a summary of its counters at info level, only when they changed",
  async (tcpEngine) => {
    const summaries: Record<string, unknown>[] = [];
    let waiting: { requests: number; resolve: () => void } | null = null;
    const logger = createLogger({
      level: "info",
      format: "json",
      write: (line) => {
        const event = JSON.parse(line);
        if (event.msg !== "summary") return;
        summaries.push(event);
        if (waiting && event.requestsTime === waiting.requests) waiting.resolve();
      },
    });
    const summaryWith = (requests: number) => {
      const { promise, resolve } = Promise.withResolvers<void>();
      waiting = { requests, resolve };
      return within(5000, promise, `a summary with requestsTime=${requests}`);
    };
    await using server = start(tcpEngine, { logger, statsInterval: 0.05 });
    using client = await LineClient.connect(server.addr.port);
    for (const requests of [1, 2]) {
      const logged = summaryWith(requests);
      assert.match(await client.time(), JAM_LINE);
      await logged;
    }
    assert.equal(summaries.at(-1)!.connectionsOpen, 1);
    assert.match(String(summaries.at(-1)!.time), /^\d{4}-\d\d-\d\dT/, "time is the timestamp");
    // A summary is only written when some counter changed since the one before.
    const counters = summaries.map(({ time: _timestamp, ...rest }) => JSON.stringify(rest));
    for (let i = 1; i < counters.length; i++) assert.notEqual(counters[i], counters[i - 1]);
  },
);
