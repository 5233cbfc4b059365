// Tests of client mode against the in-process server and against misbehaving fakes.

import assert from "node:assert/strict";
import { askTime, ClientError, parseClientCommandLine } from "./client.ts";
import { createLogger } from "../lib/log.ts";
import { serve } from "../server/server.ts";
import { JAM_LINE, runMain } from "../testing/test_util.ts";
import { UsageError } from "../lib/usage.ts";

function startServer() {
  return serve({ hostname: "127.0.0.1", port: 0, logger: createLogger({ level: "error" }) });
}

/** A fake server that answers every connection with `reply` (or nothing), for failure cases. */
function fakeServer(reply: string | null) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      if (reply !== null) await conn.write(new TextEncoder().encode(reply));
    }
  })();
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await accepting;
    },
  };
}

Deno.test("client asks once and returns the server's answer", async () => {
  await using server = startServer();
  const answers = await askTime({ hostname: "127.0.0.1", port: server.addr.port });
  assert.equal(answers.length, 1);
  assert.match(answers[0] + "\r\n", JAM_LINE);
  assert.equal(server.stats.requestsQuit, 1, "the client said QUIT");
});

Deno.test("client asks --count times and reports each answer as it comes", async () => {
  await using server = startServer();
  const seen: string[] = [];
  const answers = await askTime({
    hostname: "127.0.0.1",
    port: server.addr.port,
    count: 3,
    interval: 0,
    onAnswer: (answer) => seen.push(answer),
  });
  assert.equal(answers.length, 3);
  assert.deepEqual(seen, answers);
  assert.equal(server.stats.requestsTime, 3);
});

Deno.test("client fails with one line when nothing listens", async () => {
  const port = (() => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return listener.addr.port;
  })();
  await assert.rejects(
    askTime({ hostname: "127.0.0.1", port }),
    (error: unknown) =>
      error instanceof ClientError &&
      /^cannot connect to 127\.0\.0\.1:\d+: connection refused$/.test(error.message),
  );
});

Deno.test("client fails when the server answers something else", async () => {
  await using fake = fakeServer("HELLO\r\n");
  await assert.rejects(
    askTime({ hostname: "127.0.0.1", port: fake.port }),
    (error: unknown) => error instanceof ClientError && error.message.includes(`answered "HELLO"`),
  );
});

Deno.test("client gives up after --timeout when the server never answers", async () => {
  await using fake = fakeServer(null);
  const started = performance.now();
  await assert.rejects(
    askTime({ hostname: "127.0.0.1", port: fake.port, timeout: 0.2 }),
    (error: unknown) =>
      error instanceof ClientError && error.message.includes("did not finish within 0.2 s"),
  );
  assert.ok(performance.now() - started < 5000);
});

Deno.test("client command line reads its flags and rejects bad ones", () => {
  assert.deepEqual(
    parseClientCommandLine([
      "--host",
      "::1",
      "-p",
      "4000",
      "-n",
      "2",
      "--interval",
      "0.5",
      "--timeout",
      "3",
    ]),
    {
      hostname: "::1",
      port: 4000,
      count: 2,
      interval: 0.5,
      timeout: 3,
    },
  );
  assert.deepEqual(parseClientCommandLine([], { PORT: "4100" }), { port: 4100 });
  assert.equal(parseClientCommandLine(["--help"]), null);
  for (
    const args of [["--count", "0"], ["--port", "0"], ["--timeout", "0"], ["--bogus"], ["extra"]]
  ) {
    assert.throws(() => parseClientCommandLine(args), UsageError, args.join(" "));
  }
  // A negative number is a value out of range, not a missing one.
  const negative: [string[], string][] = [
    [["--count", "-1"], '--count must be a whole number from 1 to 1000000, got "-1"'],
    [["-n", "-1"], '--count must be a whole number from 1 to 1000000, got "-1"'],
    [["--interval", "-0.5"], '--interval must be a number of seconds from 0 to 86400, got "-0.5"'],
  ];
  for (const [args, message] of negative) {
    assert.throws(() => parseClientCommandLine(args), new UsageError(message));
  }
});

const runClient = (args: string[]) => runMain(["client", ...args]);

Deno.test("time-server client prints the answers and exits 0, or one line and exit 1", async () => {
  await using server = startServer();
  const ok = await runClient([
    "--host",
    "127.0.0.1",
    "--port",
    String(server.addr.port),
    "-n",
    "2",
    "--interval",
    "0",
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^JAM \d\d:\d\d:\d\d\nJAM \d\d:\d\d:\d\d\n$/);

  await using fake = fakeServer("NOPE\r\n");
  const bad = await runClient(["--host", "127.0.0.1", "--port", String(fake.port)]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^time-server client: [^\n]+\n$/);
});
