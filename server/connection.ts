// One connection's life: the PROXY header, the read/answer/write loop, lingering close, and why it ended.

import type { ActivityList, ActivityNode } from "./activity_list.ts";
import type { AccessList } from "./access.ts";
import type { Counted, Limits } from "./limits.ts";
import type { Logger } from "../lib/log.ts";
import { clientHost, formatAddress, writeAll } from "../lib/net.ts";
import { ERR_TOO_MANY_CONNECTIONS, Session, type TimeAnswer } from "../protocol.ts";
import {
  parseProxyHeader,
  type ProxiedAddress,
  PROXY_HEADER_MAX,
  type ProxyHeader,
} from "./proxy.ts";
import { ONE_ANSWER_COUNTERS, type ServerStats } from "./stats.ts";
import type { DaytimeAnswer } from "../time/daytime.ts";
import type { Rfc868Answer } from "../time/rfc868.ts";

/**
 * What a TCP listener speaks: the line protocol (`TIME` → `JAM hh:mm:ss`), or one of the
 * protocols that send one answer and close, Daytime (RFC 867) and Time (RFC 868).
 */
export type TcpService = "jam" | "daytime" | "time";

/**
 * Where a connection is in its life, as Go's `ConnState`. It decides what the sweep
 * and eviction may do: only `header` and `reading` connections owe the client nothing
 * and may be closed to make room.
 */
export type ConnState = "header" | "reading" | "writing" | "lingering" | "closed";

/** Why a connection ended, for the debug log. */
export type CloseReason =
  | "closed by client"
  | "quit"
  | "shutdown"
  | "shutdown timeout"
  | "idle timeout"
  | "evicted"
  | "per-client limit"
  | "no valid PROXY header"
  | "no PROXY header in time"
  | "answered"
  | "denied"
  | "linger done"
  | "linger limit"
  | "reset"
  | "error";

/**
 * What a connection needs of the table that holds it: to move between the activity lists
 * of its states, and to be closed (`ConnectionTable` in connections.ts).
 */
export interface ConnectionStates {
  /** Moves the connection into `state`, at the end of its list, unless it is closed. */
  enter(connection: Connection, state: Exclude<ConnState, "closed">): void;
  /** Closes the connection, takes it out of its list and the limits, and records why. */
  close(connection: Connection, reason: CloseReason): void;
}

/** What a connection needs from the server that holds it. */
export interface ConnectionHost {
  readonly table: ConnectionStates;
  readonly limits: Limits;
  readonly stats: ServerStats;
  readonly logger: Logger;
  /** Whether debug events are logged, read once. */
  readonly debug: boolean;
  /** The line protocol's `JAM hh:mm:ss` answer. */
  readonly jamAnswer: TimeAnswer;
  /** Daytime's ctime line (RFC 867). */
  readonly daytimeAnswer: DaytimeAnswer;
  /** Time's 32-bit seconds since 1900 (RFC 868). */
  readonly rfc868Answer: Rfc868Answer;
  readonly access: AccessList;
  readonly maxLine: number;
  readonly proxyProtocol: boolean;
  /** Aborts when the server stops accepting: connections waiting for a request end. */
  readonly stopping: AbortSignal;
  /** Called once, when the connection is closed and done with. */
  ended(connection: Connection, reason: CloseReason): void;
}

/** Bytes of the read buffer a connection starts with; grown for clients that pipeline. */
const INITIAL_READ_SIZE = 256;
/** The largest read buffer a connection grows to. */
const MAX_READ_SIZE = 16384;
/** The most bytes discarded while lingering before the connection is closed anyway. */
const LINGER_MAX_BYTES = 16 * 1024 * 1024;

/**
 * Reads a PROXY header into `buffer`, grown as needed up to {@linkcode PROXY_HEADER_MAX}.
 * Resolves with the buffer, how many bytes were read, and the header as parsed, or null
 * when the client closed first. Waiting is bounded by the sweep.
 */
async function readProxyHeader(
  conn: Deno.TcpConn,
  buffer: Uint8Array<ArrayBuffer>,
  stats: ServerStats,
): Promise<{ buffer: Uint8Array<ArrayBuffer>; length: number; header: ProxyHeader | null }> {
  let length = 0;
  for (;;) {
    if (length === buffer.length) {
      const grown = new Uint8Array(Math.min(PROXY_HEADER_MAX, buffer.length * 4));
      grown.set(buffer);
      buffer = grown;
    }
    const n = await conn.read(buffer.subarray(length));
    if (n === null) return { buffer, length, header: null };
    stats.bytesReceived += n;
    length += n;
    const header = parseProxyHeader(buffer, length);
    if (header.status !== "incomplete") return { buffer, length, header };
  }
}

/**
 * What an error says of a client going away, an ordinary event: `reset` (a reset or a
 * broken pipe, counted), `eof`, `gone` (aborted, not connected, interrupted), or null when
 * it is not a disconnection at all but a bug to log.
 */
function disconnectReason(error: unknown): "reset" | "eof" | "gone" | null {
  const errors = Deno.errors;
  if (error instanceof errors.ConnectionReset || error instanceof errors.BrokenPipe) return "reset";
  if (error instanceof errors.UnexpectedEof) return "eof";
  return error instanceof errors.ConnectionAborted || error instanceof errors.NotConnected ||
      error instanceof errors.Interrupted
    ? "gone"
    : null;
}

/**
 * One accepted connection, counted against the limits, served by {@linkcode Connection.serve}
 * until the client quits or goes, or the server closes it.
 */
export class Connection implements ActivityNode, Counted {
  readonly conn: Deno.TcpConn;
  readonly service: TcpService;
  state: ConnState = "reading";
  counted = true;
  ipKey: string | null = null;
  /** The real client, from the PROXY header; null: the socket's peer. */
  proxied: ProxiedAddress | null = null;
  /** Why the server closed it, once it has. */
  reason: CloseReason | null = null;
  lastActive = 0;
  list: ActivityList<this> | null = null;
  prev: this | null = null;
  next: this | null = null;
  readonly #host: ConnectionHost;
  #buffer = new Uint8Array(INITIAL_READ_SIZE);

  constructor(conn: Deno.TcpConn, host: ConnectionHost, service: TcpService = "jam") {
    this.conn = conn;
    this.service = service;
    this.#host = host;
  }

  /** The client's address for logs: the one from the PROXY header when there is one. */
  peer(): string {
    const proxied = this.proxied;
    return formatAddress(proxied ? { transport: "tcp", ...proxied } : this.conn.remoteAddr);
  }

  /**
   * Serves the connection to its end, in the background; never throws. Until its first
   * wait it runs at once, so the connection is counted under its address before the
   * next accept.
   */
  serve(): void {
    try {
      this.conn.setNoDelay(true);
    } catch (error) {
      return this.#end(this.#failed(error));
    }
    if (this.#host.proxyProtocol) this.#awaitHeader();
    else this.#admitted(null);
  }

  /** Reads the PROXY header, then goes on as {@linkcode #admitted}. */
  async #awaitHeader(): Promise<void> {
    const host = this.#host;
    host.table.enter(this, "header");
    let read;
    try {
      read = await readProxyHeader(this.conn, this.#buffer, host.stats);
    } catch (error) {
      return this.#end(this.#failed(error));
    }
    const { buffer, length, header } = read;
    this.#buffer = buffer;
    if (header === null || header.status !== "ok") {
      if (header?.status === "invalid" && host.debug) {
        host.logger.debug("bad PROXY header", { peer: this.peer(), error: header.reason });
      }
      host.stats.closedProxyHeader++;
      return this.#end("no valid PROXY header");
    }
    this.proxied = header.source ?? null;
    // What came after the header is pushed once; from then on only the socket is read.
    this.#admitted(length > header.length ? buffer.subarray(header.length, length) : null);
  }

  /**
   * Counts the connection under its client's address, then answers it, or refuses it
   * past the per-client limit. Each path is one async function that ends the connection
   * itself: one suspended frame per idle connection, not a chain of them, since each
   * frame held is memory per connection.
   */
  #admitted(carried: Uint8Array | null): void {
    const host = this.#host;
    if (host.debug) {
      host.logger.debug("connection opened", {
        peer: this.peer(),
        via: this.proxied ? formatAddress(this.conn.remoteAddr) : undefined,
      });
    }
    const address = clientHost(this.proxied?.hostname ?? this.conn.remoteAddr.hostname);
    if (!host.access.open && !host.access.allows(address)) {
      host.stats.closedDenied++;
      return this.#end("denied");
    }
    if (!host.limits.takeAddress(this, address)) {
      host.stats.refusedPerIp++;
      void this.#sendAndClose(ERR_TOO_MANY_CONNECTIONS, "per-client limit", { writing: false });
      return;
    }
    if (this.service !== "jam") {
      const answer = this.service === "daytime" ? host.daytimeAnswer : host.rfc868Answer;
      return void this.#sendAndClose(answer.current(), "answered", {
        writing: true,
        counter: ONE_ANSWER_COUNTERS[this.service].answered,
      });
    }
    host.table.enter(this, "reading");
    this.#answer(carried);
  }

  /**
   * Sends one answer, then the lingering close: Daytime and Time answer at once whatever
   * the client sends (RFC 867 and 868 ignore it), and a client past the per-address limit
   * hears why. Either answer fits in any socket buffer. `counter` grows once it is written.
   */
  async #sendAndClose(
    bytes: Uint8Array,
    reason: CloseReason,
    options: { writing: boolean; counter?: keyof ServerStats },
  ): Promise<void> {
    try {
      if (options.writing) this.#host.table.enter(this, "writing");
      const written = await this.conn.write(bytes);
      if (written < bytes.length) await writeAll(this.conn, bytes, written);
      this.#host.stats.bytesSent += bytes.length;
      if (options.counter) this.#host.stats[options.counter]++;
      await this.#linger();
      this.#end(reason);
    } catch (error) {
      this.#end(this.#failed(error));
    }
  }

  #end(reason: CloseReason): void {
    reason = this.reason ?? reason;
    this.#host.table.close(this, reason);
    this.#host.ended(this, reason);
  }

  /**
   * The hot path: read into the reused buffer, push into the session, write all its
   * answers in one write, and wait for that before reading again (back-pressure). Then,
   * unless the client closed first, the lingering close.
   */
  async #answer(carried: Uint8Array | null): Promise<void> {
    try {
      const { table, stats, stopping } = this.#host;
      const conn = this.conn;
      const session = new Session({
        time: this.#host.jamAnswer,
        maxLine: this.#host.maxLine,
        counts: stats,
      });
      // What came with the PROXY header is pushed once; from then on only the socket is read.
      if (carried !== null) session.push(carried);
      let buffer = this.#buffer;
      let ended = false;
      let reason: CloseReason;
      for (;;) {
        let out = session.pull();
        if (out.length > 0) {
          do {
            table.enter(this, "writing");
            const written = await conn.write(out);
            if (written < out.length) await writeAll(conn, out, written);
            stats.bytesSent += out.length;
            out = session.pull();
          } while (out.length > 0);
          table.enter(this, "reading");
        }
        if (ended) return this.#end("closed by client");
        if (session.closing || stopping.aborted) {
          reason = session.closing ? "quit" : "shutdown";
          break;
        }
        const n = await conn.read(buffer);
        if (n === null) {
          session.end();
          ended = true;
        } else {
          stats.bytesReceived += n;
          session.push(buffer, n);
          if (n === buffer.length && buffer.length < MAX_READ_SIZE) {
            // A full read means the client sends faster than one read takes: read more at
            // once. The session is done with the old buffer after this push's answers.
            this.#buffer = buffer = new Uint8Array(buffer.length * 4);
          }
        }
      }
      await this.#linger();
      this.#end(reason);
    } catch (error) {
      this.#end(this.#failed(error));
    }
  }

  /**
   * Sends FIN after the last answer, then reads and discards what the client still
   * sends until it closes too: closing a socket with unread input makes the kernel send
   * a reset, which can destroy answers the client has not read yet. The sweep bounds
   * the wait.
   */
  async #linger(): Promise<void> {
    this.#host.table.enter(this, "lingering");
    await this.conn.closeWrite();
    let discarded = 0;
    while (discarded < LINGER_MAX_BYTES) {
      const n = await this.conn.read(this.#buffer);
      if (n === null) return;
      discarded += n;
    }
  }

  /** Why the connection ended, from the error its loop threw. */
  #failed(error: unknown): CloseReason {
    if (this.state === "closed") return this.reason ?? "error";
    const reason = disconnectReason(error);
    if (reason === "reset") this.#host.stats.closedReset++;
    if (reason !== null) return reason === "eof" ? "closed by client" : "reset";
    this.#host.logger.error("connection failed", {
      peer: this.peer(),
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
    return "error";
  }
}
