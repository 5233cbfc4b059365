// The kernel's timestamps of a UDP socket (SO_TIMESTAMPING): a received datagram's from its
// control message, a sent one's from the socket's error queue.

import { bufferAddress, type Libc, writeAddress } from "../../lib/libc.ts";
import { intOption, SOL_SOCKET } from "../../lib/sockets.ts";

/** The socket option, and the control message type that carries its timestamps. */
export const SO_TIMESTAMPING = 37;
const SCM_TIMESTAMPING = SO_TIMESTAMPING;
const SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1;
const SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3;
const SOF_TIMESTAMPING_SOFTWARE = 1 << 4;
const SOF_TIMESTAMPING_OPT_ID = 1 << 7;
const SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11;
/**
 * Receive timestamps on every datagram; transmit timestamps only where a send asks (a
 * cmsg), numbered by the kernel (OPT_ID) and queued without the payload (OPT_TSONLY).
 */
const TIMESTAMPING = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
  SOF_TIMESTAMPING_OPT_TSONLY;
/** The socket's option value: {@linkcode TIMESTAMPING}, numbered. */
export const TIMESTAMPING_NUMBERED = TIMESTAMPING | SOF_TIMESTAMPING_OPT_ID;
const SOL_IP = 0;
const IP_RECVERR = 11;
const SOL_IPV6 = 41;
const IPV6_RECVERR = 25;
const SO_EE_ORIGIN_TIMESTAMPING = 4;
const SCM_TSTAMP_SND = 0;
const MSG_DONTWAIT = 0x40;
const MSG_ERRQUEUE = 0x2000;
/** sizeof(struct mmsghdr). */
const MMSGHDR = 64;
/** Entries read from the error queue per call. */
const ENTRIES = 64;
/** Room for an entry: SCM_TIMESTAMPING (64) and a sock_extended_err with an IPv6 address (48). */
const CONTROL_SLOT = 128;
/** A send's request for a transmit timestamp: CMSG_SPACE(4). */
export const TX_REQUEST = 24;

/**
 * The software time in an SCM_TIMESTAMPING control message among the `length` bytes of
 * control data at `offset` (a received datagram's), ms since the epoch; NaN when none.
 */
export function receiveTime(view: DataView, offset: number, length: number): number {
  const end = offset + length;
  while (offset + 16 <= end) {
    const size = view.getUint32(offset, true);
    if (size < 16) break;
    if (
      view.getInt32(offset + 8, true) === SOL_SOCKET &&
      view.getInt32(offset + 12, true) === SCM_TIMESTAMPING
    ) {
      const seconds = view.getUint32(offset + 16, true) +
        view.getInt32(offset + 20, true) * 0x1_0000_0000;
      return seconds * 1000 + view.getUint32(offset + 24, true) / 1e6;
    }
    offset += (size + 7) & ~7;
  }
  return NaN;
}

/**
 * The transmit timestamps a socket's sends asked for (`SO_TIMESTAMPING`, software, as
 * chrony asks): the kernel numbers each send that asked from 0 (`OPT_ID`), this counts
 * the same way ({@linkcode number}), and {@linkcode read} takes what the kernel queued.
 * The socket must have {@linkcode TIMESTAMPING_NUMBERED} set.
 */
export class TransmitTimestamps {
  readonly #c: Libc;
  readonly #fd: number;
  /**
   * The error queue's headers and control slots, and the cmsg asking for a transmit
   * timestamp, in one buffer: the kernel keeps their addresses, and V8 may move a typed
   * array of 64 bytes or less that lives on its heap.
   */
  readonly #area = new ArrayBuffer(ENTRIES * (MMSGHDR + CONTROL_SLOT) + TX_REQUEST);
  readonly #headers = new Uint8Array(this.#area, 0, ENTRIES * MMSGHDR);
  readonly #ints = new Uint32Array(this.#area, 0, (ENTRIES * MMSGHDR) / 4);
  readonly #control = new DataView(this.#area, ENTRIES * MMSGHDR);
  /** The address of the cmsg a send carries to ask, as low and high 32 bits. */
  readonly request: Uint32Array = new Uint32Array(2);
  /** The number the kernel gives the next send that asks. */
  #next = 0;
  /** Whether a send that asked failed, so the kernel's count may differ from ours. */
  #uncertain = false;
  /** After {@linkcode read}: each timestamp's send number, and the time since the Unix epoch. */
  readonly ids: Uint32Array = new Uint32Array(ENTRIES);
  readonly seconds: Float64Array = new Float64Array(ENTRIES);
  readonly nanoseconds: Uint32Array = new Uint32Array(ENTRIES);
  /** Times the numbering restarted from 0 (after a failed send that asked). */
  restarts = 0;

  constructor(c: Libc, fd: number) {
    this.#c = c;
    this.#fd = fd;
    const base = bufferAddress(c, this.#headers);
    for (let i = 0; i < ENTRIES; i++) {
      writeAddress(this.#ints, (i * MMSGHDR) / 4 + 8, base + ENTRIES * MMSGHDR + i * CONTROL_SLOT);
    }
    const at = ENTRIES * (MMSGHDR + CONTROL_SLOT);
    const cmsg = new DataView(this.#area, at, TX_REQUEST);
    cmsg.setUint32(0, 20, true); // cmsg_len = CMSG_LEN(4)
    cmsg.setInt32(8, SOL_SOCKET, true);
    cmsg.setInt32(12, SO_TIMESTAMPING, true);
    cmsg.setUint32(16, SOF_TIMESTAMPING_TX_SOFTWARE, true);
    writeAddress(this.request, 0, base + at);
  }

  /**
   * The number of a send that asked for a timestamp, once `sent` says whether the kernel
   * took it; -1 if it did not.
   */
  number(sent: boolean): number {
    if (!sent) {
      // Whether the kernel counted a failed send that asked differs between versions.
      this.#uncertain = true;
      return -1;
    }
    const id = this.#next;
    this.#next = (id + 1) >>> 0;
    return id;
  }

  /**
   * Reads the transmit timestamps waiting in the error queue, at most 64, without
   * blocking, into {@linkcode ids}, {@linkcode seconds} and {@linkcode nanoseconds};
   * returns how many. Anything else there is skipped. After a failed send that asked for
   * one, the numbering restarts from 0 once the queue is read.
   */
  read(): number {
    const ints = this.#ints;
    for (let i = 0; i < ENTRIES; i++) ints[(i * MMSGHDR) / 4 + 10] = CONTROL_SLOT;
    const count = this.#c.recvmmsgNow(
      this.#fd,
      this.#headers,
      ENTRIES,
      MSG_ERRQUEUE | MSG_DONTWAIT,
      null,
    );
    let found = 0;
    for (let i = 0; i < count; i++) {
      if (this.#readEntry(i, found)) found++;
    }
    if (this.#uncertain) this.#restart();
    return found;
  }

  /** Reads error-queue entry `i` into place `k` of the arrays; false if it is not a timestamp. */
  #readEntry(i: number, k: number): boolean {
    const view = this.#control;
    let offset = i * CONTROL_SLOT;
    const end = offset + Math.min(this.#ints[(i * MMSGHDR) / 4 + 10], CONTROL_SLOT);
    let seconds = -1;
    let id = -1;
    while (offset + 16 <= end) {
      const size = view.getUint32(offset, true);
      if (size < 16) break;
      const level = view.getInt32(offset + 8, true);
      const type = view.getInt32(offset + 12, true);
      if (level === SOL_SOCKET && type === SCM_TIMESTAMPING && size >= 64) {
        seconds = view.getUint32(offset + 16, true) +
          view.getInt32(offset + 20, true) * 0x1_0000_0000;
        this.nanoseconds[k] = view.getUint32(offset + 24, true);
      } else if (
        ((level === SOL_IP && type === IP_RECVERR) ||
          (level === SOL_IPV6 && type === IPV6_RECVERR)) &&
        size >= 32 && view.getUint8(offset + 20) === SO_EE_ORIGIN_TIMESTAMPING &&
        view.getUint32(offset + 24, true) === SCM_TSTAMP_SND
      ) {
        id = view.getUint32(offset + 28, true); // sock_extended_err's ee_data
      }
      offset += (size + 7) & ~7;
    }
    if (seconds <= 0 || id < 0) return false;
    this.seconds[k] = seconds;
    this.ids[k] = id;
    return true;
  }

  /** Restarts the kernel's numbering from 0: OPT_ID off and on again. */
  #restart(): void {
    intOption(this.#c, this.#fd, SOL_SOCKET, SO_TIMESTAMPING, TIMESTAMPING);
    intOption(this.#c, this.#fd, SOL_SOCKET, SO_TIMESTAMPING, TIMESTAMPING_NUMBERED);
    this.#next = 0;
    this.#uncertain = false;
    this.restarts++;
  }
}
