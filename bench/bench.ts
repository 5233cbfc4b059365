// The benchmark: starts servers as subprocesses, drives them with a load generator, prints one table.

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { attachNegativeValues, type FlagShape, UsageError } from "../lib/usage.ts";
import { startCommand } from "../tools/start_task.ts";
import type { LoadResult } from "./loadgen.ts";
import { freePort } from "../lib/net.ts";
import { ntpBench, type NtpRow, ntpTable } from "./ntp_bench.ts";
import { DEADLINE_IDLE_TIMEOUT, measureDeadlines } from "./deadlines.ts";
import { ntsBench, type NtsRow, ntsTable } from "./nts_bench.ts";
import { startServer } from "./servers.ts";

const HELP = `Usage: deno task bench [options]

Starts each server as a subprocess on a free port, drives it with the load generator
(bench/loadgen.ts, or the C one with --loadgen), prints one table and writes it as JSON.

Options:
  --scenario LIST        rr, pipeline, churn, idle, deadlines, ntp, nts, or all (default all);
                         comma-separated. deadlines: how late --idle-timeout 1 closes silent
                         connections under the rr load (p50, p99, max in µs; this server only)
  --duration SECONDS     measured seconds per run, after 1 s of warm-up (default 5)
  --runs N               runs per scenario; the table shows medians (default 3)
  --connections N        connections for rr, pipeline and churn (default 50)
  --pipeline N           requests in flight per connection in "pipeline" (default 32)
  --idle-connections LIST
                         connections held in "idle" (default 10000); with two sizes, e.g.
                         5000,15000, the table adds each server's memory per connection
                         between them, free of what a server pages in once
  --log-level LIST       log levels to run this project's server at (default info)
  --tcp-engine LIST      TCP engines to run this project's server with: deno, epoll (default deno)
  --server-args LIST     extra flags for this project's server, one variant per ";"-separated
                         item, e.g. "--workers 1;--workers 2" or ";--metrics 127.0.0.1:{metrics}"
                         ({metrics} is a free port; a server with --metrics is scraped every second)
  --server-cmd CMD       a server to measure instead, with {port} for the port; repeatable
  --also-cmd CMD         a server to measure as well as this project's, e.g. "node
                         ../shared/bench/node_server.mjs {port}"; repeatable
  --baseline-cmd CMD     a server to compare with in the same run; ratios are against it
  --loadgen PATH         use a compiled shared/bench/loadgen.c instead of bench/loadgen.ts
  --ntp-loadgen PATH     ntp: use a compiled shared/bench/ntp_loadgen.c instead of bench/ntp_loadgen.ts
  --ntp-echo PATH        ntp: measure a compiled shared/bench/ntp_echo_server.c too
  --offset-runs N        ntp, nts: chronyd -Q runs per server for the offset, ~4 s each (default: --runs)
  --nts-loadgen PATH     nts: a compiled shared/bench/nts_loadgen.c, for NTS and NTS-KE rates
                         (without it, nts measures only chronyd -Q's offset over NTS)
  --out FILE             where the JSON goes (default bench/runs/<date>.json, which git ignores)
  -h, --help             print this help`;

const root = new URL("..", import.meta.url).pathname;

const loadgenModule = new URL("./loadgen.ts", import.meta.url).pathname;

interface Server {
  label: string;
  command: string[];
}

interface Row {
  server: string;
  scenario: string;
  runs: LoadResult[];
  median: LoadResult;
  failed: boolean;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function medianResult(runs: LoadResult[]): LoadResult {
  const result = { ...runs[0] } as unknown as Record<string, unknown>;
  for (const key of Object.keys(result)) {
    if (typeof result[key] === "number") {
      result[key] = median(runs.map((run) => (run as unknown as Record<string, number>)[key]));
    }
  }
  result.errors = runs.reduce((sum, run) => sum + run.errors, 0);
  return result as unknown as LoadResult;
}

function hasTaskset(): boolean {
  if (Deno.build.os !== "linux" || navigator.hardwareConcurrency < 2) return false;
  try {
    return new Deno.Command("taskset", { args: ["-c", "0", "true"] }).outputSync().success;
  } catch {
    return false;
  }
}

function parseCLoadgen(line: string): LoadResult {
  const fields = Object.fromEntries(
    line.trim().split(/\s+/).map((pair) => pair.split("=")).map(([k, v]) => [k, v]),
  );
  const number = (key: string) => Number(fields[key] ?? 0);
  const errors = number("errors") + number("bad") + number("conn_err");
  if (fields.mode === "idle") {
    return {
      mode: "idle",
      completed: number("served2"),
      rate: 0,
      p50: number("p50_us"),
      p99: number("p99_us"),
      p999: number("p99_us"),
      errors: errors + (number("opened") - number("served2")),
      held: number("still_open"),
      burstSeconds: number("burst_s"),
      rssBeforeKiB: number("rss_before_kb"),
      rssLoadedKiB: number("rss_loaded_kb"),
      rssAfterKiB: number("rss_after_kb"),
    };
  }
  // srv_cpu is the server's CPU in cores over the window: per request, in µs.
  const cpu = fields.srv_cpu === undefined || number("rps") === 0
    ? undefined
    : Math.round(number("srv_cpu") / number("rps") * 1e8) / 100;
  return {
    mode: fields.mode,
    completed: number("reqs"),
    rate: Math.round(number("rps")),
    p50: number("p50_us"),
    p99: number("p99_us"),
    p999: number("p999_us"),
    errors,
    serverCpuUsPerRequest: cpu,
  };
}

/** Scrapes /metrics once a second until aborted, as Prometheus would, so its cost is measured. */
function scrapeEverySecond(port: number): AbortController {
  const controller = new AbortController();
  const timer = setInterval(async () => {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`, {
        signal: controller.signal,
      });
      await response.text();
    } catch {
      // Not up yet, or stopping.
    }
  }, 1000);
  controller.signal.addEventListener("abort", () => clearInterval(timer));
  return controller;
}

/**
 * The load generator's command line for one scenario against `port`: the C one from
 * `options.loadgen`, or bench/loadgen.ts. Both read the server's RSS through its pid.
 */
function loadgenCommand(
  scenario: string,
  port: number,
  serverPid: number,
  options: Record<string, number | string | undefined>,
): string[] {
  const loadgenPath = options.loadgen as string | undefined;
  const idleCount = Number(options.idleConnections);
  // One loopback address gives ~28,000 client ports; spread larger loads over more.
  const addresses = Math.max(1, Math.ceil(idleCount / 25000));
  return loadgenPath
    ? cLoadgenCommand(loadgenPath, scenario, port, serverPid, options)
    : tsLoadgenCommand(scenario, port, serverPid, options, addresses);
}

/** The C load generator's command line (shared/bench/loadgen.c, `-m`, `-c`, `-d`, `-s`). */
function cLoadgenCommand(
  loadgenPath: string,
  scenario: string,
  port: number,
  serverPid: number,
  options: Record<string, number | string | undefined>,
): string[] {
  const idleCount = Number(options.idleConnections);
  const modes: Record<string, string[]> = {
    rr: [
      "-m",
      "rr",
      "-c",
      String(options.connections),
      "-d",
      "1",
      "-s",
      String(options.duration),
    ],
    pipeline: [
      "-m",
      "rr",
      "-c",
      String(options.connections),
      "-d",
      String(options.pipeline),
      "-s",
      String(options.duration),
    ],
    churn: ["-m", "connect", "-c", String(options.connections), "-s", String(options.duration)],
    idle: ["-m", "idle", "-c", String(idleCount), "-s", "2"],
  };
  return [
    loadgenPath,
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-P",
    String(serverPid),
    ...modes[scenario],
  ];
}

/** bench/loadgen.ts's command line, spread over `addresses` loopback addresses for `idle`. */
function tsLoadgenCommand(
  scenario: string,
  port: number,
  serverPid: number,
  options: Record<string, number | string | undefined>,
  addresses: number,
): string[] {
  const idleCount = Number(options.idleConnections);
  const modes: Record<string, string[]> = {
    rr: ["--mode", "rr", "--connections", String(options.connections), "--depth", "1"],
    pipeline: [
      "--mode",
      "rr",
      "--connections",
      String(options.connections),
      "--depth",
      String(options.pipeline),
    ],
    churn: ["--mode", "churn", "--connections", String(options.connections)],
    idle: [
      "--mode",
      "idle",
      "--connections",
      String(idleCount),
      "--addresses",
      String(addresses),
    ],
  };
  return [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-run=ps",
    loadgenModule,
    "--port",
    String(port),
    "--duration",
    String(options.duration),
    "--server-pid",
    String(serverPid),
    ...modes[scenario],
  ];
}

/**
 * The "deadlines" scenario: the `rr` load saturates the server while silent connections
 * wait for its idle timeout; the result's percentiles are how late they were closed.
 */
async function deadlinesUnderLoad(
  port: number,
  pid: number,
  options: Record<string, number | string | undefined>,
  pinned: (argv: string[]) => string[],
): Promise<LoadResult> {
  const argv = pinned(loadgenCommand("rr", port, pid, { ...options, duration: 8 }));
  const load = new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
  await new Promise((resolve) => setTimeout(resolve, 1500)); // the load's warm-up, and more
  const { lateUs, missed } = await measureDeadlines(port);
  const output = await load;
  const text = new TextDecoder().decode(output.stdout).trim().split("\n").pop() ?? "";
  const loaded = options.loadgen ? parseCLoadgen(text) : JSON.parse(text) as LoadResult;
  const at = (q: number) =>
    Math.round(lateUs[Math.min(lateUs.length - 1, Math.floor(q * lateUs.length))] ?? 0);
  return {
    mode: "deadlines",
    completed: lateUs.length,
    rate: loaded.rate,
    p50: at(0.5),
    p99: at(0.99),
    p999: Math.round(lateUs.at(-1) ?? 0),
    errors: missed + loaded.errors,
    serverCpuUsPerRequest: loaded.serverCpuUsPerRequest,
  };
}

async function runScenario(
  scenario: string,
  server: Server,
  options: Record<string, number | string | undefined>,
  pin: boolean,
): Promise<LoadResult> {
  // "idle:N": the idle scenario with N connections, one of several sizes.
  const [name, size] = scenario.split(":");
  if (size !== undefined) {
    const result = await runScenario(name, server, { ...options, idleConnections: size }, pin);
    return { ...result, mode: scenario };
  }
  const port = freePort("0.0.0.0");
  const metricsPort = freePort();
  const command = server.command.map((part) =>
    part.replaceAll("{port}", String(port)).replaceAll("{metrics}", String(metricsPort))
  );
  const scraping = command.includes("--metrics") ? scrapeEverySecond(metricsPort) : null;
  // Several workers are meant to use every core, so only a single event loop is pinned.
  const workersAt = command.indexOf("--workers");
  const multi = workersAt !== -1 && command[workersAt + 1] !== "1";
  const serverArgv = pin && !multi ? ["taskset", "-c", "0", ...command] : command;
  const deadlines = scenario === "deadlines";
  const args = deadlines ? ["--idle-timeout", String(DEADLINE_IDLE_TIMEOUT)] : [];
  const child = await startServer([...serverArgv, ...args], port);
  try {
    const loadgenPath = options.loadgen as string | undefined;
    const pinned = (argv: string[]) => pin ? ["taskset", "-c", "1", ...argv] : argv;
    if (deadlines) return await deadlinesUnderLoad(port, child.pid, options, pinned);
    const argv = pinned(loadgenCommand(scenario, port, child.pid, options));
    const output = await new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
    const text = new TextDecoder().decode(output.stdout).trim().split("\n").pop() ?? "";
    if (!output.success || text === "") {
      throw new Error(`load generator failed: ${new TextDecoder().decode(output.stderr).trim()}`);
    }
    const result = loadgenPath ? parseCLoadgen(text) : JSON.parse(text) as LoadResult;
    result.mode = scenario;
    return result;
  } finally {
    scraping?.abort();
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }
}

function format(value: number, digits = 0): string {
  return value.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

function table(rows: Row[], baseline: string | undefined): string {
  const lines: string[][] = [[
    "scenario",
    "server",
    "rate",
    baseline ? "vs baseline" : "",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "memory, or CPU",
    "errors",
    "status",
  ]];
  for (const row of rows) {
    const m = row.median;
    const base = rows.find((r) => r.server === baseline && r.scenario === row.scenario);
    let rate = "", ratio = "", memory = "";
    if (row.scenario.startsWith("idle")) {
      const perConn = ((m.rssLoadedKiB! - m.rssBeforeKiB!) * 1024) / Math.max(1, m.held!);
      const perConnAfter = ((m.rssAfterKiB! - m.rssBeforeKiB!) * 1024) / Math.max(1, m.held!);
      rate = `${format(m.held!)} held, burst ${format(m.burstSeconds!, 2)} s`;
      memory =
        `RSS ${format(m.rssBeforeKiB! / 1024, 1)} → ${format(m.rssLoadedKiB! / 1024, 1)} → ` +
        `${format(m.rssAfterKiB! / 1024, 1)} MiB; ${format(perConn)} B/conn held, ${
          format(perConnAfter)
        } after burst`;
      if (base && base !== row) {
        ratio = `burst ×${format(m.burstSeconds! / base.median.burstSeconds!, 2)}`;
      }
    } else if (row.scenario === "deadlines") {
      rate = `${format(m.rate)} req/s of load`;
      memory = `${m.completed} closed after ${DEADLINE_IDLE_TIMEOUT} s + p50 ${
        format(m.p50 / 1000)
      } ms, p99 ${format(m.p99 / 1000)} ms, max ${format(m.p999 / 1000)} ms`;
    } else {
      rate = `${format(m.rate)} ${row.scenario === "churn" ? "conn/s" : "req/s"}`;
      if (base && base !== row) ratio = `×${format(m.rate / base.median.rate, 2)}`;
      const cpu = m.serverCpuUsPerRequest;
      if (cpu !== undefined) memory = `server CPU ${format(cpu, 2)} µs per request`;
    }
    lines.push([
      row.scenario,
      row.server,
      rate,
      ratio,
      format(m.p50, 0),
      format(m.p99, 0),
      format(m.p999, 0),
      memory,
      String(m.errors),
      row.failed ? "FAILED" : "ok",
    ]);
  }
  const keep = lines[0].map((_, column) => lines.some((line, i) => i > 0 && line[column] !== ""));
  const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
  return lines.map((line) =>
    line.filter((_, column) => keep[column]).map((cell, column) =>
      cell.padEnd(widths.filter((_, c) => keep[c])[column])
    ).join("  ").trimEnd()
  ).join("\n");
}

/**
 * Each server's RSS per idle connection between the smallest and the largest `idle`
 * size: what one more connection costs, without the code and buffers a server pages in
 * once (which a single size divides among its connections).
 */
function marginalMemory(rows: Row[], sizes: string[]): string {
  const lines = [`idle: RSS per connection between ${sizes[0]} and ${sizes.at(-1)} held`];
  for (const server of new Set(rows.map((row) => row.server))) {
    const at = (size: string) =>
      rows.find((r) => r.server === server && r.scenario === `idle:${size}`);
    const small = at(sizes[0]), large = at(sizes.at(-1)!);
    if (!small || !large) continue;
    const bytes = (large.median.rssLoadedKiB! - small.median.rssLoadedKiB!) * 1024 /
      Math.max(1, large.median.held! - small.median.held!);
    lines.push(`  ${server.padEnd(48)} ${format(bytes)} B/conn`);
  }
  return lines.join("\n");
}

function machine(): Record<string, string | number> {
  let cpu = "unknown";
  try {
    // Deno reads /proc files of the system only with --allow-all; cat needs nothing more.
    const output = new Deno.Command("cat", { args: ["/proc/cpuinfo"] }).outputSync();
    cpu = new TextDecoder().decode(output.stdout).match(/model name\s*:\s*(.*)/)?.[1] ?? cpu;
  } catch {
    // Not Linux.
  }
  return {
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    arch: Deno.build.arch,
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    deno: Deno.version.deno,
  };
}

/** The servers a run measures: this project's (per log level and variant) or `--server-cmd`s. */
function serversToRun(
  values: {
    "server-cmd"?: string[];
    "log-level": string;
    "tcp-engine": string;
    "server-args"?: string;
    "also-cmd"?: string[];
    "idle-connections": string;
  },
): Server[] {
  const idleConnections = Math.max(...values["idle-connections"].split(",").map(Number));
  const other = (cmd: string) => ({
    label: cmd.replace(/\s*((--port|-p)[= ])?\{port\}/, "").slice(0, 48),
    command: cmd.split(/\s+/),
  });
  if (values["server-cmd"]) return values["server-cmd"].map(other);
  const variants = values["tcp-engine"].split(",").flatMap((engine) =>
    (values["server-args"] ?? "").split(";").map((variant) =>
      engine === "deno" ? variant.trim() : `--tcp-engine ${engine} ${variant.trim()}`.trim()
    )
  );
  const ours = values["log-level"].split(",").flatMap((level) =>
    variants.map((variant) => ({
      label: `time-server (log ${level}${variant ? `, ${variant}` : ""})`,
      command: [
        ...startCommand(),
        "--port",
        "{port}",
        "--log-level",
        level,
        // Room to spare, so that the idle connections stay under the high-water mark
        // past which the server closes silent connections (see Reliability in the README).
        "--max-connections",
        String(Math.max(10000, 2 * idleConnections)),
        ...variant.split(/\s+/).filter((word) => word !== ""),
      ],
    }))
  );
  return [...ours, ...(values["also-cmd"] ?? []).map(other)];
}

/**
 * Runs every scenario `runs` times against every server, taking turns run by run so
 * that a slow spell of this shared machine falls on all of them rather than on one.
 */
async function runAll(
  scenarios: string[],
  servers: Server[],
  runs: number,
  measure: (scenario: string, server: Server) => Promise<LoadResult>,
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const scenario of scenarios) {
    const results = servers.map(() => [] as LoadResult[]);
    const failed = servers.map(() => false);
    for (let run = 0; run < runs; run++) {
      for (const [i, server] of servers.entries()) {
        // Only this project's server has an idle timeout to measure.
        if (scenario === "deadlines" && !server.label.startsWith("time-server")) continue;
        try {
          const result = await measure(scenario, server);
          results[i].push(result);
          if (result.errors > 0) failed[i] = true;
        } catch (error) {
          console.error(
            `${scenario} / ${server.label}: ${error instanceof Error ? error.message : error}`,
          );
          failed[i] = true;
        }
      }
      console.error(`done: ${scenario}, run ${run + 1} of ${runs}`);
    }
    for (const [i, server] of servers.entries()) {
      if (results[i].length === 0) continue;
      rows.push({
        server: server.label,
        scenario,
        runs: results[i],
        median: medianResult(results[i]),
        failed: failed[i],
      });
    }
  }
  return rows;
}

/** Prints what the run is measured on and how. */
function printSetup(
  info: Record<string, string | number>,
  pin: boolean,
  loadgen: string | undefined,
  runs: number,
): void {
  console.log(
    `machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGiB} GiB, ${info.os}, Deno ${info.deno}`,
  );
  console.log(
    pin
      ? "pinning: server on CPU 0 (with --workers above 1: not pinned), load generator on CPU 1 (taskset)"
      : "pinning: none (taskset or a second core is not available)",
  );
  console.log(
    `load generator: ${
      loadgen ?? "bench/loadgen.ts"
    }; ${runs} run(s) per scenario, medians shown\n`,
  );
}

const FLAGS = {
  scenario: { type: "string", default: "all" },
  duration: { type: "string", default: "5" },
  runs: { type: "string", default: "3" },
  connections: { type: "string", default: "50" },
  pipeline: { type: "string", default: "32" },
  "idle-connections": { type: "string", default: "10000" },
  "log-level": { type: "string", default: "info" },
  "tcp-engine": { type: "string", default: "deno" },
  "also-cmd": { type: "string", multiple: true },
  "server-args": { type: "string" },
  "server-cmd": { type: "string", multiple: true },
  "baseline-cmd": { type: "string" },
  loadgen: { type: "string" },
  "ntp-loadgen": { type: "string" },
  "ntp-echo": { type: "string" },
  "offset-runs": { type: "string" },
  "nts-loadgen": { type: "string" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * Parses a tool's flags; on a mistake prints one line naming the tool and returns
 * null (the tool then exits 2).
 */
export function parseToolFlags<const T extends ParseArgsOptionsConfig>(
  tool: string,
  args: string[],
  options: T,
): ParsedValues<T> | null {
  try {
    const flags = options as Record<string, FlagShape>;
    return parseArgs({ args: attachNegativeValues(args, flags), options, strict: true })
      .values as ParsedValues<T>;
  } catch (error) {
    console.error(`${tool}: ${UsageError.fromParseArgs(error).message} (see --help)`);
    return null;
  }
}

/** The values `parseArgs` gives for `options`. */
type ParsedValues<T extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ options: T; strict: true }>
>["values"];

/** The team's measuring tools, kept beside this repository (`../shared/bench/`), not in it. */
const shared = new URL("../../shared/bench/", import.meta.url).pathname;

/**
 * Says, one line each, which C tools from `../shared/bench/` this run goes without and
 * how to add them: nothing is left out without a word.
 */
function sayWhatIsSkipped(
  values: { loadgen?: string; "ntp-loadgen"?: string; "ntp-echo"?: string; "nts-loadgen"?: string },
  tcp: boolean,
  ntp: boolean,
  nts: boolean,
): void {
  let present = true;
  try {
    Deno.statSync(shared);
  } catch {
    present = false;
  }
  const from = (file: string) => `${shared}${file}${present ? "" : ", not found here"}`;
  if (tcp && !values.loadgen) {
    console.error(
      `bench: driving with bench/loadgen.ts; the C load generator (${from("loadgen.c")}) ` +
        `is used once built and given as --loadgen PATH`,
    );
  }
  if (ntp && !values["ntp-loadgen"]) {
    console.error(
      `bench ntp: driving with bench/ntp_loadgen.ts; the C one (${from("ntp_loadgen.c")}) ` +
        `is used once built and given as --ntp-loadgen PATH`,
    );
  }
  if (nts && !values["nts-loadgen"]) {
    console.error(
      `bench nts: measuring only chronyd -Q's offset over NTS; the rates need the C load ` +
        `generator (${from("nts_loadgen.c")}), built and given as --nts-loadgen PATH`,
    );
  }
  if (ntp && !values["ntp-echo"]) {
    console.error(
      `bench ntp: skipping the C SNTP server (${from("ntp_echo_server.c")}): ` +
        `build it and give it as --ntp-echo PATH`,
    );
  }
}

/** The UDP scenarios, `ntp` and `nts`, each run and printed when asked for. */
async function runTimeScenarios(
  values: ParsedValues<typeof FLAGS>,
  scenarios: string[],
  runs: number,
  pin: boolean,
): Promise<{ ntpRows: NtpRow[]; ntsRows: NtsRow[] }> {
  const offsetRuns = values["offset-runs"] === undefined ? runs : Number(values["offset-runs"]);
  const duration = Number(values.duration);
  let ntpRows: NtpRow[] = [];
  if (scenarios.includes("ntp")) {
    ntpRows = await ntpBench({
      runs,
      duration,
      loadgen: values["ntp-loadgen"],
      echoServer: values["ntp-echo"],
      offsetRuns,
      pin,
    });
    console.log(
      `\nntp: ${values["ntp-loadgen"] ?? "bench/ntp_loadgen.ts"}, 8 sockets × 16 outstanding`,
    );
    console.log(ntpTable(ntpRows));
  }
  let ntsRows: NtsRow[] = [];
  if (scenarios.includes("nts")) {
    ntsRows = await ntsBench({ runs, duration, loadgen: values["nts-loadgen"], offsetRuns, pin });
    console.log(
      values["nts-loadgen"]
        ? `\nnts: ${values["nts-loadgen"]}, 4 sockets × 8 outstanding`
        : "\nnts: no load generator (--nts-loadgen), so chronyd -Q's offsets only",
    );
    console.log(ntsTable(ntsRows));
  }
  return { ntpRows, ntsRows };
}

async function main(args: string[]): Promise<number> {
  const values = parseToolFlags("bench", args, FLAGS);
  if (values === null) return 2;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const all = ["rr", "pipeline", "churn", "idle", "deadlines", "ntp", "nts"];
  const scenarios = values.scenario === "all" ? all : values.scenario.split(",");
  for (const scenario of scenarios) {
    if (!all.includes(scenario)) {
      console.error(
        `bench: --scenario must be a list of ${all.join(", ")}, or all; got "${scenario}"`,
      );
      return 2;
    }
  }
  const servers = serversToRun(values);
  let baseline: string | undefined;
  if (values["baseline-cmd"]) {
    baseline = `baseline: ${values["baseline-cmd"].split(/\s+/)[0].split("/").pop()}`;
    servers.unshift({ label: baseline, command: values["baseline-cmd"].split(/\s+/) });
  }
  const options = {
    duration: values.duration,
    connections: values.connections,
    pipeline: values.pipeline,
    idleConnections: values["idle-connections"],
    loadgen: values.loadgen,
  };
  const pin = hasTaskset();
  const runs = Number(values.runs);
  const info = machine();
  printSetup(info, pin, values.loadgen, runs);

  const idleSizes = values["idle-connections"].split(",");
  const tcpScenarios = scenarios.filter((scenario) => scenario !== "ntp" && scenario !== "nts")
    .flatMap((scenario) =>
      scenario === "idle" && idleSizes.length > 1 ? idleSizes.map((n) => `idle:${n}`) : [scenario]
    );
  sayWhatIsSkipped(
    values,
    tcpScenarios.length > 0,
    scenarios.includes("ntp"),
    scenarios.includes("nts"),
  );
  const rows = await runAll(
    tcpScenarios,
    servers,
    runs,
    (scenario, server) => runScenario(scenario, server, options, pin),
  );
  if (rows.length > 0) console.log(table(rows, baseline));
  if (idleSizes.length > 1) console.log(`\n${marginalMemory(rows, idleSizes)}`);
  const { ntpRows, ntsRows } = await runTimeScenarios(values, scenarios, runs, pin);

  const out = values.out ?? `${root}bench/runs/${new Date().toISOString().slice(0, 10)}.json`;
  await Deno.mkdir(out.slice(0, out.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(
    out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: info,
        pinned: pin,
        options,
        rows,
        ntpRows,
        ntsRows,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`\nwritten: ${out}`);
  const failed = [...rows, ...ntpRows, ...ntsRows].some((row) => row.failed);
  return failed ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
