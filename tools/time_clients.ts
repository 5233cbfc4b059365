// Running time clients nobody here wrote (rdate, chronyd, sntp, ntpdate, ntpdig, busybox) so
// that none of them can set the machine's clock: for the tests and the benchmark alike.

/**
 * As root these tools set the machine's clock unless told not to. Every run goes through
 * {@linkcode runTool}, which calls this first: it throws for a command line without the
 * flag that prevents it (`rdate -p`, `chronyd -Q`, `ntpdate -q`), or with one that steps.
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
    ? has("-Q")
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
