// End-to-end test behind a real load balancer: HAProxy with deploy/haproxy.cfg in front
// of two time-server instances speaking the PROXY protocol.

import assert from "node:assert/strict";
import { askTime } from "../client/client.ts";
import {
  freePort,
  JAM_LINE,
  LineClient,
  startProcess,
  startServerProcess,
  within,
} from "../testing/test_util.ts";

function hasHaproxy(): boolean {
  try {
    return new Deno.Command("haproxy", { args: ["-v"] }).outputSync().success;
  } catch {
    return false;
  }
}

const haproxy = Deno.build.os !== "windows" && hasHaproxy();
if (!haproxy) {
  console.log("haproxy_test.ts: skipping: haproxy is not installed (.ci/run installs it)");
}

/** Connects through the balancer `count` times; resolves with each client's local port. */
function timeThrough(port: number, count: number): Promise<number[]> {
  return Promise.all(Array.from({ length: count }, async () => {
    using client = await LineClient.connect(port);
    await client.send("TIME\r\nQUIT\r\n");
    assert.match(await client.readAll(), JAM_LINE);
    return client.conn.localAddr.port;
  }));
}

/** A pattern for an instance's "connection opened" event naming a client port as the peer. */
const openedFor = (clientPort: number) =>
  new RegExp(`"msg":"connection opened","peer":"127\\.0\\.0\\.1:${clientPort}","via":`);

/** Reads a Daytime answer through the balancer; resolves with it and the client's local port. */
async function daytimeThrough(port: number): Promise<[string, number]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const local = (conn.localAddr as Deno.NetAddr).port;
  let text = "";
  for await (const chunk of conn.readable) text += new TextDecoder().decode(chunk);
  return [text, local];
}

Deno.test({
  name:
    "HAProxy spreads clients over two instances, which log the real client, and survives losing one",
  ignore: !haproxy,
}, async () => {
  const daytimePorts = [freePort(), freePort()];
  const flags = [
    "--host",
    "127.0.0.1",
    "--proxy-protocol",
    "--log-level",
    "debug",
    "--log-format",
    "json",
  ];
  await using first = await startServerProcess([...flags, "--daytime-port", `${daytimePorts[0]}`]);
  await using second = await startServerProcess([...flags, "--daytime-port", `${daytimePorts[1]}`]);
  const port = freePort();
  const daytimePort = freePort();
  await using balancer = startProcess(
    ["haproxy", "-db", "-f", new URL("./haproxy.cfg", import.meta.url).pathname],
    {
      env: {
        FRONTEND_ADDR: `127.0.0.1:${port}`,
        SERVER1: `127.0.0.1:${first.port}`,
        SERVER2: `127.0.0.1:${second.port}`,
        DAYTIME_ADDR: `127.0.0.1:${daytimePort}`,
        DAYTIME1: `127.0.0.1:${daytimePorts[0]}`,
        DAYTIME2: `127.0.0.1:${daytimePorts[1]}`,
      },
      stdout: true,
    },
  );
  // Ready once a health check has reached each instance (they log the check's connection).
  await within(
    10000,
    Promise.all([
      first.logged(/"msg":"connection closed"/),
      second.logged(/"msg":"connection closed"/),
    ]),
    "first health checks",
  );
  // Each check ends with QUIT, then a reset instead of a close: after the server's last word
  // that loses nothing, and must not count as a reset. Three checks each (every 500 ms).
  const closes = /("msg":"connection closed"[^\n]*\n[\s\S]*){3}/;
  await within(10000, Promise.all([first.logged(closes), second.logged(closes)]), "3 checks");
  for (const instance of [first, second]) {
    const reasons = instance.text().split("\n").filter((line) => line.includes("connection closed"))
      .map((line) => JSON.parse(line).reason);
    assert.ok(reasons.length >= 3 && !reasons.includes("reset"), `health checks: ${reasons}`);
  }
  const answers = await within(
    10000,
    askTime({ hostname: "127.0.0.1", port, count: 3, interval: 0 }),
    "TIME via HAProxy",
  );
  assert.equal(answers.length, 3);

  // Each client's own address and port must show up in the log of the instance that served it.
  const clientPorts = await timeThrough(port, 20);
  const placement = await within(
    5000,
    Promise.all(clientPorts.map((clientPort) =>
      Promise.any([
        first.logged(openedFor(clientPort)).then(() => "first"),
        second.logged(openedFor(clientPort)).then(() => "second"),
      ])
    )),
    "the instances logging the clients",
  );
  assert.ok(placement.includes("first") && placement.includes("second"), "round robin uses both");

  // Daytime through its own frontend: one line, and the instance sees the real client too.
  const [daytime, daytimeClient] = await within(5000, daytimeThrough(daytimePort), "daytime");
  assert.match(daytime, /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$/);
  await within(
    5000,
    Promise.any([first.logged(openedFor(daytimeClient)), second.logged(openedFor(daytimeClient))]),
    "an instance logging the daytime client",
  );

  second.child.kill("SIGKILL");
  await within(15000, balancer.logged(/s2 is DOWN/), "HAProxy marking the killed instance down");
  const afterwards = await timeThrough(port, 20);
  assert.equal(afterwards.length, 20, "no connection lost once the instance is marked down");
  await within(
    5000,
    Promise.all(afterwards.map((clientPort) => first.logged(openedFor(clientPort)))),
    "the remaining instance serving every client",
  );
});

/**
 * The `haproxy …` commands in the README and the pages it links, with their environment:
 * each line of a shell block that runs haproxy, joined across trailing backslashes.
 */
function documentedHaproxyCommands(): {
  page: string;
  env: Record<string, string>;
  args: string[];
}[] {
  const pages = [
    "README.md",
    "docs/scale.md",
    "docs/reliability.md",
    "docs/ntp.md",
    "deploy/README.md",
  ];
  const commands = [];
  for (const page of pages) {
    const text = Deno.readTextFileSync(new URL(`../${page}`, import.meta.url));
    for (const block of text.matchAll(/```(?:sh|bash)?\n([\s\S]*?)```/g)) {
      for (const line of block[1].replace(/\\\n\s*/g, " ").split("\n")) {
        const words = line.trim().split(/\s+/);
        const at = words.findIndex((word) => word === "haproxy");
        if (at === -1 || words.slice(0, at).some((word) => !/^[A-Z0-9_]+=/.test(word))) continue;
        const env = Object.fromEntries(words.slice(0, at).map((word) => word.split("=", 2)));
        commands.push({ page, env, args: words.slice(at + 1) });
      }
    }
  }
  return commands;
}

Deno.test({
  name: "every haproxy command the docs give passes HAProxy's own check of the configuration",
  ignore: !haproxy,
}, async () => {
  const commands = documentedHaproxyCommands();
  assert.ok(commands.length >= 1, "the docs give a haproxy command");
  for (const { page, env, args } of commands) {
    // -c parses and checks the configuration with the command's environment, and binds nothing.
    const output = await new Deno.Command("haproxy", {
      args: ["-c", ...args],
      env,
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(output.stderr) + new TextDecoder().decode(output.stdout);
    assert.equal(output.code, 0, `${page}: haproxy ${args.join(" ")}\n${text}`);
  }
});
