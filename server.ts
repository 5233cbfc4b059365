// The TCP server: accepting, one async loop per connection, limits, shutdown.

import { createLogger, type LogFields, type Logger } from "./log.ts";
import {
  DEFAULT_MAX_LINE,
  ERR_SERVER_BUSY,
  ERR_TOO_MANY_CONNECTIONS,
  newRequestCounts,
  type RequestCounts,
  Session,
  TimeAnswer,
} from "./protocol.ts";
import { parseProxyHeader, type ProxiedAddress, PROXY_HEADER_MAX } from "./proxy.ts";

/** Options of {@linkcode serve}; every field is optional. */
export interface ServerOptions {
  /**
   * The address to listen on. The default `::` is dual stack: it takes IPv4 and
   * IPv6 clients, and falls back to `0.0.0.0` with a warning where IPv6 is missing.
   * @default {"::"}
   */
  hostname?: string;
  /**
   * The TCP port; 0 picks a free one (read it back from {@linkcode TimeServer.addr}).
   * @default {45000}
   */
  port?: number;
  /**
   * The IANA time zone of the answers; the system's local zone when left out.
   * @default {undefined}
   */
  timeZone?: string;
  /**
   * The longest request line, in bytes without the CR LF.
   * @default {1024}
   */
  maxLine?: number;
  /**
   * Seconds a connection may go without a complete request before it is closed; 0 = never.
   * @default {300}
   */
  idleTimeout?: number;
  /**
   * Connections served at once; past it a new one gets `ERR server busy` and is closed.
   * @default {10000}
   */
  maxConnections?: number;
  /**
   * Seconds {@linkcode TimeServer.shutdown} waits for owed answers before closing what is left.
   * @default {5}
   */
  shutdownTimeout?: number;
  /**
   * Seconds between `summary` lines at info level; 0 = none.
   * @default {60}
   */
  statsInterval?: number;
  /**
   * Connections one client address may hold at once; past it a new one gets
   * `ERR too many connections` and is closed. IPv4-mapped IPv6 addresses count as
   * IPv4. 0 = no limit.
   * @default {0}
   */
  maxConnectionsPerIp?: number;
  /**
   * Expect the HAProxy PROXY protocol header (v1 or v2) at the start of every
   * connection, and treat the address it carries as the client's. A connection
   * without a valid header within `proxyHeaderTimeout` is closed.
   * @default {false}
   */
  proxyProtocol?: boolean;
  /**
   * Seconds a connection may take to send its PROXY header.
   * @default {5}
   */
  proxyHeaderTimeout?: number;
  /**
   * Listen with `SO_REUSEPORT`, so that several servers (workers) share one port.
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * A counter shared by several servers (an `Int32Array` over a `SharedArrayBuffer`,
   * element 0) that `maxConnections` applies to instead of this server's own count.
   * @default {undefined}
   */
  sharedConnections?: Int32Array;
  /**
   * Where events are logged.
   * @default {a logger at level "warn" writing text to stderr}
   */
  logger?: Logger;
  /**
   * The clock the answers are read from, in milliseconds since the epoch.
   * @default {Date.now}
   */
  now?: () => number;
}

/** The defaults of {@linkcode ServerOptions}, in one place. */
export const DEFAULTS = {
  hostname: "::",
  port: 45000,
  maxLine: DEFAULT_MAX_LINE,
  idleTimeout: 300,
  maxConnections: 10000,
  shutdownTimeout: 5,
  statsInterval: 60,
  maxConnectionsPerIp: 0,
  proxyHeaderTimeout: 5,
} as const;

/** What a server has done so far; the numbers only grow, except `connectionsOpen`. */
export interface ServerStats extends RequestCounts {
  /** Connections being served now. */
  connectionsOpen: number;
  /** Connections accepted and served since the start (refused ones not included). */
  connectionsTotal: number;
  /** Connections refused with `ERR server busy`. */
  busy: number;
  /** Connections closed by the idle timeout. */
  idleTimeout: number;
  /** Connections that ended in a reset or broken pipe. */
  reset: number;
  /** Connections refused with `ERR too many connections` (per-client limit). */
  perIp: number;
  /** Connections closed for a missing or malformed PROXY header. */
  proxyHeader: number;
  /** Bytes read from clients. */
  bytesReceived: number;
  /** Bytes written to clients. */
  bytesSent: number;
}

/** Returns a {@linkcode ServerStats} with every count at zero. */
export function newServerStats(): ServerStats {
  return {
    ...newRequestCounts(),
    connectionsOpen: 0,
    connectionsTotal: 0,
    busy: 0,
    idleTimeout: 0,
    reset: 0,
    perIp: 0,
    proxyHeader: 0,
    bytesReceived: 0,
    bytesSent: 0,
  };
}

/**
 * The counters as log fields. The request counts are renamed (`requestsTime`, …),
 * since `time` is the timestamp of every log line.
 */
export function statsFields(stats: ServerStats): LogFields {
  const { time, quit, unknown, ...rest } = stats;
  return { requestsTime: time, requestsQuit: quit, requestsUnknown: unknown, ...rest };
}

/** A running server, as returned by {@linkcode serve}. */
export interface TimeServer extends AsyncDisposable {
  /** The address the server listens on, with the port it was given. */
  readonly addr: Deno.NetAddr;
  /** Live counters; read them, do not change them. */
  readonly stats: Readonly<ServerStats>;
  /** Settles when the server has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, lets every connection send the answers it owes, closes it,
   * and resolves when all are closed. Connections still busy after `shutdownTimeout`
   * seconds are closed anyway. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
}

/** Bytes of the read buffer a connection starts with; grown for clients that pipeline. */
const INITIAL_READ_SIZE = 256;
/** The largest read buffer a connection grows to. */
const MAX_READ_SIZE = 16384;

/**
 * How long a connection the server is closing keeps reading (and discarding) what
 * the client still sends, so that the client receives its last answers before the
 * close: closing a socket with unread input makes the kernel send a reset, which
 * can destroy answers the client has not read yet.
 */
const LINGER_MS = 5000;
/** The most bytes discarded while lingering before the connection is closed anyway. */
const LINGER_MAX_BYTES = 16 * 1024 * 1024;

/** One live connection, as the server tracks it. */
interface Client {
  readonly conn: Deno.TcpConn;
  /** True while the loop waits for the client's next request, so owes it nothing. */
  reading: boolean;
  /** True once every answer is sent and the server waits for the client to close. */
  lingering: boolean;
  /** True until the PROXY header has arrived (with `proxyProtocol`). */
  awaitingHeader: boolean;
  /** True while the connection counts against `maxConnections`. */
  counted: boolean;
  /** The client address per-IP limits count it under, once counted. */
  ipKey: string | null;
  /** The real client, from the PROXY header; the socket's peer when absent. */
  proxied: ProxiedAddress | null;
  /** True once the server has closed the connection on purpose. */
  closed: boolean;
  /** When the client last had a request answered (or lingering began), on the sweep clock. */
  lastActive: number;
}

/**
 * Formats a socket address for logs: `127.0.0.1:5000`, `[::1]:5000`; an
 * IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is shown as its IPv4 address.
 */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  const host = clientHost(addr.hostname);
  return host.includes(":") ? `[${host}]:${addr.port}` : `${host}:${addr.port}`;
}

/** The host part of a peer address, with IPv4-mapped IPv6 addresses turned back into IPv4. */
export function clientHost(hostname: string): string {
  return hostname.startsWith("::ffff:") && hostname.includes(".") ? hostname.slice(7) : hostname;
}

/** Tells whether an error is a client going away, which is an ordinary event. */
function isDisconnect(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.UnexpectedEof ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.Interrupted;
}

function isSetupError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse ||
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}

/** Writes what a first write left over; most writes take everything at once. */
async function writeRest(conn: Deno.Conn, bytes: Uint8Array, written: number): Promise<void> {
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

function listen(
  hostname: string,
  port: number,
  reusePort: boolean,
  logger: Logger,
  fallback: boolean,
): Deno.TcpListener {
  try {
    return Deno.listen({ hostname, port, transport: "tcp", reusePort });
  } catch (error) {
    if (!fallback || isSetupError(error)) throw error;
    logger.warn("IPv6 is unavailable; listening on IPv4 only", {
      error: error instanceof Error ? error.message : String(error),
    });
    return Deno.listen({ hostname: "0.0.0.0", port, transport: "tcp", reusePort });
  }
}

/**
 * Starts a time server and returns at once; the server runs until
 * {@linkcode TimeServer.shutdown}. Throws what `Deno.listen` throws when it cannot
 * listen (`Deno.errors.AddrInUse`, `Deno.errors.PermissionDenied`, …).
 *
 * @example A server on a free port, stopped with `await using`
 * ```ts ignore
 * import { serve } from "./server.ts";
 *
 * await using server = serve({ hostname: "127.0.0.1", port: 0 });
 * console.log(`listening on port ${server.addr.port}`);
 * ```
 */
export function serve(options: ServerOptions = {}): TimeServer {
  return new Server(options);
}

class Server implements TimeServer {
  readonly #listener: Deno.TcpListener;
  readonly #logger: Logger;
  readonly #debug: boolean;
  readonly #time: TimeAnswer;
  readonly #maxLine: number;
  readonly #idleTimeoutMs: number;
  readonly #maxConnections: number;
  readonly #shutdownTimeoutMs: number;
  readonly #clients = new Set<Client>();
  /** How many of `#clients` count against `maxConnections` (lingering ones do not). */
  #active = 0;
  readonly #shared: Int32Array | undefined;
  readonly #maxPerIp: number;
  readonly #perIp = new Map<string, number>();
  readonly #proxyProtocol: boolean;
  readonly #proxyHeaderTimeoutMs: number;
  readonly #stats: ServerStats = newServerStats();
  readonly #stopAccepting = new AbortController();
  readonly #accepting: Promise<void>;
  readonly #drained = Promise.withResolvers<void>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  #shutdown: Promise<void> | null = null;
  /**
   * `performance.now()` as of the last sweep: a coarse clock for idle times, so the
   * request path reads a field instead of the clock.
   */
  #clock = performance.now();
  readonly #sweepEveryMs: number;

  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;

  constructor(options: ServerOptions) {
    this.#logger = options.logger ?? createLogger({ level: "warn" });
    this.#debug = this.#logger.enabled("debug");
    this.#time = new TimeAnswer({ timeZone: options.timeZone, now: options.now });
    this.#maxLine = options.maxLine ?? DEFAULTS.maxLine;
    this.#idleTimeoutMs = (options.idleTimeout ?? DEFAULTS.idleTimeout) * 1000;
    this.#maxConnections = options.maxConnections ?? DEFAULTS.maxConnections;
    this.#shutdownTimeoutMs = (options.shutdownTimeout ?? DEFAULTS.shutdownTimeout) * 1000;
    this.#shared = options.sharedConnections;
    this.#maxPerIp = options.maxConnectionsPerIp ?? DEFAULTS.maxConnectionsPerIp;
    this.#proxyProtocol = options.proxyProtocol ?? false;
    this.#proxyHeaderTimeoutMs = (options.proxyHeaderTimeout ?? DEFAULTS.proxyHeaderTimeout) * 1000;
    this.#listener = listen(
      options.hostname ?? DEFAULTS.hostname,
      options.port ?? DEFAULTS.port,
      options.reusePort ?? false,
      this.#logger,
      options.hostname === undefined,
    );
    this.addr = this.#listener.addr;
    this.#accepting = this.#acceptLoop();
    this.finished = Promise.all([this.#accepting, this.#drained.promise]).then(() => {});

    // One sweep over all connections beats a timer per connection reset on every request.
    const shortest = Math.min(
      this.#idleTimeoutMs > 0 ? this.#idleTimeoutMs : Infinity,
      this.#proxyProtocol ? this.#proxyHeaderTimeoutMs : Infinity,
    );
    this.#sweepEveryMs = Math.min(1000, Math.max(5, shortest / 4));
    this.#timers.push(setInterval(() => this.#sweep(), this.#sweepEveryMs));
    const statsInterval = options.statsInterval ?? DEFAULTS.statsInterval;
    if (statsInterval > 0 && this.#logger.enabled("info")) {
      let last = "";
      this.#timers.push(setInterval(() => {
        const summary = JSON.stringify(this.#stats);
        if (summary !== last) this.#logger.info("summary", statsFields(this.#stats));
        last = summary;
      }, statsInterval * 1000));
    }
  }

  get stats(): Readonly<ServerStats> {
    return this.#stats;
  }

  shutdown(): Promise<void> {
    if (this.#shutdown) return this.#shutdown;
    this.#stopAccepting.abort();
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const timer of this.#timers) clearInterval(timer);
    // A client waiting in read is owed nothing; the others close after their last write.
    for (const client of this.#clients) if (client.reading) this.#close(client);
    if (this.#clients.size === 0) this.#drained.resolve();
    const force = setTimeout(() => {
      if (this.#clients.size > 0) {
        this.#logger.warn("shutdown timeout; closing connections still busy", {
          connections: this.#clients.size,
        });
      }
      for (const client of this.#clients) this.#close(client);
    }, this.#shutdownTimeoutMs);
    this.#shutdown = this.finished.finally(() => clearTimeout(force));
    return this.#shutdown;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  async #acceptLoop(): Promise<void> {
    const signal = this.#stopAccepting.signal;
    let backoff = 0;
    while (!signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (error) {
        if (signal.aborted || error instanceof Deno.errors.BadResource) break;
        // Transient (out of file descriptors, a reset before accept): back off and retry.
        // Log once per streak of failures, not once per retry.
        if (backoff === 0) this.#logAcceptError(error);
        backoff = Math.min(1000, backoff === 0 ? 5 : backoff * 2);
        await delay(backoff, signal);
        continue;
      }
      if (!this.#admit()) {
        this.#refuse(conn);
        continue;
      }
      this.#serveConnection(conn);
    }
  }

  /** Counts a new connection against `maxConnections`, if there is room. */
  #admit(): boolean {
    const shared = this.#shared;
    if (shared) {
      if (Atomics.add(shared, 0, 1) >= this.#maxConnections) {
        Atomics.sub(shared, 0, 1);
        return false;
      }
    } else if (this.#active >= this.#maxConnections) {
      return false;
    }
    this.#active++;
    return true;
  }

  /** Stops counting a connection against the limits: it is closing or lingering. */
  #release(client: Client): void {
    if (client.counted) {
      client.counted = false;
      this.#active--;
      if (this.#shared) Atomics.sub(this.#shared, 0, 1);
    }
    if (client.ipKey !== null) {
      const count = this.#perIp.get(client.ipKey)! - 1;
      if (count === 0) this.#perIp.delete(client.ipKey);
      else this.#perIp.set(client.ipKey, count);
      client.ipKey = null;
    }
  }

  /** Counts a client under its address for `maxConnectionsPerIp`, if there is room. */
  #admitAddress(client: Client): boolean {
    const key = clientHost(client.proxied?.hostname ?? client.conn.remoteAddr.hostname);
    const count = this.#perIp.get(key) ?? 0;
    if (count >= this.#maxPerIp) return false;
    this.#perIp.set(key, count + 1);
    client.ipKey = key;
    return true;
  }

  /** The client's address for logs: the one from the PROXY header when there is one. */
  #peer(client: Client): string {
    const proxied = client.proxied;
    if (proxied === null) return formatAddress(client.conn.remoteAddr);
    return formatAddress({ transport: "tcp", hostname: proxied.hostname, port: proxied.port });
  }

  #logAcceptError(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    if (/too many open files|os error 24/i.test(message)) {
      this.#logger.warn(
        "out of file descriptors: the open-file limit is below what --max-connections needs; " +
          "raise it (ulimit -n, systemd LimitNOFILE=) or lower --max-connections",
        { connections: this.#clients.size, maxConnections: this.#maxConnections },
      );
    } else {
      this.#logger.warn("accept failed; retrying", { error: message });
    }
  }

  #refuse(conn: Deno.TcpConn): void {
    this.#stats.busy++;
    if (this.#debug) {
      this.#logger.debug("connection refused: server busy", {
        peer: formatAddress(conn.remoteAddr),
      });
    }
    // The answer fits in any socket buffer, so the write does not wait for the client.
    conn.write(ERR_SERVER_BUSY).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    });
  }

  async #serveConnection(conn: Deno.TcpConn): Promise<void> {
    const stats = this.#stats;
    const client: Client = {
      conn,
      reading: false,
      lingering: false,
      awaitingHeader: this.#proxyProtocol,
      counted: true,
      ipKey: null,
      proxied: null,
      closed: false,
      lastActive: this.#clock,
    };
    this.#clients.add(client);
    stats.connectionsOpen = this.#clients.size;
    stats.connectionsTotal++;
    const session = new Session({ time: this.#time, maxLine: this.#maxLine, counts: stats });
    let buffer = new Uint8Array(INITIAL_READ_SIZE);
    let reason = "shutdown";
    /** Bytes already read past a PROXY header, waiting at `buffer[carriedFrom, carriedTo)`. */
    let carriedFrom = 0, carriedTo = 0;
    try {
      conn.setNoDelay(true);
      if (this.#proxyProtocol) {
        const header = await this.#readProxyHeader(client, buffer);
        if (header === null) {
          reason = "no valid PROXY header";
          stats.proxyHeader++;
          return;
        }
        ({ buffer, carriedFrom, carriedTo } = header);
      }
      if (this.#debug) {
        this.#logger.debug("connection opened", {
          peer: this.#peer(client),
          via: client.proxied ? formatAddress(conn.remoteAddr) : undefined,
        });
      }
      if (this.#maxPerIp > 0 && !this.#admitAddress(client)) {
        stats.perIp++;
        reason = "per-client limit";
        await conn.write(ERR_TOO_MANY_CONNECTIONS);
        stats.bytesSent += ERR_TOO_MANY_CONNECTIONS.length;
        await this.#linger(client, buffer);
        return;
      }
      while (!this.#stopAccepting.signal.aborted) {
        let n: number | null;
        if (carriedTo > carriedFrom) {
          n = carriedTo - carriedFrom;
          session.push(buffer.subarray(carriedFrom, carriedTo));
          carriedFrom = carriedTo = 0;
        } else {
          client.reading = true;
          n = await conn.read(buffer);
          client.reading = false;
          if (n === null) {
            session.end();
          } else {
            stats.bytesReceived += n;
            session.push(buffer, n);
          }
        }
        for (let out = session.pull(); out.length > 0; out = session.pull()) {
          client.lastActive = this.#clock;
          const written = await conn.write(out);
          if (written < out.length) await writeRest(conn, out, written);
          stats.bytesSent += out.length;
        }
        if (n === null) {
          reason = "closed by client";
          break;
        }
        if (session.closing) {
          reason = "quit";
          break;
        }
        if (n === buffer.length && buffer.length < MAX_READ_SIZE) {
          // A full read means the client sends faster than one read takes: read more at once.
          buffer = new Uint8Array(buffer.length * 4);
        }
      }
      if (reason !== "closed by client") await this.#linger(client, buffer);
    } catch (error) {
      if (client.closed) {
        if (!client.lingering) {
          reason = client.awaitingHeader ? "no PROXY header in time" : "closed by server";
        }
      } else if (isDisconnect(error)) {
        if (
          error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe
        ) {
          stats.reset++;
        }
        reason = error instanceof Error ? error.name : String(error);
      } else {
        reason = "error";
        this.#logger.error("connection failed", {
          peer: this.#peer(client),
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        });
      }
    } finally {
      this.#close(client);
      this.#release(client);
      this.#clients.delete(client);
      stats.connectionsOpen = this.#clients.size;
      if (this.#debug) {
        this.#logger.debug("connection closed", { peer: this.#peer(client), reason });
      }
      if (this.#clients.size === 0 && this.#stopAccepting.signal.aborted) this.#drained.resolve();
    }
  }

  /**
   * Reads the PROXY header at the start of a connection. Resolves with the buffer
   * (grown if the header needed it) and where the bytes after the header lie, or
   * with null when the client sent no valid header. Waiting is bounded by the sweep.
   */
  async #readProxyHeader(
    client: Client,
    buffer: Uint8Array<ArrayBuffer>,
  ): Promise<{ buffer: Uint8Array<ArrayBuffer>; carriedFrom: number; carriedTo: number } | null> {
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        const grown = new Uint8Array(Math.min(PROXY_HEADER_MAX, buffer.length * 4));
        grown.set(buffer);
        buffer = grown;
      }
      client.reading = true;
      const n = await client.conn.read(buffer.subarray(length));
      client.reading = false;
      if (n === null) return null;
      this.#stats.bytesReceived += n;
      length += n;
      const header = parseProxyHeader(buffer, length);
      if (header.status === "incomplete") continue;
      if (header.status === "invalid") {
        if (this.#debug) {
          this.#logger.debug("bad PROXY header", {
            peer: formatAddress(client.conn.remoteAddr),
            error: header.reason,
          });
        }
        return null;
      }
      client.awaitingHeader = false;
      client.proxied = header.source ?? null;
      return { buffer, carriedFrom: header.length, carriedTo: length };
    }
  }

  /** Sends FIN after the last answer, then discards input until the client closes too. */
  async #linger(client: Client, buffer: Uint8Array): Promise<void> {
    client.lingering = true;
    this.#release(client);
    client.lastActive = this.#clock;
    await client.conn.closeWrite();
    let discarded = 0;
    while (discarded < LINGER_MAX_BYTES) {
      const n = await client.conn.read(buffer);
      if (n === null) return;
      discarded += n;
    }
  }

  #close(client: Client): void {
    if (client.closed) return;
    client.closed = true;
    try {
      client.conn.close();
    } catch {
      // Already closed by the runtime.
    }
  }

  /**
   * Closes connections idle for longer than the idle timeout, those done lingering,
   * and those that did not send their PROXY header in time.
   */
  #sweep(): void {
    const now = this.#clock = performance.now();
    // lastActive is read from this clock, so it lags the truth by up to one sweep: allow
    // for that, so that no connection is ever closed early.
    const slack = this.#sweepEveryMs;
    const idleDeadline = this.#idleTimeoutMs > 0 ? now - this.#idleTimeoutMs - slack : -Infinity;
    const lingerDeadline = now - LINGER_MS - slack;
    const headerDeadline = now - this.#proxyHeaderTimeoutMs - slack;
    for (const client of this.#clients) {
      if (client.closed) continue;
      if (client.lingering) {
        if (client.lastActive < lingerDeadline) this.#close(client);
      } else if (client.awaitingHeader) {
        if (client.lastActive < headerDeadline) this.#close(client);
      } else if (client.lastActive < idleDeadline) {
        this.#stats.idleTimeout++;
        if (this.#debug) {
          this.#logger.debug("idle timeout", { peer: formatAddress(client.conn.remoteAddr) });
        }
        this.#close(client);
      }
    }
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
