// Tests of the program as a subprocess: exit codes, messages, signals, workers and NTS.

import assert from "node:assert/strict";
import {
  engineTest,
  freePort,
  JAM_LINE,
  LineClient,
  mainModule,
  onEngine,
  runMain,
  sendUntilStalled,
  type ServerProcess,
  startServerProcess,
  within,
  workersCommand,
} from "./testing/test_util.ts";
import { exchangeDatagram, ffiFlag, ntpRequest, udpClient } from "./testing/time_clients.ts";
import { mmsgSupported } from "./server/udp/mmsg.ts";
import { delay } from "./lib/net.ts";
import { effectiveUid, LIBC_FFI_FLAG } from "./lib/libc.ts";
import { startCommand } from "./tools/start_task.ts";
import { FFI_PATHS, ntsMissing } from "./nts/setup.ts";
import {
  haveOpenssl,
  keExchange,
  makeCertificate,
  mintSession,
  ntsRequest,
  readNtsReply,
} from "./testing/nts.ts";

Deno.test("program prints help and exits 0", async () => {
  const { code, stdout, stderr } = await runMain(["--help"]);
  assert.equal(code, 0);
  assert.match(stdout, /^time-server .*\n\nUsage: time-server/);
  assert.equal(stderr, "");
});

Deno.test("program rejects a bad flag with one line on stderr and exit code 2", async () => {
  for (const args of [["--bogus"], ["--port", "http"], ["--tz", "Nowhere/Land"]]) {
    const { code, stdout, stderr } = await runMain(args);
    assert.equal(code, 2, args.join(" "));
    assert.equal(stdout, "");
    assert.match(stderr, /^time-server: [^\n]+\n$/, args.join(" "));
  }
});

Deno.test("program exits 1 with one line when the port is in use, saying whether a listener or a client socket holds it", async () => {
  // A listener, on a port inside Linux's range for client sockets or below it.
  using inRange = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using below = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
  // A client socket and no listener: the accepted end of a connection to `below`.
  using client = await Deno.connect({ hostname: "127.0.0.1", port: below.addr.port });
  using accepted = await below.accept();
  const clientPort = (client.localAddr as Deno.NetAddr).port;
  const linux = Deno.build.os === "linux";
  const listener = (port: number) =>
    `address already in use: another program listens on it (see ss -ltnp 'sport = :${port}')`;
  const cases: [number, string][] = [
    [inRange.addr.port, listener(inRange.addr.port)],
    [below.addr.port, listener(below.addr.port)],
    [
      clientPort,
      linux && clientPort >= 32768 && clientPort <= 60999
        ? `address already in use; ${clientPort} is inside Linux's range for client sockets ` +
          `(32768-60999 by default), where an outgoing connection can hold it even when nothing ` +
          `listens: see ss -tan | grep ':${clientPort} '`
        : "address already in use",
    ],
  ];
  for (const [port, reason] of cases) {
    const { code, stderr } = await runMain(["--host", "127.0.0.1", "--port", String(port)]);
    assert.equal(code, 1);
    assert.equal(stderr, `time-server: cannot listen on 127.0.0.1:${port}: ${reason}\n`);
  }
  assert.ok(accepted.remoteAddr);
});

Deno.test("program with --log-format json says why it cannot start as one JSON error event", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const cases: [string[], number, RegExp][] = [
    [
      ["--port", "abc"],
      2,
      /^--port must be a whole number from 0 to 65535, got "abc" \(see --help\)$/,
    ],
    [
      ["--host", "127.0.0.1", "--port", String(taken.addr.port)],
      1,
      /^cannot listen on 127\.0\.0\.1:\d+: address already in use/,
    ],
  ];
  for (const [args, code, why] of cases) {
    for (const json of [["--log-format", "json"], ["--log-format=json"]]) {
      const result = await runMain([...json, ...args]);
      assert.equal(result.code, code, args.join(" "));
      const lines = result.stderr.trim().split("\n");
      assert.equal(lines.length, 1, result.stderr);
      const event = JSON.parse(lines[0]);
      assert.equal(event.level, "error");
      assert.match(event.error, why);
      assert.ok(!Number.isNaN(Date.parse(event.time)));
    }
  }
});

Deno.test("program exits 1 with one line when --host is not an address of this machine", async () => {
  // A documentation address (RFC 5737): the bind fails, and nothing is ever sent to it.
  const { code, stderr } = await runMain(["--host", "198.51.100.7", "--port", "0"]);
  assert.equal(code, 1);
  assert.equal(
    stderr,
    "time-server: cannot listen on 198.51.100.7:0: this machine has no such address " +
      "(--host takes one of its own, or :: or 0.0.0.0 for all)\n",
  );
});

Deno.test({
  name: "program with --workers describes a service port in use in the project's words",
  ignore: Deno.build.os !== "linux",
}, async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
  const port = taken.addr.port;
  const { code, stderr } = await runMain(
    ["--host", "127.0.0.1", "--port", "0", "--workers", "2", "--daytime-port", `${port}`],
    { command: workersCommand },
  );
  assert.equal(code, 1);
  assert.equal(
    stderr,
    `time-server: cannot listen on 127.0.0.1:${port} (daytime, TCP): address already in use: ` +
      `another program listens on it (see ss -ltnp 'sport = :${port}')\n`,
  );
});

Deno.test("program says in one line which permission a feature lacks, with the flag that grants it", async () => {
  const root = new URL(".", import.meta.url).pathname;
  const workers = await runMain(["--host", "127.0.0.1", "--port", "0", "--workers", "2"]);
  assert.equal(workers.code, 1);
  assert.equal(
    workers.stderr,
    `time-server: --workers needs read access to the server's modules: run with ` +
      `--allow-read=${root} (deno task start grants it)\n`,
  );
  const mmsg = await runMain(["--ntp-port", "0", "--udp-engine", "mmsg"]);
  assert.equal(mmsg.code, 2);
  assert.match(
    mmsg.stderr,
    /^time-server: --udp-engine mmsg needs (FFI permission for libc: run with --allow-ffi=\/lib\/x86_64-linux-gnu\/libc.so.6,[^ ]+ \(deno task start and the binary grant it\)|Linux on x86_64 or aarch64 [^\n]*) \(see --help\)\n$/,
  );
});

Deno.test({
  name: "program exits 1 with its own line, not a crash, when a worker cannot load a module",
  ignore: Deno.build.os !== "linux",
}, async () => {
  // Read access to the project passes the check before the pool starts; one module denied
  // makes the worker itself fail to load. Deno prints its own line for the worker too.
  const root = new URL(".", import.meta.url).pathname;
  const { code, stderr } = await runMain(["--host", "127.0.0.1", "--port", "0", "--workers", "2"], {
    command: [
      Deno.execPath(),
      "run",
      "--allow-net",
      `--allow-read=${root}`,
      `--deny-read=${root}lib/log.ts`,
      mainModule,
    ],
  });
  assert.equal(code, 1);
  assert.match(
    stderr,
    /^time-server: a worker could not start: Requires read access to "[^"]*lib\/log.ts"[^\n]*$/m,
  );
  assert.doesNotMatch(stderr, /Unhandled error in child worker/);
});

Deno.test("program warns in one line that PORT is not read without --allow-env=PORT", async () => {
  // Nothing can listen on 198.51.100.7, so the default port is named but never bound.
  const { code, stderr } = await runMain(["--host", "198.51.100.7"], {
    command: [Deno.execPath(), "run", "--allow-net", mainModule],
    env: { PORT: "20140" },
  });
  assert.equal(code, 1);
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, stderr);
  assert.match(
    lines[0],
    / WARN {2}PORT from the environment is not read without --allow-env=PORT; serving on the default port port=45000$/,
  );
  assert.match(lines[1], /^time-server: cannot listen on 198\.51\.100\.7:45000: /);
  // With the permission there is nothing to warn of.
  const granted = await runMain(["--host", "198.51.100.7"], { env: { PORT: "20140" } });
  assert.match(granted.stderr, /^time-server: cannot listen on 198\.51\.100\.7:20140: [^\n]+\n$/);
});

Deno.test({
  name:
    "program warns once when --udp-engine auto serves UDP with the portable engine for want of FFI",
  ignore: Deno.build.os !== "linux" || !mmsgSupported(),
}, async () => {
  await using portable = await startServerProcess(["--host", "127.0.0.1", "--ntp-port", "0"]);
  assert.match(
    portable.text(),
    /WARN {2}UDP is served by the portable engine: the batched one needs FFI permission for libc: run with --allow-ffi=/,
  );
  const command = [...workersCommand.slice(0, -1), ffiFlag(), workersCommand.at(-1)!];
  await using batched = await startServerProcess(
    ["--host", "127.0.0.1", "--ntp-port", "0"],
    command,
  );
  assert.doesNotMatch(batched.text(), /WARN/);
});

// Windows has no SIGTERM, and child processes cannot be sent SIGINT there.
engineTest({
  name: "program serves TIME and exits 0 on SIGTERM, draining first",
  ignore: Deno.build.os === "windows",
}, async (tcpEngine) => {
  await using server = await startServerProcess(
    ...onEngine(tcpEngine, ["--host", "127.0.0.1", "--log-format", "json"]),
  );
  using client = await LineClient.connect(server.port);
  assert.match(await client.time(), JAM_LINE);
  server.child.kill("SIGTERM");
  await within(10000, client.closed(), "closing the idle client");
  const status = await within(10000, server.child.status, "exit after SIGTERM");
  assert.equal(status.code, 0);
  const events = (await server.stderr).trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(events.map((event) => event.msg), ["listening", "shutting down", "stopped"]);
  assert.equal(events[1].signal, "SIGTERM");
  assert.equal(events[2].requestsTime, 1);
});

Deno.test({
  name:
    "program without --config takes SIGHUP, as a closed terminal sends it, as nothing to reload: it keeps serving",
  ignore: Deno.build.os === "windows",
}, async () => {
  await using server = await startServerProcess(["--host", "127.0.0.1", "--log-format", "json"]);
  using client = await LineClient.connect(server.port);
  assert.match(await client.time(), JAM_LINE);
  server.child.kill("SIGHUP");
  await server.logged(/SIGHUP: no --config file to reload; ignored/);
  assert.match(await client.time(), JAM_LINE, "the connection open before it is still served");
  client.close();
  const events = await stopForEvents(server);
  assert.deepEqual(events.map((event) => event.msg), [
    "listening",
    "SIGHUP: no --config file to reload; ignored",
    "shutting down",
    "stopped",
  ]);
});

/**
 * `deno task start` (or another task) in a process group of its own, as a shell runs a
 * command in a terminal: a signal to the group reaches the task runner and the server
 * both, and the runner passes it on to the server again.
 */
function startTaskInGroup(args: string[], task = "start"): Promise<ServerProcess> {
  const root = new URL(".", import.meta.url).pathname;
  return startServerProcess(
    ["--host", "127.0.0.1", ...args],
    ["setsid", Deno.execPath(), "task", "--cwd", root, task],
  );
}

// `deno task dev` runs with --watch, whose watcher owns SIGINT: it answers Ctrl-C with a
// SIGTERM, which drains the server, and then ends. A SIGTERM from elsewhere drains the
// server and the watcher waits for a file change, as --watch does whenever the program
// ends, so SIGTERM is tested with `start` only. Before the server left SIGINT to the
// watcher, this test failed 10 runs in 25 with one core kept busy.
const groupStops = [
  ["SIGINT", "start"],
  ["SIGTERM", "start"],
  ["SIGINT", "dev"],
] as const;
for (const [signal, task] of groupStops) {
  engineTest({
    name: `one ${signal} to the process group of deno task ${task} drains the server once`,
    ignore: Deno.build.os !== "linux",
  }, async (tcpEngine) => {
    // The copy deno task passes on came within a millisecond in 3 runs of 8 before this
    // was handled (every run under dev); 6 runs at once make a regression all but certain to show.
    await Promise.all(Array.from({ length: 6 }, async () => {
      await using server = await startTaskInGroup(["--tcp-engine", tcpEngine], task);
      using client = await LineClient.connect(server.port);
      assert.match(await client.time(), JAM_LINE);
      Deno.kill(-server.child.pid, signal);
      await within(10000, client.closed(), "closing the idle client");
      const status = await within(10000, server.child.status, `exit after ${signal}`);
      // The server's last line ends what is asserted: under dev, a --watch watcher left
      // waiting for a file change would hold the output open after the task has exited.
      await within(10000, server.logged(/INFO {2}stopped /), "the server's last line");
      const log = server.text();
      assert.doesNotMatch(log, /second signal/);
      assert.equal(log.match(/ INFO {2}shutting down /g)?.length, 1, log);
      assert.match(log, /INFO {2}stopped requestsTime=1 /);
      // Under dev the exit code is the watcher's: 0, or 130 when it takes the copy that
      // deno task passes on for a second Ctrl-C after the server has stopped (under load).
      if (task === "dev") assert.ok(status.code === 0 || status.code === 130, log);
      else assert.equal(status.code, 0, log);
    }));
  });
}

for (const how of ["deno run", "deno task start"] as const) {
  engineTest({
    name: `two signals a second apart force the exit under ${how}`,
    ignore: Deno.build.os !== "linux",
  }, async (tcpEngine) => {
    const args = ["--shutdown-timeout", "60"];
    await using server = how === "deno run"
      ? await startServerProcess(...onEngine(tcpEngine, ["--host", "127.0.0.1", ...args]))
      : await startTaskInGroup([...args, "--tcp-engine", tcpEngine]);
    const target = how === "deno run" ? server.child.pid : -server.child.pid;
    using client = await LineClient.connect(server.port);
    // A client that is owed answers and does not read them keeps the drain waiting.
    const { pending } = await sendUntilStalled(client.conn, 512 * 1024 * 1024);
    Deno.kill(target, "SIGINT");
    const first = performance.now();
    await server.logged(/shutting down/);
    // The time between the two is what is tested: a person pressing Ctrl-C again.
    await delay(1000 - (performance.now() - first));
    Deno.kill(target, "SIGINT");
    const status = await within(10000, server.child.status, "exit after the second signal");
    assert.equal(status.code, 1);
    assert.match(await server.stderr, /second signal; exiting now/);
    client.close();
    await pending;
  });
}

/** The fields of the JSON log events the workers tests read. */
interface LogEvent {
  msg: string;
  worker: number;
  connectionsTotal: number;
  requestsTime: number;
  requestsNtp?: number;
  requestsNts?: number;
}

/** Stops a server run with `--log-format json` by SIGTERM, checks it exits 0, and returns its log events. */
async function stopForEvents(server: ServerProcess): Promise<LogEvent[]> {
  server.child.kill("SIGTERM");
  assert.equal((await within(10000, server.child.status, "exit after SIGTERM")).code, 0);
  return (await server.stderr).trim().split("\n").map((line) => JSON.parse(line));
}

for (const engine of ["mmsg", "deno"] as const) {
  Deno.test({
    name: `program with --workers 2 answers SNTP from ${
      engine === "mmsg" ? "both workers (SO_REUSEPORT)" : "the first worker (--udp-engine deno)"
    }`,
    ignore: Deno.build.os !== "linux" || (engine === "mmsg" && !mmsgSupported()),
  }, async () => {
    const ntpPort = freePort();
    const command = [...workersCommand.slice(0, -1), ffiFlag(), workersCommand.at(-1)!];
    await using server = await startServerProcess([
      "--host",
      "127.0.0.1",
      "--workers",
      "2",
      "--ntp-port",
      `${ntpPort}`,
      "--udp-engine",
      engine,
      "--log-format",
      "json",
    ], command);
    // Like connections, datagrams are spread by a hash of the client's address and port:
    // from 40 sockets, both workers get some unless something is wrong.
    const clients = 40;
    await Promise.all(Array.from({ length: clients }, async () => {
      using client = udpClient();
      assert.ok(await exchangeDatagram(client, ntpPort, ntpRequest()), "answered");
    }));
    const events = await stopForEvents(server);
    const served = events.filter((e) => e.msg === "worker stopped").map((e) => e.requestsNtp ?? 0);
    assert.equal(served[0] + served[1], clients);
    if (engine === "mmsg") assert.ok(served[0] > 0 && served[1] > 0, `${served}`);
    else assert.deepEqual(served.sort(), [0, clients]);
  });
}

engineTest({
  name: "program with --workers 2 serves from both workers and drains both on SIGTERM",
  ignore: Deno.build.os !== "linux",
}, async (tcpEngine) => {
  await using server = await startServerProcess(...onEngine(
    tcpEngine,
    ["--host", "127.0.0.1", "--workers", "2", "--log-level", "debug", "--log-format", "json"],
    workersCommand,
  ));
  // The kernel spreads connections over the workers by a hash of their addresses:
  // with 40 of them, both get some unless something is wrong (odds 2 in 2^40).
  const clients = 40;
  await Promise.all(Array.from({ length: clients }, async () => {
    using client = await LineClient.connect(server.port);
    await client.send("TIME\r\nQUIT\r\n");
    assert.match(await client.readAll(), JAM_LINE);
  }));
  const events = await stopForEvents(server);
  const served = events.filter((e) => e.msg === "worker stopped");
  assert.deepEqual(served.map((e) => e.worker).sort(), [0, 1]);
  for (const worker of served) assert.ok(worker.connectionsTotal > 0, JSON.stringify(worker));
  assert.equal(served[0].connectionsTotal + served[1].connectionsTotal, clients);
  const stopped = events.find((e) => e.msg === "stopped");
  assert.equal(stopped?.requestsTime, clients);
});

engineTest({
  name: "program with --workers serves metrics while it drains, /healthz says so, then exits 0",
  ignore: Deno.build.os !== "linux",
}, async (tcpEngine) => {
  const metricsPort = freePort();
  await using server = await startServerProcess(...onEngine(
    tcpEngine,
    ["--host", "127.0.0.1", "--workers", "2", "--metrics", `127.0.0.1:${metricsPort}`],
    workersCommand,
  ));
  // A client that is owed answers and does not read them keeps the drain going.
  using client = await LineClient.connect(server.port);
  const { pending } = await sendUntilStalled(client.conn, 512 * 1024 * 1024);
  server.child.kill("SIGTERM");
  await server.logged(/shutting down/);
  const response = await within(
    5000,
    fetch(`http://127.0.0.1:${metricsPort}/metrics`),
    "a scrape while draining",
  );
  const text = await response.text();
  assert.equal(response.status, 200);
  assert.match(text, /^timeserver_connections_open 1$/m);
  const health = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
  assert.deepEqual([health.status, await health.text()], [503, "draining\n"]);
  client.close();
  await pending;
  const status = await within(10000, server.child.status, "exit after the drain");
  assert.equal(status.code, 0);
});

Deno.test("deno task start fetches nothing: it serves from an empty DENO_DIR with no npm registry", async () => {
  // A DENO_DIR that does not exist yet, and a registry nobody answers at: any download fails.
  const denoDir = `/tmp/time-server-empty-deno-dir-${crypto.randomUUID()}`;
  await using server = await startServerProcess(
    ["--host", "127.0.0.1"],
    [Deno.execPath(), "task", "--cwd", new URL(".", import.meta.url).pathname, "start"],
    { DENO_DIR: denoDir, NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/" },
  );
  using client = await LineClient.connect(server.port);
  assert.match(await client.time(), JAM_LINE);
  assert.doesNotMatch(server.text(), /Download/);
  // deno task passes the signal on, so the server itself stops, not just the task runner.
  server.child.kill("SIGTERM");
  await server.logged(/stopped/);
  await server.child.status;
  await new Deno.Command("rm", { args: ["-rf", denoDir] }).output();
});

const ntsLacking = ntsMissing();
const root = Deno.build.os === "linux" && effectiveUid() === 0;

/** Runs a command for its effect; throws with its stderr if it fails. */
async function run(...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(args[0], { args: args.slice(1) }).output();
  if (!success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
}

Deno.test({
  name: "deno task start makes a missing NTS key file under /var/lib/time-server, as the docs say",
  // As root: it makes a folder of its own there (and removes it), as `install -d` in the docs.
  ignore: !root || ntsLacking !== null || !haveOpenssl,
}, async () => {
  const temp = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-nts-" });
  const dir = `/var/lib/time-server/test-${crypto.randomUUID()}`;
  try {
    const { cert, key } = await makeCertificate(temp, "server");
    await run("install", "-d", "-m", "700", dir);
    await run("install", "-m", "600", cert, key, dir);
    const keysFile = `${dir}/nts.keys`;
    const names = (path: string) => `${dir}/${path.split("/").at(-1)}`;
    await using server = await startServerProcess([
      "--host",
      "127.0.0.1",
      "--ntp-port",
      String(freePort()),
      "--nts-ke-port",
      String(freePort()),
      "--nts-cert",
      names(cert),
      "--nts-key",
      names(key),
      "--nts-keys-file",
      keysFile,
    ], startCommand());
    await server.logged(/listening/);
    const { stdout } = await new Deno.Command("stat", { args: ["-c", "%a %s", keysFile] }).output();
    assert.equal(new TextDecoder().decode(stdout), "600 65\n", "64 hex digits and a newline, 0600");
  } finally {
    await run("rm", "-rf", dir, temp);
  }
});

Deno.test({
  name:
    "program with --workers 2 serves NTS from both workers, each opening the cookies the other made",
  ignore: Deno.build.os !== "linux" || !mmsgSupported() || ntsLacking !== null || !haveOpenssl,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-nts-" });
  const { cert, key } = await makeCertificate(dir, "server");
  const master = crypto.getRandomValues(new Uint8Array(32));
  const keysFile = `${dir}/nts.keys`;
  const hex = Array.from(master, (byte) => byte.toString(16).padStart(2, "0")).join("");
  Deno.writeTextFileSync(keysFile, `${hex}\n`, { mode: 0o600 });
  const ntpPort = freePort(), kePort = freePort();
  const command = [
    ...workersCommand.slice(0, -1),
    ffiFlag(),
    `--allow-read=${new URL(".", import.meta.url).pathname},${dir}`,
    workersCommand.at(-1)!,
  ];
  await using server = await startServerProcess([
    ...[
      "--host",
      "127.0.0.1",
      "--workers",
      "2",
      "--ntp-port",
      `${ntpPort}`,
      "--udp-engine",
      "mmsg",
    ],
    ...[
      "--nts-ke-port",
      `${kePort}`,
      "--nts-cert",
      cert,
      "--nts-key",
      key,
      "--nts-keys-file",
      keysFile,
    ],
    ...["--log-format", "json"],
  ], command);
  const records = await keExchange(kePort, cert);
  assert.equal(records.filter((record) => record.type === 5).length, 8, "cookies from NTS-KE");
  // 40 sockets, spread over the workers by their ports: each sends a cookie, then the one
  // the next socket was given, which the other worker made half the time.
  const session = mintSession(master);
  const clients = Array.from({ length: 40 }, () => udpClient());
  const ask = async (client: Deno.DatagramConn, cookie: Uint8Array) => {
    const reply = await exchangeDatagram(client, ntpPort, ntsRequest({ ...session, cookie }));
    assert.ok(reply, "answered");
    const read = readNtsReply(reply, session.s2c);
    assert.equal(read.nak, false);
    return read.cookies[0];
  };
  const given = await Promise.all(clients.map((client) => ask(client, session.cookie)));
  await Promise.all(clients.map((client, i) => ask(client, given[(i + 1) % given.length])));
  for (const client of clients) client.close();
  const events = await stopForEvents(server);
  const served = events.filter((e) => e.msg === "worker stopped").map((e) => e.requestsNts ?? 0);
  assert.equal(served[0] + served[1], 80);
  assert.ok(served[0] > 0 && served[1] > 0, `${served}`);
});

Deno.test({
  name:
    "program refuses NTS with one line and exit code 1 without GnuTLS, or with a certificate that does not load",
  ignore: Deno.build.os !== "linux" || !haveOpenssl,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-nts-" });
  const { cert, key } = await makeCertificate(dir, "server");
  const nts = ["--ntp-port", "0", "--nts-ke-port", "0", "--nts-cert", cert, "--nts-key", key];
  const libcOnly = [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-env=PORT",
    LIBC_FFI_FLAG,
    mainModule,
  ];
  const noGnuTls = await runMain(nts, { command: libcOnly });
  assert.equal(noGnuTls.code, 1);
  assert.match(
    noGnuTls.stderr,
    /^time-server: NTS \(--nts-ke-port\) needs FFI permission for GnuTLS: --allow-ffi=\S+\n$/,
  );
  if (ntsLacking !== null) return;
  const full = [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-env=PORT",
    `--allow-read=${dir}`,
    ffiFlag(),
    mainModule,
  ];
  Deno.writeTextFileSync(`${dir}/bad.pem`, "not a certificate\n");
  const bad = await runMain(
    ["--port", "0", ...nts.slice(0, 5), `${dir}/bad.pem`, "--nts-key", key],
    {
      command: full,
    },
  );
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /^time-server: --nts-cert \S+bad\.pem holds no PEM certificate: no -----BEGIN CERTIFICATE----- line\n$/,
  );
  const unreadable = await runMain(["--port", "0", ...nts], {
    command: full.filter((w) => !w.startsWith("--allow-read")),
  });
  assert.equal(unreadable.code, 1);
  assert.match(
    unreadable.stderr,
    /cannot be read: read access not granted: put it in \/etc\/time-server or \/var\/lib\/time-server, which the binary and deno task start may read, or with deno run, add --allow-read=\S+\n$/,
  );
  // Read is granted, and the file is missing: what is lacking is the write that makes it.
  const missing = `${dir}/missing.keys`;
  const unwritable = await runMain(["--port", "0", ...nts, "--nts-keys-file", missing], {
    command: full,
  });
  assert.equal(unwritable.code, 1);
  assert.equal(
    unwritable.stderr,
    `time-server: --nts-keys-file ${missing} does not exist, and this process may not write ` +
      `there to make it: run (umask 077; openssl rand -hex 32 > ${missing}), or give a path ` +
      `in /var/lib/time-server, where the binary and deno task start may write\n`,
  );
});

Deno.test("program with --config says in one line what is wrong with the file, or the permission it lacks", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-config-" });
  try {
    const file = `${dir}/time-server.toml`;
    await Deno.writeTextFile(file, '[line]\nhost = "127.0.0.1"\nport = "http"\n');
    const root = new URL(".", import.meta.url).pathname;
    const bad = await runMain(["--config", file], {
      command: [Deno.execPath(), "run", "--allow-net", `--allow-read=${root},${dir}`, mainModule],
    });
    assert.equal(bad.code, 2);
    assert.equal(
      bad.stderr,
      `time-server: ${file}:3: [line] port must be a whole number from 0 to 65535, got "http" ` +
        "(see --help)\n",
    );
    // deno run without read access to the parser's module: the flag that grants it.
    const unreadable = await runMain(["--config", file], {
      command: [Deno.execPath(), "run", "--allow-net", `--allow-read=${dir}`, mainModule],
    });
    assert.equal(unreadable.code, 2);
    assert.match(
      unreadable.stderr,
      /^time-server: --config loads the TOML parser from .*config\/: run with --allow-read=/,
    );
    assert.equal(unreadable.stderr.trim().split("\n").length, 1, unreadable.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const haveChronyd = new Deno.Command("sh", { args: ["-c", "command -v chronyd"], stdout: "null" })
  .outputSync().success;

/** A port free for both TCP and UDP on loopback, below 32768. */
function freeTcpAndUdpPort(): number {
  for (;;) {
    const port = freePort();
    try {
      Deno.listenDatagram({ hostname: "127.0.0.1", port, transport: "udp" }).close();
      return port;
    } catch {
      // Taken for UDP; try another.
    }
  }
}

Deno.test({
  name:
    "docs/ntp.md's NTS trial runs as written: a certificate that chronyd -Q trusts for 127.0.0.1",
  // As root: chronyd -Q needs it, as the docs run it.
  ignore: !root || ntsLacking !== null || !haveOpenssl || !haveChronyd,
}, async () => {
  const doc = await Deno.readTextFile(new URL("./docs/ntp.md", import.meta.url));
  const block = doc.match(/```sh\n(umask 077; d=[^`]*)```/)?.[1];
  assert.ok(block, "docs/ntp.md gives the trial's commands");
  const [setup, openssl, server, chronyd, ...rest] = block.replace(/ \\\n\s*/g, " ").trim()
    .split("\n");
  assert.deepEqual(rest, []);
  // Only the ports change, for free ones; the clock is never set (-Q).
  assert.match(chronyd, /^chronyd -Q /);
  const ntp = String(freeTcpAndUdpPort()), ke = String(freePort());
  const ports = (line: string) => line.replaceAll("12300", ntp).replaceAll("4460", ke);
  const made = await new Deno.Command("sh", {
    args: ["-c", `${setup}\n${openssl} 2>/dev/null\necho "$d"`],
  }).output();
  const dir = new TextDecoder().decode(made.stdout).trim();
  assert.ok(made.success && dir.startsWith("/"), new TextDecoder().decode(made.stderr));
  try {
    const args = ports(server).replace(/^time-server /, "").replace(/ &$/, "")
      .replaceAll('"$d', dir).replaceAll('"', "").split(" ");
    await using _server = await startServerProcess(args, [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-env=PORT",
      `--allow-read=${dir}`,
      `--allow-ffi=${FFI_PATHS.join(",")}`,
      mainModule,
    ]);
    const client = await new Deno.Command("sh", {
      args: ["-c", `d=${dir}\n${ports(chronyd)}`],
    }).output();
    const output = new TextDecoder().decode(client.stdout) +
      new TextDecoder().decode(client.stderr);
    assert.match(output, /System clock wrong by -?\d+\.\d+ seconds \(ignored\)/, output);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Roughtime from the command line: roughtime-keys makes the key, the server signs with it, the client verifies", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-roughtime-" });
  try {
    const keyFile = `${dir}/roughtime.key`;
    const command = [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-env=PORT",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      LIBC_FFI_FLAG,
      mainModule,
    ];
    const made = await runMain(["roughtime-keys", keyFile], { command });
    assert.equal(made.code, 0, made.stderr);
    const publicKey = made.stdout.trim();
    assert.match(publicKey, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal((await Deno.stat(keyFile)).mode! & 0o777, 0o600);
    const again = await runMain(["roughtime-keys", keyFile], { command });
    assert.equal(again.stdout.trim(), publicKey, "the same key, read again");

    await using server = await startServerProcess(
      ["--host", "127.0.0.1", "--roughtime-port", "0", "--roughtime-key", keyFile],
      command,
    );
    const port = Number(server.text().match(/roughtimePort=(\d+)/)?.[1]);
    assert.match(server.text(), new RegExp(`publicKey="?${publicKey.replaceAll("+", "\\+")}`));
    const asked = await runMain(["client", "--roughtime", `127.0.0.1:${port}`, "--key", publicKey]);
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(
      asked.stdout,
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ±3 s \(Roughtime version 1, signature verified\)\n$/,
    );
    const other = await runMain([
      "client",
      "--roughtime",
      `127.0.0.1:${port}`,
      "--key",
      btoa(String.fromCharCode(...new Uint8Array(32).fill(1))),
      "--timeout",
      "1",
    ]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /^time-server client: Roughtime: no answer within 1 s/);
    const noKey = await runMain(["--roughtime-port", "0"]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /--roughtime-port needs --roughtime-key FILE/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
