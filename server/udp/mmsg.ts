// A batched UDP socket for Linux through libc (FFI): recvmmsg/sendmmsg, kernel receive and
// transmit timestamps and SO_REUSEPORT, which Deno.listenDatagram does not offer.

import { bufferAddress, type Libc, libcMissing, loadLibc, writeAddress } from "../../lib/libc.ts";
import {
  bindSocket,
  failAndClose,
  intOption,
  openSocket,
  SHUT_RDWR,
  SO_RCVBUF,
  SO_REUSEPORT,
  SOCK_DGRAM,
  SOCKADDR_SLOT,
  sockaddrHost,
  sockaddrPort,
  SOL_SOCKET,
} from "../../lib/sockets.ts";
import {
  receiveTime,
  SO_TIMESTAMPING,
  TIMESTAMPING_NUMBERED,
  TransmitTimestamps,
  TX_REQUEST,
} from "./kernel_timestamps.ts";

/** Datagrams taken from, and given to, the kernel per call. */
export const BATCH = 64;
/** Bytes kept for each received datagram; longer ones are truncated. */
export const RECEIVE_SLOT = 2048;
/** Bytes kept for each reply: an NTS reply can be as long as its request. */
export const REPLY_SLOT = RECEIVE_SLOT;

const SO_RCVTIMEO = 20;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const CLOCK_REALTIME = 0;
/** sizeof(struct mmsghdr): a 56-byte msghdr and the 4-byte length, padded. */
const MMSGHDR = 64;
const IOVEC = 16;
const NAME_SLOT = SOCKADDR_SLOT;
/** Room for one SCM_TIMESTAMPING message: CMSG_SPACE(3 × 16) = 64. */
const CONTROL_SLOT = 64;
/** How long a receive blocks before it looks whether the socket is closing, in ms. */
const RECEIVE_TIMEOUT_MS = 200;
/** The kernel's receive buffer asked for: bursts wait here instead of being dropped. */
const RECEIVE_BUFFER = 4 * 1024 * 1024;

/**
 * Tells whether the batched engine can run here: Linux on x86_64 or aarch64, with FFI
 * granted for libc, which the portable engine does not need. Loads libc to be sure.
 */
export function mmsgSupported(): boolean {
  return libcMissing() === null;
}

/**
 * Opens a UDP socket bound to a literal address (`::` takes IPv4 too) and port, with
 * kernel receive timestamps, a receive timeout and, when asked, `SO_REUSEPORT`. Resolves
 * with its descriptor and the port it got. Throws `Deno.errors.AddrInUse` or
 * `PermissionDenied` as `Deno.listenDatagram` would.
 */
function bindUdpSocket(
  c: Libc,
  hostname: string,
  port: number,
  reusePort: boolean,
): { fd: number; port: number } {
  const socket = openSocket(c, hostname, port, SOCK_DGRAM, "the batched UDP engine");
  const { fd, where } = socket;
  // No SO_REUSEADDR: for UDP it would let `::` share a port another server holds on
  // 127.0.0.1, splitting its traffic. Deno.listenDatagram does not set it either.
  const ok = (!reusePort || intOption(c, fd, SOL_SOCKET, SO_REUSEPORT, 1)) &&
    intOption(c, fd, SOL_SOCKET, SO_TIMESTAMPING, TIMESTAMPING_NUMBERED) &&
    c.setsockopt(
        fd,
        SOL_SOCKET,
        SO_RCVTIMEO,
        BigInt64Array.of(0n, BigInt(RECEIVE_TIMEOUT_MS * 1000)),
        16,
      ) === 0;
  if (!ok) throw failAndClose(c, fd, `setsockopt on ${where}`);
  intOption(c, fd, SOL_SOCKET, SO_RCVBUF, RECEIVE_BUFFER); // a smaller buffer is fine too
  return { fd, port: bindSocket(c, socket) };
}

/**
 * A UDP socket read and written in batches of up to {@linkcode BATCH} datagrams. After
 * {@linkcode MmsgSocket.receive} resolves with `count`, datagram `i` is at
 * `data.subarray(i * RECEIVE_SLOT, i * RECEIVE_SLOT + lengths[i])`, its kernel receive
 * time in {@linkcode MmsgSocket.receivedAt}; a reply goes into `replies` at
 * `i * REPLY_SLOT` and is queued with {@linkcode MmsgSocket.queue}, then all go out with
 * one {@linkcode MmsgSocket.flush}. One receive at a time.
 *
 * A reply sent alone ({@linkcode MmsgSocket.sendNow}) may ask the kernel when it left;
 * {@linkcode MmsgSocket.transmitTimes} reads the times from the error queue.
 */
export class MmsgSocket {
  readonly port: number;
  /** The received datagrams, one slot each. */
  readonly data: Uint8Array = new Uint8Array(BATCH * RECEIVE_SLOT);
  /** The length of each received datagram. */
  readonly lengths: Uint32Array = new Uint32Array(BATCH);
  /** The replies, one slot each. */
  readonly replies: Uint8Array = new Uint8Array(BATCH * REPLY_SLOT);
  readonly #fd: number;
  readonly #c: Libc;
  readonly #names = new Uint8Array(BATCH * NAME_SLOT);
  readonly #control = new Uint8Array(BATCH * CONTROL_SLOT);
  // The headers are written as 32-bit halves, not BigInts: no allocation per datagram.
  readonly #receiveHeaders = new Uint8Array(BATCH * MMSGHDR);
  readonly #receiveInts = new Uint32Array(this.#receiveHeaders.buffer);
  readonly #controlView = new DataView(this.#control.buffer);
  readonly #sendHeaders = new Uint8Array(BATCH * MMSGHDR);
  readonly #sendInts = new Uint32Array(this.#sendHeaders.buffer);
  readonly #sendAddress: number;
  /** The first send header's address, made once: a BigInt per reply would be garbage. */
  readonly #firstSendHeader: bigint;
  readonly #receiveIovecs = new Uint32Array(BATCH * 4);
  readonly #sendIovecs = new Uint32Array(BATCH * 4);
  /** The address of each name slot and each reply slot, as low and high 32 bits. */
  readonly #nameAddresses = new Uint32Array(BATCH * 2);
  readonly #replyAddresses = new Uint32Array(BATCH * 2);
  readonly #timespec = new Uint32Array(4);
  /** The kernel's transmit timestamps of the replies that asked. */
  readonly transmitTimes: TransmitTimestamps;
  #queued = 0;
  #closing = false;
  #closed = false;
  #receiving: Promise<number> | null = null;

  /**
   * Binds a socket to a literal address (`::` takes IPv4 too) and port, with
   * `SO_REUSEPORT` when asked, so that workers share it. Throws `Deno.errors.AddrInUse`
   * or `PermissionDenied` as `Deno.listenDatagram` would.
   */
  constructor(hostname: string, port: number, reusePort: boolean) {
    const c = this.#c = loadLibc();
    const bound = bindUdpSocket(c, hostname, port, reusePort);
    this.#fd = bound.fd;
    this.port = bound.port;

    const address64 = (bytes: ArrayBufferView, offset: number) => bufferAddress(c, bytes) + offset;
    for (let i = 0; i < BATCH; i++) {
      writeAddress(this.#nameAddresses, 2 * i, address64(this.#names, i * NAME_SLOT));
      writeAddress(this.#replyAddresses, 2 * i, address64(this.replies, i * REPLY_SLOT));
      writeAddress(this.#receiveIovecs, 4 * i, address64(this.data, i * RECEIVE_SLOT));
      this.#receiveIovecs[4 * i + 2] = RECEIVE_SLOT;
      const at = (i * MMSGHDR) / 4;
      const ints = this.#receiveInts;
      writeAddress(ints, at, address64(this.#names, i * NAME_SLOT)); // msg_name
      writeAddress(ints, at + 4, address64(this.#receiveIovecs, i * IOVEC)); // msg_iov
      ints[at + 6] = 1; // msg_iovlen
      writeAddress(ints, at + 8, address64(this.#control, i * CONTROL_SLOT)); // msg_control
      writeAddress(this.#sendInts, at + 4, address64(this.#sendIovecs, i * IOVEC));
      this.#sendInts[at + 6] = 1;
    }
    this.#sendAddress = bufferAddress(c, this.#sendHeaders);
    this.#firstSendHeader = BigInt(this.#sendAddress);

    this.transmitTimes = new TransmitTimestamps(c, this.#fd);
  }

  /**
   * Waits for datagrams and resolves with how many arrived (1 to {@linkcode BATCH}), or 0
   * once the socket is closing. The wait runs on a thread of Deno's blocking pool.
   */
  async receive(): Promise<number> {
    for (;;) {
      if (this.#closing) return 0;
      const ints = this.#receiveInts;
      for (let i = 0; i < BATCH; i++) {
        const at = (i * MMSGHDR) / 4;
        ints[at + 2] = NAME_SLOT; // msg_namelen
        ints[at + 10] = CONTROL_SLOT; // msg_controllen (its high half stays 0)
      }
      this.#receiving = this.#c.recvmmsg(
        this.#fd,
        this.#receiveHeaders,
        BATCH,
        MSG_WAITFORONE,
        null,
      );
      const count = await this.#receiving;
      this.#receiving = null;
      // Once shut down, recvmmsg returns one empty "datagram" (a read at the end of the
      // stream) from no one: it must not be answered or counted.
      if (this.#closing) return 0;
      // -1: the timeout (to look at #closing) or an error the next call reports again.
      if (count <= 0) continue;
      for (let i = 0; i < count; i++) this.lengths[i] = ints[(i * MMSGHDR) / 4 + 14];
      return count;
    }
  }

  /**
   * The kernel's receive time of datagram `i` (the software one of SCM_TIMESTAMPING), ms
   * since the epoch; NaN when the kernel gave none.
   */
  receivedAt(i: number): number {
    const length = Math.min(this.#receiveInts[(i * MMSGHDR) / 4 + 10], CONTROL_SLOT);
    return receiveTime(this.#controlView, i * CONTROL_SLOT, length);
  }

  /** The sender of datagram `i`, as a `Deno.NetAddr` hostname would read. */
  peer(i: number): string {
    return sockaddrHost(this.#names, i * NAME_SLOT);
  }

  /** The port datagram `i` was sent from. */
  peerPort(i: number): number {
    return sockaddrPort(this.#names, i * NAME_SLOT);
  }

  /** Queues the reply in slot `i`, `length` bytes, to the sender of datagram `i`. */
  queue(i: number, length: number): void {
    this.#address(this.#queued++, i, length, false);
  }

  /** Writes send header `j` for the reply in slot `i`; with `stamp`, asking for its timestamp. */
  #address(j: number, i: number, length: number, stamp: boolean): void {
    const at = (j * MMSGHDR) / 4;
    const ints = this.#sendInts;
    ints[at] = this.#nameAddresses[2 * i]; // msg_name
    ints[at + 1] = this.#nameAddresses[2 * i + 1];
    ints[at + 2] = this.#receiveInts[(i * MMSGHDR) / 4 + 2]; // msg_namelen, as received
    const request = this.transmitTimes.request;
    ints[at + 8] = stamp ? request[0] : 0; // msg_control
    ints[at + 9] = stamp ? request[1] : 0;
    ints[at + 10] = stamp ? TX_REQUEST : 0; // msg_controllen
    const iovecs = this.#sendIovecs;
    iovecs[4 * j] = this.#replyAddresses[2 * i]; // iov_base
    iovecs[4 * j + 1] = this.#replyAddresses[2 * i + 1];
    iovecs[4 * j + 2] = length; // iov_len
  }

  /** How many replies are queued. */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Sends every queued reply without blocking; returns how many the kernel took. A reply
   * it refuses (a full buffer, an unreachable address) is skipped, as UDP may. Replies
   * that ask for a transmit timestamp go out through {@linkcode sendNow} instead.
   */
  flush(): number {
    const count = this.#queued;
    this.#queued = 0;
    let done = 0;
    let sent = 0;
    while (done < count) {
      const start = this.#sendAddress + done * MMSGHDR;
      const n = this.#c.sendmmsg(this.#fd, BigInt(start), count - done, MSG_DONTWAIT);
      if (n <= 0) done++;
      else {
        done += n;
        sent += n;
      }
    }
    return sent;
  }

  /**
   * Sends the reply in slot `i`, `length` bytes, to the sender of datagram `i` at once,
   * without blocking, for a reply whose transmit timestamp was read just before; with
   * `stamp`, asking the kernel when it left. Returns that timestamp's number
   * ({@linkcode transmitTimes}), -1 when sent without asking, -2 when the kernel refused
   * it. Not while replies are queued.
   */
  sendNow(i: number, length: number, stamp: boolean): number {
    this.#address(0, i, length, stamp);
    const sent = this.#c.sendmmsg(this.#fd, this.#firstSendHeader, 1, MSG_DONTWAIT) === 1;
    const id = stamp ? this.transmitTimes.number(sent) : -1;
    return sent ? id : -2;
  }

  /** The system clock now (CLOCK_REALTIME), ms since the epoch, at its full resolution. */
  now(): number {
    const timespec = this.#timespec;
    this.#c.clock_gettime(CLOCK_REALTIME, timespec);
    return (timespec[0] + timespec[1] * 0x1_0000_0000) * 1000 + timespec[2] / 1e6;
  }

  /**
   * Stops receiving: a waiting receive returns 0 (at once, or within its timeout), and
   * the descriptor is closed once it has.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#c.shutdown(this.#fd, SHUT_RDWR);
    await this.#receiving?.catch(() => {});
    if (!this.#closed) {
      this.#closed = true;
      this.#c.close(this.#fd);
    }
  }
}
