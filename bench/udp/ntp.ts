// The `ntp` scenario of `deno task bench`: this server's SNTP service (both UDP engines) side
// by side with chronyd and the minimal C server, for throughput and for accuracy.

import { startCommand } from "../../tools/start_task.ts";
import { freePort } from "../../lib/net.ts";
import { chronydOffset, hasTool } from "../../tools/time_clients.ts";
import type { NtpLoadResult } from "./ntp_loadgen.ts";
import { spawnServer, stopServer } from "../common/servers.ts";
import { format, median } from "../common/stats.ts";

const loadgenModule = new URL("./ntp_loadgen.ts", import.meta.url).pathname;

/** Options of {@linkcode ntpBench}. */
export interface NtpBenchOptions {
  runs: number;
  /** Seconds of load per run. */
  duration: number;
  /** A compiled shared/bench/ntp_loadgen.c; bench/udp/ntp_loadgen.ts when left out. */
  loadgen?: string;
  /** A compiled shared/bench/ntp_echo_server.c, to measure too. */
  echoServer?: string;
  /** chronyd -Q runs per server for the offset (each takes ~4 s). */
  offsetRuns: number;
  pin: boolean;
  /** Another checkout of this project (the tree before a change), measured too. */
  treeBefore?: string;
}

/** One server's results, medians over the runs. */
export interface NtpRow {
  server: string;
  runs: NtpLoadResult[];
  rate: number;
  p50: number;
  p99: number;
  serverCpu: number;
  lost: number;
  invalid: number;
  /** Offsets at light load (one request outstanding), µs: median and largest |offset|. */
  lightOffsetP50: number;
  lightOffsetMaxAbs: number;
  /** What chronyd -Q reported, µs, one per run. */
  chronydOffsets: number[];
  failed: boolean;
}

interface NtpServer {
  label: string;
  /** The command, with {port} and {tcp}. */
  command: string[];
  /** Where it runs: another tree's folder, or this project's by default. */
  cwd?: string;
  /** Files to write first (chronyd's configuration), with {port} and {dir} replaced. */
  files?: Record<string, string>;
}

/** The servers the scenario measures: ours with each engine, chronyd, the C server. */
function ntpServers(options: NtpBenchOptions): NtpServer[] {
  const ours = (engine: string, tree?: string) => ({
    label: `time-server (--udp-engine ${engine})${tree ? ", tree before" : ""}`,
    cwd: tree,
    command: [
      ...startCommand(tree),
      "--port",
      "{tcp}",
      "--ntp-port",
      "{port}",
      "--udp-engine",
      engine,
      "--log-level",
      "warn",
    ],
  });
  const servers: NtpServer[] = [ours("mmsg"), ours("deno")];
  if (options.treeBefore) servers.splice(1, 0, ours("mmsg", options.treeBefore));
  if (hasTool("chronyd")) {
    // As shared/bench/README.md: no clock control (-x), no sources, no rate limit.
    servers.unshift({
      label: "chronyd",
      command: ["chronyd", "-d", "-x", "-u", "root", "-f", "{dir}/server.conf"],
      files: {
        "server.conf": [
          "port {port}",
          "bindaddress 127.0.0.1",
          "allow 127.0.0.1",
          "local stratum 10",
          "cmdport 0",
          "bindcmdaddress /",
          "pidfile {dir}/server.pid",
          "driftfile {dir}/server.drift",
          "",
        ].join("\n"),
      },
    });
  } else console.error("bench ntp: chronyd is not installed; measuring without it");
  if (options.echoServer) {
    servers.push({
      label: "C ntp_echo_server",
      command: [options.echoServer, "-a", "127.0.0.1", "-p", "{port}", "-s", "10", "-q"],
    });
  }
  return servers;
}

/** Resolves once the server answers an SNTP request on `port`; rejects after 15 s. */
async function waitForNtp(port: number, child: Deno.ChildProcess): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const socket = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  try {
    const request = new Uint8Array(48);
    request[0] = (4 << 3) | 3;
    const deadline = performance.now() + 15000;
    while (performance.now() < deadline && !exited) {
      await socket.send(request, { transport: "udp", hostname: "127.0.0.1", port });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const reply = await Promise.race([
        socket.receive(),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 100)),
      ]);
      clearTimeout(timer);
      if (reply !== null) return;
    }
  } finally {
    socket.close();
  }
  throw new Error(exited ? "the server exited at start" : "the server did not answer SNTP");
}

function parseCLoadgen(line: string): NtpLoadResult {
  const fields = Object.fromEntries(line.trim().split(/\s+/).map((pair) => pair.split("=")));
  const number = (key: string) => Number(fields[key] ?? 0);
  return {
    rate: number("rps"),
    p50: number("p50_us"),
    p99: number("p99_us"),
    sent: number("sent"),
    valid: number("valid"),
    invalid: number("invalid"),
    lost: number("lost"),
    offsetP50: number("off_p50_us"),
    offsetMaxAbs: Math.max(Math.abs(number("off_min_us")), Math.abs(number("off_max_us"))),
    serverCpu: number("srv_cpu"),
  };
}

/** Runs the load generator against `port`: `sockets` × `window` outstanding for `seconds`. */
export async function load(
  port: number,
  pid: number,
  shape: { sockets: number; window: number; seconds: number },
  options: { loadgen?: string; pin: boolean },
): Promise<NtpLoadResult> {
  let argv = options.loadgen
    ? [
      options.loadgen,
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-c",
      String(shape.sockets),
      "-w",
      String(shape.window),
      "-d",
      String(shape.seconds),
      "-P",
      String(pid),
      "-q",
    ]
    : [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-run=cat",
      loadgenModule,
      "--port",
      String(port),
      "--sockets",
      String(shape.sockets),
      "--window",
      String(shape.window),
      "--duration",
      String(shape.seconds),
      "--server-pid",
      String(pid),
    ];
  if (options.pin) argv = ["taskset", "-c", "1", ...argv];
  const output = await new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
  const text = new TextDecoder().decode(output.stdout).trim().split("\n").pop() ?? "";
  if (!output.success || text === "") {
    throw new Error(`load generator failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return options.loadgen ? parseCLoadgen(text) : JSON.parse(text) as NtpLoadResult;
}

/**
 * Starts one server (pinned to CPU 0 when `pin`), waits until it answers, runs `measure`,
 * and stops it.
 */
async function withServer<T>(
  server: NtpServer,
  pin: boolean,
  measure: (port: number, pid: number) => Promise<T>,
): Promise<T> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "time-server-bench-" });
  const fill = (text: string) =>
    text.replaceAll("{port}", String(port)).replaceAll("{dir}", dir).replaceAll(
      "{tcp}",
      String(freePort()),
    );
  for (const [name, text] of Object.entries(server.files ?? {})) {
    await Deno.writeTextFile(`${dir}/${name}`, fill(text));
  }
  const command = server.command.map(fill);
  const child = spawnServer(pin ? ["taskset", "-c", "0", ...command] : command, server.cwd);
  try {
    await waitForNtp(port, child);
    return await measure(port, child.pid);
  } finally {
    await stopServer(child);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Runs the scenario: per run, each server in turn gets the full load (8 sockets × 16
 * outstanding), a light load (1 × 1) for its offsets, and one `chronyd -Q`.
 */
export async function ntpBench(options: NtpBenchOptions): Promise<NtpRow[]> {
  const servers = ntpServers(options);
  const chrony = hasTool("chronyd");
  const results = servers.map(() => ({
    full: [] as NtpLoadResult[],
    light: [] as NtpLoadResult[],
    chronyd: [] as number[],
    failed: false,
  }));
  for (let run = 0; run < options.runs; run++) {
    for (const [i, server] of servers.entries()) {
      try {
        await withServer(server, options.pin, async (port, pid) => {
          // One second of load first, as the TCP scenarios warm up.
          await load(port, pid, { sockets: 8, window: 16, seconds: 1 }, options);
          const full = await load(port, pid, {
            sockets: 8,
            window: 16,
            seconds: options.duration,
          }, options);
          results[i].full.push(full);
          if (full.invalid > 0) results[i].failed = true;
          results[i].light.push(
            await load(port, pid, { sockets: 1, window: 1, seconds: 2 }, options),
          );
          if (chrony && run < options.offsetRuns) {
            results[i].chronyd.push(Math.round((await chronydOffset(port)) * 1e7) / 10);
          }
        });
      } catch (error) {
        console.error(`ntp / ${server.label}: ${error instanceof Error ? error.message : error}`);
        results[i].failed = true;
      }
    }
    console.error(`done: ntp, run ${run + 1} of ${options.runs}`);
  }
  return servers.map((server, i) => {
    const { full, light, chronyd, failed } = results[i];
    return {
      server: server.label,
      runs: full,
      rate: median(full.map((r) => r.rate)),
      p50: median(full.map((r) => r.p50)),
      p99: median(full.map((r) => r.p99)),
      serverCpu: median(full.map((r) => r.serverCpu)),
      lost: full.reduce((sum, r) => sum + r.lost, 0),
      invalid: full.reduce((sum, r) => sum + r.invalid, 0),
      lightOffsetP50: median(light.map((r) => r.offsetP50)),
      lightOffsetMaxAbs: Math.max(...light.map((r) => r.offsetMaxAbs)),
      chronydOffsets: chronyd,
      failed: failed || full.length === 0,
    };
  });
}

/** The scenario's table; ratios are against chronyd when it ran. */
export function ntpTable(rows: NtpRow[]): string {
  const chronyd = rows.find((row) => row.server === "chronyd" && !row.failed);
  const lines = [[
    "server",
    "rate",
    chronyd ? "vs chronyd" : "",
    "p50 µs",
    "p99 µs",
    "server CPU",
    "offset, light load: p50 / max |·| µs",
    "chronyd -Q offset: median |·| / max |·| µs",
    "lost",
    "status",
  ]];
  for (const row of rows) {
    const abs = row.chronydOffsets.map(Math.abs);
    lines.push([
      row.server,
      `${format(row.rate)} req/s`,
      chronyd && row !== chronyd ? `×${format(row.rate / chronyd.rate, 2)}` : "",
      format(row.p50),
      format(row.p99),
      format(row.serverCpu, 2),
      `${format(row.lightOffsetP50, 1)} / ${format(row.lightOffsetMaxAbs, 1)}`,
      abs.length ? `${format(median(abs), 1)} / ${format(Math.max(...abs), 1)}` : "",
      String(row.lost),
      row.failed ? "FAILED" : "ok",
    ]);
  }
  const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
  return lines.map((line) => line.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd())
    .join("\n");
}
