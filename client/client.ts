// Client mode: ask a time server for the time, for health checks, scripts and operators.

import { type RoughtimeQuery, roughtimeQuery } from "./roughtime_client.ts";
import { parseArgs } from "node:util";
import { delay, LineReader } from "../lib/net.ts";
import { DEFAULT_PORT, TIME_ANSWER } from "../protocol.ts";
import { attachNegativeValues, UsageError } from "../lib/usage.ts";

/** Options of {@linkcode askTime}. */
export interface ClientOptions {
  /**
   * The server's host name or address.
   * @default {"localhost"}
   */
  hostname?: string;
  /**
   * The server's port.
   * @default {DEFAULT_PORT}
   */
  port?: number;
  /**
   * How many times to ask.
   * @default {1}
   */
  count?: number;
  /**
   * Seconds between two requests.
   * @default {1}
   */
  interval?: number;
  /**
   * Seconds the whole exchange may take, connecting included.
   * @default {5}
   */
  timeout?: number;
  /** Called with each answer (without CR LF) as it arrives. */
  onAnswer?: (answer: string) => void;
  /** Ask a Roughtime server instead (`--roughtime HOST:PORT --key BASE64`). */
  roughtime?: RoughtimeQuery;
}

const TIME_REQUEST = new TextEncoder().encode("TIME\r\n");
const QUIT_REQUEST = new TextEncoder().encode("QUIT\r\n");

/** Thrown by {@linkcode askTime} when the server cannot be reached or answers wrongly. */
export class ClientError extends Error {
  override name = "ClientError";
}

/**
 * Connects to a time server, sends `TIME` `count` times, `interval` seconds apart,
 * then `QUIT`, and waits for the server to close. Resolves with the answers.
 * Throws {@linkcode ClientError} with a one-line message when the server cannot
 * be reached, closes early, answers something other than `JAM hh:mm:ss`, or the
 * exchange takes longer than `timeout` seconds.
 *
 * @example
 * ```ts ignore
 * import { askTime } from "./client.ts";
 *
 * const [answer] = await askTime({ hostname: "127.0.0.1", port: 45000 });
 * console.log(answer); // "JAM 09:05:03"
 * ```
 */
export async function askTime(options: ClientOptions = {}): Promise<string[]> {
  const hostname = options.hostname ?? "localhost";
  const port = options.port ?? DEFAULT_PORT;
  const count = options.count ?? 1;
  const interval = options.interval ?? 1;
  const timeout = options.timeout ?? 5;
  const where = `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  const signal = AbortSignal.timeout(timeout * 1000);
  let conn: Deno.TcpConn | undefined;
  const abort = () => conn?.close();
  signal.addEventListener("abort", abort, { once: true });
  try {
    try {
      conn = await Deno.connect({ hostname, port, signal });
    } catch (error) {
      if (signal.aborted) throw new ClientError(`no connection to ${where} within ${timeout} s`);
      throw new ClientError(`cannot connect to ${where}: ${describe(error)}`);
    }
    const lines = new LineReader(conn, 1024);
    const answers: string[] = [];
    for (let i = 0; i < count; i++) {
      if (i > 0) await delay(interval * 1000, signal);
      await conn.write(TIME_REQUEST);
      const line = await lines.next();
      if (line === null) {
        throw new ClientError(`${where} closed the connection without answering`);
      }
      const answer = line.replace(/\r?\n$/, "");
      if (!TIME_ANSWER.test(answer + "\r\n")) {
        throw new ClientError(
          `${where} answered ${JSON.stringify(answer)} instead of JAM hh:mm:ss`,
        );
      }
      answers.push(answer);
      options.onAnswer?.(answer);
    }
    await conn.write(QUIT_REQUEST);
    const extra = await lines.next();
    if (extra !== null) {
      throw new ClientError(`${where} answered ${JSON.stringify(extra.trimEnd())} to QUIT`);
    }
    return answers;
  } catch (error) {
    if (signal.aborted) throw new ClientError(`${where} did not finish within ${timeout} s`);
    if (error instanceof ClientError) throw error;
    if (error instanceof RangeError) throw new ClientError(`${where} sent an answer line too long`);
    throw new ClientError(`connection to ${where} failed: ${describe(error)}`);
  } finally {
    signal.removeEventListener("abort", abort);
    try {
      conn?.close();
    } catch {
      // Already closed by the timeout.
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  return error instanceof Error ? error.message : String(error);
}

/** The text `time-server client --help` prints. */
export const CLIENT_HELP: string = `Usage: time-server client [options]

Asks a time server for the time: sends TIME, prints each answer, sends QUIT.
Exits 0 when every answer is a valid "JAM hh:mm:ss", 1 otherwise, 2 for a bad command line.

Options:
  --host HOST          server to ask (default localhost)
  -p, --port PORT      its port (default ${DEFAULT_PORT}, or $PORT)
  -n, --count N        how many times to ask (default 1)
  --interval SECONDS   pause between two requests (default 1)
  --timeout SECONDS    limit for the whole exchange (default 5)
  --roughtime HOST:PORT  ask a Roughtime server (RFC 10049) over UDP instead, and verify
                       its signed answer; prints the time and the radius
  --key BASE64         the Roughtime server's long-term public key (with --roughtime)
  -h, --help           print this help`;

const CLIENT_FLAGS = {
  host: { type: "string" },
  port: { type: "string", short: "p" },
  count: { type: "string", short: "n" },
  interval: { type: "string" },
  timeout: { type: "string" },
  roughtime: { type: "string" },
  key: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * Parses the flags of `time-server client`. Throws {@linkcode UsageError} for a
 * mistake; returns `null` for `--help`.
 */
export function parseClientCommandLine(
  args: string[],
  env: { PORT?: string } = {},
): ClientOptions | null {
  let values, tokens;
  try {
    ({ values, tokens } = parseArgs({
      args: attachNegativeValues(args, CLIENT_FLAGS),
      strict: true,
      options: CLIENT_FLAGS,
      tokens: true,
    }));
  } catch (error) {
    throw UsageError.fromParseArgs(error);
  }
  UsageError.givenOnce(tokens, CLIENT_FLAGS);
  if (values.help) return null;
  const options: ClientOptions = {};
  if (values.host !== undefined) {
    if (values.host === "") throw new UsageError("--host must not be empty");
    options.hostname = values.host;
  }
  if (values.port !== undefined) options.port = UsageError.integer("--port", values.port, 1, 65535);
  else if (env.PORT) options.port = UsageError.integer("PORT (environment)", env.PORT, 1, 65535);
  if (values.count !== undefined) {
    options.count = UsageError.integer("--count", values.count, 1, 1000000);
  }
  if (values.interval !== undefined) {
    options.interval = UsageError.seconds("--interval", values.interval);
  }
  if (values.timeout !== undefined) {
    options.timeout = UsageError.seconds("--timeout", values.timeout);
    if (options.timeout === 0) throw new UsageError("--timeout must be more than 0 seconds");
  }
  if (values.roughtime !== undefined) {
    options.roughtime = roughtimeQuery(values.roughtime, values.key, options.timeout ?? 5);
  } else if (values.key !== undefined) throw new UsageError("--key needs --roughtime");
  return options;
}
