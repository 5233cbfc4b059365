// One connection of the Deno.listen engine: the PROXY header, the read/answer/write loop, lingering close, and why it ended.

import { RoughtimeSession } from "../../roughtime/tcp_session.ts";
import type { CloseReason } from "../connections.ts";
import { clientHost, formatAddress, writeAll } from "../../../lib/net.ts";
import {
  ERR_BUSY_EVICTED,
  ERR_SERVER_BUSY,
  ERR_TOO_MANY_CONNECTIONS,
  Session,
} from "../../../protocol.ts";
import { parseProxyHeader, type ProxiedAddress, PROXY_HEADER_MAX } from "../proxy.ts";
import { ONE_ANSWER_COUNTERS, type ServerStats } from "../../stats.ts";
import { LINGER_MAX_BYTES, MAX_READ_SIZE, type TcpHost, type TcpService } from "../host.ts";

/** Bytes of the read buffer a connection starts with; grown for clients that pipeline. */
const INITIAL_READ_SIZE = 256;

/**
 * Reads a PROXY header into `buffer`, grown as needed up to {@linkcode PROXY_HEADER_MAX}.
 * Resolves with the buffer and, for a good header, its source and what came after it
 * (null: nothing), to be pushed once; `carried` is false for a bad header (counted, and
 * logged at debug) and undefined when the client closed first. The sweep bounds the wait.
 */
async function readProxyHeader(
  conn: Deno.TcpConn,
  buffer: Uint8Array<ArrayBuffer>,
  host: TcpHost,
  peer: () => string,
): Promise<{
  buffer: Uint8Array<ArrayBuffer>;
  source: ProxiedAddress | null;
  carried?: Uint8Array | null | false;
}> {
  let length = 0;
  for (;;) {
    if (length === buffer.length) {
      const grown = new Uint8Array(Math.min(PROXY_HEADER_MAX, buffer.length * 4));
      grown.set(buffer);
      buffer = grown;
    }
    const n = await conn.read(buffer.subarray(length));
    if (n === null) {
      host.stats.closedProxyHeader++;
      return { buffer, source: null };
    }
    host.stats.bytesReceived += n;
    length += n;
    const header = parseProxyHeader(buffer, length);
    if (header.status === "incomplete") continue;
    if (header.status === "ok") {
      const carried = length > header.length ? buffer.subarray(header.length, length) : null;
      return { buffer, source: header.source ?? null, carried };
    }
    if (host.debug) host.logger.debug("bad PROXY header", { peer: peer(), error: header.reason });
    host.stats.closedProxyHeader++;
    return { buffer, source: null, carried: false };
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
 * Sends FIN after the last answer, then reads and discards what the client still sends
 * until it closes too: closing a socket with unread input makes the kernel send a reset,
 * which can destroy answers the client has not read yet.
 */
async function linger(conn: Deno.TcpConn, buffer: Uint8Array): Promise<void> {
  await conn.closeWrite();
  await discard(conn, buffer);
}

/** Reads and discards what the client sends until it closes, {@linkcode LINGER_MAX_BYTES} at most. */
async function discard(conn: Deno.TcpConn, buffer: Uint8Array): Promise<void> {
  let discarded = 0;
  while (discarded < LINGER_MAX_BYTES) {
    const n = await conn.read(buffer);
    if (n === null) return;
    discarded += n;
  }
}

/** Tells a connection closed to make room why (`ERR busy, closed to make room`), then sends FIN. */
async function farewell(conn: Deno.TcpConn, stats: ServerStats): Promise<void> {
  await writeAll(conn, ERR_BUSY_EVICTED);
  stats.bytesSent += ERR_BUSY_EVICTED.length;
  await conn.closeWrite();
}

/**
 * Why a connection ended, from the error its loop threw: the reason the server gave if
 * it closed it first, a disconnection (a reset is counted), or a bug, which is logged.
 */
function failureReason(
  host: TcpHost,
  slot: number,
  error: unknown,
  peer: () => string,
): CloseReason {
  const state = host.table.state(slot);
  if (state === "closed") return host.table.reason(slot) ?? "error";
  const reason = disconnectReason(error);
  // After the server's last word nothing can be lost: a client that resets then (as
  // HAProxy's health checks end, to leave no TIME-WAIT) has simply closed.
  if (state === "lingering" && reason !== null) return "closed by client";
  if (reason === "reset") host.stats.closedReset++;
  if (reason !== null) return reason === "eof" ? "closed by client" : "reset";
  host.logger.error("connection failed", {
    peer: peer(),
    error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  });
  return "error";
}

/**
 * One accepted connection, counted against the limits, served by {@linkcode Connection.serve}
 * until the client quits or goes, or the server closes it.
 */
export class Connection {
  readonly conn: Deno.TcpConn;
  /** Its slot in the host's table, which keeps its state and counts. */
  readonly slot: number;
  readonly service: TcpService;
  /** The real client, from the PROXY header; null: the socket's peer. */
  proxied: ProxiedAddress | null = null;
  readonly #host: TcpHost;
  readonly #onEnd: (connection: Connection) => void;
  #buffer = new Uint8Array(INITIAL_READ_SIZE);
  /** Closing to make room: true while the answers owed are sent, or the farewell under way. */
  #makingRoom: boolean | Promise<void> = false;

  /** @param onEnd Called once, after `host.ended`, when the connection is done with. */
  constructor(
    conn: Deno.TcpConn,
    slot: number,
    host: TcpHost,
    service: TcpService,
    onEnd: (connection: Connection) => void,
  ) {
    this.conn = conn;
    this.slot = slot;
    this.service = service;
    this.#host = host;
    this.#onEnd = onEnd;
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
    this.#host.table.enter(this.slot, "header");
    let read;
    try {
      read = await readProxyHeader(this.conn, this.#buffer, this.#host, () => this.peer());
    } catch (error) {
      return this.#end(this.#failed(error));
    }
    this.#buffer = read.buffer;
    if (read.carried === undefined) return this.#end("no valid PROXY header");
    // What the client sent after a bad one must not turn the close into a reset.
    if (read.carried === false) {
      return void this.#sendAndClose(null, "no valid PROXY header", { writing: false });
    }
    this.proxied = read.source;
    this.#admitted(read.carried);
  }

  /**
   * Tells a connection the server could not admit `ERR server busy`, then the lingering
   * close, so that requests it sent first do not turn the close into a reset.
   */
  refuse(): void {
    void this.#sendAndClose(ERR_SERVER_BUSY, "busy", { writing: false });
  }

  /**
   * Closes it to make room: `ERR busy, closed to make room` after the answers owed, then
   * the linger. One `waiting` for a request hears it at once; what it sends then is unread.
   */
  makeRoom(waiting: boolean): void {
    this.#makingRoom = waiting ? farewell(this.conn, this.#host.stats).catch(() => {}) : true;
  }

  /**
   * Counts the connection under its client's address, then answers it, or refuses it
   * past the per-client limit. Each path is one async function that ends the connection
   * itself: one suspended frame per idle connection, not a chain of them, since each
   * frame held is memory per connection.
   */
  #admitted(carried: Uint8Array | null): void {
    const host = this.#host;
    const via = this.proxied && host.debug ? formatAddress(this.conn.remoteAddr) : undefined;
    if (host.debug) host.logger.debug("connection opened", { peer: this.peer(), via });
    const address = clientHost(this.proxied?.hostname ?? this.conn.remoteAddr.hostname);
    const verdict = host.admitAddress(this.slot, address, () => this.peer());
    if (verdict === "denied") return this.#end("denied");
    if (verdict !== "served") {
      const [line, reason] = verdict === "busy"
        ? [ERR_SERVER_BUSY, "busy" as const]
        : [ERR_TOO_MANY_CONNECTIONS, "per-client limit" as const];
      return void this.#sendAndClose(line, reason, { writing: false });
    }
    if (this.service === "daytime" || this.service === "time") {
      const answer = this.service === "daytime" ? host.daytimeAnswer : host.rfc868Answer;
      return void this.#sendAndClose(answer.current(), "answered", {
        writing: true,
        counter: ONE_ANSWER_COUNTERS[this.service].answered,
      });
    }
    this.#host.table.enter(this.slot, "reading");
    this.#answer(carried);
  }

  /**
   * Sends one answer (or none: null), then the lingering close: Daytime and Time answer at
   * once whatever the client sends (RFC 867 and 868 ignore it), a client past the
   * per-address limit hears why, and one with a bad PROXY header hears nothing. Either
   * answer fits in any socket buffer. `counter` grows once it is written.
   */
  async #sendAndClose(
    bytes: Uint8Array | null,
    reason: CloseReason,
    options: { writing: boolean; counter?: keyof ServerStats },
  ): Promise<void> {
    try {
      if (options.writing) this.#host.table.enter(this.slot, "writing");
      if (bytes !== null) {
        const written = await this.conn.write(bytes);
        if (written < bytes.length) await writeAll(this.conn, bytes, written);
        this.#host.stats.bytesSent += bytes.length;
      }
      if (options.counter) this.#host.stats[options.counter]++;
      await this.#linger();
      this.#end(reason);
    } catch (error) {
      this.#end(this.#failed(error));
    }
  }

  #end(reason: CloseReason): void {
    const table = this.#host.table;
    reason = table.reason(this.slot) ?? reason;
    table.close(this.slot, reason);
    this.#host.ended(this.slot, reason);
    this.#onEnd(this);
  }

  /**
   * The hot path: read into the reused buffer, push into the session, write all its
   * answers in one write, and wait for that before reading again (back-pressure). Then,
   * unless the client closed first, the lingering close.
   */
  async #answer(carried: Uint8Array | null): Promise<void> {
    try {
      const { table, stats, stopping } = this.#host;
      const slot = this.slot;
      const conn = this.conn;
      const { jamAnswer: time, maxLine } = this.#host;
      const session = this.service === "roughtime"
        ? new RoughtimeSession(this.#host.roughtime!)
        : new Session({ time, maxLine, counts: stats });
      // What came with the PROXY header is pushed once; from then on only the socket is read.
      if (carried !== null) session.push(carried);
      let buffer = this.#buffer;
      let ended = false;
      for (;;) {
        let out = session.pull();
        if (out.length > 0) {
          do {
            table.enter(slot, "writing");
            const written = await conn.write(out);
            if (written < out.length) await writeAll(conn, out, written);
            stats.bytesSent += out.length;
            out = session.pull();
          } while (out.length > 0);
          table.enter(slot, "reading");
        }
        if (ended) return this.#end("closed by client");
        if (this.#makingRoom !== false || session.closing || stopping.aborted) break;
        const n = await conn.read(buffer);
        // Sent after the server chose to close it: the farewell is out already, unread.
        if (this.#makingRoom !== false) break;
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
      const making = this.#makingRoom;
      if (making === false) await this.#linger();
      else {
        // Closed to make room: the farewell after the answers owed, or the one under way.
        await (making === true ? farewell(conn, stats) : making);
        await discard(conn, this.#buffer);
      }
      // The table's reason comes first: "made room" where it was.
      this.#end(session.closing ? "quit" : "shutdown");
    } catch (error) {
      this.#end(this.#failed(error));
    }
  }

  /** The lingering close: see {@linkcode linger}. The sweep bounds the wait. */
  #linger(): Promise<void> {
    this.#host.table.enter(this.slot, "lingering");
    return linger(this.conn, this.#buffer);
  }

  #failed(error: unknown): CloseReason {
    return failureReason(this.#host, this.slot, error, () => this.peer());
  }
}
