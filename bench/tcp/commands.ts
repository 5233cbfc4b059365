// The TCP scenarios' load generators: the C one from ../shared/bench/ or bench/tcp/loadgen.ts,
// each pinned to its own CPU where it can be.

import type { LoadResult } from "./loadgen.ts";

const loadgenModule = new URL("./loadgen.ts", import.meta.url).pathname;

export function hasTaskset(): boolean {
  if (Deno.build.os !== "linux" || navigator.hardwareConcurrency < 2) return false;
  try {
    return new Deno.Command("taskset", { args: ["-c", "0", "true"] }).outputSync().success;
  } catch {
    return false;
  }
}

export function parseCLoadgen(line: string): LoadResult {
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

/**
 * The load generator's command line for one scenario against `port`: the C one from
 * `options.loadgen`, or bench/tcp/loadgen.ts. Both read the server's RSS through its pid.
 */
export function loadgenCommand(
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

/** bench/tcp/loadgen.ts's command line, spread over `addresses` loopback addresses for `idle`. */
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
