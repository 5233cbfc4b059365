// Running the TCP scenarios: rr, pipeline, churn, idle and deadlines, against each server.

import type { LoadResult } from "./loadgen.ts";
import { freePort } from "../../lib/net.ts";
import { startCommand } from "../../tools/start_task.ts";
import { startServer } from "../common/servers.ts";
import { median } from "../common/stats.ts";
import { DEADLINE_IDLE_TIMEOUT, measureDeadlines } from "./deadlines.ts";
import { loadgenCommand, parseCLoadgen } from "./commands.ts";

export interface Server {
  label: string;
  command: string[];
}

export interface Row {
  server: string;
  scenario: string;
  runs: LoadResult[];
  median: LoadResult;
  failed: boolean;
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

export async function runScenario(
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

/** The servers a run measures: this project's (per log level and variant) or `--server-cmd`s. */
export function serversToRun(
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
export async function runAll(
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
