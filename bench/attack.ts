// The attack harness: hostile traffic against the server, while a bystander keeps asking the time.

import net from "node:net";
import { parseToolFlags } from "./bench.ts";
import { startServer } from "./servers.ts";
import { startCommand } from "../tools/start_task.ts";
import { freePort } from "../lib/net.ts";

const HELP = `Usage: deno task attack [options]

Starts the server as a subprocess and runs each scenario against it, while a bystander
connects from 127.0.0.2 every 20 ms to ask TIME. Prints, per scenario, how often the
bystander was answered with the time, how often it heard ERR server busy, when in the
attack it last went unanswered, the p99 latency of its answered visits, and the server's
RSS and open descriptors before, during and after the attack (after: 6 s after the
attackers left); writes the table as JSON too.

Options:
  --scenario LIST         reset-storm, silent-hog, busy-hog, slow-reader, garbage,
                          half-open, churn, or all (default all); comma-separated
  --variant LIST          plain, workers (--workers 2), proxy (--proxy-protocol),
                          or all (default all)
  --tcp-engine LIST       TCP engines to run each variant on: deno, epoll (default both)
  --seconds N             attack length per scenario (default 5)
  --max-connections N     the server's --max-connections (default 1000)
  --reconnect-ms N        how long a hog the server closed waits before it connects
                          again (default 1000; 0 = at once)
  --server-args=ARGS      more flags for this project's server, e.g.
                          --server-args="--max-connections-per-ip 50"
  --reference LIST        reference servers for the plain variant: node, c, none
                          (default node,c where ../shared/bench has them and they build)
  --out FILE              where the JSON goes (default bench/runs/<date>-attack.json,
                          which git ignores)
  -h, --help              print this help`;

const root = new URL("..", import.meta.url).pathname;
const shared = new URL("../../shared/bench/", import.meta.url).pathname;
const SCENARIOS = [
  "reset-storm",
  "silent-hog",
  "busy-hog",
  "slow-reader",
  "garbage",
  "half-open",
  "churn",
] as const;
type Scenario = typeof SCENARIOS[number];
const VARIANTS = ["plain", "workers", "proxy"] as const;

/** Ten attacker addresses; the bystander comes from 127.0.0.2. */
const ATTACKERS = Array.from({ length: 10 }, (_, i) => `127.0.0.${10 + i}`);
const BYSTANDER = "127.0.0.2";
const JAM = /^JAM \d\d:\d\d:\d\d\r\n/;

interface Target {
  label: string;
  command: string[];
  proxy: boolean;
}

interface Sample {
  rssKiB: number;
  fds: number;
}

interface Row {
  server: string;
  scenario: Scenario;
  attacks: number;
  visits: number;
  served: number;
  busy: number;
  /** p99 latency of the visits that were answered with the time. */
  p99Ms: number;
  /** Seconds into the attack of the last visit that was not answered with the time, or null. */
  lastFailureS: number | null;
  before: Sample;
  during: Sample;
  after: Sample;
}

/** The server's RSS and open descriptors, read from /proc by a shell (Deno keeps /proc for --allow-all). */
function sample(pid: number): Sample {
  const { stdout } = new Deno.Command("sh", {
    args: ["-c", `grep VmRSS /proc/${pid}/status; ls /proc/${pid}/fd | wc -l`],
    stderr: "null",
  }).outputSync();
  const text = new TextDecoder().decode(stdout);
  const rssKiB = Number(text.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
  const fds = Number(text.trim().split("\n").at(-1)) || 0;
  return { rssKiB, fds };
}

/** A PROXY v1 header for a client at `address`, as HAProxy would send it. */
function proxyHeader(address: string, port: number): string {
  return `PROXY TCP4 ${address} 127.0.0.1 ${port} 45000\r\n`;
}

/** Opens a socket from `localAddress`; resolves once connected, rejects on error. */
function connect(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** One bystander visit: connect, TIME, first line back. */
async function visit(port: number, proxy: boolean): Promise<{ line: string; ms: number }> {
  const started = performance.now();
  let socket: net.Socket | undefined;
  try {
    socket = await connect(port, BYSTANDER);
    const line = await new Promise<string>((resolve) => {
      let text = "";
      const timer = setTimeout(() => resolve(text), 2000);
      socket!.setEncoding("utf8");
      socket!.on("data", (chunk: string) => {
        text += chunk;
        if (text.includes("\n")) {
          clearTimeout(timer);
          resolve(text);
        }
      });
      socket!.once("close", () => {
        clearTimeout(timer);
        resolve(text);
      });
      socket!.write((proxy ? proxyHeader(BYSTANDER, 40000) : "") + "TIME\r\nQUIT\r\n");
    });
    return { line, ms: performance.now() - started };
  } catch {
    return { line: "", ms: performance.now() - started };
  } finally {
    socket?.destroy();
  }
}

/** An attack under way: `stop()` ends it and closes every socket it opened. */
interface Attack {
  count(): number;
  stop(): Promise<void>;
}

/** What an attack loop is given: its address, whether to stop, and a tally of connections made. */
interface Loop {
  address: string;
  stopped: () => boolean;
  stopping: Promise<void>;
  connected: () => void;
}

/** Runs `worker` on `concurrency` loops until stopped; each loop picks an attacker address. */
function loops(concurrency: number, worker: (loop: Loop) => Promise<void>): Attack {
  let stopped = false;
  let count = 0;
  const stopping = Promise.withResolvers<void>();
  const running = Array.from({ length: concurrency }, async (_, i) => {
    while (!stopped) {
      try {
        await worker({
          address: ATTACKERS[i % ATTACKERS.length],
          stopped: () => stopped,
          stopping: stopping.promise,
          connected: () => count++,
        });
      } catch {
        // Refused or reset: an attacker just tries again.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  });
  return {
    count: () => count,
    async stop() {
      stopped = true;
      stopping.resolve();
      await Promise.all(running);
    },
  };
}

/**
 * Holds `size` connections open, each running `hold`. One the server closes (or
 * refuses) is opened again after `reconnectMs`, as a client's retry would.
 */
function holders(
  size: number,
  port: number,
  proxy: boolean,
  reconnectMs: number,
  hold: (socket: net.Socket, stopped: () => boolean) => Promise<void>,
): Attack {
  return loops(size, async ({ address, stopped, stopping, connected }) => {
    const socket = await connect(port, address);
    connected();
    try {
      if (proxy) socket.write(proxyHeader(address, socket.localPort!));
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      await Promise.race([closed, stopping, hold(socket, stopped).then(() => stopping)]);
    } finally {
      socket.destroy();
    }
    if (!stopped()) {
      await Promise.race([stopping, new Promise((resolve) => setTimeout(resolve, reconnectMs))]);
    }
  });
}

async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 50));
}

const randomBytes = (n: number) => crypto.getRandomValues(new Uint8Array(n));

function startAttack(
  scenario: Scenario,
  port: number,
  proxy: boolean,
  maxConnections: number,
  reconnectMs: number,
): Attack | Promise<Attack> {
  switch (scenario) {
    case "reset-storm":
      return loops(64, async ({ address, connected }) => {
        const socket = await connect(port, address);
        connected();
        socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\n");
        await new Promise<void>((resolve) => {
          socket.once("close", () => resolve());
          socket.resetAndDestroy();
        });
      });
    case "silent-hog":
      return holders(Math.ceil(maxConnections * 1.1), port, proxy, reconnectMs, (socket) => {
        socket.resume(); // reads, to notice the close, but never asks
        return new Promise(() => {});
      });
    case "busy-hog":
      return holders(maxConnections, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.on("data", () => {});
        while (!stopped()) {
          socket.write("TIME\r\n");
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      });
    case "slow-reader":
      return holders(20, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.pause(); // never reads
        const chunk = "TIME\r\n".repeat(10000);
        while (!stopped() && !socket.destroyed) {
          if (!socket.write(chunk)) await waitUntil(() => stopped() || socket.writableLength === 0);
        }
      });
    case "garbage":
      return holders(100, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.on("data", () => {});
        while (!stopped() && !socket.destroyed) {
          socket.write(randomBytes(1 + Math.floor(Math.random() * 200)));
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
        }
      });
    case "half-open":
      return halfOpen(port, proxy, Math.ceil(maxConnections * 0.5));
    case "churn":
      return loops(50, async ({ address, connected }) => {
        const socket = await connect(port, address);
        connected();
        await new Promise<void>((resolve) => {
          socket.on("data", () => socket.end());
          socket.once("close", () => resolve());
          socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\nQUIT\r\n");
        });
      });
  }
}

/**
 * Clients that connect, ask, and vanish: a helper process opens the connections and is
 * then stopped (SIGSTOP), so its sockets neither read, send nor close, as if the
 * machine behind them had dropped off the network. It is killed when the attack ends.
 */
async function halfOpen(port: number, proxy: boolean, count: number): Promise<Attack> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL(import.meta.url).pathname,
      "--half-open-helper",
      `${port},${proxy ? 1 : 0},${count}`,
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  child.kill("SIGSTOP");
  const opened = Number(text.trim()) || 0;
  return {
    count: () => opened,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

async function halfOpenHelper(spec: string): Promise<void> {
  const [port, proxy, count] = spec.split(",").map(Number);
  let opened = 0;
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    try {
      const address = ATTACKERS[i % ATTACKERS.length];
      const socket = await connect(port, address);
      socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\n");
      opened++;
    } catch {
      // Refused: fewer half-open connections.
    }
  }));
  console.log(opened);
  await new Promise(() => {}); // stopped and then killed by the parent
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function runOne(
  target: Target,
  scenario: Scenario,
  seconds: number,
  maxConnections: number,
  reconnectMs: number,
): Promise<Row> {
  const port = freePort();
  const command = target.command.map((part) => part.replaceAll("{port}", String(port)));
  const child = await startServer(command, port);
  try {
    await visit(port, target.proxy); // warm-up
    const before = sample(child.pid);
    const attack = await startAttack(scenario, port, target.proxy, maxConnections, reconnectMs);
    // The hogs take their places before the bystander starts, so it finds the server full.
    const holding = scenario === "silent-hog"
      ? Math.ceil(maxConnections * 1.1)
      : scenario === "busy-hog"
      ? maxConnections
      : 0;
    const established = performance.now() + 10000;
    await waitUntil(() => attack.count() >= holding || performance.now() > established);
    // Silent hogs make room once silent for --evict-after (1 s, the default): start the
    // bystander then, so that every server is measured from the same state. Sooner, what
    // it met would depend on how fast a server accepted the hogs: a slow accept overflows
    // the listen queue, and the hogs it drops connect 1 s later, when they are retried.
    if (scenario === "silent-hog") await new Promise((resolve) => setTimeout(resolve, 1000));
    const latencies: number[] = [];
    let visits = 0, served = 0, busy = 0;
    let lastFailureS: number | null = null;
    const attackStart = performance.now();
    const during: Sample = { rssKiB: 0, fds: 0 };
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      const { line, ms } = await visit(port, target.proxy);
      visits++;
      if (JAM.test(line)) {
        served++;
        latencies.push(ms);
      } else {
        if (line.startsWith("ERR server busy")) busy++;
        lastFailureS = (performance.now() - attackStart) / 1000;
      }
      const now = sample(child.pid);
      during.rssKiB = Math.max(during.rssKiB, now.rssKiB);
      during.fds = Math.max(during.fds, now.fds);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const attacks = attack.count();
    await attack.stop();
    // What the server holds once the attackers have left and its lingering sweep has run.
    await new Promise((resolve) => setTimeout(resolve, 6000));
    await visit(port, target.proxy);
    const after = sample(child.pid);
    return {
      server: target.label,
      scenario,
      attacks,
      visits,
      served,
      busy,
      p99Ms: percentile(latencies, 0.99),
      lastFailureS,
      before,
      during,
      after,
    };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }
}

/**
 * The reference servers from `../shared/bench/` (the team's measuring tools, kept beside
 * this repository, not in it) that can run here. Each one left out is named, with why,
 * in one line on stderr.
 */
function referenceTargets(wanted: string[]): Target[] {
  const targets: Target[] = [];
  const has = (path: string) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  };
  const runs = (command: string, args: string[]) => {
    try {
      return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync()
        .success;
    } catch {
      return false;
    }
  };
  const skip = (label: string, why: string) =>
    console.error(`attack: skipping the ${label} server: ${why}`);
  if (wanted.includes("node")) {
    if (!has(`${shared}node_server.mjs`)) skip("Node.js", `${shared}node_server.mjs not found`);
    else if (!runs("node", ["--version"])) skip("Node.js", "node is not installed");
    else {
      targets.push({
        label: "node net",
        command: ["node", `${shared}node_server.mjs`, "{port}"],
        proxy: false,
      });
    }
  }
  if (wanted.includes("c")) {
    const binary = `${Deno.makeTempDirSync()}/epoll_server`;
    if (!has(`${shared}epoll_server.c`)) skip("C epoll", `${shared}epoll_server.c not found`);
    else if (!runs("gcc", ["-O2", "-o", binary, `${shared}epoll_server.c`])) {
      skip("C epoll", `gcc could not build ${shared}epoll_server.c`);
    } else targets.push({ label: "C epoll", command: [binary, "{port}"], proxy: false });
  }
  return targets;
}

function list<T extends string>(text: string, all: readonly T[], name: string): T[] {
  if (text === "all") return [...all];
  const items = text.split(",").map((item) => item.trim());
  for (const item of items) {
    if (!(all as readonly string[]).includes(item)) {
      throw new Error(`--${name} takes ${all.join(", ")} or all, got "${item}"`);
    }
  }
  return items as T[];
}

const mib = (kib: number) => (kib / 1024).toFixed(0);

function table(rows: Row[]): string {
  const header = [
    "scenario",
    "server",
    "attack connections",
    "bystander served",
    "busy",
    "last miss at",
    "p99 ms",
    "RSS MiB before/during/after",
    "fds before/during/after",
  ];
  const lines = rows.map((row) => [
    row.scenario,
    row.server,
    String(row.attacks),
    `${row.served}/${row.visits} (${(100 * row.served / Math.max(1, row.visits)).toFixed(0)}%)`,
    String(row.busy),
    row.lastFailureS === null ? "-" : `${row.lastFailureS.toFixed(1)} s`,
    row.p99Ms.toFixed(1),
    `${mib(row.before.rssKiB)} / ${mib(row.during.rssKiB)} / ${mib(row.after.rssKiB)}`,
    `${row.before.fds} / ${row.during.fds} / ${row.after.fds}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((line) => line[i].length)));
  const format = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [
    format(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...lines.map(format),
  ].join("\n");
}

/** The servers to attack: ours in each variant, and for the plain one the references. */
function targetsToRun(
  variants: string[],
  engines: string[],
  maxConnections: number,
  serverArgs: string,
  references: string,
): Target[] {
  return engines.flatMap((engine) =>
    ourTargets(variants, maxConnections, [
      ...(engine === "deno" ? [] : ["--tcp-engine", engine]),
      ...serverArgs.split(/\s+/).filter((arg) => arg !== ""),
    ]).map((target) =>
      engine === "deno" ? target : { ...target, label: `${target.label} (${engine})` }
    )
  ).concat(variants.includes("plain") ? referenceTargets(references.split(",")) : []);
}

/** This project's server in each variant, with `args`. */
function ourTargets(variants: string[], maxConnections: number, args: string[]): Target[] {
  const ours = [
    ...startCommand(),
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--log-level",
    "warn",
  ];
  const limits = ["--max-connections", String(maxConnections), ...args];
  const targets: Target[] = [];
  if (variants.includes("plain")) {
    targets.push({ label: "time-server", command: [...ours, ...limits], proxy: false });
  }
  if (variants.includes("workers")) {
    targets.push({
      label: "time-server --workers 2",
      command: [...ours, ...limits, "--workers", "2"],
      proxy: false,
    });
  }
  if (variants.includes("proxy")) {
    targets.push({
      label: "time-server --proxy-protocol",
      command: [...ours, ...limits, "--proxy-protocol"],
      proxy: true,
    });
  }
  return targets;
}

const FLAGS = {
  scenario: { type: "string", default: "all" },
  variant: { type: "string", default: "all" },
  "tcp-engine": { type: "string", default: "deno,epoll" },
  seconds: { type: "string", default: "5" },
  "max-connections": { type: "string", default: "1000" },
  "reconnect-ms": { type: "string", default: "1000" },
  reference: { type: "string", default: "node,c" },
  "server-args": { type: "string", default: "" },
  out: { type: "string" },
  "half-open-helper": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

async function main(args: string[]): Promise<number> {
  const values = parseToolFlags("attack", args, FLAGS);
  if (values === null) return 2;
  if (values["half-open-helper"]) {
    await halfOpenHelper(values["half-open-helper"]);
    return 0;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let scenarios: Scenario[], variants: (typeof VARIANTS[number])[], engines: string[];
  try {
    scenarios = list(values.scenario, SCENARIOS, "scenario");
    variants = list(values.variant, VARIANTS, "variant");
    engines = list(values["tcp-engine"], ["deno", "epoll"] as const, "tcp-engine");
  } catch (error) {
    console.error(`attack: ${(error as Error).message}`);
    return 2;
  }
  const seconds = Number(values.seconds);
  const maxConnections = Number(values["max-connections"]);
  const reconnectMs = Number(values["reconnect-ms"]);
  const targets = targetsToRun(
    variants,
    engines,
    maxConnections,
    values["server-args"],
    values.reference,
  );
  console.log(
    `machine: ${navigator.hardwareConcurrency} CPUs, ${Deno.build.os}; ` +
      `${seconds} s per attack, --max-connections ${maxConnections}, ` +
      `hogs reconnect after ${reconnectMs} ms; ` +
      `bystander from ${BYSTANDER}, attackers from ${ATTACKERS[0]}–${ATTACKERS.at(-1)}`,
  );
  const rows: Row[] = [];
  for (const scenario of scenarios) {
    for (const target of targets) {
      const row = await runOne(target, scenario, seconds, maxConnections, reconnectMs);
      rows.push(row);
      console.log(
        `${scenario} / ${target.label}: served ${row.served}/${row.visits}, p99 ${
          row.p99Ms.toFixed(1)
        } ms`,
      );
    }
  }
  console.log();
  console.log(table(rows));
  const out = values.out ??
    `${root}bench/runs/${new Date().toISOString().slice(0, 10)}-attack.json`;
  Deno.mkdirSync(new URL(".", `file://${out}`).pathname, { recursive: true });
  Deno.writeTextFileSync(
    out,
    JSON.stringify({ seconds, maxConnections, reconnectMs, rows }, null, 2) + "\n",
  );
  console.log(`\nwritten to ${out}`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
