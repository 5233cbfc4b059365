// The epoll engine's connections: the line protocol over non-blocking descriptors, with each
// connection's state in typed arrays by descriptor, and objects only while one holds something.

import type { Epoll } from "./epoll.ts";
import { EPOLLIN, EPOLLOUT } from "./epoll.ts";
import type { CloseReason } from "./connections.ts";
import type { Libc } from "../lib/libc.ts";
import { clientHost, formatAddress } from "../lib/net.ts";
import {
  ERR_IDLE_EVICTED,
  ERR_SERVER_BUSY,
  ERR_TOO_MANY_CONNECTIONS,
  Session,
  TIME_ANSWER_LENGTH,
} from "../protocol.ts";
import { parseProxyHeader, type ProxiedAddress, PROXY_HEADER_MAX } from "./proxy.ts";
import { ERRNO, SHUT_WR, SOCKADDR_SLOT, sockaddrHost, sockaddrPort } from "../lib/sockets.ts";
import { LINGER_MAX_BYTES, MAX_READ_SIZE, type TcpHost } from "./tcp_host.ts";

/** What a descriptor is doing; `FREE` for one this engine does not hold. */
const FREE = 0;
/** Accepted, waiting to be admitted (other workers asked for room). */
const ADMITTING = 1;
const HEADER = 2;
const LINES = 3;
/** The client half-closed: answer what it sent, then close. */
const LAST = 4;
const LINGER = 5;
/** Why a lingering connection closes when its client does. */
const LINGER_REASONS: readonly CloseReason[] = [
  "quit",
  "shutdown",
  "per-client limit",
  "no valid PROXY header",
  "busy",
];
const QUIT = 0, SHUTDOWN = 1, PER_CLIENT = 2, BAD_HEADER = 3, BUSY = 4;
/** send(2) flags: no SIGPIPE for a client that went away, and never block. */
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const READ_SIZE = BigInt(MAX_READ_SIZE);
/** Lengths as BigInt, each made once: every BigInt is an allocation, and each send takes one. */
const LENGTHS: bigint[] = [];
const big = (n: number): bigint => LENGTHS[n] ??= BigInt(n);

/** The most `TIME` lines answered in one send by the fast path: the session's output limit. */
const MAX_TIME_RUN = Math.floor(16384 / TIME_ANSWER_LENGTH);

/**
 * How many `TIME\r\n` lines the `n` bytes read are, when they are nothing else (a
 * client asking, or pipelining, in the usual way); 0 otherwise, or past
 * {@linkcode MAX_TIME_RUN}. The session would answer these the same.
 */
function timeLines(b: Uint8Array, n: number): number {
  const lines = n / 6;
  if (n % 6 !== 0 || lines > MAX_TIME_RUN) return 0;
  for (let i = 0; i < n; i += 6) {
    if (
      b[i] !== 0x54 || b[i + 1] !== 0x49 || b[i + 2] !== 0x4d || b[i + 3] !== 0x45 ||
      b[i + 4] !== 0x0d || b[i + 5] !== 0x0a
    ) return 0;
  }
  return lines;
}

/**
 * The connections of one epoll loop. What is kept of an idle connection is 16 bytes in
 * typed arrays indexed by descriptor: no object, no pending operation. A connection gets
 * a `Session` of its own only while it holds a partial line or answers wait to be sent;
 * otherwise its bytes go through one shared idle session. The policies are the host's.
 */
export class EpollConnections {
  readonly #c: Libc;
  readonly #host: TcpHost;
  readonly #epoll: Epoll;
  readonly #released: () => void;
  #mode = new Uint8Array(1024);
  #generation = new Uint32Array(1024);
  #slotOf = new Int32Array(1024);
  /** While lingering: the reason it ends with, and the bytes discarded. */
  #lingerReason = new Uint8Array(1024);
  #discarded = new Uint32Array(1024);
  #headerLength = new Uint16Array(1024);
  /** Sparse, by descriptor: only connections that hold something have an entry. */
  readonly #sessions: (Session | undefined)[] = [];
  readonly #pending: (Uint8Array | undefined)[] = [];
  readonly #headers: (Uint8Array | undefined)[] = [];
  /** The client (the PROXY header's, and the socket's), kept for the debug log only. */
  readonly #proxied: (ProxiedAddress | undefined)[] = [];
  readonly #peers: (string | undefined)[] = [];
  readonly #sparse: unknown[][] = [
    this.#sessions,
    this.#pending,
    this.#headers,
    this.#proxied,
    this.#peers,
  ];
  #idle: Session;
  readonly #buffer = new Uint8Array(MAX_READ_SIZE);
  readonly #address = new Uint8Array(SOCKADDR_SLOT);
  readonly #addressLength = new Uint32Array(1);
  readonly #errnoCell = new Int32Array(1);
  readonly #errnoAt: bigint;
  #count = 0;

  /** @param released Called after each connection's descriptor is closed. */
  constructor(c: Libc, host: TcpHost, epoll: Epoll, released: () => void) {
    this.#c = c;
    this.#host = host;
    this.#epoll = epoll;
    this.#released = released;
    this.#idle = this.#newSession();
    // errno's address is the calling thread's: this engine calls libc from one thread.
    this.#errnoAt = BigInt(c.__errno_location());
  }

  /** How many connections are held. */
  get count(): number {
    return this.#count;
  }

  /** Takes `fd`, just accepted, into `slot` with a new `generation`, waiting to be admitted. */
  begin(fd: number, slot: number, generation: number): void {
    if (fd >= this.#mode.length) this.#grow(fd);
    this.#mode[fd] = ADMITTING;
    this.#generation[fd] = generation;
    this.#slotOf[fd] = slot;
    this.#count++;
    // A socket the client has closed has no peer to ask for: the debug log keeps it.
    if (this.#host.debug) this.#peers[fd] = this.#socketPeer(fd);
  }

  /** Whether `fd` still holds the connection that `generation` was given to, not yet admitted. */
  admitting(fd: number, generation: number): boolean {
    return this.#mode[fd] === ADMITTING && this.#generation[fd] === generation;
  }

  /** Serves an admitted connection; `address` is its client's (null: PROXY header to come). */
  serve(fd: number, address: string | null): void {
    const slot = this.#slotOf[fd];
    this.#host.opened(slot);
    if (!this.#epoll.add(fd, EPOLLIN, this.#generation[fd])) return this.#end(fd, "error");
    if (address !== null) return this.#admitted(fd, slot, address, null, 0);
    this.#mode[fd] = HEADER;
    this.#host.table.enter(slot, "header");
  }

  /**
   * Refuses a connection the host could not admit: `ERR server busy`, then the lingering
   * close, so that requests it sent first do not turn the close into a reset.
   */
  refuse(fd: number): void {
    this.#host.refused(this.#slotOf[fd], () => this.peer(fd));
    if (!this.#epoll.add(fd, EPOLLIN, this.#generation[fd])) return this.#end(fd, "busy");
    this.#send(fd, ERR_SERVER_BUSY);
    this.#linger(fd, BUSY);
  }

  /** Handles an event for `fd`; events for a descriptor since closed or reused are ignored. */
  ready(fd: number, generation: number): void {
    if (fd >= this.#mode.length || this.#generation[fd] !== generation) return;
    const mode = this.#mode[fd];
    if (this.#pending[fd] !== undefined) this.#flush(fd);
    else if (mode === LINES) this.#readLines(fd);
    else if (mode === LINGER) this.#discard(fd);
    else if (mode === HEADER) this.#readHeader(fd);
  }

  /** Closes `fd` now, with the reason the table recorded. */
  close(fd: number): void {
    if (this.#mode[fd] !== FREE) this.#end(fd, "error");
  }

  /** Tells `fd` why it is closed to make room, and closes it. */
  evict(fd: number): void {
    this.#send(fd, ERR_IDLE_EVICTED);
    this.#end(fd, "evicted");
  }

  /** The client's address for logs: the PROXY header's when there is one. */
  peer(fd: number): string {
    const proxied = this.#proxied[fd];
    if (proxied !== undefined) return formatAddress({ transport: "tcp", ...proxied });
    return this.#peers[fd] ?? this.#socketPeer(fd);
  }

  /** The socket's peer, asked of the kernel. */
  #socketPeer(fd: number): string {
    if (!this.#peerAddress(fd)) return "?";
    const port = sockaddrPort(this.#address, 0);
    return formatAddress({ transport: "tcp", hostname: sockaddrHost(this.#address, 0), port });
  }

  /** Counts the connection under its client's address and answers it, or refuses it. */
  #admitted(fd: number, slot: number, address: string, carried: Uint8Array | null, n: number) {
    const host = this.#host;
    if (host.debug) {
      const via = this.#proxied[fd] === undefined ? undefined : this.#peers[fd];
      host.logger.debug("connection opened", { peer: this.peer(fd), via });
    }
    if (!host.access.open && !host.access.allows(address)) {
      host.stats.closedDenied++;
      return this.#end(fd, "denied");
    }
    if (!host.limits.takeAddress(slot, address)) {
      host.stats.refusedPerIp++;
      this.#send(fd, ERR_TOO_MANY_CONNECTIONS);
      return this.#linger(fd, PER_CLIENT);
    }
    this.#mode[fd] = LINES;
    host.table.enter(slot, "reading");
    if (carried !== null) {
      this.#idle.push(carried, n);
      this.#answer(fd, this.#idle);
    }
  }

  /** The hot path: one read into the shared buffer, and its answers sent at once. */
  #readLines(fd: number): void {
    const n = this.#c.read(fd, this.#buffer, READ_SIZE);
    if (n > 0) {
      this.#host.stats.bytesReceived += n;
      const own = this.#sessions[fd];
      if (own === undefined) {
        const lines = timeLines(this.#buffer, n);
        if (lines > 0) return this.#answerTime(fd, lines);
      }
      const session = own ?? this.#idle;
      session.push(this.#buffer, n);
      return this.#answer(fd, session);
    }
    if (n < 0) return this.#failed(fd);
    const session = this.#sessions[fd];
    if (session === undefined) return this.#end(fd, "closed by client");
    // The client half-closed: its unterminated last line is answered too.
    this.#mode[fd] = LAST;
    session.end();
    this.#answer(fd, session);
  }

  /**
   * Sends every answer `session` owes. A send the kernel cannot take whole stops
   * reading this client until it is taken (back-pressure); what it has not read is
   * kept in a copy. Then lingers after QUIT or a shutdown, or closes after a half-close.
   */
  #answer(fd: number, session: Session): void {
    const host = this.#host;
    const slot = this.#slotOf[fd];
    let answered = false;
    for (let out = session.pull(); out.length > 0; out = session.pull()) {
      answered = true;
      const sent = this.#c.send(fd, out, big(out.length), MSG_NOSIGNAL);
      if (sent === out.length) {
        host.stats.bytesSent += sent;
        continue;
      }
      if (sent < 0 && this.#errno() !== ERRNO.EAGAIN) return this.#failed(fd, this.#errnoCell[0]);
      session.retain();
      this.#keep(fd, session);
      return this.#wait(fd, out.slice(Math.max(0, sent)), Math.max(0, sent));
    }
    if (answered) host.table.enter(slot, "reading");
    if (session.closing || host.stopping.aborted) {
      this.#drop(fd, session);
      return this.#linger(fd, session.closing ? QUIT : SHUTDOWN);
    }
    if (this.#mode[fd] === LAST) return this.#end(fd, "closed by client");
    if (session.idle) this.#drop(fd, session);
    else this.#keep(fd, session);
  }

  /**
   * Answers a read that was `lines` whole `TIME` lines, the common request, as the
   * session would: the same counter and the same shared answers, without framing them.
   */
  #answerTime(fd: number, lines: number): void {
    const host = this.#host;
    host.stats.requestsTime += lines;
    const out = host.jamAnswer.repeated(lines);
    const sent = this.#c.send(fd, out, big(out.length), MSG_NOSIGNAL);
    if (sent !== out.length) {
      // Rare: the client stopped reading. The general path takes over from here.
      if (sent < 0 && this.#errno() !== ERRNO.EAGAIN) return this.#failed(fd, this.#errnoCell[0]);
      this.#sessions[fd] = this.#newSession();
      return this.#wait(fd, out.slice(Math.max(0, sent)), Math.max(0, sent));
    }
    host.stats.bytesSent += sent;
    host.table.enter(this.#slotOf[fd], "reading");
    if (host.stopping.aborted) this.#linger(fd, SHUTDOWN);
  }

  /** Stops reading `fd` until `rest` is sent: back-pressure. `sent` bytes went already. */
  #wait(fd: number, rest: Uint8Array, sent: number): void {
    this.#host.stats.bytesSent += sent;
    this.#pending[fd] = rest;
    this.#host.table.enter(this.#slotOf[fd], "writing");
    this.#epoll.modify(fd, EPOLLOUT, this.#generation[fd]);
  }

  /** Sends what waits for a client that had stopped reading; then reads it again. */
  #flush(fd: number): void {
    const out = this.#pending[fd]!;
    const sent = this.#c.send(fd, out, big(out.length), MSG_NOSIGNAL);
    if (sent < 0) {
      if (this.#errno() !== ERRNO.EAGAIN) this.#failed(fd, this.#errnoCell[0]);
      return;
    }
    this.#host.stats.bytesSent += sent;
    if (sent < out.length) {
      this.#pending[fd] = out.subarray(sent);
      return;
    }
    this.#pending[fd] = undefined;
    this.#epoll.modify(fd, EPOLLIN, this.#generation[fd]);
    this.#host.table.enter(this.#slotOf[fd], "reading");
    this.#answer(fd, this.#sessions[fd]!);
  }

  /** Gives `fd` the session that holds its bytes; a shared one is replaced by a new one. */
  #keep(fd: number, session: Session): void {
    if (session !== this.#idle) return;
    this.#sessions[fd] = session;
    this.#idle = this.#newSession();
  }

  /** Lets go of `fd`'s session: back to the shared idle one. */
  #drop(fd: number, session: Session): void {
    if (session === this.#idle) {
      if (!session.idle) this.#idle = this.#newSession();
    } else this.#sessions[fd] = undefined;
  }

  /** Reads the PROXY header, into a buffer that exists only while it arrives. */
  #readHeader(fd: number): void {
    const host = this.#host;
    const header = this.#headers[fd] ??= new Uint8Array(PROXY_HEADER_MAX);
    const have = this.#headerLength[fd];
    const n = this.#c.read(fd, header.subarray(have), BigInt(PROXY_HEADER_MAX - have));
    if (n < 0) return this.#failed(fd);
    if (n === 0) {
      host.stats.closedProxyHeader++;
      return this.#end(fd, "no valid PROXY header");
    }
    host.stats.bytesReceived += n;
    const length = this.#headerLength[fd] = have + n;
    const parsed = parseProxyHeader(header, length);
    if (parsed.status === "incomplete") return;
    this.#headers[fd] = undefined;
    if (parsed.status !== "ok") {
      if (parsed.status === "invalid" && host.debug) {
        host.logger.debug("bad PROXY header", { peer: this.peer(fd), error: parsed.reason });
      }
      host.stats.closedProxyHeader++;
      // What the client sent after it must not turn the close into a reset.
      return this.#linger(fd, BAD_HEADER);
    }
    if (parsed.source !== undefined && host.debug) this.#proxied[fd] = parsed.source;
    const address = parsed.source?.hostname ??
      (this.#peerAddress(fd) ? sockaddrHost(this.#address, 0) : "?");
    const carried = length > parsed.length ? header.subarray(parsed.length, length) : null;
    this.#admitted(fd, this.#slotOf[fd], clientHost(address), carried, length - parsed.length);
  }

  /**
   * Sends FIN after the last answer, then reads and discards what the client still
   * sends until it closes too: closing a socket with unread input makes the kernel send
   * a reset, which can destroy answers the client has not read yet. The sweep bounds
   * the wait.
   */
  #linger(fd: number, reason: number): void {
    this.#mode[fd] = LINGER;
    this.#lingerReason[fd] = reason;
    this.#discarded[fd] = 0;
    this.#c.shutdown(fd, SHUT_WR);
    this.#host.table.enter(this.#slotOf[fd], "lingering");
  }

  #discard(fd: number): void {
    const n = this.#c.read(fd, this.#buffer, READ_SIZE);
    if (n < 0) return this.#failed(fd);
    if (n === 0 || (this.#discarded[fd] += n) >= LINGER_MAX_BYTES) {
      this.#end(fd, LINGER_REASONS[this.#lingerReason[fd]]);
    }
  }

  /** A read or send failed: nothing (it would block), or the end of the connection. */
  #failed(fd: number, code = this.#errno()): void {
    if (code === ERRNO.EAGAIN || code === ERRNO.EINTR) return;
    if (code === ERRNO.ECONNRESET || code === ERRNO.EPIPE) {
      if (this.#host.table.state(this.#slotOf[fd]) !== "closed") this.#host.stats.closedReset++;
      return this.#end(fd, "reset");
    }
    if (code === ERRNO.ENOTCONN || code === ERRNO.ETIMEDOUT) return this.#end(fd, "reset");
    this.#host.logger.error("connection failed", { peer: this.peer(fd), error: `errno ${code}` });
    this.#end(fd, "error");
  }

  /** Ends the connection: the table records why, the host counts it, the descriptor closes. */
  #end(fd: number, reason: CloseReason): void {
    const slot = this.#slotOf[fd];
    const table = this.#host.table;
    reason = table.reason(slot) ?? reason;
    table.close(slot, reason, false);
    this.#host.ended(slot, reason);
    this.#release(fd);
  }

  #release(fd: number): void {
    this.#c.close(fd);
    this.#mode[fd] = FREE;
    this.#generation[fd] = 0;
    this.#headerLength[fd] = 0;
    // Cleared only where set: writing undefined would grow each array to every descriptor.
    for (const sparse of this.#sparse) if (sparse[fd] !== undefined) sparse[fd] = undefined;
    this.#count--;
    this.#released();
  }

  /** Sends a short line that fits in any socket buffer, without waiting. */
  #send(fd: number, line: Uint8Array): void {
    const sent = this.#c.send(fd, line, big(line.length), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) this.#host.stats.bytesSent += sent;
  }

  /** Reads the socket's peer into the address buffer; false if it has none now. */
  #peerAddress(fd: number): boolean {
    this.#addressLength[0] = SOCKADDR_SLOT;
    return this.#c.getpeername(fd, this.#address, this.#addressLength) === 0;
  }

  #errno(): number {
    this.#c.copyFrom(this.#errnoCell, this.#errnoAt, 4n);
    return this.#errnoCell[0];
  }

  #newSession(): Session {
    const host = this.#host;
    return new Session({ time: host.jamAnswer, maxLine: host.maxLine, counts: host.stats });
  }

  #grow(fd: number): void {
    const capacity = Math.max(fd + 1, this.#mode.length * 2);
    const widen = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array>(
      old: T,
      made: T,
    ): T => {
      made.set(old);
      return made;
    };
    this.#mode = widen(this.#mode, new Uint8Array(capacity));
    this.#generation = widen(this.#generation, new Uint32Array(capacity));
    this.#slotOf = widen(this.#slotOf, new Int32Array(capacity));
    this.#lingerReason = widen(this.#lingerReason, new Uint8Array(capacity));
    this.#discarded = widen(this.#discarded, new Uint32Array(capacity));
    this.#headerLength = widen(this.#headerLength, new Uint16Array(capacity));
  }
}
