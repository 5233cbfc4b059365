// Helpers shared by the tests: a line client, subprocess servers, clients from other loopback addresses.

import net from "node:net";
import { LineReader, writeAll } from "../lib/net.ts";
import { TIME_ANSWER } from "../protocol.ts";
import type { TcpEngine } from "../server/tcp/host.ts";
import { LIBC_FFI_FLAG } from "../lib/libc.ts";

export { freePort } from "../lib/net.ts";

const encoder = new TextEncoder();

/** A test client that sends text and reads the server's answers line by line. */
export class LineClient implements Disposable {
  readonly conn: Deno.TcpConn;
  readonly #lines: LineReader;
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#lines = new LineReader(conn);
  }

  /** Connects to a server on loopback (or `hostname`). */
  static async connect(port: number, hostname = "127.0.0.1"): Promise<LineClient> {
    return new LineClient(await Deno.connect({ hostname, port }));
  }

  /** Sends text or bytes, all of it. */
  send(data: string | Uint8Array): Promise<void> {
    return writeAll(this.conn, typeof data === "string" ? encoder.encode(data) : data);
  }

  /** Sends `TIME` and returns the line that answers it ("" if the server closed instead). */
  async time(): Promise<string> {
    await this.send("TIME\r\n");
    return (await this.readLine()) ?? "";
  }

  /**
   * Reads one line with its CR LF, or `null` at the end of the stream. A reset is an
   * error here: the server must close gracefully.
   */
  readLine(): Promise<string | null> {
    return this.#lines.next();
  }

  /** Reads everything until the server closes the connection. */
  readAll(): Promise<string> {
    return this.#lines.rest();
  }

  /** Resolves once the server has closed the connection (any bytes before that are dropped). */
  async closed(): Promise<void> {
    await this.readAll();
  }

  /** Closes the connection; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The shape of every answer to TIME, with its CR LF. */
export const JAM_LINE: RegExp = TIME_ANSWER;

/**
 * Rejects if `promise` takes longer than `ms`: a bound on a test that would
 * otherwise hang, never a way to wait for something to happen.
 */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `condition` holds, looking every 10 ms; throws naming `what` after `ms`.
 * For a state the test cannot be told of (a server's counter), not for the passing of time.
 */
export async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Writes `TIME` requests in 64 KiB chunks, without reading, until a write makes no
 * progress for `stallMs` or `limit` bytes are sent. Absence of progress can only be
 * told by waiting, so this is a bounded wait for a stall, not a synchronisation.
 * Returns the bytes sent and the write still pending (settle it after closing).
 */
export async function sendUntilStalled(
  conn: Deno.Conn,
  limit: number,
  stallMs = 1000,
): Promise<{ sent: number; pending: Promise<unknown> }> {
  const chunk = encoder.encode("TIME\r\n".repeat(10922));
  let sent = 0;
  while (sent < limit) {
    const write = conn.write(chunk);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const written = await Promise.race([
      write,
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), stallMs)),
    ]);
    clearTimeout(timer);
    if (written === null) return { sent, pending: write.catch(() => {}) };
    sent += written;
  }
  return { sent, pending: Promise.resolve() };
}

/** A process started by {@linkcode startProcess}, whose output can be waited on. */
export interface LoggedProcess extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Resolves with everything the process wrote (stderr, and stdout if piped) once it has exited. */
  readonly output: Promise<string>;
  /** Resolves once the output has a match for `pattern`; rejects if the process ends first. */
  logged(pattern: RegExp): Promise<void>;
  /** The output so far. */
  text(): string;
}

/**
 * Starts a process with its stderr (and, with `stdout: true`, its stdout) collected,
 * so a test can wait for a line it logs instead of sleeping. Disposing kills it.
 */
export function startProcess(
  command: string[],
  { env, stdout = false }: { env?: Record<string, string>; stdout?: boolean } = {},
): LoggedProcess {
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    env,
    stdin: "null",
    stdout: stdout ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  let open = stdout ? 2 : 1;
  const waiters = new Set<() => void>();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (const waiter of waiters) waiter();
    }
    open--;
    for (const waiter of waiters) waiter();
  };
  const output = Promise.all([
    collect(child.stderr),
    stdout ? collect(child.stdout) : Promise.resolve(),
  ]).then(() => text);
  const logged = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(text)) resolve();
        else if (open === 0) reject(new Error(`${command[0]} never wrote ${pattern}:\n${text}`));
        else return;
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return {
    child,
    output,
    logged,
    text: () => text,
    async [Symbol.asyncDispose]() {
      try {
        // A command run under setsid leads a process group of its own: end all of it, so
        // that nothing it started (a --watch watcher) outlives the test holding its output.
        if (command[0] === "setsid") Deno.kill(-child.pid, "SIGKILL");
        else child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await output;
    },
  };
}

/** A `time-server` process started by {@linkcode startServerProcess}. */
export interface ServerProcess extends LoggedProcess {
  /** The port from the server's "listening" log line. */
  readonly port: number;
  /** Resolves with the process's whole stderr once it has exited. */
  readonly stderr: Promise<string>;
}

/**
 * Runs `deno run main.ts` (or another `command`, such as a compiled binary) with the
 * given flags, plus `--port 0` unless a port is given, and resolves once the server
 * has logged that it listens.
 */
export async function startServerProcess(
  args: string[],
  command: string[] = serverCommand,
  env?: Record<string, string>,
): Promise<ServerProcess> {
  const hasPort = args.some((arg) => arg === "-p" || arg.startsWith("--port"));
  const process = startProcess([...command, ...(hasPort ? [] : ["--port", "0"]), ...args], { env });
  try {
    await process.logged(/listening .*port=\d+|"msg":"listening"/);
  } catch (error) {
    await process[Symbol.asyncDispose]();
    throw error;
  }
  const port = Number(
    process.text().match(/listening .*port=(\d+)|"msg":"listening".*?"port":(\d+)/)!
      .slice(1).find((group) => group !== undefined),
  );
  return { ...process, port, stderr: process.output };
}

/** The path of `main.ts`, for running it in a subprocess. */
export const mainModule: string = new URL("../main.ts", import.meta.url).pathname;

/** `deno run main.ts` with the least the `deno` engine needs: the network and `PORT`. */
export const serverCommand: string[] = [
  Deno.execPath(),
  "run",
  "--allow-net",
  "--allow-env=PORT",
  mainModule,
];

/**
 * A server's flags and command line (a `deno run …` command), in the order
 * {@linkcode startServerProcess} takes them, for `tcpEngine`: the epoll engine adds
 * `--tcp-engine` and FFI for libc, as `deno task start` grants it.
 */
export function onEngine(
  tcpEngine: TcpEngine,
  args: string[],
  command: string[] = serverCommand,
): [args: string[], command: string[]] {
  if (tcpEngine === "deno") return [args, command];
  const run = command.indexOf("run") + 1;
  return [
    [...args, "--tcp-engine", tcpEngine],
    [...command.slice(0, run), LIBC_FFI_FLAG, ...command.slice(run)],
  ];
}

/** `deno run main.ts` as `deno task start` runs it, for `--workers`: Workers read the modules. */
export const workersCommand: string[] = [
  Deno.execPath(),
  "run",
  "--allow-net",
  "--allow-env=PORT",
  `--allow-read=${new URL("..", import.meta.url).pathname}`,
  mainModule,
];

/**
 * Connects from a chosen local address (e.g. 127.0.0.2, which Linux routes on
 * loopback) with `node:net`, since `Deno.connect` cannot pick one, sends `text`,
 * and resolves with everything the server sent until it closed.
 */
export function exchangeFrom(
  localAddress: string,
  port: number,
  text: string,
  { hostname = "127.0.0.1", endAfterLines = Infinity } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = "";
    const socket = net.connect({ host: hostname, port, localAddress }, () => socket.write(text));
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      received += chunk;
      if (received.split("\n").length - 1 >= endAfterLines) socket.end();
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(received));
  });
}

/** A socket from a chosen local address that stays open until `close()`, for holding a slot. */
export async function holdFrom(
  localAddress: string,
  port: number,
): Promise<{ localPort: number; close(): Promise<void> }> {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  // The first answer proves the server has taken the connection in.
  socket.write("TIME\r\n");
  await new Promise<void>((resolve) => socket.once("data", () => resolve()));
  return {
    localPort: socket.localPort!,
    close: () =>
      new Promise<void>((resolve) => {
        socket.once("close", () => resolve());
        socket.destroy();
      }),
  };
}

/**
 * Runs `deno run main.ts ARGS` (or `command` ARGS) to completion; resolves with its exit
 * code and output. `env` is added to the environment.
 */
export async function runMain(
  args: string[],
  { command = [Deno.execPath(), "run", "--allow-net", "--allow-env=PORT", mainModule], env }: {
    command?: string[];
    env?: Record<string, string>;
  } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command[0], {
    args: [...command.slice(1), ...args],
    env,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Opens a connection from a chosen local address that sends nothing. `received`
 * resolves with everything the server sent once the server closes it (or `close()`
 * is called).
 */
export async function silentFrom(
  localAddress: string,
  port: number,
): Promise<{ received: Promise<string>; close(): Promise<void> }> {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let text = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => text += chunk);
  socket.on("error", () => {});
  const received = new Promise<string>((resolve) => {
    socket.once("end", () => resolve(text));
    socket.once("close", () => resolve(text));
  });
  return {
    received,
    close: () =>
      new Promise<void>((resolve) => {
        if (socket.destroyed) return resolve();
        socket.once("close", () => resolve());
        socket.destroy();
      }),
  };
}

/**
 * Opens `count` connections at once, each of which sends TIME and then resets (RST)
 * instead of closing; resolves when all are gone. Against a server that is not
 * accepting, every one dies in the listen queue.
 */
export function resetStorm(port: number, count: number, hostname = "127.0.0.1"): Promise<void> {
  return Promise.all(Array.from({ length: count }, () =>
    new Promise<void>((resolve) => {
      const socket = net.connect({ host: hostname, port }, () => {
        socket.write("TIME\r\n");
        socket.resetAndDestroy();
      });
      socket.on("error", () => {});
      socket.once("close", () => resolve());
    }))).then(() => {});
}

/** The TCP engines every server test runs on. */
export const TCP_ENGINES: readonly TcpEngine[] = ["deno", "epoll"];

/**
 * Registers a test once for each of {@linkcode TCP_ENGINES}, named after the engine,
 * so that every behaviour of the server is checked on both.
 */
export function engineTest(
  definition: string | Omit<Deno.TestDefinition, "fn">,
  fn: (tcpEngine: TcpEngine) => void | Promise<void>,
): void {
  const base = typeof definition === "string" ? { name: definition } : definition;
  for (const tcpEngine of TCP_ENGINES) {
    Deno.test({ ...base, name: `${base.name} (${tcpEngine} engine)`, fn: () => fn(tcpEngine) });
  }
}

/** A sample's value on the metrics page at `port` (e.g. `timeserver_connections_open`); throws when missing. */
export async function scrapeSample(port: number, sample: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((line) => line.startsWith(sample + " "));
  if (line === undefined) throw new Error(`${sample} is not in the metrics`);
  return Number(line.split(" ")[1]);
}
