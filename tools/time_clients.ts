// Running time clients nobody here wrote (rdate, chronyd, sntp, ntpdate, ntpdig, busybox) so
// that none of them can set the machine's clock: for the tests and the benchmark alike.

/**
 * As root these tools set the machine's clock unless told not to. Every run goes through
 * {@linkcode runTool}, which calls this first: it throws for a command line without the
 * flag that prevents it (`rdate -p`, `chronyd -Q` or `-x`, `ntpdate -q`), or with one
 * that steps.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { assertCannotSetClock } from "./time_clients.ts";
 *
 * assertCannotSetClock("chronyd", ["-Q", "server 127.0.0.1 iburst"]);
 * assert.throws(() => assertCannotSetClock("chronyd", ["server 127.0.0.1 iburst"]));
 * ```
 */
export function assertCannotSetClock(command: string, args: readonly string[]): void {
  const has = (flag: string) => args.includes(flag);
  const safe = command === "rdate"
    ? has("-p") && !has("-s") && !has("-a")
    : command === "busybox"
    ? args[0] !== "rdate" || (has("-p") && !has("-s"))
    : command === "chronyd"
    ? has("-Q") || (has("-x") && !has("-q"))
    : command === "ntpdate"
    ? has("-q")
    : command === "sntp" || command === "ntpdig"
    ? !args.some((arg) => /^-(s|S|-step|-slew|-settod|-adjtime)/.test(arg))
    : true;
  if (!safe) {
    throw new Error(`refusing to run ${command} ${args.join(" ")}: it could set the clock`);
  }
}

/** Whether a program is installed (on PATH). */
export function hasTool(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** What a tool printed, and how it exited. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a time client that cannot set the clock (see {@linkcode assertCannotSetClock}),
 * killed after `timeoutMs`.
 */
export async function runTool(
  command: string,
  args: string[],
  timeoutMs = 20_000,
  stdin?: Uint8Array,
): Promise<ToolResult> {
  assertCannotSetClock(command, args);
  const child = new Deno.Command(command, {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    // rdate and busybox print local time: make it UTC, whatever the machine's zone.
    env: { TZ: "UTC" },
    signal: AbortSignal.timeout(timeoutMs),
  }).spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Runs `chronyd -Q` (measure only, never set) against one server and returns the offset
 * it reports, in seconds ("System clock wrong by X seconds (ignored)"); throws with its
 * output when it reports none.
 */
export async function chronydOffset(port: number, host = "127.0.0.1"): Promise<number> {
  // chronyd writes and removes its own pid file; a unique name lets runs overlap.
  const pidfile = `/tmp/time-server-chronyd-${crypto.randomUUID()}.pid`;
  {
    const result = await runTool("chronyd", [
      "-Q",
      "-t",
      "10",
      "-u",
      "root",
      `server ${host} port ${port} iburst`,
      `pidfile ${pidfile}`,
      "cmdport 0",
      "bindcmdaddress /",
    ], 20_000);
    const output = result.stdout + result.stderr;
    const match = output.match(/System clock wrong by (-?\d+\.\d+) seconds/);
    if (!match) throw new Error(`chronyd -Q reported no offset:\n${output}`);
    return Number(match[1]);
  }
}

/** What `chronyd -Q` over NTS said: the offset it measured, or null, and its output. */
export interface ChronydNtsResult {
  readonly offset: number | null;
  readonly output: string;
}

/**
 * Runs `chronyd -Q` (measure only, never set) against an NTS server: `server HOST port
 * NTP nts ntsport KE`, trusting `trusted` (nocerttimecheck: the test certificate is
 * fresh, the clock is not to be trusted either way). With `dumpDir`, chronyd keeps the
 * cookies it holds across runs there, as a restarted client would.
 */
export async function chronydNts(
  kePort: number,
  ntpPort: number,
  trusted: string,
  { host = "127.0.0.1", dumpDir = null as string | null, seconds = 10 } = {},
): Promise<ChronydNtsResult> {
  const pidfile = `/tmp/time-server-chronyd-${crypto.randomUUID()}.pid`;
  const result = await runTool("chronyd", [
    "-Q",
    "-t",
    String(seconds),
    "-u",
    "root",
    `server ${host} port ${ntpPort} nts ntsport ${kePort} iburst`,
    `ntstrustedcerts ${trusted}`,
    "nocerttimecheck 1",
    ...(dumpDir === null ? [] : [`ntsdumpdir ${dumpDir}`]),
    `pidfile ${pidfile}`,
    "cmdport 0",
    "bindcmdaddress /",
  ], (seconds + 10) * 1000);
  const output = result.stdout + result.stderr;
  const match = output.match(/System clock wrong by (-?\d+\.\d+) seconds/);
  return { offset: match ? Number(match[1]) : null, output };
}

/** One measurement a chronyd client logged (`log measurements`). */
export interface ChronydMeasurement {
  /** The offset it measured, seconds: its own clock's error as it sees it. */
  offset: number;
  /** The round-trip delay it measured, seconds. */
  delay: number;
  /** Whether the server answered in interleaved mode (`I`), else basic (`B`). */
  interleaved: boolean;
}

/** Options of {@linkcode chronydMeasure}. */
export interface ChronydMeasureOptions {
  /** The server's NTP port. */
  port: number;
  /** @default {"127.0.0.1"} */
  host?: string;
  /** Ask for interleaved mode (`xleave`). @default {false} */
  xleave?: boolean;
  /** NTS: the key establishment port and the certificate to trust. */
  nts?: { kePort: number; trusted: string };
  /** How long to measure, seconds. */
  seconds: number;
  /** log₂ of the polling interval, seconds. @default {-4} */
  poll?: number;
  /** Run chronyd pinned to this CPU (`taskset`), as the benchmark does. */
  cpu?: number;
}

/**
 * Runs a chronyd client that never touches the clock (`-x`) against one server for a
 * while, logging every measurement (`log measurements`), as chrony's own users measure a
 * server; returns the measurements and what chronyd printed. chronyd polls at most 16
 * times a second.
 */
export async function chronydMeasure(
  options: ChronydMeasureOptions,
): Promise<{ measurements: ChronydMeasurement[]; output: string }> {
  const { port, host = "127.0.0.1", xleave = false, nts, seconds, poll = -4 } = options;
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-chronyd-" });
  try {
    const server = [`server ${host} port ${port} minpoll ${poll} maxpoll ${poll}`];
    if (xleave) server.push("xleave");
    if (nts) server.push(`nts ntsport ${nts.kePort}`);
    const args = [
      "-x",
      "-d",
      "-u",
      "root",
      server.join(" "),
      ...(nts ? [`ntstrustedcerts ${nts.trusted}`, "nocerttimecheck 1", `ntsdumpdir ${dir}`] : []),
      `logdir ${dir}`,
      "log measurements",
      `pidfile ${dir}/chronyd.pid`,
      `driftfile ${dir}/drift`,
      "port 0",
      "cmdport 0",
      "bindcmdaddress /",
    ];
    assertCannotSetClock("chronyd", args);
    const pinned = options.cpu === undefined ? null : ["-c", String(options.cpu), "chronyd"];
    const child = new Deno.Command(pinned ? "taskset" : "chronyd", {
      args: pinned ? [...pinned, ...args] : args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGTERM"), seconds * 1000);
    const result = await child.output();
    clearTimeout(timer);
    const decoder = new TextDecoder();
    const output = decoder.decode(result.stdout) + decoder.decode(result.stderr);
    let log = "";
    try {
      log = await Deno.readTextFile(`${dir}/measurements.log`);
    } catch {
      // No measurement was made: the caller sees none.
    }
    return { measurements: parseMeasurements(log), output };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Reads chronyd's `measurements.log`: one line per measurement after its header, the
 * offset and peer delay in columns 12 and 13, and the mode in the last group (`4I`:
 * version 4, interleaved).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMeasurements } from "./time_clients.ts";
 *
 * const line = "2026-12-02 21:56:04 127.0.0.1       N 10 111 111 1111  -4 -4 1.00  " +
 *   "4.100e-08  3.055e-06  5.159e-07  0.000e+00  7.629e-05 4C4F434C 4I K K";
 * assert.deepEqual(parseMeasurements(line), [{ offset: 4.1e-8, delay: 3.055e-6, interleaved: true }]);
 * ```
 */
export function parseMeasurements(log: string): ChronydMeasurement[] {
  const measurements: ChronydMeasurement[] = [];
  for (const line of log.split("\n")) {
    if (!/^\d{4}-\d\d-\d\d /.test(line)) continue;
    const fields = line.trim().split(/\s+/);
    const mode = fields.find((field) => /^\d[BIP]$/.test(field));
    if (fields.length < 18 || mode === undefined) continue;
    measurements.push({
      offset: Number(fields[11]),
      delay: Number(fields[12]),
      interleaved: mode.endsWith("I"),
    });
  }
  return measurements;
}
