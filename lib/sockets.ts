// Sockets through libc for both FFI engines: Linux's constants, sockaddr in and out, and errors as Deno names them.

import { errno, type Libc } from "./libc.ts";
import { parseAddress } from "./net.ts";

// Linux's ABI on x86_64 and aarch64 (LP64), shared by both architectures.
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0x800;
export const SOCK_CLOEXEC = 0x80000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_RCVBUF = 8;
export const SO_REUSEPORT = 15;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
/** Room for any sockaddr this server meets (a sockaddr_in6 is 28 bytes). */
export const SOCKADDR_SLOT = 32;

/** The errno values the engines tell apart, by name, as Linux numbers them. */
export const ERRNO = {
  EPERM: 1,
  EINTR: 4,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  ENFILE: 23,
  EMFILE: 24,
  EPIPE: 32,
  ENONET: 64,
  EPROTO: 71,
  ENOPROTOOPT: 92,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
} as const;

const ERRNO_NAMES = new Map<number, string>(Object.entries(ERRNO).map(([name, n]) => [n, name]));

/**
 * An error for a failed call as Deno's own errors look: the errno's name in `code`, so
 * that code written for `Deno.listen`'s errors (accept_errors.ts) reads it the same.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ERRNO, errnoError } from "./sockets.ts";
 *
 * assert.equal(errnoError("accept", ERRNO.EMFILE).code, "EMFILE");
 * ```
 */
export function errnoError(call: string, code: number): Error & { code: string } {
  const name = ERRNO_NAMES.get(code) ?? `errno ${code}`;
  return Object.assign(new Error(`${call} failed: ${name}`), { code: name });
}

/** Sets an integer socket option; tells whether it took. */
export function intOption(
  c: Libc,
  fd: number,
  level: number,
  name: number,
  value: number,
): boolean {
  return c.setsockopt(fd, level, name, Int32Array.of(value), 4) === 0;
}

/** Writes a sockaddr for a parsed literal address (1 word: IPv4, 4: IPv6) and port; returns its length. */
export function writeSockaddr(bytes: Uint8Array, words: Uint32Array, port: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  bytes.fill(0);
  view.setUint16(2, port);
  if (words.length === 1) {
    view.setUint16(0, AF_INET, true);
    view.setUint32(4, words[0]);
    return 16;
  }
  view.setUint16(0, AF_INET6, true);
  for (let i = 0; i < 4; i++) view.setUint32(8 + 4 * i, words[i]);
  return 28;
}

/**
 * The address in a sockaddr the kernel wrote, as `Deno.NetAddr.hostname` says it:
 * dotted IPv4 (IPv4-mapped IPv6 too, as `clientHost` would make it), or IPv6 in the
 * short form of RFC 5952.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sockaddrHost } from "./sockets.ts";
 *
 * const v6 = new Uint8Array(28);
 * v6[0] = 10; // AF_INET6
 * v6[8] = 0x20, v6[9] = 0x01, v6[10] = 0x0d, v6[11] = 0xb8, v6[23] = 1;
 * assert.equal(sockaddrHost(v6, 0), "2001:db8::1");
 * ```
 */
export function sockaddrHost(bytes: Uint8Array, offset: number): string {
  const family = bytes[offset] | (bytes[offset + 1] << 8);
  if (family === AF_INET) {
    return `${bytes[offset + 4]}.${bytes[offset + 5]}.${bytes[offset + 6]}.${bytes[offset + 7]}`;
  }
  const a = offset + 8;
  let mapped = bytes[a + 10] === 0xff && bytes[a + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) mapped = bytes[a + i] === 0;
  if (mapped) return `${bytes[a + 12]}.${bytes[a + 13]}.${bytes[a + 14]}.${bytes[a + 15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[a + i] << 8) | bytes[a + i + 1]);
  // The longest run of two or more zero groups, the first of equals, becomes "::".
  let best = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (from: number, to: number) =>
    groups.slice(from, to).map((group) => group.toString(16)).join(":");
  return best < 0 ? hex(0, 8) : `${hex(0, best)}::${hex(best + bestLength, 8)}`;
}

/** The port in a sockaddr the kernel wrote. */
export function sockaddrPort(bytes: Uint8Array, offset: number): number {
  return (bytes[offset + 2] << 8) | bytes[offset + 3];
}

/** What `Deno.listen` or `Deno.listenDatagram` would throw for a failed bind to `where`. */
export function bindError(code: number, where: string): Error {
  if (code === ERRNO.EADDRINUSE) return new Deno.errors.AddrInUse(`address in use: ${where}`);
  if (code === ERRNO.EACCES) return new Deno.errors.PermissionDenied(`permission denied: ${where}`);
  if (code === ERRNO.EADDRNOTAVAIL) {
    return new Deno.errors.AddrNotAvailable(`address not available: ${where}`);
  }
  return errnoError(`bind ${where}`, code);
}

/** The error of the call that just failed, with the descriptor it made closed first. */
export function failAndClose(c: Libc, fd: number, call: string): Error {
  const code = errno(c);
  c.close(fd);
  return errnoError(call, code);
}

/** A socket made by {@linkcode openSocket}, not yet bound. */
export interface OpenSocket {
  fd: number;
  /** The sockaddr to bind it to, `length` bytes, and the same as text for errors. */
  address: Uint8Array;
  length: number;
  where: string;
}

/**
 * Opens a socket of `type` (`SOCK_STREAM`, `SOCK_DGRAM`, with flags) for a literal address
 * and port, with the sockaddr to bind it to. An IPv6 socket takes IPv4 too (`::`).
 * `engine` names who needs a literal address, for the error when it is not one.
 */
export function openSocket(
  c: Libc,
  hostname: string,
  port: number,
  type: number,
  engine: string,
): OpenSocket {
  const words = parseAddress(hostname);
  if (words === null) throw new TypeError(`${engine} needs a literal address, got "${hostname}"`);
  const family = words.length === 1 ? AF_INET : AF_INET6;
  const fd = c.socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw errnoError("socket", errno(c));
  const where = `${family === AF_INET6 ? `[${hostname}]` : hostname}:${port}`;
  if (family === AF_INET6 && !intOption(c, fd, IPPROTO_IPV6, IPV6_V6ONLY, 0)) {
    throw failAndClose(c, fd, `setsockopt on ${where}`);
  }
  const address = new Uint8Array(SOCKADDR_SLOT);
  return { fd, address, length: writeSockaddr(address, words, port), where };
}

/**
 * Binds a socket from {@linkcode openSocket}, closing it and throwing what Deno would
 * when that fails; returns the port it got.
 */
export function bindSocket(c: Libc, socket: OpenSocket): number {
  const { fd, address, length, where } = socket;
  if (c.bind(fd, address, length) !== 0) {
    const code = errno(c);
    c.close(fd);
    throw bindError(code, where);
  }
  c.getsockname(fd, address, Uint32Array.of(SOCKADDR_SLOT));
  return sockaddrPort(address, 0);
}

/**
 * How many connections may wait in the kernel's accept queue: 511, as `Deno.listen` asks
 * (`ss -ltn` shows it), so that both TCP engines meet a burst of connections the same way.
 */
const LISTEN_BACKLOG = 511;

/**
 * Opens a non-blocking TCP listener on a literal address (`::` takes IPv4 too) and port,
 * as `Deno.listen` makes one: `SO_REUSEADDR`, `SO_REUSEPORT` when asked, and
 * `TCP_NODELAY`, which accepted sockets inherit. Returns its descriptor and the port
 * it got. Throws `Deno.errors.AddrInUse`, `PermissionDenied` or `AddrNotAvailable` as
 * `Deno.listen` would, and an error with code `EAFNOSUPPORT` where IPv6 is off.
 */
export function listenTcp(
  c: Libc,
  hostname: string,
  port: number,
  reusePort: boolean,
): { fd: number; port: number } {
  const socket = openSocket(c, hostname, port, SOCK_STREAM | SOCK_NONBLOCK, "the epoll engine");
  const { fd, where } = socket;
  const ok = intOption(c, fd, SOL_SOCKET, SO_REUSEADDR, 1) &&
    (!reusePort || intOption(c, fd, SOL_SOCKET, SO_REUSEPORT, 1)) &&
    intOption(c, fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (!ok) throw failAndClose(c, fd, `setsockopt on ${where}`);
  const bound = bindSocket(c, socket);
  if (c.listen(fd, LISTEN_BACKLOG) !== 0) throw failAndClose(c, fd, `listen on ${where}`);
  return { fd, port: bound };
}
