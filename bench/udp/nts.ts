// The `nts` scenario of `deno task bench`: this server's NTS (RFC 8915) side by side with
// chronyd serving NTS, driven by shared/bench/nts_loadgen.c, and chronyd -Q's offset over NTS.

import { startCommand } from "../../tools/start_task.ts";
import { freePort } from "../../lib/net.ts";
import { chronydNts, hasTool } from "../../tools/time_clients.ts";
import { makeCertificate } from "../../tools/certificate.ts";
import { format, median } from "../common/stats.ts";
import { startServer, stopServer } from "../common/servers.ts";

/** Options of {@linkcode ntsBench}. */
export interface NtsBenchOptions {
  runs: number;
  /** Seconds of load per run. */
  duration: number;
  /** A compiled shared/bench/nts_loadgen.c; without it only chronyd -Q's offsets are measured. */
  loadgen?: string;
  /** Another checkout of this project (the tree before a change), measured too. */
  treeBefore?: string;
  /** chronyd -Q runs per server for the offset (each takes ~6 s). */
  offsetRuns: number;
  pin: boolean;
}

/** What nts_loadgen printed, the fields the table uses. */
interface NtsLoad {
  rate: number;
  p50: number;
  p99: number;
  invalid: number;
  lost: number;
  naks: number;
  serverCpu: number;
}

/** One server's results, medians over the runs. */
export interface NtsRow {
  server: string;
  nts: NtsLoad[];
  plain: NtsLoad[];
  /** NTS-KE handshakes per second, and their median duration in ms, per run. */
  ke: { rate: number; ms: number; failed: number }[];
  /** What chronyd -Q over NTS reported, µs, one per run. */
  chronydOffsets: number[];
  failed: boolean;
}

export interface NtsServer {
  label: string;
  /** With {ntp}, {ke}, {tcp}, {dir}, {cert} and {key}. */
  command: string[];
  /** Where it runs: another tree's folder, or this project's by default. */
  cwd?: string;
  files?: Record<string, string>;
}

/**
 * chronyd as shared/bench/README.md serves NTS (no clock control), and this server as
 * `deno task start` runs it, with read access to the benchmark's certificate added.
 */
export function ntsServers(treeBefore?: string): NtsServer[] {
  const ours = (tree?: string) => ({
    label: `time-server (--udp-engine mmsg)${tree ? ", tree before" : ""}`,
    cwd: tree,
    command: [
      ...startCommand(tree).map((word) => word.startsWith("--allow-read") ? `${word},{dir}` : word),
      ...["--host", "127.0.0.1", "--port", "{tcp}", "--ntp-port", "{ntp}", "--udp-engine", "mmsg"],
      ...["--nts-ke-port", "{ke}", "--nts-cert", "{cert}", "--nts-key", "{key}"],
      ...["--nts-ke-rate", "0", "--log-level", "warn"],
    ],
  });
  const servers: NtsServer[] = [ours()];
  if (treeBefore) servers.push(ours(treeBefore));
  if (hasTool("chronyd")) {
    servers.unshift({
      label: "chronyd",
      command: ["chronyd", "-d", "-x", "-u", "root", "-f", "{dir}/server.conf"],
      files: {
        "server.conf": [
          "port {ntp}",
          "ntsport {ke}",
          "bindaddress 127.0.0.1",
          "allow 127.0.0.1",
          "local stratum 10",
          "ntsservercert {cert}",
          "ntsserverkey {key}",
          "ntsdumpdir {dir}/ntsdump",
          "pidfile {dir}/chronyd.pid",
          "cmdport 0",
          "bindcmdaddress /",
          "",
        ].join("\n"),
      },
    });
  } else console.error("bench nts: chronyd is not installed; measuring without it");
  return servers;
}

function fields(line: string): Record<string, string> {
  return Object.fromEntries(line.trim().split(/\s+/).map((pair) => pair.split("=")));
}

/** Runs nts_loadgen with `args`, pinned to CPU 1; its one key=value line. */
export async function loadgen(
  options: { loadgen?: string; pin: boolean },
  args: string[],
): Promise<Record<string, string>> {
  const argv = [options.loadgen!, ...args, "-q"];
  const pinned = options.pin ? ["taskset", "-c", "1", ...argv] : argv;
  const output = await new Deno.Command(pinned[0], { args: pinned.slice(1), stdin: "null" })
    .output();
  const line = new TextDecoder().decode(output.stdout).trim().split("\n").pop() ?? "";
  if (!output.success || line === "") {
    throw new Error(`nts_loadgen failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return fields(line);
}

function toLoad(f: Record<string, string>): NtsLoad {
  const n = (key: string) => Number(f[key] ?? 0);
  return {
    rate: n("rps"),
    p50: n("p50_us"),
    p99: n("p99_us"),
    invalid: n("invalid"),
    lost: n("lost"),
    naks: n("naks"),
    serverCpu: n("srv_cpu"),
  };
}

/**
 * Runs the scenario: per run, each server in turn (pinned to CPU 0, the load generator to
 * CPU 1) gets NTS load (4 sockets × 8 outstanding, as shared/bench/README.md measured
 * chronyd), the same loop with plain SNTP, 300 NTS-KE handshakes in a row, and one
 * `chronyd -Q` over NTS.
 */
export async function ntsBench(options: NtsBenchOptions): Promise<NtsRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "time-server-bench-nts-" });
  // One self-signed certificate for both servers (IP SAN 127.0.0.1), as shared/bench's.
  const { cert, key } = await makeCertificate(dir, "bench");
  await Deno.mkdir(`${dir}/ntsdump`);
  const servers = ntsServers(options.treeBefore);
  const rows: NtsRow[] = servers.map((server) => ({
    server: server.label,
    nts: [],
    plain: [],
    ke: [],
    chronydOffsets: [],
    failed: false,
  }));
  const chrony = hasTool("chronyd");
  for (let run = 0; run < options.runs; run++) {
    for (const [i, server] of servers.entries()) {
      try {
        await withServer(server, { dir, cert, key }, options.pin, async (ke, ntp, pid) => {
          const row = rows[i];
          if (options.loadgen) {
            const target = ["-h", "127.0.0.1", "-k", `${ke}`, "--ca", cert];
            const shape = [...target, "-P", `${pid}`];
            await loadgen(options, [...shape, "-c", "4", "-w", "8", "-d", "1"]); // warm-up
            const load = ["-c", "4", "-w", "8", "-d", `${options.duration}`];
            row.nts.push(toLoad(await loadgen(options, [...shape, ...load])));
            row.plain.push(
              toLoad(await loadgen(options, [...shape, "-m", "plain", "-p", `${ntp}`, ...load])),
            );
            const k = await loadgen(options, ["-K", "300", ...target]);
            row.ke.push({
              rate: Number(k.ke_rate),
              ms: Number(k.ke_ms),
              failed: Number(k.ke_fail),
            });
            if (row.nts.at(-1)!.invalid > 0 || Number(k.ke_fail) > 0) row.failed = true;
          }
          if (chrony && run < options.offsetRuns) {
            const { offset, output } = await chronydNts(ke, ntp, cert);
            if (offset === null) {
              throw new Error(`chronyd -Q over NTS reported no offset: ${output}`);
            }
            row.chronydOffsets.push(Math.round(offset * 1e7) / 10);
          }
        });
      } catch (error) {
        console.error(`nts / ${server.label}: ${error instanceof Error ? error.message : error}`);
        rows[i].failed = true;
      }
    }
    console.error(`done: nts, run ${run + 1} of ${options.runs}`);
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  return rows;
}

/**
 * Starts one NTS server (pinned to CPU 0 when `pin`) with a free KE and NTP port, waits
 * until it accepts key establishments, runs `measure`, and stops it.
 */
export async function withServer<T>(
  server: NtsServer,
  { dir, cert, key }: { dir: string; cert: string; key: string },
  pin: boolean,
  measure: (ke: number, ntp: number, pid: number) => Promise<T>,
): Promise<T> {
  const ke = freePort(), ntp = freePort();
  const fill = (text: string) =>
    text.replaceAll("{ntp}", `${ntp}`).replaceAll("{ke}", `${ke}`).replaceAll("{dir}", dir)
      .replaceAll("{cert}", cert).replaceAll("{key}", key).replaceAll("{tcp}", `${freePort()}`);
  for (const [name, text] of Object.entries(server.files ?? {})) {
    await Deno.writeTextFile(`${dir}/${name}`, fill(text));
  }
  const command = server.command.map(fill);
  const child = await startServer(
    pin ? ["taskset", "-c", "0", ...command] : command,
    ke,
    server.cwd,
  );
  try {
    return await measure(ke, ntp, child.pid);
  } finally {
    await stopServer(child);
  }
}

/** The scenario's table; ratios are against chronyd when it ran, and against the server's own plain SNTP. */
export function ntsTable(rows: NtsRow[]): string {
  const chronyd = rows.find((row) => row.server === "chronyd" && !row.failed);
  const rate = (loads: NtsLoad[]) => median(loads.map((load) => load.rate));
  const keRate = (row: NtsRow) => median(row.ke.map((ke) => ke.rate));
  const lines = [[
    "server",
    "NTS",
    chronyd ? "vs chronyd" : "",
    "vs own plain",
    "plain",
    "NTS p50 / p99 µs",
    "NTS-KE",
    chronyd ? "vs chronyd" : "",
    "KE median ms",
    "chronyd -Q over NTS: median |·| / max |·| µs",
    "status",
  ]];
  for (const row of rows) {
    const abs = row.chronydOffsets.map(Math.abs);
    const ours = row !== chronyd && chronyd !== undefined;
    lines.push([
      row.server,
      `${format(rate(row.nts))} req/s`,
      ours ? `×${format(rate(row.nts) / rate(chronyd.nts), 2)}` : "",
      `×${format(rate(row.nts) / rate(row.plain), 2)}`,
      `${format(rate(row.plain))} req/s`,
      `${format(median(row.nts.map((l) => l.p50)))} / ${format(median(row.nts.map((l) => l.p99)))}`,
      `${format(keRate(row))} /s`,
      ours ? `×${format(keRate(row) / keRate(chronyd), 2)}` : "",
      format(median(row.ke.map((ke) => ke.ms)), 2),
      abs.length ? `${format(median(abs), 1)} / ${format(Math.max(...abs), 1)}` : "",
      row.failed ? "FAILED" : "ok",
    ]);
  }
  const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
  return lines.map((line) => line.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd())
    .join("\n");
}
