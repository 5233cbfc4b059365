// The NTS extension fields of an NTPv4 request (RFC 8915 §5, RFC 7822): where each one is.

/** Extension field types NTS defines (RFC 8915 §7.5). */
export const NtsField = {
  UNIQUE_IDENTIFIER: 0x0104,
  COOKIE: 0x0204,
  COOKIE_PLACEHOLDER: 0x0304,
  AUTHENTICATOR: 0x0404,
} as const;

/** What {@linkcode NtsFields.read} found. */
export const NtsShape = {
  /** No NTS field: a plain SNTP request, answered as one. */
  PLAIN: 0,
  /** A well-formed NTS request: open its cookie, check its authenticator. */
  NTS: 1,
  /** NTS fields that break the rules: dropped unanswered. */
  MALFORMED: 2,
} as const;
/** One of {@linkcode NtsShape}'s values. */
export type NtsShape = typeof NtsShape[keyof typeof NtsShape];

const HEADER = 48;
/** RFC 7822: an extension field is at least 16 bytes, and 24 or fewer left over are a MAC. */
const MIN_FIELD = 16;
const MAC_MAX = 24;
/** RFC 8915 §5.3: the Unique Identifier's body is at least 32 bytes. */
const MIN_UNIQUE_ID = 32;
/** AES-SIV takes any nonce; RFC 8915 §5.6 asks at least 16 bytes of the client. */
const MIN_NONCE = 16;
const TAG = 16;
/** A reply carries at most 8 cookies: the one used and 7 asked for. */
export const MAX_PLACEHOLDERS = 7;

function u16(bytes: Uint8Array, at: number): number {
  return (bytes[at] << 8) | bytes[at + 1];
}

/**
 * The NTS fields of one request, read in place: offsets into the datagram, so that
 * nothing is allocated per request. One instance is reused for every request.
 *
 * The rules, as chrony applies them: fields of at least 16 bytes, a multiple of 4,
 * within the datagram; exactly one Unique Identifier (32 bytes or more) and one
 * Cookie; Cookie Placeholders of the cookie's length; the Authenticator last, nothing
 * after it, its nonce of 16 bytes or more and its ciphertext at least a tag. Other
 * fields are ignored (they are authenticated with the rest).
 *
 * @example chrony's request shape
 * ```ts
 * import assert from "node:assert/strict";
 * import { NtsFields, NtsShape } from "./ntp_fields.ts";
 *
 * const field = (type: number, body: number) => [type >> 8, type & 0xff, 0, body + 4, ...new Array(body).fill(0)];
 * const auth = [4, 4, 0, 40, 0, 16, 0, 16, ...new Array(32).fill(0)];
 * const request = Uint8Array.from([...new Array(48).fill(0), ...field(0x0104, 32), ...field(0x0204, 100), ...auth]);
 * const fields = new NtsFields();
 * assert.equal(request.length, 228);
 * assert.equal(fields.read(request, 0, request.length), NtsShape.NTS);
 * assert.equal(fields.cookieLength, 100);
 * assert.equal(fields.read(request, 0, 48), NtsShape.PLAIN);
 * assert.equal(fields.read(request, 0, 200), NtsShape.MALFORMED);
 * ```
 */
export class NtsFields {
  /** Where the Unique Identifier field starts (its type), and its whole length. */
  uniqueId = -1;
  uniqueIdLength = 0;
  /** Where the cookie's body starts, and its length. */
  cookie = -1;
  cookieLength = 0;
  /** Placeholders of the cookie's length, up to {@linkcode MAX_PLACEHOLDERS}. */
  placeholders = 0;
  /** Where the Authenticator field starts: the associated data is everything before it. */
  authenticator = -1;
  nonce = -1;
  nonceLength = 0;
  ciphertext = -1;
  ciphertextLength = 0;

  /** Reads the fields of the request at `at`, `length` bytes long (48 of them the header). */
  read(bytes: Uint8Array, at: number, length: number): NtsShape {
    this.uniqueId = this.cookie = this.authenticator = -1;
    this.placeholders = 0;
    let placeholderLength = -1, placeholdersMismatched = false, seen = false;
    const end = at + length;
    let field = at + HEADER;
    while (field < end) {
      const left = end - field;
      if (left <= MAC_MAX && !seen) return NtsShape.PLAIN; // a legacy MAC: not NTS
      if (left < MIN_FIELD) return seen ? NtsShape.MALFORMED : NtsShape.PLAIN;
      const type = u16(bytes, field);
      const fieldLength = u16(bytes, field + 2);
      if (fieldLength < MIN_FIELD || fieldLength % 4 !== 0 || fieldLength > left) {
        return seen || isNts(type) ? NtsShape.MALFORMED : NtsShape.PLAIN;
      }
      const body = field + 4;
      const bodyLength = fieldLength - 4;
      switch (type) {
        case NtsField.UNIQUE_IDENTIFIER:
          if (this.uniqueId !== -1 || bodyLength < MIN_UNIQUE_ID) return NtsShape.MALFORMED;
          this.uniqueId = field;
          this.uniqueIdLength = fieldLength;
          break;
        case NtsField.COOKIE:
          if (this.cookie !== -1) return NtsShape.MALFORMED;
          this.cookie = body;
          this.cookieLength = bodyLength;
          break;
        case NtsField.COOKIE_PLACEHOLDER:
          if (placeholderLength !== -1 && placeholderLength !== bodyLength) {
            placeholdersMismatched = true;
          }
          placeholderLength = bodyLength;
          if (this.placeholders < MAX_PLACEHOLDERS) this.placeholders++;
          break;
        case NtsField.AUTHENTICATOR: {
          if (fieldLength !== left) return NtsShape.MALFORMED; // not last
          const nonceLength = u16(bytes, body);
          const ciphertextLength = u16(bytes, body + 2);
          const padded = pad4(nonceLength) + pad4(ciphertextLength);
          if (nonceLength < MIN_NONCE || ciphertextLength < TAG || 4 + padded > bodyLength) {
            return NtsShape.MALFORMED;
          }
          this.authenticator = field;
          this.nonce = body + 4;
          this.nonceLength = nonceLength;
          this.ciphertext = body + 4 + pad4(nonceLength);
          this.ciphertextLength = ciphertextLength;
          break;
        }
      }
      seen ||= isNts(type);
      field += fieldLength;
    }
    if (!seen) return NtsShape.PLAIN;
    if (this.uniqueId === -1 || this.cookie === -1 || this.authenticator === -1) {
      return NtsShape.MALFORMED;
    }
    if (
      placeholdersMismatched ||
      (placeholderLength !== -1 && placeholderLength !== this.cookieLength)
    ) {
      return NtsShape.MALFORMED;
    }
    return NtsShape.NTS;
  }
}

function isNts(type: number): boolean {
  return type === NtsField.UNIQUE_IDENTIFIER || type === NtsField.COOKIE ||
    type === NtsField.COOKIE_PLACEHOLDER || type === NtsField.AUTHENTICATOR;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}
