// The line protocol on the epoll engine's descriptors: reads answered at once, back-pressure, and
// a session of a connection's own only while it holds something.

import {
  type DescriptorCalls,
  type Descriptors,
  LAST,
  MAKING_ROOM,
  QUIT,
  SHUTDOWN,
} from "./descriptors.ts";
import { type Epoll, EPOLLIN, EPOLLOUT } from "../../../lib/epoll.ts";
import { Session, TIME_ANSWER_LENGTH } from "../../../protocol.ts";
import { ERRNO } from "../../../lib/sockets.ts";
import { MAX_READ_SIZE, type TcpHost } from "../host.ts";

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

/** How a connection's life goes on after the line protocol is done with it (`EpollConnections`). */
export interface LineEnds {
  /** The lingering close, ending with `LINGER_REASONS[reason]`. */
  linger(fd: number, reason: number): void;
  /** The client half-closed and has its answers: close. */
  closedByClient(fd: number): void;
  /** Closed to make room, and its answers owed are sent: the line saying why, then the linger. */
  madeRoom(fd: number): void;
  /** A read or send failed with `code`. */
  failed(fd: number, code: number): void;
}

/**
 * Answers what connections send. A read goes into one shared buffer and its answers
 * are sent at once; whole `TIME` lines need no framing, and anything else goes through
 * a `Session`: one shared idle session, or the connection's own while it holds a
 * partial line or answers wait to be sent. A send the kernel cannot take whole stops
 * reading that client until it is taken.
 */
export class EpollLines {
  readonly #host: TcpHost;
  readonly #calls: DescriptorCalls;
  readonly #fds: Descriptors;
  readonly #epoll: Epoll;
  readonly #ends: LineEnds;
  readonly #buffer = new Uint8Array(MAX_READ_SIZE);
  #idle: Session;

  constructor(
    host: TcpHost,
    calls: DescriptorCalls,
    fds: Descriptors,
    epoll: Epoll,
    ends: LineEnds,
  ) {
    this.#host = host;
    this.#calls = calls;
    this.#fds = fds;
    this.#epoll = epoll;
    this.#ends = ends;
    this.#idle = this.#newSession();
  }

  /** The hot path: one read into the shared buffer, and its answers sent at once. */
  read(fd: number): void {
    const n = this.#calls.read(fd, this.#buffer);
    if (n > 0) {
      this.#host.stats.bytesReceived += n;
      const own = this.#fds.sessions[fd];
      if (own === undefined) {
        const lines = timeLines(this.#buffer, n);
        if (lines > 0) return this.#answerTime(fd, lines);
      }
      const session = own ?? this.#idle;
      session.push(this.#buffer, n);
      return this.#answer(fd, session);
    }
    if (n < 0) return this.#ends.failed(fd, this.#calls.errno());
    const session = this.#fds.sessions[fd];
    if (session === undefined) return this.#ends.closedByClient(fd);
    // The client half-closed: its unterminated last line is answered too.
    this.#fds.mode[fd] = LAST;
    session.end();
    this.#answer(fd, session);
  }

  /** Answers bytes that came with the PROXY header, as if just read. */
  carried(fd: number, bytes: Uint8Array, n: number): void {
    this.#idle.push(bytes, n);
    this.#answer(fd, this.#idle);
  }

  /** Sends what waits for a client that had stopped reading; then reads it again. */
  flush(fd: number): void {
    const fds = this.#fds;
    const out = fds.pending[fd]!;
    const sent = this.#calls.send(fd, out);
    if (sent < 0) return this.#ends.failed(fd, this.#calls.errno());
    this.#host.stats.bytesSent += sent;
    if (sent < out.length) {
      fds.pending[fd] = out.subarray(sent);
      return;
    }
    fds.pending[fd] = undefined;
    this.#epoll.modify(fd, EPOLLIN, fds.generation[fd]);
    this.#host.table.enter(fds.slotOf[fd], "reading");
    this.#answer(fd, fds.sessions[fd]!);
  }

  /**
   * Answers a read that was `lines` whole `TIME` lines, the common request, as the
   * session would: the same counter and the same shared answers, without framing them.
   */
  #answerTime(fd: number, lines: number): void {
    const host = this.#host;
    host.stats.requestsTime += lines;
    const out = host.jamAnswer.repeated(lines);
    const sent = this.#calls.send(fd, out);
    if (sent !== out.length) {
      // Rare: the client stopped reading. The general path takes over from here.
      const code = sent < 0 ? this.#calls.errno() : ERRNO.EAGAIN;
      if (code !== ERRNO.EAGAIN) return this.#ends.failed(fd, code);
      this.#fds.sessions[fd] = this.#newSession();
      return this.#wait(fd, out.slice(Math.max(0, sent)), Math.max(0, sent));
    }
    host.stats.bytesSent += sent;
    host.table.enter(this.#fds.slotOf[fd], "reading");
    if (host.stopping.aborted) this.#ends.linger(fd, SHUTDOWN);
  }

  /**
   * Sends every answer `session` owes; what the kernel cannot take waits, with what the
   * client sent that is not answered yet kept in a copy. Then lingers after QUIT or a
   * shutdown, or closes after a half-close.
   */
  #answer(fd: number, session: Session): void {
    const host = this.#host;
    let answered = false;
    for (let out = session.pull(); out.length > 0; out = session.pull()) {
      answered = true;
      const sent = this.#calls.send(fd, out);
      if (sent === out.length) {
        host.stats.bytesSent += sent;
        continue;
      }
      const code = sent < 0 ? this.#calls.errno() : ERRNO.EAGAIN;
      if (code !== ERRNO.EAGAIN) return this.#ends.failed(fd, code);
      session.retain();
      this.#keep(fd, session);
      return this.#wait(fd, out.slice(Math.max(0, sent)), Math.max(0, sent));
    }
    if (answered) host.table.enter(this.#fds.slotOf[fd], "reading");
    if (session.closing || host.stopping.aborted) {
      this.#drop(fd, session);
      return this.#ends.linger(fd, session.closing ? QUIT : SHUTDOWN);
    }
    const mode = this.#fds.mode[fd];
    if (mode === LAST) return this.#ends.closedByClient(fd);
    if (mode === MAKING_ROOM) {
      this.#drop(fd, session);
      return this.#ends.madeRoom(fd);
    }
    if (session.idle) this.#drop(fd, session);
    else this.#keep(fd, session);
  }

  /** Stops reading `fd` until `rest` is sent: back-pressure. `sent` bytes went already. */
  #wait(fd: number, rest: Uint8Array, sent: number): void {
    const fds = this.#fds;
    this.#host.stats.bytesSent += sent;
    fds.pending[fd] = rest;
    this.#host.table.enter(fds.slotOf[fd], "writing");
    this.#epoll.modify(fd, EPOLLOUT, fds.generation[fd]);
  }

  /** Gives `fd` the session that holds its bytes; a shared one is replaced by a new one. */
  #keep(fd: number, session: Session): void {
    if (session !== this.#idle) return;
    this.#fds.sessions[fd] = session;
    this.#idle = this.#newSession();
  }

  /** Lets go of `fd`'s session: back to the shared idle one. */
  #drop(fd: number, session: Session): void {
    if (session === this.#idle) {
      if (!session.idle) this.#idle = this.#newSession();
    } else this.#fds.sessions[fd] = undefined;
  }

  #newSession(): Session {
    const host = this.#host;
    return new Session({ time: host.jamAnswer, maxLine: host.maxLine, counts: host.stats });
  }
}
