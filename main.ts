// The program's entry: read the command line, then run the server (or a pool) or the client.

import { UsageError } from "./lib/usage.ts";
import { createLogger } from "./lib/log.ts";
import { DEFAULTS } from "./server/server.ts";
import { askTime, CLIENT_HELP, ClientError, parseClientCommandLine } from "./client/client.ts";
import {
  type ConfigReader,
  gatherFlags,
  type Invocation,
  parseCommandLine,
} from "./cli/command_line.ts";
import { HELP, VERSION } from "./cli/help.ts";
import { PORT_UNREADABLE, readPort } from "./cli/environment.ts";
import { runServer } from "./cli/run_server.ts";
import { CHECK_HELP, describeConfiguration } from "./cli/check.ts";
import { loadTomlParser } from "./config/file.ts";
import { fetchSamples, parseStatusArgs, STATUS_HELP, summarize } from "./cli/status.ts";
import { askRoughtime, describeTime } from "./client/roughtime_client.ts";
import { encodePublicKey, readLongTermKey } from "./roughtime/key_file.ts";
import { effectiveUid, libcMissing } from "./lib/libc.ts";

/** Runs `time-server client`: prints each answer; exit code 0, 1 (failure) or 2 (usage). */
async function runClient(args: string[]): Promise<number> {
  let options;
  const port = readPort();
  try {
    options = parseClientCommandLine(args, port.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server client: ${error.message} (see --help)`);
    return 2;
  }
  if (options === null) {
    console.log(CLIENT_HELP);
    return 0;
  }
  if (!port.readable && options.port === undefined) {
    console.error(`time-server client: ${PORT_UNREADABLE}; asking port ${DEFAULTS.port}`);
  }
  if (options.roughtime !== undefined) {
    try {
      console.log(describeTime(await askRoughtime(options.roughtime)));
      return 0;
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      console.error(`time-server client: Roughtime: ${why}`);
      return 1;
    }
  }
  try {
    await askTime({ ...options, onAnswer: (answer) => console.log(answer) });
    return 0;
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    console.error(`time-server client: ${error.message}`);
    return 1;
  }
}

/** Whether `args` name a config file, so that the TOML parser must be loaded first. */
function asksForConfig(args: string[]): boolean {
  return args.some((arg) => arg === "--config" || arg.startsWith("--config="));
}

/**
 * Runs `time-server check`: prints the effective configuration with each value's
 * source, or says what is wrong with it; exit code 0 or 2.
 */
async function runCheck(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(CHECK_HELP);
    return 0;
  }
  const port = readPort();
  try {
    const reader = { parseToml: asksForConfig(args) ? await loadTomlParser() : undefined };
    const invocation = parseCommandLine(args, port.env, undefined, reader);
    if (invocation.action !== "serve") throw new UsageError("check takes no --help or --version");
    console.log(describeConfiguration(gatherFlags(args, port.env, reader)));
    return 0;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server check: ${error.message}`);
    return 2;
  }
}

/** Runs `time-server status`: a running server's metrics, summed up; exit code 0, 1 or 2. */
async function runStatus(args: string[]): Promise<number> {
  let address;
  try {
    address = parseStatusArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`time-server status: ${error.message} (see status --help)`);
    return 2;
  }
  if (address === null) {
    console.log(STATUS_HELP);
    return 0;
  }
  const samples = await fetchSamples(address);
  if (typeof samples === "string") {
    console.error(`time-server status: ${samples}`);
    return 1;
  }
  console.log(summarize(samples, Date.now()));
  return 0;
}

/**
 * Runs `time-server roughtime-keys FILE`: makes a long-term Roughtime key in FILE if none
 * is there (mode 0600), and prints its public key in base64 for clients and server lists.
 */
function runRoughtimeKeys(args: string[]): number {
  const usage = "Usage: time-server roughtime-keys FILE  (e.g. /var/lib/time-server/roughtime.key)";
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    console.log(usage);
    return 0;
  }
  if (args.length !== 1 || args[0].startsWith("-")) {
    console.error(`time-server roughtime-keys: give one key file. ${usage}`);
    return 2;
  }
  const lacking = libcMissing();
  if (lacking !== null) {
    console.error(`time-server roughtime-keys: checking who owns the key file needs ${lacking}`);
    return 1;
  }
  try {
    const key = readLongTermKey(args[0], effectiveUid());
    console.error(key.created ? `made ${args[0]}` : `read ${args[0]}`);
    console.log(encodePublicKey(key.publicKey));
    return 0;
  } catch (error) {
    console.error(`time-server roughtime-keys: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
}

/** Whether `args` ask for `--log-format json`, read before (or without) the full parse. */
function asksForJson(args: string[]): boolean {
  return args.some((arg, i) =>
    arg === "--log-format=json" || (arg === "--log-format" && args[i + 1] === "json")
  );
}

/**
 * Runs the program with the given arguments and resolves with its exit code once
 * the server has stopped (after SIGINT or SIGTERM).
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "client") return await runClient(args.slice(1));
  if (args[0] === "check") return await runCheck(args.slice(1));
  if (args[0] === "status") return await runStatus(args.slice(1));
  if (args[0] === "roughtime-keys") return runRoughtimeKeys(args.slice(1));
  let invocation: Invocation;
  const port = readPort();
  let reader: ConfigReader = {};
  try {
    if (asksForConfig(args)) reader = { parseToml: await loadTomlParser() };
    invocation = parseCommandLine(args, port.env, undefined, reader);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const why = `${error.message} (see --help)`;
    // The command line did not parse, but a log shipper reading JSON wants this line too.
    if (asksForJson(args)) {
      createLogger({ format: "json" }).error("bad command line", { error: why });
    } else console.error(`time-server: ${why}`);
    return 2;
  }
  if (invocation.action === "help") {
    console.log(HELP);
    return 0;
  }
  if (invocation.action === "version") {
    console.log(`time-server ${VERSION}`);
    return 0;
  }
  const reread = invocation.config === undefined
    ? null
    : () => parseCommandLine(args, port.env, undefined, reader);
  return await runServer(invocation, port.readable, reread);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
