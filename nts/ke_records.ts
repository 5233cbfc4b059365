// NTS Key Establishment records (RFC 8915 §4): reading a client's request, writing the answer.

/** Record types this server reads or writes (RFC 8915 §7.6). */
export const KeRecord = {
  END_OF_MESSAGE: 0,
  NEXT_PROTOCOL: 1,
  ERROR: 2,
  WARNING: 3,
  AEAD: 4,
  NEW_COOKIE: 5,
  NTPV4_SERVER: 6,
  NTPV4_PORT: 7,
} as const;

/** Error codes (RFC 8915 §4.1.3). */
export const KeError = {
  UNRECOGNIZED_CRITICAL_RECORD: 0,
  BAD_REQUEST: 1,
  INTERNAL_SERVER_ERROR: 2,
} as const;

/** The one protocol NTS-KE negotiates here: NTPv4. */
export const PROTOCOL_NTPV4 = 0;
/** The one AEAD: AEAD_AES_SIV_CMAC_256, which RFC 8915 makes mandatory. */
export const AEAD_AES_SIV_CMAC_256 = 15;
/**
 * A request longer than this is refused, as chrony refuses one (its
 * `NKE_MAX_MESSAGE_LENGTH`): chrony's own is 16 bytes, with a server record about 300,
 * and the rest is room for the non-critical records RFC 8915 lets a client add.
 */
export const MAX_REQUEST_LENGTH = 16384;

const CRITICAL = 0x8000;

/** What {@linkcode readKeRequest} made of the bytes so far. */
export type KeRequest =
  /** No End of Message yet, and no fault: read more. */
  | { readonly kind: "incomplete" }
  /** A request this server serves: NTPv4 with AES-SIV-CMAC-256. */
  | { readonly kind: "ntpv4" }
  /** A request answered with an Error record of this code, then closed. */
  | { readonly kind: "error"; readonly code: number; readonly reason: string };

const INCOMPLETE: KeRequest = { kind: "incomplete" };
const NTPV4: KeRequest = { kind: "ntpv4" };

function refuse(code: number, reason: string): KeRequest {
  return { kind: "error", code, reason };
}

/** Whether a record's body, a list of 16-bit ids, holds `id`. */
function listHolds(bytes: Uint8Array, at: number, length: number, id: number): boolean {
  for (let i = 0; i < length; i += 2) {
    if (((bytes[at + i] << 8) | bytes[at + i + 1]) === id) return true;
  }
  return false;
}

/**
 * Reads a client's NTS-KE request (RFC 8915 §4.1): records up to End of Message.
 * Exactly one Next Protocol record (critical) and one AEAD record must be there, and
 * must offer NTPv4 and AES-SIV-CMAC-256; at most {@linkcode MAX_REQUEST_LENGTH} bytes in
 * all. A critical record of a type this server does not know is
 * answered with Error 0, every other fault with Error 1 (Bad Request). The client's
 * own NTPv4 Server and Port records are suggestions, which this server may ignore.
 *
 * @example chrony's request, then one with an unknown critical record
 * ```ts
 * import assert from "node:assert/strict";
 * import { readKeRequest } from "./ke_records.ts";
 *
 * const chrony = Uint8Array.from([0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0]);
 * assert.deepEqual(readKeRequest(chrony), { kind: "ntpv4" });
 * assert.deepEqual(readKeRequest(chrony.subarray(0, 10)), { kind: "incomplete" });
 * const strange = Uint8Array.from([0x80, 0x42, 0, 0, ...chrony]);
 * assert.equal(readKeRequest(strange).kind, "error");
 * ```
 */
export function readKeRequest(bytes: Uint8Array): KeRequest {
  let protocols = -1, aeads = -1, protocolCount = 0, aeadCount = 0;
  let at = 0;
  while (at + 4 <= bytes.length) {
    const header = (bytes[at] << 8) | bytes[at + 1];
    const length = (bytes[at + 2] << 8) | bytes[at + 3];
    const type = header & ~CRITICAL;
    const critical = (header & CRITICAL) !== 0;
    const body = at + 4;
    if (body + length > bytes.length) break;
    at = body + length;
    switch (type) {
      case KeRecord.END_OF_MESSAGE:
        if (!critical || length !== 0) {
          return refuse(KeError.BAD_REQUEST, "malformed End of Message");
        }
        if (at !== bytes.length) return refuse(KeError.BAD_REQUEST, "bytes after End of Message");
        if (protocolCount !== 1) return refuse(KeError.BAD_REQUEST, "not one Next Protocol record");
        if (!listHolds(bytes, protocols, bodyLength(bytes, protocols), PROTOCOL_NTPV4)) {
          return refuse(KeError.BAD_REQUEST, "NTPv4 not offered");
        }
        if (aeadCount !== 1) return refuse(KeError.BAD_REQUEST, "not one AEAD record");
        if (!listHolds(bytes, aeads, bodyLength(bytes, aeads), AEAD_AES_SIV_CMAC_256)) {
          return refuse(KeError.BAD_REQUEST, "AEAD_AES_SIV_CMAC_256 not offered");
        }
        return NTPV4;
      case KeRecord.NEXT_PROTOCOL:
      case KeRecord.AEAD:
        // RFC 8915 §4.1.2: Next Protocol's critical bit MUST be set (AEAD's MAY be).
        if (type === KeRecord.NEXT_PROTOCOL && !critical) {
          return refuse(KeError.BAD_REQUEST, "Next Protocol without the critical bit");
        }
        if (length % 2 !== 0) return refuse(KeError.BAD_REQUEST, "odd-length list");
        if (type === KeRecord.NEXT_PROTOCOL) (protocols = body, protocolCount++);
        else (aeads = body, aeadCount++);
        break;
      case KeRecord.NTPV4_SERVER:
      case KeRecord.NTPV4_PORT:
        break; // the client's preference; the server says where to go
      case KeRecord.ERROR:
      case KeRecord.WARNING:
      case KeRecord.NEW_COOKIE:
        return refuse(KeError.BAD_REQUEST, "a record only servers send");
      default:
        if (critical) {
          return refuse(KeError.UNRECOGNIZED_CRITICAL_RECORD, `critical record ${type}`);
        }
    }
  }
  if (bytes.length >= MAX_REQUEST_LENGTH) return refuse(KeError.BAD_REQUEST, "request too long");
  return INCOMPLETE;
}

/** The body length of the record whose body starts at `body`. */
function bodyLength(bytes: Uint8Array, body: number): number {
  return (bytes[body - 2] << 8) | bytes[body - 1];
}

/** Appends one record to `out` at `at`; returns where the next goes. */
function putRecord(
  out: Uint8Array,
  at: number,
  type: number,
  critical: boolean,
  body: Uint8Array,
): number {
  const header = type | (critical ? CRITICAL : 0);
  out[at] = header >> 8;
  out[at + 1] = header & 0xff;
  out[at + 2] = body.length >> 8;
  out[at + 3] = body.length & 0xff;
  out.set(body, at + 4);
  return at + 4 + body.length;
}

function u16(value: number): Uint8Array {
  return Uint8Array.of(value >> 8, value & 0xff);
}

/** Where the server's answer sends NTP: null fields are left out of it. */
export interface NtpDestination {
  /** NTPv4 Server Negotiation: a host name or address, when NTP is not where KE is. */
  readonly server: string | null;
  /** NTPv4 Port Negotiation: when NTP is not on 123. */
  readonly port: number | null;
}

/**
 * The server's answer to an NTPv4 request (RFC 8915 §4.1): Next Protocol NTPv4, AEAD
 * AES-SIV-CMAC-256, where NTP is when that is not the default, the cookies, then End
 * of Message.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeKeAnswer } from "./ke_records.ts";
 *
 * const answer = writeKeAnswer({ server: null, port: 1123 }, [new Uint8Array(100)]);
 * assert.equal(answer.length, 6 + 6 + 6 + 104 + 4);
 * assert.deepEqual([...answer.subarray(12, 18)], [0x80, 7, 0, 2, 1123 >> 8, 1123 & 0xff]);
 * ```
 */
export function writeKeAnswer(where: NtpDestination, cookies: readonly Uint8Array[]): Uint8Array {
  const server = where.server === null ? null : new TextEncoder().encode(where.server);
  let length = 6 + 6 + 4 + (server === null ? 0 : 4 + server.length) +
    (where.port === null ? 0 : 6);
  for (const cookie of cookies) length += 4 + cookie.length;
  const out = new Uint8Array(length);
  let at = putRecord(out, 0, KeRecord.NEXT_PROTOCOL, true, u16(PROTOCOL_NTPV4));
  at = putRecord(out, at, KeRecord.AEAD, true, u16(AEAD_AES_SIV_CMAC_256));
  if (server !== null) at = putRecord(out, at, KeRecord.NTPV4_SERVER, true, server);
  if (where.port !== null) at = putRecord(out, at, KeRecord.NTPV4_PORT, true, u16(where.port));
  for (const cookie of cookies) at = putRecord(out, at, KeRecord.NEW_COOKIE, false, cookie);
  putRecord(out, at, KeRecord.END_OF_MESSAGE, true, new Uint8Array(0));
  return out;
}

/**
 * The answer to a request this server does not serve: one Error record (critical, as
 * RFC 8915 §4.1.3 requires), then End of Message.
 */
export function writeKeError(code: number): Uint8Array {
  const out = new Uint8Array(6 + 4);
  const at = putRecord(out, 0, KeRecord.ERROR, true, u16(code));
  putRecord(out, at, KeRecord.END_OF_MESSAGE, true, new Uint8Array(0));
  return out;
}
