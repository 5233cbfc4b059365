// The TCP server: accepting, one async loop per connection, limits, shutdown.

import { ActivityList, type ActivityNode } from "./activity_list.ts";
import { highWaterMark, mayReplace, pressureTimeout } from "./overload.ts";
import { createLogger, type Logger } from "./log.ts";
import { newServerStats, type ServerStats } from "./stats.ts";
import {
  DEFAULT_MAX_LINE,
  DEFAULT_PORT,
  ERR_IDLE_EVICTED,
  ERR_SERVER_BUSY,
  ERR_TOO_MANY_CONNECTIONS,
  Session,
  TimeAnswer,
} from "./protocol.ts";
import { delay, writeAll } from "./net.ts";
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
   * Connections served at once. Past 90% of it, connections silent the longest are
   * closed first; at the limit, a new connection takes the place of the one silent
   * the longest (silent for a second at least), which hears `ERR idle, closed to make
   * room`. Only when none is that silent does the new one get `ERR server busy`.
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
   * Seconds a connection must have been silent (no request answered, nothing owed)
   * before it may be closed to make room for a new one when the server is full.
   * @default {1}
   */
  evictAfter?: number;
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
   * State shared by several servers (workers): an `Int32Array` of
   * {@linkcode SHARED_CONNECTION_SLOTS} over a `SharedArrayBuffer`, all zero at first.
   * `maxConnections` then applies to the connections of all of them, and a full server
   * may ask the others to close their longest-silent connection.
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
  port: DEFAULT_PORT,
  maxLine: DEFAULT_MAX_LINE,
  idleTimeout: 300,
  maxConnections: 10000,
  shutdownTimeout: 5,
  statsInterval: 60,
  maxConnectionsPerIp: 0,
  proxyHeaderTimeout: 5,
  evictAfter: 1,
} as const;

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
/**
 * Lingering connections do not count against `maxConnections`, so they get a budget
 * of their own, a tenth of it: past that the oldest is closed at once. Without it a
 * client that sends QUIT and never closes could pile up descriptors five seconds at a time.
 */
const LINGER_SHARE = 0.1;

/**
 * With workers, how long a new connection that found the server full and nothing
 * silent in its own worker waits for another worker to make room.
 */
const PEER_EVICTION_WAIT_MS = 50;
/** How many such connections may wait at once per worker; the others get `ERR server busy`. */
const PEER_EVICTION_WAITERS = 64;
/** The shortest time between two warnings that accepting failed for want of resources. */
const SHORTAGE_LOG_EVERY_MS = 10000;
/** The sweep's longest period; it also ticks the coarse clock that activity is stamped with. */
const SWEEP_MAX_MS = 250;
/** Accepting ticks the coarse clock too, at most this often, so eviction sees fresh time. */
const ACCEPT_TICK_MS = 10;

/**
 * Where a connection is in its life, as Go's `ConnState`. It decides what the sweep
 * and eviction may do: only `header` and `reading` connections owe the client nothing
 * and may be closed to make room.
 */
type ConnState = "header" | "reading" | "writing" | "lingering" | "closed";

/** Why a connection ended, for the debug log. */
type CloseReason =
  | "closed by client"
  | "quit"
  | "shutdown"
  | "shutdown timeout"
  | "idle timeout"
  | "evicted"
  | "per-client limit"
  | "no valid PROXY header"
  | "no PROXY header in time"
  | "linger done"
  | "linger limit"
  | "reset"
  | "error";

/** One live connection, as the server tracks it: in the activity list of its state. */
interface Client extends ActivityNode {
  readonly conn: Deno.TcpConn;
  state: ConnState;
  /** True while the connection counts against `maxConnections`. */
  counted: boolean;
  /** The client address per-IP limits count it under, once counted. */
  ipKey: string | null;
  /** The real client, from the PROXY header; the socket's peer when absent. */
  proxied: ProxiedAddress | null;
  /** Why the server closed it, once it has. */
  reason: CloseReason | null;
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

/**
 * Accept errors that concern only the connection being accepted, by errno. Linux's
 * accept(2) passes a new socket's pending network errors on and says to retry them
 * at once (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP,
 * ENETUNREACH), as for ECONNABORTED and EPERM (a firewall rule). Deno reads the peer's
 * address after accept, which fails with ENOTCONN when the client has already reset.
 * Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM, or unknown) concerns the process.
 */
const CONNECTION_ACCEPT_ERRORS = new Set([
  "ENOTCONN",
  "ECONNABORTED",
  "ECONNRESET",
  "EPERM",
  "ETIMEDOUT",
  "ENETDOWN",
  "EPROTO",
  "ENOPROTOOPT",
  "EHOSTDOWN",
  "ENONET",
  "EHOSTUNREACH",
  "EOPNOTSUPP",
  "ENETUNREACH",
]);

function errorCode(error: unknown): string | undefined {
  return (error as { code?: unknown })?.code as string | undefined;
}

function isSetupError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse ||
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
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

/**
 * The slots of a `sharedConnections` array: the connections counted by all workers,
 * and how many evictions a full worker with nothing silent of its own asks the others for.
 */
const SHARED_OPEN = 0;
const SHARED_EVICTIONS_WANTED = 1;

/** How many `Int32` slots a `sharedConnections` array needs. */
export const SHARED_CONNECTION_SLOTS = 2;

class Server implements TimeServer {
  readonly #listener: Deno.TcpListener;
  readonly #logger: Logger;
  readonly #debug: boolean;
  readonly #time: TimeAnswer;
  readonly #maxLine: number;
  readonly #idleTimeoutMs: number;
  readonly #maxConnections: number;
  readonly #highWater: number;
  readonly #maxLingering: number;
  readonly #shutdownTimeoutMs: number;
  readonly #clients = new Set<Client>();
  /** The clients in each state but `closed`, each list oldest activity first. */
  readonly #lists: Record<Exclude<ConnState, "closed">, ActivityList<Client>> = {
    header: new ActivityList(),
    reading: new ActivityList(),
    writing: new ActivityList(),
    lingering: new ActivityList(),
  };
  /** How many of `#clients` count against `maxConnections` (lingering ones do not). */
  #active = 0;
  readonly #shared: Int32Array | undefined;
  #peerWaiters = 0;
  readonly #evictAfterMs: number;
  /**
   * When the coarse clock ticked lately, oldest first, reaching back just past
   * `evictAfter`: a stamp older than the first tick proves that much silence.
   */
  readonly #ticks: number[] = [];
  readonly #maxPerIp: number;
  readonly #perIp = new Map<string, number>();
  readonly #proxyProtocol: boolean;
  readonly #proxyHeaderTimeoutMs: number;
  readonly #stats: ServerStats = newServerStats();
  readonly #stopAccepting = new AbortController();
  readonly #accepting: Promise<void>;
  readonly #drained = Promise.withResolvers<void>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Wakes an accept loop backing off for want of descriptors: a connection closed. */
  #descriptorFreed: (() => void) | null = null;
  #lastShortageLog = -Infinity;
  #shutdown: Promise<void> | null = null;
  /**
   * `performance.now()` as of the last sweep (or eviction check): a coarse clock for
   * activity stamps, so the request path reads a field instead of the clock. It lags
   * the truth by up to one sweep period, which every deadline allows for.
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
    this.#highWater = highWaterMark(this.#maxConnections);
    this.#maxLingering = Math.max(16, Math.ceil(this.#maxConnections * LINGER_SHARE));
    this.#shutdownTimeoutMs = (options.shutdownTimeout ?? DEFAULTS.shutdownTimeout) * 1000;
    this.#shared = options.sharedConnections;
    this.#maxPerIp = options.maxConnectionsPerIp ?? DEFAULTS.maxConnectionsPerIp;
    this.#evictAfterMs = (options.evictAfter ?? DEFAULTS.evictAfter) * 1000;
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

    // One sweep over the lists beats a timer per connection reset on every request.
    const shortest = Math.min(
      this.#idleTimeoutMs > 0 ? this.#idleTimeoutMs : Infinity,
      this.#proxyProtocol ? this.#proxyHeaderTimeoutMs : Infinity,
      this.#evictAfterMs > 0 ? this.#evictAfterMs : Infinity,
    );
    this.#sweepEveryMs = Math.min(SWEEP_MAX_MS, Math.max(5, shortest / 4));
    this.#timers.push(setInterval(() => this.#sweep(), this.#sweepEveryMs));
    if (this.#shared) this.#answerPeers(this.#shared);
    const statsInterval = options.statsInterval ?? DEFAULTS.statsInterval;
    if (statsInterval > 0 && this.#logger.enabled("info")) {
      let last = "";
      this.#timers.push(setInterval(() => {
        const summary = JSON.stringify(this.#stats);
        if (summary !== last) this.#logger.info("summary", { ...this.#stats });
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
    // A client waiting for a request is owed nothing; the others close after their last write.
    for (const client of this.#clients) {
      if (client.state === "reading" || client.state === "header") this.#close(client, "shutdown");
    }
    if (this.#clients.size === 0) this.#drained.resolve();
    const force = setTimeout(() => {
      if (this.#clients.size > 0) {
        this.#logger.warn("shutdown timeout; closing connections still busy", {
          connections: this.#clients.size,
        });
      }
      for (const client of this.#clients) this.#close(client, "shutdown timeout");
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
        const code = errorCode(error);
        if (code !== undefined && CONNECTION_ACCEPT_ERRORS.has(code)) {
          // That connection died in the queue; the next one may be fine. Backing off
          // here would let a storm of resets hold up everyone queued behind it.
          this.#stats.acceptAborted++;
          continue;
        }
        // Out of descriptors or memory: back off, but retry as soon as a connection
        // closes. Log once per streak of failures, and at most once in a while, since
        // each freed descriptor can end a streak and start the next.
        this.#stats.acceptExhausted++;
        if (backoff === 0 && performance.now() - this.#lastShortageLog >= SHORTAGE_LOG_EVERY_MS) {
          this.#lastShortageLog = performance.now();
          this.#logAcceptError(error);
        }
        backoff = Math.min(1000, backoff === 0 ? 5 : backoff * 2);
        await this.#waitForDescriptor(backoff, signal);
        continue;
      }
      if (performance.now() - this.#clock >= ACCEPT_TICK_MS) this.#tick();
      // Behind a balancer the client's address comes later, in the PROXY header.
      const address = this.#proxyProtocol ? null : clientHost(conn.remoteAddr.hostname);
      if (this.#admit(address)) this.#serveConnection(conn);
      else if (this.#askPeers(address)) this.#admitWithPeers(conn, this.#shared!);
      else this.#refuse(conn);
    }
  }

  /** Resolves after `ms`, when a connection closes, or when accepting stops. */
  async #waitForDescriptor(ms: number, signal: AbortSignal): Promise<void> {
    const freed = new AbortController();
    this.#descriptorFreed = () => freed.abort();
    await delay(ms, AbortSignal.any([signal, freed.signal]));
    this.#descriptorFreed = null;
  }

  /**
   * Counts a new connection from `address` (null: not known yet) against
   * `maxConnections`. At the limit, the connection silent the longest makes room if it
   * has been silent long enough and the newcomer may take its place.
   */
  #admit(address: string | null): boolean {
    if (this.#count()) return true;
    this.#tick();
    return this.#evictOldest(address) && this.#count();
  }

  /** Tells whether a newcomer from `address` may take `victim`'s place ({@linkcode mayReplace}). */
  #mayReplace(address: string | null, victim: Client): boolean {
    const holds = (key: string | null) => key === null ? 0 : this.#perIp.get(key) ?? 0;
    return mayReplace(
      { address, holds: holds(address) },
      { address: victim.ipKey, holds: holds(victim.ipKey) },
    );
  }

  /**
   * With workers, whether a newcomer that found this worker full should ask the others
   * to make room: only one from an address that holds nothing here, by the same
   * fairness as {@linkcode #mayReplace}, since the others cannot see this worker's counts.
   */
  #askPeers(address: string | null): boolean {
    if (!this.#shared || this.#peerWaiters >= PEER_EVICTION_WAITERS) return false;
    return address === null || !this.#perIp.has(address);
  }

  #count(): boolean {
    const shared = this.#shared;
    if (shared) {
      if (Atomics.add(shared, SHARED_OPEN, 1) >= this.#maxConnections) {
        Atomics.sub(shared, SHARED_OPEN, 1);
        return false;
      }
    } else if (this.#active >= this.#maxConnections) {
      return false;
    }
    this.#active++;
    return true;
  }

  /** Connections counted against `maxConnections` now, by every worker. */
  #open(): number {
    return this.#shared ? Atomics.load(this.#shared, SHARED_OPEN) : this.#active;
  }

  /** The connection owing nothing that has been silent the longest, or null. */
  #oldestSilent(): Client | null {
    const reading = this.#lists.reading.oldest;
    const header = this.#lists.header.oldest;
    if (reading === null || header === null) return reading ?? header;
    return header.lastActive < reading.lastActive ? header : reading;
  }

  /** Advances the coarse clock, and remembers when it did for {@linkcode #silentBefore}. */
  #tick(): void {
    const now = this.#clock = performance.now();
    const ticks = this.#ticks;
    ticks.push(now);
    const horizon = now - this.#evictAfterMs;
    while (ticks.length > 1 && ticks[1] <= horizon) ticks.shift();
  }

  /**
   * A stamp below this proves `evictAfter` of silence. Stamps come from the coarse
   * clock, so one below a tick was made before that tick happened; a tick at least
   * `evictAfter` ago thus bounds the silence from below, however late timers run.
   */
  #silentBefore(): number {
    const first = this.#ticks[0];
    return first !== undefined && first <= this.#clock - this.#evictAfterMs ? first : -Infinity;
  }

  /**
   * Closes the connection silent the longest, if it has been silent long enough and a
   * newcomer from `address` may replace it.
   */
  #evictOldest(address: string | null): boolean {
    const oldest = this.#oldestSilent();
    if (oldest === null || oldest.lastActive >= this.#silentBefore()) return false;
    if (!this.#mayReplace(address, oldest)) return false;
    this.#evict(oldest);
    return true;
  }

  #evict(client: Client): void {
    this.#stats.closedEvicted++;
    if (this.#debug) this.#logger.debug("evicted to make room", { peer: this.#peer(client) });
    const conn = client.conn;
    this.#close(client, "evicted", false);
    // The client owes nothing and is owed nothing, so its receive queue is empty and
    // the close is a FIN after this line. A client that never reads could stall the
    // write: the lingering sweep closes it then.
    this.#lists.lingering.append(client, this.#clock);
    conn.write(ERR_IDLE_EVICTED).catch(() => {}).finally(() => closeQuietly(conn));
  }

  /**
   * With workers: the server is full and nothing here is silent long enough, so ask
   * the other workers to close their longest-silent connection, and wait briefly for
   * the room. Meanwhile accepting goes on.
   */
  async #admitWithPeers(conn: Deno.TcpConn, shared: Int32Array): Promise<void> {
    this.#peerWaiters++;
    try {
      Atomics.add(shared, SHARED_EVICTIONS_WANTED, 1);
      Atomics.notify(shared, SHARED_EVICTIONS_WANTED);
      const deadline = performance.now() + PEER_EVICTION_WAIT_MS;
      for (;;) {
        if (this.#stopAccepting.signal.aborted) break;
        if (this.#count()) {
          this.#serveConnection(conn);
          return;
        }
        const left = deadline - performance.now();
        if (left <= 0) break;
        const open = Atomics.load(shared, SHARED_OPEN);
        const wait = Atomics.waitAsync(shared, SHARED_OPEN, open, left);
        if (wait.async) await wait.value;
      }
      // Nobody made room: take the request back, unless another worker already took it.
      const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
      if (wanted > 0) Atomics.compareExchange(shared, SHARED_EVICTIONS_WANTED, wanted, wanted - 1);
      this.#refuse(conn);
    } finally {
      this.#peerWaiters--;
    }
  }

  /** Closes this worker's longest-silent connections while other workers ask for room. */
  async #answerPeers(shared: Int32Array): Promise<void> {
    const signal = this.#stopAccepting.signal;
    while (!signal.aborted) {
      const wanted = Atomics.load(shared, SHARED_EVICTIONS_WANTED);
      if (wanted > 0) {
        this.#tick();
        const oldest = this.#oldestSilent();
        if (
          oldest !== null && oldest.lastActive < this.#silentBefore() &&
          Atomics.compareExchange(shared, SHARED_EVICTIONS_WANTED, wanted, wanted - 1) === wanted
        ) {
          this.#evict(oldest);
          continue;
        }
      }
      // Wakes when a worker asks; the timeout lets a stopping server leave the loop.
      const wait = Atomics.waitAsync(shared, SHARED_EVICTIONS_WANTED, wanted, 200);
      if (wait.async) await wait.value;
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Stops counting a connection against the limits: it is closing or lingering. */
  #release(client: Client): void {
    if (client.counted) {
      client.counted = false;
      this.#active--;
      if (this.#shared) {
        Atomics.sub(this.#shared, SHARED_OPEN, 1);
        Atomics.notify(this.#shared, SHARED_OPEN);
      }
    }
    if (client.ipKey !== null) {
      const count = this.#perIp.get(client.ipKey)! - 1;
      if (count === 0) this.#perIp.delete(client.ipKey);
      else this.#perIp.set(client.ipKey, count);
      this.#stats.addressesTracked = this.#perIp.size;
      client.ipKey = null;
    }
  }

  /**
   * Counts a client under its address (for `maxConnectionsPerIp` and for who may
   * replace whom); false if the address already holds `maxConnectionsPerIp`.
   */
  #admitAddress(client: Client): boolean {
    const key = clientHost(client.proxied?.hostname ?? client.conn.remoteAddr.hostname);
    const count = this.#perIp.get(key) ?? 0;
    if (this.#maxPerIp > 0 && count >= this.#maxPerIp) return false;
    this.#perIp.set(key, count + 1);
    this.#stats.addressesTracked = this.#perIp.size;
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
    if (errorCode(error) === "EMFILE" || errorCode(error) === "ENFILE") {
      this.#logger.warn(
        "out of file descriptors: the open-file limit is below what --max-connections needs; " +
          "raise it (ulimit -n, systemd LimitNOFILE=) or lower --max-connections",
        { connections: this.#clients.size, maxConnections: this.#maxConnections },
      );
    } else {
      this.#logger.warn("accept failed; backing off", { error: message });
    }
  }

  #refuse(conn: Deno.TcpConn): void {
    this.#stats.refusedBusy++;
    if (this.#debug) {
      this.#logger.debug("connection refused: server busy", {
        peer: formatAddress(conn.remoteAddr),
      });
    }
    // The answer fits in any socket buffer, so the write does not wait for the client.
    conn.write(ERR_SERVER_BUSY).catch(() => {}).finally(() => {
      closeQuietly(conn);
      this.#descriptorFreed?.();
    });
  }

  /** Moves a client into `state` and the end of that state's list, unless it is closed. */
  #enter(client: Client, state: Exclude<ConnState, "closed">): void {
    if (client.state === "closed") return;
    client.state = state;
    this.#lists[state].append(client, this.#clock);
  }

  async #serveConnection(conn: Deno.TcpConn): Promise<void> {
    const stats = this.#stats;
    const client: Client = {
      conn,
      state: "reading",
      counted: true,
      ipKey: null,
      proxied: null,
      reason: null,
      lastActive: 0,
      list: null,
      prev: null,
      next: null,
    };
    this.#clients.add(client);
    stats.connectionsOpen = this.#clients.size;
    stats.connectionsTotal++;
    const session = new Session({ time: this.#time, maxLine: this.#maxLine, counts: stats });
    let buffer = new Uint8Array(INITIAL_READ_SIZE);
    let reason: CloseReason = "shutdown";
    /** Bytes that came after the PROXY header, answered before the first read. */
    let carried: Uint8Array | null = null;
    try {
      conn.setNoDelay(true);
      if (this.#proxyProtocol) {
        this.#enter(client, "header");
        const header = await this.#readProxyHeader(client, buffer);
        if (header === null) {
          reason = "no valid PROXY header";
          stats.closedProxyHeader++;
          return;
        }
        ({ buffer, carried } = header);
      }
      if (this.#debug) {
        this.#logger.debug("connection opened", {
          peer: this.#peer(client),
          via: client.proxied ? formatAddress(conn.remoteAddr) : undefined,
        });
      }
      if (!this.#admitAddress(client)) {
        stats.refusedPerIp++;
        reason = "per-client limit";
        await conn.write(ERR_TOO_MANY_CONNECTIONS);
        stats.bytesSent += ERR_TOO_MANY_CONNECTIONS.length;
        await this.#linger(client, buffer);
        return;
      }
      this.#enter(client, "reading");
      while (!this.#stopAccepting.signal.aborted) {
        let n: number | null;
        if (carried !== null) {
          n = carried.length;
          session.push(carried);
          carried = null;
        } else {
          n = await conn.read(buffer);
          if (n === null) {
            session.end();
          } else {
            stats.bytesReceived += n;
            session.push(buffer, n);
          }
        }
        let out = session.pull();
        if (out.length > 0) {
          do {
            this.#enter(client, "writing");
            const written = await conn.write(out);
            if (written < out.length) await writeAll(conn, out, written);
            stats.bytesSent += out.length;
            out = session.pull();
          } while (out.length > 0);
          this.#enter(client, "reading");
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
      if (client.state === "closed") {
        reason = client.reason ?? "error";
      } else if (isDisconnect(error)) {
        if (
          error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe
        ) {
          stats.closedReset++;
        }
        reason = error instanceof Deno.errors.UnexpectedEof ? "closed by client" : "reset";
      } else {
        reason = "error";
        this.#logger.error("connection failed", {
          peer: this.#peer(client),
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        });
      }
    } finally {
      if (client.reason !== null) reason = client.reason;
      this.#close(client, reason);
      this.#clients.delete(client);
      stats.connectionsOpen = this.#clients.size;
      this.#descriptorFreed?.();
      if (this.#debug) {
        this.#logger.debug("connection closed", { peer: this.#peer(client), reason });
      }
      if (this.#clients.size === 0 && this.#stopAccepting.signal.aborted) this.#drained.resolve();
    }
  }

  /**
   * Reads the PROXY header at the start of a connection. Resolves with the buffer
   * (grown if the header needed it) and the bytes after the header, or with null
   * when the client sent no valid header. Waiting is bounded by the sweep.
   */
  async #readProxyHeader(
    client: Client,
    buffer: Uint8Array<ArrayBuffer>,
  ): Promise<{ buffer: Uint8Array<ArrayBuffer>; carried: Uint8Array | null } | null> {
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        const grown = new Uint8Array(Math.min(PROXY_HEADER_MAX, buffer.length * 4));
        grown.set(buffer);
        buffer = grown;
      }
      const n = await client.conn.read(buffer.subarray(length));
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
      client.proxied = header.source ?? null;
      const carried = length > header.length ? buffer.subarray(header.length, length) : null;
      return { buffer, carried };
    }
  }

  /** Sends FIN after the last answer, then discards input until the client closes too. */
  async #linger(client: Client, buffer: Uint8Array): Promise<void> {
    this.#release(client);
    this.#enter(client, "lingering");
    const lingering = this.#lists.lingering;
    if (lingering.size > this.#maxLingering) this.#close(lingering.oldest!, "linger limit");
    await client.conn.closeWrite();
    let discarded = 0;
    while (discarded < LINGER_MAX_BYTES) {
      const n = await client.conn.read(buffer);
      if (n === null) return;
      discarded += n;
    }
  }

  /**
   * Closes a client's connection (at once unless `now` is false), takes it out of its
   * list and the limits, and records why. Closing an already closed client does nothing.
   */
  #close(client: Client, reason: CloseReason, now = true): void {
    client.list?.remove(client);
    if (client.state === "closed") {
      if (now) closeQuietly(client.conn);
      return;
    }
    client.state = "closed";
    client.reason = reason;
    this.#release(client);
    if (now) closeQuietly(client.conn);
  }

  /**
   * Closes connections past their deadline, oldest first in each list, so the sweep
   * costs what it closes: idle readers and stuck writers after the idle timeout (or
   * sooner under pressure), slow PROXY headers, and lingering connections.
   */
  #sweep(): void {
    this.#tick();
    const now = this.#clock;
    // Stamps lag the truth by up to one sweep: allow for that, so nothing closes early.
    const slack = this.#sweepEveryMs;
    const lists = this.#lists;
    if (this.#idleTimeoutMs > 0) {
      const deadline = now - this.#idleTimeoutMs - slack;
      this.#expire(lists.reading, deadline, "idle timeout");
      this.#expire(lists.writing, deadline, "idle timeout");
    }
    if (this.#proxyProtocol) {
      this.#expire(
        lists.header,
        now - this.#proxyHeaderTimeoutMs - slack,
        "no PROXY header in time",
      );
    }
    for (let c = lists.lingering.oldest; c !== null && c.lastActive < now - LINGER_MS - slack;) {
      // An evicted client is already closed but waits here for its last line's write.
      if (c.state === "closed") {
        lists.lingering.remove(c);
        closeQuietly(c.conn);
      } else this.#close(c, "linger done");
      c = lists.lingering.oldest;
    }
    this.#relievePressure(now);
  }

  #expire(list: ActivityList<Client>, deadline: number, reason: CloseReason): void {
    for (let client = list.oldest; client !== null && client.lastActive < deadline;) {
      if (reason === "idle timeout") {
        this.#stats.closedIdle++;
        if (this.#debug) this.#logger.debug("idle timeout", { peer: this.#peer(client) });
      }
      this.#close(client, reason);
      client = list.oldest;
    }
  }

  /**
   * Past the high-water mark, as Envoy's overload manager does, the idle timeout
   * shrinks with how full the server is: from its full length at the mark to a
   * `evictAfter` at the limit. Connections silent longer than that are closed, the
   * longest-silent first, until the server is back under the mark.
   */
  #relievePressure(now: number): void {
    const open = this.#open();
    const over = open - this.#highWater;
    if (over <= 0) return;
    const full = this.#idleTimeoutMs > 0 ? this.#idleTimeoutMs : DEFAULTS.idleTimeout * 1000;
    const timeout = pressureTimeout(open, this.#maxConnections, full, this.#evictAfterMs);
    const deadline = Math.min(now - timeout - this.#sweepEveryMs, this.#silentBefore());
    for (let left = over; left > 0; left--) {
      const oldest = this.#oldestSilent();
      if (oldest === null || oldest.lastActive >= deadline) return;
      this.#evict(oldest);
    }
  }
}
