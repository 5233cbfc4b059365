// What the epoll engine keeps of each connection, in typed arrays by descriptor, and the calls it makes on them.

import type { CloseReason } from "../connections.ts";
import type { Libc } from "../../../lib/libc.ts";
import { formatAddress } from "../../../lib/net.ts";
import type { Session } from "../../../protocol.ts";
import type { ProxiedAddress } from "../proxy.ts";
import { SOCKADDR_SLOT, sockaddrHost, sockaddrPort } from "../../../lib/sockets.ts";

/** What a descriptor is doing; `FREE` for one this engine does not hold. */
export const FREE = 0;
/** Accepted, waiting to be admitted (other workers asked for room). */
export const ADMITTING = 1;
export const HEADER = 2;
export const LINES = 3;
/** The client half-closed: answer what it sent, then close. */
export const LAST = 4;
export const LINGER = 5;
/** Closed to make room: its answers owed are being sent, then the line saying why, then the linger. */
export const MAKING_ROOM = 6;

/** Why a lingering connection closes when its client does, by number. */
export const LINGER_REASONS: readonly CloseReason[] = [
  "quit",
  "shutdown",
  "per-client limit",
  "no valid PROXY header",
  "busy",
  "made room",
];
export const QUIT = 0, SHUTDOWN = 1, PER_CLIENT = 2, BAD_HEADER = 3, BUSY = 4, MADE_ROOM = 5;

/**
 * Each connection's state by descriptor: 16 bytes in typed arrays for every one, and
 * entries in sparse arrays only for those that hold something (a session of their own,
 * answers waiting, a PROXY header arriving, what the debug log keeps).
 */
export class Descriptors {
  mode: Uint8Array = new Uint8Array(1024);
  generation: Uint32Array = new Uint32Array(1024);
  slotOf: Int32Array = new Int32Array(1024);
  /** While lingering: the reason it ends with (of {@linkcode LINGER_REASONS}), and the bytes discarded. */
  lingerReason: Uint8Array = new Uint8Array(1024);
  discarded: Uint32Array = new Uint32Array(1024);
  headerLength: Uint16Array = new Uint16Array(1024);
  readonly sessions: (Session | undefined)[] = [];
  readonly pending: (Uint8Array | undefined)[] = [];
  readonly headers: (Uint8Array | undefined)[] = [];
  /** The client (the PROXY header's, and the socket's), kept for the debug log only. */
  readonly proxied: (ProxiedAddress | undefined)[] = [];
  readonly peers: (string | undefined)[] = [];
  readonly #sparse: unknown[][] = [
    this.sessions,
    this.pending,
    this.headers,
    this.proxied,
    this.peers,
  ];

  /** Makes room for descriptors up to `fd`. */
  ensure(fd: number): void {
    if (fd < this.mode.length) return;
    const capacity = Math.max(fd + 1, this.mode.length * 2);
    const widen = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array>(
      old: T,
      made: T,
    ): T => {
      made.set(old);
      return made;
    };
    this.mode = widen(this.mode, new Uint8Array(capacity));
    this.generation = widen(this.generation, new Uint32Array(capacity));
    this.slotOf = widen(this.slotOf, new Int32Array(capacity));
    this.lingerReason = widen(this.lingerReason, new Uint8Array(capacity));
    this.discarded = widen(this.discarded, new Uint32Array(capacity));
    this.headerLength = widen(this.headerLength, new Uint16Array(capacity));
  }

  /** Forgets `fd`: free, generation 0, no entries. */
  clear(fd: number): void {
    this.mode[fd] = FREE;
    this.generation[fd] = 0;
    this.headerLength[fd] = 0;
    // Cleared only where set: writing undefined would grow each array to every descriptor.
    for (const sparse of this.#sparse) if (sparse[fd] !== undefined) sparse[fd] = undefined;
  }
}

/** send(2) flags: no SIGPIPE for a client that went away, and never block. */
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
/** Lengths as BigInt, each made once: every BigInt is an allocation, and each call takes one. */
const LENGTHS: bigint[] = [];
const big = (n: number): bigint => LENGTHS[n] ??= BigInt(n);

/**
 * The calls on connections' descriptors, allocating nothing: `read` and `send` with
 * lengths as cached BigInts, errno read from this thread's own, and the peer's address.
 */
export class DescriptorCalls {
  readonly #c: Libc;
  readonly #errnoCell = new Int32Array(1);
  readonly #errnoAt: bigint;
  readonly #address = new Uint8Array(SOCKADDR_SLOT);
  readonly #addressLength = new Uint32Array(1);

  constructor(c: Libc) {
    this.#c = c;
    // errno's address is the calling thread's: the engine calls libc from one thread.
    this.#errnoAt = BigInt(c.__errno_location());
  }

  /** Reads into `buffer`, all of it at most; the bytes read, 0 at the end, -1 on error. */
  read(fd: number, buffer: Uint8Array): number {
    return this.#c.read(fd, buffer, big(buffer.length));
  }

  /** Sends what the kernel takes of `bytes` without blocking; the bytes sent, or -1. */
  send(fd: number, bytes: Uint8Array): number {
    return this.#c.send(fd, bytes, big(bytes.length), MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  /** The errno of the call that just failed. */
  errno(): number {
    this.#c.copyFrom(this.#errnoCell, this.#errnoAt, 4n);
    return this.#errnoCell[0];
  }

  /** The socket's peer as `host:port`, or "?" when it has none now (the client closed). */
  peer(fd: number): string {
    const host = this.peerHost(fd);
    if (host === null) return "?";
    const port = sockaddrPort(this.#address, 0);
    return formatAddress({ transport: "tcp", hostname: host, port });
  }

  /** The socket's peer's address, or null when it has none now. */
  peerHost(fd: number): string | null {
    this.#addressLength[0] = SOCKADDR_SLOT;
    if (this.#c.getpeername(fd, this.#address, this.#addressLength) !== 0) return null;
    return sockaddrHost(this.#address, 0);
  }
}
