// The benchmark: starts servers as subprocesses, drives them with a load generator, prints one table.

import { ntpBench, type NtpRow, ntpTable } from "./udp/ntp.ts";
import { ntsBench, type NtsRow, ntsTable } from "./udp/nts.ts";
import { accuracyBench, type AccuracyRow, accuracyTable } from "./udp/accuracy.ts";
import {
  roughtimeBench,
  roughtimeHeading,
  type RoughtimeRow,
  roughtimeTable,
} from "./udp/roughtime.ts";
import { type ParsedValues, parseToolFlags } from "./common/flags.ts";
import { machine } from "./common/stats.ts";
import { hasTaskset } from "./tcp/commands.ts";
import { runAll, runScenario, serversToRun } from "./tcp/run.ts";
import { marginalMemory, table } from "./tcp/report.ts";

const HELP = `Usage: deno task bench [options]

Starts each server as a subprocess on a free port, drives it with the load generator
(bench/tcp/loadgen.ts, or the C one with --loadgen), prints one table and writes it as JSON.

Options:
  --scenario LIST        rr, pipeline, churn, idle, deadlines, ntp, nts, accuracy, roughtime, or all
                         (default all); comma-separated. deadlines: how late --idle-timeout 1
                         closes silent connections under the rr load (p50, p99, max in µs; this
                         server only). accuracy: a bystander chronyd -x (16 polls a second)
                         measures this server and chronyd, basic and xleave, idle and
                         saturated, SNTP and NTS
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
  --loadgen PATH         use a compiled shared/bench/loadgen.c instead of bench/tcp/loadgen.ts
  --ntp-loadgen PATH     ntp: use a compiled shared/bench/ntp_loadgen.c instead of bench/udp/ntp_loadgen.ts
  --ntp-echo PATH        ntp: measure a compiled shared/bench/ntp_echo_server.c too
  --offset-runs N        ntp, nts: chronyd -Q runs per server for the offset, ~4 s each (default: --runs)
  --nts-loadgen PATH     nts: a compiled shared/bench/nts_loadgen.c, for NTS and NTS-KE rates
                         (without it, nts measures only chronyd -Q's offset over NTS, and
                         accuracy NTS idle only)
  --accuracy-seconds N   accuracy: seconds the bystander measures each case (default 20)
  --tree-before DIR      ntp, nts: measure another checkout of this project too (the tree
                         before a change), run from its own folder
  --out FILE             where the JSON goes (default bench/runs/<date>.json, which git ignores)
  -h, --help             print this help`;

const root = new URL("..", import.meta.url).pathname;

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
      loadgen ?? "bench/tcp/loadgen.ts"
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
  "accuracy-seconds": { type: "string", default: "20" },
  "tree-before": { type: "string" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

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
      `bench: driving with bench/tcp/loadgen.ts; the C load generator (${from("loadgen.c")}) ` +
        `is used once built and given as --loadgen PATH`,
    );
  }
  if (ntp && !values["ntp-loadgen"]) {
    console.error(
      `bench ntp: driving with bench/udp/ntp_loadgen.ts; the C one (${from("ntp_loadgen.c")}) ` +
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

/** The UDP scenarios, `ntp`, `nts` and `accuracy`, each run and printed when asked for. */
async function runTimeScenarios(
  values: ParsedValues<typeof FLAGS>,
  scenarios: string[],
  runs: number,
  pin: boolean,
): Promise<{
  ntpRows: NtpRow[];
  ntsRows: NtsRow[];
  accuracyRows: AccuracyRow[];
  roughtimeRows: RoughtimeRow[];
}> {
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
      treeBefore: values["tree-before"],
    });
    console.log(
      `\nntp: ${values["ntp-loadgen"] ?? "bench/udp/ntp_loadgen.ts"}, 8 sockets × 16 outstanding`,
    );
    console.log(ntpTable(ntpRows));
  }
  let ntsRows: NtsRow[] = [];
  if (scenarios.includes("nts")) {
    ntsRows = await ntsBench({
      runs,
      duration,
      loadgen: values["nts-loadgen"],
      offsetRuns,
      pin,
      treeBefore: values["tree-before"],
    });
    console.log(
      values["nts-loadgen"]
        ? `\nnts: ${values["nts-loadgen"]}, 4 sockets × 8 outstanding`
        : "\nnts: no load generator (--nts-loadgen), so chronyd -Q's offsets only",
    );
    console.log(ntsTable(ntsRows));
  }
  let accuracyRows: AccuracyRow[] = [];
  if (scenarios.includes("accuracy")) {
    const seconds = Number(values["accuracy-seconds"]);
    accuracyRows = await accuracyBench({
      runs,
      seconds,
      ntpLoadgen: values["ntp-loadgen"],
      ntsLoadgen: values["nts-loadgen"],
      pin,
    });
    console.log(
      `\naccuracy: a bystander chronyd -x, 16 polls a second, ${seconds} s per case and run; ` +
        `saturated: ${values["ntp-loadgen"] ?? "bench/udp/ntp_loadgen.ts"} (8 × 16)` +
        (values["nts-loadgen"] ? `, ${values["nts-loadgen"]} (4 × 8)` : ""),
    );
    console.log(accuracyTable(accuracyRows));
  }
  let roughtimeRows: RoughtimeRow[] = [];
  if (scenarios.includes("roughtime")) {
    roughtimeRows = await roughtimeBench({
      runs,
      duration,
      pin,
      ntpLoadgen: values["ntp-loadgen"],
    });
    console.log(`\n${roughtimeHeading(values["ntp-loadgen"])}`);
    console.log(roughtimeTable(roughtimeRows));
  }
  return { ntpRows, ntsRows, accuracyRows, roughtimeRows };
}

/** Every scenario, in the order `all` runs them. */
const SCENARIOS: readonly string[] = [
  "rr",
  "pipeline",
  "churn",
  "idle",
  "deadlines",
  "ntp",
  "nts",
  "accuracy",
  "roughtime",
];

async function main(args: string[]): Promise<number> {
  const values = parseToolFlags("bench", args, FLAGS);
  if (values === null) return 2;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const scenarios = values.scenario === "all" ? [...SCENARIOS] : values.scenario.split(",");
  for (const scenario of scenarios) {
    if (!SCENARIOS.includes(scenario)) {
      console.error(
        `bench: --scenario must be a list of ${SCENARIOS.join(", ")}, or all; got "${scenario}"`,
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
  const udp = ["ntp", "nts", "accuracy", "roughtime"];
  const tcpScenarios = scenarios.filter((scenario) => !udp.includes(scenario))
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
  const time = await runTimeScenarios(values, scenarios, runs, pin);

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
        ...time,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`\nwritten: ${out}`);
  const failed = [rows, ...Object.values(time)].flat().some((row) => row.failed);
  return failed ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
