// Client mode: ask a time server for the time, for health checks, scripts and operators.

import { parseArgs } from "node:util";
import { UsageError } from "./usage.ts";

/** Options of {@linkcode askTime}. */
export interface ClientOptions {
  /**
   * The server's host name or address.
   * @default {"localhost"}
   */
  hostname?: string;
  /**
   * The server's port.
   * @default {45000}
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
}

const TIME_REQUEST = new TextEncoder().encode("TIME\r\n");
const QUIT_REQUEST = new TextEncoder().encode("QUIT\r\n");

/** The shape of a valid answer to TIME, without its CR LF. */
export const ANSWER_PATTERN = /^JAM ([01]\d|2[0-3]):[0-5]\d:[0-5]\d$/;

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
  const port = options.port ?? 45000;
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
    const lines = lineReader(conn);
    const answers: string[] = [];
    for (let i = 0; i < count; i++) {
      if (i > 0) await sleep(interval * 1000, signal);
      await conn.write(TIME_REQUEST);
      const answer = await lines.next();
      if (answer === null) {
        throw new ClientError(`${where} closed the connection without answering`);
      }
      if (!ANSWER_PATTERN.test(answer)) {
        throw new ClientError(
          `${where} answered ${JSON.stringify(answer)} instead of JAM hh:mm:ss`,
        );
      }
      answers.push(answer);
      options.onAnswer?.(answer);
    }
    await conn.write(QUIT_REQUEST);
    const extra = await lines.next();
    if (extra !== null) throw new ClientError(`${where} answered ${JSON.stringify(extra)} to QUIT`);
    return answers;
  } catch (error) {
    if (signal.aborted) throw new ClientError(`${where} did not finish within ${timeout} s`);
    if (error instanceof ClientError) throw error;
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

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", stop);
      resolve();
    }, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", stop, { once: true });
  });
}

/** Reads CR LF or LF terminated lines from a connection; `null` at its end. */
function lineReader(conn: Deno.Conn): { next(): Promise<string | null> } {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(1024);
  let pending = "";
  return {
    async next() {
      for (;;) {
        const lf = pending.indexOf("\n");
        if (lf !== -1) {
          const line = pending.slice(0, lf).replace(/\r$/, "");
          pending = pending.slice(lf + 1);
          return line;
        }
        if (pending.length > 1024) throw new ClientError("answer line too long");
        const n = await conn.read(buffer);
        if (n === null) return pending === "" ? null : pending;
        pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      }
    },
  };
}

/** The text `time-server client --help` prints. */
export const CLIENT_HELP = `Usage: time-server client [options]

Asks a time server for the time: sends TIME, prints each answer, sends QUIT.
Exits 0 when every answer is a valid "JAM hh:mm:ss", 1 otherwise, 2 for a bad command line.

Options:
  --host HOST          server to ask (default localhost)
  -p, --port PORT      its port (default 45000, or $PORT)
  -n, --count N        how many times to ask (default 1)
  --interval SECONDS   pause between two requests (default 1)
  --timeout SECONDS    limit for the whole exchange (default 5)
  -h, --help           print this help`;

/**
 * Parses the flags of `time-server client`. Throws {@linkcode UsageError} for a
 * mistake; returns `null` for `--help`.
 */
export function parseClientCommandLine(
  args: string[],
  env: { PORT?: string } = {},
): ClientOptions | null {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        host: { type: "string" },
        port: { type: "string", short: "p" },
        count: { type: "string", short: "n" },
        interval: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw UsageError.fromParseArgs(error);
  }
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
  return options;
}
