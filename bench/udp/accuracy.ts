// The `accuracy` scenario of `deno task bench`: the time this server gives, as a chrony
// client measures it, beside chronyd's own, idle and saturated, basic and interleaved.

import { chronydMeasure, type ChronydMeasurement, hasTool } from "../../tools/time_clients.ts";
import { makeCertificate } from "../../tools/certificate.ts";
import { format, median } from "../common/stats.ts";
import { load as ntpLoad } from "./ntp.ts";
import { loadgen as ntsLoadgen, ntsServers, withServer } from "./nts.ts";

/** Options of {@linkcode accuracyBench}. */
export interface AccuracyOptions {
  runs: number;
  /** Seconds the bystander measures each case (it polls 16 times a second). */
  seconds: number;
  /** A compiled shared/bench/ntp_loadgen.c; bench/udp/ntp_loadgen.ts when left out. */
  ntpLoadgen?: string;
  /** A compiled shared/bench/nts_loadgen.c; without it NTS is measured idle only. */
  ntsLoadgen?: string;
  pin: boolean;
}

/** One case: a server, what the bystander asks for, and the load beside it. */
export interface AccuracyRow {
  server: string;
  protocol: "SNTP" | "NTS";
  asks: "basic" | "xleave";
  load: "idle" | "saturated";
  /** Measurements pooled over the runs, the first few of each run left out. */
  samples: number;
  /** Median and 90th percentile of the absolute offset, and the median delay, µs. */
  offsetP50: number;
  offsetP90: number;
  delayP50: number;
  /** The share of measurements answered in interleaved mode. */
  interleaved: number;
  /** The load generator's rate beside the bystander, requests/s (median of the runs). */
  loadRate: number;
  failed: boolean;
}

/** Measurements at the start of each run left out: the first replies cannot be interleaved. */
const SETTLE = 4;

/** The cases in the order they run against each server. */
function cases(nts: boolean): Pick<AccuracyRow, "protocol" | "asks" | "load">[] {
  const all: Pick<AccuracyRow, "protocol" | "asks" | "load">[] = [];
  for (const protocol of ["SNTP", "NTS"] as const) {
    for (const load of ["idle", "saturated"] as const) {
      if (protocol === "NTS" && load === "saturated" && !nts) continue;
      for (const asks of ["basic", "xleave"] as const) all.push({ protocol, asks, load });
    }
  }
  return all;
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/**
 * Runs the scenario: per run, each server (pinned to CPU 0) serves every case in turn
 * while a bystander `chronyd -x` (CPU 1) polls it 16 times a second for `seconds`,
 * logging each measurement; "saturated" runs the load generator on CPU 1 beside it
 * (SNTP: 8 sockets × 16 outstanding; NTS: 4 × 8). chronyd serves the same cases in the
 * same run, so that the table compares like with like.
 */
export async function accuracyBench(options: AccuracyOptions): Promise<AccuracyRow[]> {
  if (!hasTool("chronyd")) {
    console.error("bench accuracy: chronyd is not installed: it is the bystander; skipping");
    return [];
  }
  if (options.ntsLoadgen === undefined) {
    console.error(
      "bench accuracy: NTS is measured idle only; the saturated cases need --nts-loadgen PATH",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "time-server-bench-accuracy-" });
  const { cert, key } = await makeCertificate(dir, "bench");
  await Deno.mkdir(`${dir}/ntsdump`);
  const servers = ntsServers();
  const plan = cases(options.ntsLoadgen !== undefined);
  const pooled = new Map<string, { measurements: ChronydMeasurement[]; rates: number[] }>();
  const failed = new Set<string>();
  const keyOf = (server: string, c: Pick<AccuracyRow, "protocol" | "asks" | "load">) =>
    `${server}|${c.protocol}|${c.asks}|${c.load}`;
  for (let run = 0; run < options.runs; run++) {
    for (const server of servers) {
      try {
        await withServer(server, { dir, cert, key }, options.pin, async (ke, ntp, pid) => {
          for (const c of plan) {
            const k = keyOf(server.label, c);
            const entry = pooled.get(k) ?? { measurements: [], rates: [] };
            pooled.set(k, entry);
            const { measurements, rate } = await measureCase(c, { ke, ntp, pid, cert }, options);
            if (measurements.length <= SETTLE) failed.add(k);
            entry.measurements.push(...measurements.slice(SETTLE));
            if (rate !== null) entry.rates.push(rate);
          }
        });
      } catch (error) {
        console.error(
          `accuracy / ${server.label}: ${error instanceof Error ? error.message : error}`,
        );
        for (const c of plan) failed.add(keyOf(server.label, c));
      }
    }
    console.error(`done: accuracy, run ${run + 1} of ${options.runs}`);
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  return servers.flatMap((server) =>
    plan.map((c) => {
      const k = keyOf(server.label, c);
      const { measurements = [], rates = [] } = pooled.get(k) ?? {};
      const offsets = measurements.map((m) => Math.abs(m.offset) * 1e6).sort((a, b) => a - b);
      const delays = measurements.map((m) => m.delay * 1e6).sort((a, b) => a - b);
      return {
        server: server.label,
        ...c,
        samples: measurements.length,
        offsetP50: quantile(offsets, 0.5),
        offsetP90: quantile(offsets, 0.9),
        delayP50: quantile(delays, 0.5),
        interleaved: measurements.filter((m) => m.interleaved).length / (measurements.length || 1),
        loadRate: rates.length ? median(rates) : 0,
        failed: failed.has(k),
      };
    })
  );
}

/** One case against a running server: the bystander's measurements, and the load's rate. */
async function measureCase(
  c: Pick<AccuracyRow, "protocol" | "asks" | "load">,
  target: { ke: number; ntp: number; pid: number; cert: string },
  options: AccuracyOptions,
): Promise<{ measurements: ChronydMeasurement[]; rate: number | null }> {
  const seconds = options.seconds;
  let loading: Promise<number> | null = null;
  if (c.load === "saturated") {
    // The load runs a little longer than the bystander, so that it covers every poll.
    const span = seconds + 2;
    loading = c.protocol === "SNTP"
      ? ntpLoad(target.ntp, target.pid, { sockets: 8, window: 16, seconds: span }, {
        loadgen: options.ntpLoadgen,
        pin: options.pin,
      }).then((result) => result.rate)
      : ntsLoadgen({ loadgen: options.ntsLoadgen, pin: options.pin }, [
        ...["-h", "127.0.0.1", "-k", `${target.ke}`, "--ca", target.cert, "-P", `${target.pid}`],
        ...["-c", "4", "-w", "8", "-d", `${span}`],
      ]).then((fields) => Number(fields.rps));
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const { measurements } = await chronydMeasure({
    port: target.ntp,
    xleave: c.asks === "xleave",
    nts: c.protocol === "NTS" ? { kePort: target.ke, trusted: target.cert } : undefined,
    seconds,
    cpu: options.pin ? 1 : undefined,
  });
  return { measurements, rate: loading === null ? null : await loading };
}

/**
 * The scenario's table: one line per case and server, and whether this server's median
 * and p90 are within 1 µs of chronyd's in the same case.
 */
export function accuracyTable(rows: AccuracyRow[]): string {
  const chronyd = (row: AccuracyRow) =>
    rows.find((other) =>
      other.server === "chronyd" && other.protocol === row.protocol && other.asks === row.asks &&
      other.load === row.load
    );
  const lines = [[
    "server",
    "protocol",
    "client asks",
    "load",
    "median |offset| µs",
    "p90 |offset| µs",
    "median delay µs",
    "interleaved",
    "load served",
    "≤ chronyd + 1 µs",
    "samples",
  ]];
  for (const row of rows) {
    const reference = chronyd(row);
    const within = reference && row !== reference && !reference.failed
      ? row.offsetP50 <= reference.offsetP50 + 1 && row.offsetP90 <= reference.offsetP90 + 1
        ? "yes"
        : "no"
      : "";
    lines.push([
      row.server,
      row.protocol,
      row.asks,
      row.load,
      format(row.offsetP50, 2),
      format(row.offsetP90, 2),
      format(row.delayP50, 1),
      row.asks === "xleave" ? `${format(row.interleaved * 100, 1)}%` : "n/a",
      row.load === "saturated" ? `${format(row.loadRate)} req/s` : "",
      row.failed ? "FAILED" : within,
      String(row.samples),
    ]);
  }
  const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
  return lines.map((line) => line.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd())
    .join("\n");
}
