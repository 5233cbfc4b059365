// SNTPv4 server mode (RFC 4330, RFC 5905): checking a request and writing the reply.

import { SECONDS_1900_TO_1970 } from "./rfc868.ts";

/** The length of an NTP header without extension fields or MAC, and of every reply. */
export const NTP_PACKET_LENGTH = 48;

/** What {@linkcode checkNtpRequest} found; only `CLIENT` is answered. */
export const NtpRequest = {
  /** A client-mode (3) request of a version we speak: answer it. */
  CLIENT: 0,
  /** Fewer than 48 bytes. */
  SHORT: 1,
  /** Version 0 or above 4. */
  BAD_VERSION: 2,
  /** Mode 6 or 7 (ntpq/ntpdc, `monlist`): never answered, they are the amplifiers. */
  CONTROL: 3,
  /** Any other mode (symmetric, server, broadcast, reserved). */
  NOT_CLIENT: 4,
} as const;
/** One of {@linkcode NtpRequest}'s values. */
export type NtpRequest = typeof NtpRequest[keyof typeof NtpRequest];

/**
 * Tells whether a datagram is an SNTP request the server answers: at least 48 bytes,
 * mode 3 (client), version 1 to 4. Everything else is dropped without a reply.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkNtpRequest, NtpRequest } from "./ntp.ts";
 *
 * const request = new Uint8Array(48);
 * request[0] = (4 << 3) | 3; // VN 4, mode 3
 * assert.equal(checkNtpRequest(request, 48), NtpRequest.CLIENT);
 * assert.equal(checkNtpRequest(request, 47), NtpRequest.SHORT);
 * request[0] = (2 << 3) | 7; // mode 7, ntpdc
 * assert.equal(checkNtpRequest(request, 48), NtpRequest.CONTROL);
 * ```
 */
export function checkNtpRequest(request: Uint8Array, length: number, at = 0): NtpRequest {
  if (length < NTP_PACKET_LENGTH) return NtpRequest.SHORT;
  const first = request[at];
  const mode = first & 7;
  if (mode === 6 || mode === 7) return NtpRequest.CONTROL;
  if (mode !== 3) return NtpRequest.NOT_CLIENT;
  const version = (first >> 3) & 7;
  if (version < 1 || version > 4) return NtpRequest.BAD_VERSION;
  return NtpRequest.CLIENT;
}

/** What the server says about its clock in every reply. */
export interface NtpServerInfo {
  /** Leap indicator: 0 none, 1 and 2 a leap second at the end of the day, 3 unsynchronised. */
  leap: number;
  /** 1 to 15. */
  stratum: number;
  /** The reference ID, 4 bytes as a big-endian number (e.g. `LOCL`). */
  referenceId: number;
  /** log₂ of the clock's resolution in seconds, e.g. -23 for about 0.1 µs. */
  precision: number;
  /** The root dispersion in seconds: how far the server may be from its reference. */
  rootDispersion: number;
  /** When the clock was last set or corrected, ms since the epoch. */
  referenceTime: number;
}

/**
 * Packs four ASCII characters into a reference ID (RFC 5905 §7.3).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { referenceId } from "./ntp.ts";
 *
 * assert.equal(referenceId("LOCL"), 0x4c4f434c);
 * ```
 */
export function referenceId(code: string): number {
  let id = 0;
  for (let i = 0; i < 4; i++) id = (id << 8) | (code.charCodeAt(i) & 0x7f || 0);
  return id >>> 0;
}

/**
 * Writes an NTP timestamp (32 bits of seconds since 1900 in the current era, 32 bits of
 * fraction) for an instant in ms since the epoch. The seconds wrap in 2036 (era 1).
 */
export function writeTimestamp(bytes: Uint8Array, offset: number, epochMilliseconds: number): void {
  const seconds = Math.floor(epochMilliseconds / 1000);
  const fraction = (epochMilliseconds - seconds * 1000) * 4_294_967.296;
  write32(bytes, offset, seconds + SECONDS_1900_TO_1970);
  write32(bytes, offset + 4, fraction);
}

/** Writes the low 32 bits of `value` at `at`, big-endian; no DataView to allocate per packet. */
export function write32(bytes: Uint8Array, at: number, value: number): void {
  const v = value >>> 0;
  bytes[at] = v >>> 24;
  bytes[at + 1] = (v >>> 16) & 0xff;
  bytes[at + 2] = (v >>> 8) & 0xff;
  bytes[at + 3] = v & 0xff;
}

/** Reads the big-endian 32-bit word at `at`. */
export function read32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

/**
 * Reads an NTP timestamp as ms since the epoch, resolving the era from a nearby instant
 * (`near`, ms since the epoch) as RFC 4330 §3 advises: the answer is within 68 years of it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readTimestamp, writeTimestamp } from "./ntp.ts";
 *
 * const bytes = new Uint8Array(8);
 * const instant = Date.UTC(2036, 1, 7, 6, 28, 16, 250); // era 1, seconds field near 0
 * writeTimestamp(bytes, 0, instant);
 * assert.equal(bytes[0] + bytes[1] + bytes[2] + bytes[3], 0);
 * assert.ok(Math.abs(readTimestamp(bytes, 0, Date.UTC(2036, 0, 1)) - instant) < 1e-6);
 * ```
 */
export function readTimestamp(bytes: Uint8Array, offset: number, near: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, 8);
  const era0 = view.getUint32(0) - SECONDS_1900_TO_1970;
  const fraction = view.getUint32(4) / 4_294_967.296;
  const span = 4_294_967_296;
  const nearSeconds = near / 1000;
  const eras = Math.round((nearSeconds - era0) / span);
  return (era0 + eras * span) * 1000 + fraction;
}

/** The root dispersion as NTP's short format: 16.16 fixed-point seconds. */
function shortFormat(seconds: number): number {
  return Math.min(0xffffffff, Math.ceil(seconds * 65536)) >>> 0;
}

/**
 * Writes the 48-byte reply to a request {@linkcode checkNtpRequest} accepted: mode 4, the
 * request's version and poll, originate = the request's transmit timestamp verbatim,
 * receive = `received`, transmit = `transmitted` (both ms since the epoch). The request
 * starts at `requestAt` and the reply at `replyAt`, so batches need no views per packet.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { referenceId, writeNtpReply } from "./ntp.ts";
 *
 * const request = new Uint8Array(48);
 * request[0] = (3 << 3) | 3; // VN 3, client
 * request[2] = 6; // poll 2⁶ s
 * request.set([1, 2, 3, 4, 5, 6, 7, 8], 40); // the client's transmit timestamp
 * const reply = new Uint8Array(48);
 * const info = {
 *   leap: 0, stratum: 10, referenceId: referenceId("LOCL"), precision: -20,
 *   rootDispersion: 0.001, referenceTime: Date.now(),
 * };
 * writeNtpReply(request, reply, Date.now(), Date.now(), info);
 * assert.equal(reply[0], (3 << 3) | 4);
 * assert.equal(reply[1], 10);
 * assert.equal(reply[2], 6);
 * assert.deepEqual([...reply.subarray(24, 32)], [1, 2, 3, 4, 5, 6, 7, 8]);
 * ```
 */
export function writeNtpReply(
  request: Uint8Array,
  reply: Uint8Array,
  received: number,
  transmitted: number,
  info: NtpServerInfo,
  requestAt = 0,
  replyAt = 0,
): void {
  const r = replyAt;
  reply[r] = (info.leap << 6) | (request[requestAt] & 0x38) | 4;
  reply[r + 1] = info.stratum;
  reply[r + 2] = request[requestAt + 2];
  reply[r + 3] = info.precision & 0xff;
  write32(reply, r + 4, 0); // root delay: the server is its own reference
  write32(reply, r + 8, shortFormat(info.rootDispersion));
  write32(reply, r + 12, info.referenceId);
  writeTimestamp(reply, r + 16, info.referenceTime);
  for (let i = 0; i < 8; i++) reply[r + 24 + i] = request[requestAt + 40 + i];
  writeTimestamp(reply, r + 32, received);
  writeTimestamp(reply, r + 40, transmitted);
}

/**
 * Writes a Kiss-o'-Death reply (RFC 5905 §7.4): stratum 0, leap 3, the kiss code as the
 * reference ID (e.g. `RATE`: slow down). As ntpd does, it tells no time: receive and
 * transmit echo the client's own transmit timestamp.
 */
export function writeKissOfDeath(
  request: Uint8Array,
  reply: Uint8Array,
  code: number,
  requestAt = 0,
  replyAt = 0,
): void {
  const r = replyAt;
  reply.fill(0, r, r + NTP_PACKET_LENGTH);
  reply[r] = (3 << 6) | (request[requestAt] & 0x38) | 4;
  reply[r + 2] = request[requestAt + 2];
  write32(reply, r + 12, code);
  for (let i = 0; i < 8; i++) {
    const byte = request[requestAt + 40 + i];
    reply[r + 24 + i] = byte;
    reply[r + 32 + i] = byte;
    reply[r + 40 + i] = byte;
  }
}

/**
 * The precision field for a clock: ⌈log₂ of its resolution in seconds⌉, from the
 * smallest step seen between consecutive readings.
 */
export function measurePrecision(read: () => number, samples = 1000): number {
  let smallest = Infinity;
  let last = read();
  for (let i = 0; i < samples; i++) {
    const now = read();
    if (now > last && now - last < smallest) smallest = now - last;
    last = now;
  }
  if (!Number.isFinite(smallest)) return -10; // a stuck clock: claim only ~1 ms
  return Math.max(-30, Math.ceil(Math.log2(smallest / 1000)));
}

/** RFC 5905's frequency tolerance: a clock left alone may drift this much, 15 ppm. */
const PHI = 15e-6;

/**
 * The root dispersion to claim, in seconds: what the server knows of its own error. That
 * is how well its clock was calibrated against the system clock (ms), its resolution,
 * and RFC 5905's 15 ppm drift allowance for the time since (ms). The system clock's own
 * error is not known to the process; the stratum (10, `LOCL`) says so.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rootDispersion } from "./ntp.ts";
 *
 * // calibrated to 0.5 µs, 0.1 µs resolution, 100 s ago: 1.5 ms of drift allowance
 * assert.ok(Math.abs(rootDispersion(0.0005, -23, 100_000) - 0.0015006) < 1e-6);
 * ```
 */
export function rootDispersion(uncertaintyMs: number, precision: number, ageMs: number): number {
  return uncertaintyMs / 1000 + 2 ** precision + PHI * Math.max(0, ageMs) / 1000;
}

/** What the kernel says of the system clock, as {@linkcode kernelSyncInfo} needs it. */
export interface KernelSync {
  /** `adjtimex`'s return: 1 a leap second is inserted tonight, 2 deleted, 5 `TIME_ERROR`. */
  state: number;
  /** Whether a daemon (ntpd, chronyd, timesyncd) keeps the clock synchronised. */
  synchronised: boolean;
  /** The kernel's maximum error estimate, in seconds. */
  maxError: number;
}

/**
 * The leap indicator, stratum and root dispersion to claim when the kernel's view of the
 * system clock is known: an unsynchronised clock says so (leap 3, stratum 16, which clients
 * ignore); a synchronised one passes on the leap second the kernel announces and adds the
 * kernel's maximum error to the server's own dispersion.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kernelSyncInfo } from "./ntp.ts";
 *
 * const unsynced = { state: 5, synchronised: false, maxError: 16 };
 * assert.deepEqual(kernelSyncInfo(unsynced, 2, 0.001), { leap: 3, stratum: 16, rootDispersion: 0.001 });
 * const leapTonight = { state: 1, synchronised: true, maxError: 0.002 };
 * assert.deepEqual(kernelSyncInfo(leapTonight, 2, 0.001), { leap: 1, stratum: 2, rootDispersion: 0.003 });
 * ```
 */
export function kernelSyncInfo(
  kernel: KernelSync,
  stratum: number,
  ownDispersion: number,
): { leap: number; stratum: number; rootDispersion: number } {
  if (!kernel.synchronised) return { leap: 3, stratum: 16, rootDispersion: ownDispersion };
  const leap = kernel.state === 1 ? 1 : kernel.state === 2 ? 2 : 0;
  return { leap, stratum, rootDispersion: ownDispersion + kernel.maxError };
}
