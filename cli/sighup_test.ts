// Tests of SIGHUP with a config file, in a real process under load: on both TCP engines, and with workers.

import assert from "node:assert/strict";
import net from "node:net";
import {
  exchangeFrom,
  JAM_LINE,
  LineClient,
  mainModule,
  type ServerProcess,
  startServerProcess,
  TCP_ENGINES,
  until,
  within,
} from "../testing/test_util.ts";
import { exchangeDatagram, ntpRequest, parseNtpReply, udpClient } from "../testing/time_clients.ts";
import type { TcpEngine } from "../server/tcp/host.ts";
import { LIBC_FFI_FLAG } from "../lib/libc.ts";
import { FFI_PATHS, ntsMissing } from "../nts/setup.ts";
import {
  haveOpenssl,
  keExchange,
  makeCertificate,
  mintSession,
  ntsRequest,
  readNtsReply,
} from "../testing/nts.ts";

const root = new URL("..", import.meta.url).pathname;

/** Awaits one step of a test, failing it by name if it takes longer than a loaded machine would. */
const step = <T>(what: string, promise: Promise<T>) => within(30000, promise, what);

/** NTS's files, when NTS can run here: the certificate, its key, the cookies' master key. */
interface NtsFiles {
  readonly cert: string;
  readonly key: string;
  readonly keysFile: string;
  readonly master: Uint8Array;
}

/** The config file, with what the test changes from one reload to the next. */
function config(
  change: { maxConnections: number; deny: string; stratum: number; maxLine?: number },
  nts: NtsFiles | null,
) {
  const ntsSection = nts === null ? "" : `
[nts]
ke-port = 0
cert = "${nts.cert}"
key = "${nts.key}"
keys-file = "${nts.keysFile}"
# No rate limit: the bystander establishes keys again and again.
ke-rate = 0
`;
  return ntsSection + `
[line]
host = "127.0.0.1"
max-line = ${change.maxLine ?? 1024}

[limits]
max-connections = ${change.maxConnections}
deny = ["${change.deny}"]

[time]
daytime-port = 0
time-port = 0
ntp-port = 0
ntp-stratum = ${change.stratum}
# Generous, so that the bystanders' steady asking is never limited.
rate-limit = 0.0001
rate-burst = 1000

[log]
format = "json"
`;
}

/** Reads the `listening` event's ports. */
function ports(
  server: ServerProcess,
): { daytime: number; time: number; ntp: number; ntsKe: number | undefined } {
  const listening = server.text().split("\n").filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line)).find((event) => event.msg === "listening");
  return {
    daytime: listening.daytimePort,
    time: listening.timePort,
    ntp: listening.ntpPort,
    ntsKe: listening.ntsKePort,
  };
}

/** Makes NTS's files in `dir`, or null where NTS cannot run. */
async function ntsFiles(dir: string): Promise<NtsFiles | null> {
  if (ntsMissing() !== null || !haveOpenssl) return null;
  const { cert, key } = await makeCertificate(dir, "server");
  const master = crypto.getRandomValues(new Uint8Array(32));
  const keysFile = `${dir}/nts.keys`;
  const hex = Array.from(master, (byte) => byte.toString(16).padStart(2, "0")).join("");
  await Deno.writeTextFile(keysFile, `${hex}\n`, { mode: 0o600 });
  await Deno.chmod(key, 0o600);
  return { cert, key, keysFile, master };
}

/** Opens a TCP connection, reads what the server sends until it closes: one answer. */
function oneTcpAnswer(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.on("data", (chunk: Uint8Array) => bytes += chunk.length);
    socket.on("error", reject);
    socket.on("close", () => resolve(bytes));
  });
}

/**
 * Load and bystanders until `stop`: line-protocol clients asking TIME back to back on
 * connections held throughout, Daytime and Time over TCP, and Daytime, Time and SNTP
 * over UDP. Every request must be answered; the counts say how many were.
 */
function bystanders(
  port: number,
  services: ReturnType<typeof ports>,
  nts: NtsFiles | null,
  stop: AbortSignal,
) {
  const counts: Record<string, number> = { time: 0, daytimeTcp: 0, timeTcp: 0, udp: 0 };
  const failures: string[] = [];
  const lineClient = async () => {
    using client = await LineClient.connect(port);
    while (!stop.aborted) {
      const answer = await client.time();
      if (!JAM_LINE.test(answer)) {
        return void failures.push(`TIME answered ${JSON.stringify(answer)}`);
      }
      counts.time++;
    }
  };
  const tcpService = async (name: "daytimeTcp" | "timeTcp", servicePort: number) => {
    while (!stop.aborted) {
      if ((await oneTcpAnswer(servicePort)) === 0) {
        return void failures.push(`${name} said nothing`);
      }
      counts[name]++;
    }
  };
  const udpService = async (servicePort: number, payload: Uint8Array) => {
    using socket = udpClient();
    while (!stop.aborted) {
      if ((await exchangeDatagram(socket, servicePort, payload, 2000)) === null) {
        return void failures.push(`UDP port ${servicePort} did not answer`);
      }
      counts.udp++;
    }
  };
  // NTS: key establishment over TLS, and authenticated SNTP with a cookie under the master key.
  const ntsKe = async (kePort: number, cert: string) => {
    counts.ntsKe = 0;
    while (!stop.aborted) {
      const records = await keExchange(kePort, cert);
      if (!records.some((record) => record.type === 5)) return void failures.push("KE: no cookie");
      counts.ntsKe++;
    }
  };
  const ntsSntp = async (master: Uint8Array) => {
    counts.nts = 0;
    using socket = udpClient();
    const session = mintSession(master);
    while (!stop.aborted) {
      const reply = await exchangeDatagram(socket, services.ntp, ntsRequest(session), 2000);
      if (reply === null) return void failures.push("NTS did not answer");
      if (readNtsReply(reply, session.s2c).nak) return void failures.push("NTS: a NAK");
      counts.nts++;
    }
  };
  const done = Promise.all([
    ...(nts === null ? [] : [ntsKe(services.ntsKe!, nts.cert), ntsSntp(nts.master)]),
    ...Array.from({ length: 20 }, lineClient),
    tcpService("daytimeTcp", services.daytime),
    tcpService("timeTcp", services.time),
    udpService(services.daytime, new Uint8Array(1)),
    udpService(services.time, new Uint8Array(1)),
    udpService(services.ntp, ntpRequest()),
  ]).catch((error) => void failures.push(String(error)));
  return { counts, failures, done };
}

/** The stratum SNTP replies claim, asked from several source ports (so of every worker). */
async function strata(ntpPort: number): Promise<Set<number>> {
  const seen = new Set<number>();
  for (let i = 0; i < 8; i++) {
    using socket = udpClient();
    const reply = await exchangeDatagram(socket, ntpPort, ntpRequest(), 2000);
    seen.add(reply === null ? -1 : parseNtpReply(reply).stratum);
  }
  return seen;
}

/** Whether every one of several connections from `address` is closed unanswered (denied). */
async function denied(address: string, port: number): Promise<boolean> {
  const received = await Promise.all(
    Array.from({ length: 8 }, () => exchangeFrom(address, port, "").catch(() => "reset")),
  );
  return received.every((text) => text === "");
}

/** Whether every one of several connections from `address` is answered (served). */
async function served(address: string, port: number, padding = ""): Promise<boolean> {
  const request = `${padding}\r\nTIME\r\nQUIT\r\n`;
  const received = await Promise.all(
    Array.from({ length: 8 }, () => exchangeFrom(address, port, request)),
  );
  // An answer to TIME among the lines (the padding, if any, has its own answer first).
  return received.every((text) => /^JAM \d\d:\d\d:\d\d\r$/m.test(text) && !/too long/.test(text));
}

for (const engine of TCP_ENGINES) {
  for (const workers of [1, 2]) {
    Deno.test({
      name: `a reload under load loses no connection and no answer, and a bad one keeps the ` +
        `running configuration (${engine} engine, ${workers} worker${workers > 1 ? "s" : ""})`,
      ignore: Deno.build.os !== "linux",
    }, () => reloadUnderLoad(engine, workers));
  }
}

async function reloadUnderLoad(engine: TcpEngine, workers: number): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-sighup-" });
  const file = `${dir}/time-server.toml`;
  const nts = await ntsFiles(dir);
  const first = { maxConnections: 1000, deny: "127.0.0.9", stratum: 10 };
  await Deno.writeTextFile(file, config(first, nts));
  const command = [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-env=PORT",
    `--allow-read=${root},${dir}`,
    `--allow-ffi=${FFI_PATHS.join(",")}`,
    mainModule,
  ];
  const args = ["--config", file, "--workers", `${workers}`, "--tcp-engine", engine];
  const stop = new AbortController();
  try {
    await using server = await startServerProcess(args, command);
    const services = ports(server);
    const load = bystanders(server.port, services, nts, stop.signal);
    const reloaded = (count: number) =>
      server.logged(new RegExp(`("msg":"reloaded".*){${count}}`, "s"));

    // A reload that changes limits, access and stratum, while everything is busy.
    await until(
      () =>
        load.counts.time >= 200 && load.counts.udp >= 20 && (nts === null || load.counts.nts >= 10),
      30000,
      "the load under way",
    );
    await Deno.writeTextFile(
      file,
      config({ maxConnections: 2000, deny: "127.0.0.8", stratum: 5 }, nts),
    );
    server.child.kill("SIGHUP");
    await step("the first reload", reloaded(1));
    const stratum = await step("asking every worker's stratum", strata(services.ntp));
    assert.deepEqual(stratum, new Set([5]), "every worker claims the new stratum");
    assert.ok(await step("denial", denied("127.0.0.8", server.port)), "every worker denies it");
    assert.ok(await step("service", served("127.0.0.9", server.port)), "and serves this again");

    // A file that does not parse: an error, and the running configuration stays.
    await Deno.writeTextFile(file, "[line\nport = 1\n");
    server.child.kill("SIGHUP");
    const failure = /"msg":"reload failed; the running configuration stays".*time-server.toml:1/;
    await step("the failed reload", server.logged(failure));
    assert.deepEqual(await step("the stratum again", strata(services.ntp)), new Set([5]));
    assert.ok(await step("denial again", denied("127.0.0.8", server.port)));

    // What needs a restart is named, and kept.
    await Deno.writeTextFile(
      file,
      config({ maxConnections: 2000, deny: "127.0.0.8", stratum: 5, maxLine: 64 }, nts),
    );
    server.child.kill("SIGHUP");
    const restart = /needs a restart to change \[line\] max-line; kept as running/;
    await step("the warning", server.logged(restart));
    await step("the second reload", reloaded(2));
    assert.ok(await step("a long line", served("127.0.0.1", server.port, "x".repeat(200))));

    stop.abort();
    await step("the load to end", load.done);
    assert.deepEqual(load.failures, []);
    for (const [name, count] of Object.entries(load.counts)) {
      assert.ok(count > 0, `${name} answered`);
    }
    server.child.kill("SIGTERM");
    assert.equal((await server.child.status).code, 0);
    const events = (await server.output).split("\n").filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line));
    const stopped = events.find((event) => event.msg === "stopped");
    assert.equal(
      stopped.closedReset + stopped.closedEvicted + stopped.closedIdle,
      0,
      "nothing cut off",
    );
  } finally {
    stop.abort();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "under systemd (Type=notify) the server says READY=1 once it listens, RELOADING=1 " +
    "and READY=1 around a reload, and STOPPING=1 when it stops",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-notify-" });
  const path = `${dir}/notify`;
  const systemd = Deno.listenDatagram({ transport: "unixpacket", path });
  const decoder = new TextDecoder();
  const next = async () => decoder.decode((await step("a notification", systemd.receive()))[0]);
  try {
    await Deno.writeTextFile(`${dir}/time-server.toml`, '[line]\nhost = "127.0.0.1"\n');
    const command = [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-env=PORT,NOTIFY_SOCKET",
      `--allow-read=${root},${dir}`,
      LIBC_FFI_FLAG,
      mainModule,
    ];
    await using server = await startServerProcess(
      ["--config", `${dir}/time-server.toml`],
      command,
      { NOTIFY_SOCKET: path },
    );
    assert.match(await next(), /^READY=1\nSTATUS=serving on 127\.0\.0\.1:\d+$/);
    server.child.kill("SIGHUP");
    assert.match(await next(), /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    assert.equal(await next(), "READY=1");
    server.child.kill("SIGTERM");
    assert.equal(await next(), "STOPPING=1");
    assert.equal((await server.child.status).code, 0);
  } finally {
    systemd.close();
    await Deno.remove(dir, { recursive: true });
  }
});
