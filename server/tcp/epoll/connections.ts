// The epoll engine's connections, from accept to close: admission, the PROXY header, the lingering
// close and why each ended; the line protocol itself is lines.ts.

import type { Epoll } from "../../../lib/epoll.ts";
import { EPOLLIN } from "../../../lib/epoll.ts";
import type { CloseReason } from "../connections.ts";
import {
  ADMITTING,
  BAD_HEADER,
  BUSY,
  DescriptorCalls,
  Descriptors,
  FREE,
  HEADER,
  LINES,
  LINGER,
  LINGER_REASONS,
  MADE_ROOM,
  MAKING_ROOM,
  PER_CLIENT,
} from "./descriptors.ts";
import { EpollLines } from "./lines.ts";
import type { Libc } from "../../../lib/libc.ts";
import { clientHost, formatAddress } from "../../../lib/net.ts";
import {
  ERR_BUSY_EVICTED,
  ERR_IDLE_EVICTED,
  ERR_SERVER_BUSY,
  ERR_TOO_MANY_CONNECTIONS,
} from "../../../protocol.ts";
import { parseProxyHeader, PROXY_HEADER_MAX } from "../proxy.ts";
import { ERRNO, SHUT_WR } from "../../../lib/sockets.ts";
import { LINGER_MAX_BYTES, MAX_READ_SIZE, type TcpHost } from "../host.ts";

/**
 * The connections of one epoll loop. What is kept of an idle connection is 16 bytes in
 * typed arrays indexed by descriptor ({@linkcode Descriptors}): no object, no pending
 * operation. Every decision of policy is the host's; this is the I/O around it.
 */
export class EpollConnections {
  readonly #c: Libc;
  readonly #host: TcpHost;
  readonly #epoll: Epoll;
  readonly #released: () => void;
  readonly #fds = new Descriptors();
  readonly #calls: DescriptorCalls;
  readonly #lines: EpollLines;
  readonly #discardBuffer = new Uint8Array(MAX_READ_SIZE);
  #count = 0;

  /** @param released Called after each connection's descriptor is closed. */
  constructor(c: Libc, host: TcpHost, epoll: Epoll, released: () => void) {
    this.#c = c;
    this.#host = host;
    this.#epoll = epoll;
    this.#released = released;
    this.#calls = new DescriptorCalls(c);
    this.#lines = new EpollLines(host, this.#calls, this.#fds, epoll, {
      linger: (fd, reason) => this.#linger(fd, reason),
      closedByClient: (fd) => this.#end(fd, "closed by client"),
      madeRoom: (fd) => this.makeRoom(fd),
      failed: (fd, code) => this.#failed(fd, code),
    });
  }

  /** How many connections are held. */
  get count(): number {
    return this.#count;
  }

  /** Takes `fd`, just accepted, into `slot` with a new `generation`, waiting to be admitted. */
  begin(fd: number, slot: number, generation: number): void {
    const fds = this.#fds;
    fds.ensure(fd);
    fds.mode[fd] = ADMITTING;
    fds.generation[fd] = generation;
    fds.slotOf[fd] = slot;
    this.#count++;
    // A socket the client has closed has no peer to ask for: the debug log keeps it.
    if (this.#host.debug) fds.peers[fd] = this.#calls.peer(fd);
  }

  /** Whether `fd` still holds the connection that `generation` was given to, not yet admitted. */
  admitting(fd: number, generation: number): boolean {
    return this.#fds.mode[fd] === ADMITTING && this.#fds.generation[fd] === generation;
  }

  /** Serves an admitted connection; `address` is its client's (null: PROXY header to come). */
  serve(fd: number, address: string | null): void {
    const fds = this.#fds, slot = fds.slotOf[fd];
    this.#host.opened(slot);
    if (!this.#epoll.add(fd, EPOLLIN, fds.generation[fd])) return this.#end(fd, "error");
    if (address !== null) return this.#admitted(fd, address, null, 0);
    fds.mode[fd] = HEADER;
    this.#host.table.enter(slot, "header");
  }

  /**
   * Refuses a connection the host could not admit: `ERR server busy`, then the lingering
   * close, so that requests it sent first do not turn the close into a reset.
   */
  refuse(fd: number): void {
    this.#host.refused(this.#fds.slotOf[fd], () => this.peer(fd));
    if (!this.#epoll.add(fd, EPOLLIN, this.#fds.generation[fd])) return this.#end(fd, "busy");
    this.#send(fd, ERR_SERVER_BUSY);
    this.#linger(fd, BUSY);
  }

  /** Handles an event for `fd`; events for a descriptor since closed or reused are ignored. */
  ready(fd: number, generation: number): void {
    const fds = this.#fds;
    if (fd >= fds.mode.length || fds.generation[fd] !== generation) return;
    const mode = fds.mode[fd];
    if (fds.pending[fd] !== undefined) this.#lines.flush(fd);
    else if (mode === LINES) this.#lines.read(fd);
    else if (mode === LINGER) this.#discard(fd);
    else if (mode === HEADER) this.#readHeader(fd);
  }

  /** Closes `fd` now, with the reason the table recorded. */
  close(fd: number): void {
    if (this.#fds.mode[fd] !== FREE) this.#end(fd, "error");
  }

  /** Tells `fd` why it is closed to make room, and closes it. */
  evict(fd: number): void {
    this.#send(fd, ERR_IDLE_EVICTED);
    this.#end(fd, "evicted");
  }

  /** Closes `fd` to make room: the answers owed, `ERR busy, closed to make room`, the linger. */
  makeRoom(fd: number): void {
    const fds = this.#fds, mode = fds.mode[fd];
    if (mode !== LINES && mode !== MAKING_ROOM) return;
    if (fds.pending[fd] !== undefined) return void (fds.mode[fd] = MAKING_ROOM);
    this.#send(fd, ERR_BUSY_EVICTED);
    this.#linger(fd, MADE_ROOM);
  }

  /** The client's address for logs: the PROXY header's when there is one. */
  peer(fd: number): string {
    const proxied = this.#fds.proxied[fd];
    if (proxied !== undefined) return formatAddress({ transport: "tcp", ...proxied });
    return this.#fds.peers[fd] ?? this.#calls.peer(fd);
  }

  /** Counts the connection under its client's address and answers it, or refuses it. */
  #admitted(fd: number, address: string, carried: Uint8Array | null, n: number): void {
    const host = this.#host, fds = this.#fds, slot = fds.slotOf[fd];
    if (host.debug) {
      const via = fds.proxied[fd] === undefined ? undefined : fds.peers[fd];
      host.logger.debug("connection opened", { peer: this.peer(fd), via });
    }
    const verdict = host.admitAddress(slot, address, () => this.peer(fd));
    if (verdict === "denied") return this.#end(fd, "denied");
    if (verdict !== "served") {
      const busy = verdict === "busy";
      this.#send(fd, busy ? ERR_SERVER_BUSY : ERR_TOO_MANY_CONNECTIONS);
      return this.#linger(fd, busy ? BUSY : PER_CLIENT);
    }
    fds.mode[fd] = LINES;
    host.table.enter(slot, "reading");
    if (carried !== null) this.#lines.carried(fd, carried, n);
  }

  /** Reads the PROXY header, into a buffer that exists only while it arrives. */
  #readHeader(fd: number): void {
    const host = this.#host, fds = this.#fds;
    const header = fds.headers[fd] ??= new Uint8Array(PROXY_HEADER_MAX);
    const have = fds.headerLength[fd];
    const n = this.#calls.read(fd, header.subarray(have));
    if (n < 0) return this.#failed(fd, this.#calls.errno());
    if (n === 0) {
      host.stats.closedProxyHeader++;
      return this.#end(fd, "no valid PROXY header");
    }
    host.stats.bytesReceived += n;
    const length = fds.headerLength[fd] = have + n;
    const parsed = parseProxyHeader(header, length);
    if (parsed.status === "incomplete") return;
    fds.headers[fd] = undefined;
    if (parsed.status !== "ok") {
      if (parsed.status === "invalid" && host.debug) {
        host.logger.debug("bad PROXY header", { peer: this.peer(fd), error: parsed.reason });
      }
      host.stats.closedProxyHeader++;
      // What the client sent after it must not turn the close into a reset.
      return this.#linger(fd, BAD_HEADER);
    }
    if (parsed.source !== undefined && host.debug) fds.proxied[fd] = parsed.source;
    const address = parsed.source?.hostname ?? this.#calls.peerHost(fd) ?? "?";
    const carried = length > parsed.length ? header.subarray(parsed.length, length) : null;
    this.#admitted(fd, clientHost(address), carried, length - parsed.length);
  }

  /**
   * Sends FIN after the last answer, then reads and discards what the client still
   * sends until it closes too: closing a socket with unread input makes the kernel send
   * a reset, which can destroy answers the client has not read yet. The sweep bounds
   * the wait.
   */
  #linger(fd: number, reason: number): void {
    const fds = this.#fds;
    fds.mode[fd] = LINGER;
    fds.lingerReason[fd] = reason;
    fds.discarded[fd] = 0;
    this.#c.shutdown(fd, SHUT_WR);
    this.#host.table.enter(fds.slotOf[fd], "lingering");
  }

  #discard(fd: number): void {
    const n = this.#calls.read(fd, this.#discardBuffer);
    if (n < 0) return this.#failed(fd, this.#calls.errno());
    const fds = this.#fds;
    if (n === 0 || (fds.discarded[fd] += n) >= LINGER_MAX_BYTES) {
      this.#end(fd, LINGER_REASONS[fds.lingerReason[fd]]);
    }
  }

  /** A read or send failed with `code`: nothing (it would block), or the end of the connection. */
  #failed(fd: number, code: number): void {
    if (code === ERRNO.EAGAIN || code === ERRNO.EINTR) return;
    const slot = this.#fds.slotOf[fd];
    if (code === ERRNO.ECONNRESET || code === ERRNO.EPIPE) {
      // After the server's last word nothing can be lost: see failureReason (deno engine).
      if (this.#fds.mode[fd] === LINGER) return this.#end(fd, "closed by client");
      if (this.#host.table.state(slot) !== "closed") this.#host.stats.closedReset++;
      return this.#end(fd, "reset");
    }
    if (code === ERRNO.ENOTCONN || code === ERRNO.ETIMEDOUT) return this.#end(fd, "reset");
    this.#host.logger.error("connection failed", { peer: this.peer(fd), error: `errno ${code}` });
    this.#end(fd, "error");
  }

  /** Ends the connection: the table records why, the host counts it, the descriptor closes. */
  #end(fd: number, reason: CloseReason): void {
    const slot = this.#fds.slotOf[fd];
    const table = this.#host.table;
    reason = table.reason(slot) ?? reason;
    table.close(slot, reason, false);
    this.#host.ended(slot, reason);
    this.#release(fd);
  }

  #release(fd: number): void {
    this.#c.close(fd);
    this.#fds.clear(fd);
    this.#count--;
    this.#released();
  }

  /** Sends a short line that fits in any socket buffer, without waiting. */
  #send(fd: number, line: Uint8Array): void {
    const sent = this.#calls.send(fd, line);
    if (sent > 0) this.#host.stats.bytesSent += sent;
  }
}
