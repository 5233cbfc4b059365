// NTS-protected NTPv4 on the SNTP service (RFC 8915 §5): open the cookie, check, seal the reply.

import { SivCmac, TAG_LENGTH } from "./aead.ts";
import { COOKIE_LENGTH, type CookieKeys, SESSION_KEYS_LENGTH } from "./cookies.ts";
import { MAX_PLACEHOLDERS, NtsField, NtsFields, type NtsShape } from "./ntp_fields.ts";

const HEADER = 48;
const NONCE_LENGTH = 16;
/** A cookie as an extension field: type, length, body. */
const COOKIE_FIELD = 4 + COOKIE_LENGTH;
/** The Authenticator's fixed part: type, length, nonce and ciphertext lengths, nonce, tag. */
const AUTHENTICATOR_BASE = 4 + 4 + NONCE_LENGTH + TAG_LENGTH;
/** The longest plaintext a request may seal, within the largest datagram read. */
const MAX_REQUEST_PLAINTEXT = 2048;

/** What the SNTP service counts of NTS. */
export interface NtsCounters {
  /** NTS requests answered with authenticated time. */
  requestsNts: number;
  /** NTS NAKs sent: the cookie did not open, or the request was not authentic. */
  ntsNaks: number;
  /** Requests with NTS fields that break the rules, dropped. */
  droppedNts: number;
  /** Cookies issued, in key establishment and in NTS replies. */
  ntsCookiesIssued: number;
}

/**
 * Answers NTS requests for the SNTP service, with both UDP engines: the caller checks
 * the request as for plain SNTP (access, mode, rate limit) and writes the reply's
 * header, then {@linkcode NtsResponder.read} says whether the request is NTS,
 * {@linkcode NtsResponder.open} opens its cookie and checks its authenticator, and
 * {@linkcode NtsResponder.prepare} then {@linkcode NtsResponder.seal}, or
 * {@linkcode NtsResponder.nak}, write the rest. All
 * state is reused: nothing is allocated per request but the views Nettle is passed.
 *
 * A reply is never longer than its request (a cookie per placeholder of the cookie's
 * length, and the request's Authenticator is at least as long as the reply's), so NTS
 * amplifies nothing. Replays are answered: the server keeps no state per client, and
 * the client, which matches replies to its own unique identifiers, discards them.
 */
export class NtsResponder {
  readonly fields: NtsFields = new NtsFields();
  readonly #keys: CookieKeys;
  readonly #counters: NtsCounters;
  /** The session's key (C2S to check the request, then S2C to seal the reply). */
  readonly #session = new SivCmac(new Uint8Array(32));
  readonly #sessionKeys = new Uint8Array(SESSION_KEYS_LENGTH);
  readonly #requestPlaintext = new Uint8Array(MAX_REQUEST_PLAINTEXT);
  readonly #cookies = new Uint8Array((1 + MAX_PLACEHOLDERS) * COOKIE_FIELD);
  readonly #nonce = new Uint8Array(NONCE_LENGTH);
  /** What {@linkcode prepare} left for {@linkcode seal}: where, and how many cookies. */
  #authenticator = 0;
  #count = 0;

  constructor(keys: CookieKeys, counters: NtsCounters) {
    this.#keys = keys;
    this.#counters = counters;
  }

  /** Reads the request's extension fields (see {@linkcode NtsFields.read}). */
  read(data: Uint8Array, at: number, length: number): NtsShape {
    return this.fields.read(data, at, length);
  }

  /** Opens the cookie and checks the request's Authenticator with C2S; false: answer a NAK. */
  open(data: Uint8Array, at: number): boolean {
    const f = this.fields;
    const sessionKeys = this.#sessionKeys;
    if (!this.#keys.open(data.subarray(f.cookie, f.cookie + f.cookieLength), sessionKeys)) {
      return false;
    }
    const plaintextLength = f.ciphertextLength - TAG_LENGTH;
    if (plaintextLength > MAX_REQUEST_PLAINTEXT) return false;
    this.#session.setKey(sessionKeys.subarray(0, 32));
    return this.#session.open(
      data.subarray(f.nonce, f.nonce + f.nonceLength),
      data.subarray(at, f.authenticator),
      data.subarray(f.ciphertext, f.ciphertext + f.ciphertextLength),
      this.#requestPlaintext.subarray(0, plaintextLength),
    );
  }

  /**
   * After {@linkcode open} succeeded: writes all of the reply but its 48-byte header and
   * the seal, into `reply` at `at` — the Unique Identifier, then the Authenticator's
   * lengths and nonce, with fresh cookies (one, and one per placeholder) ready to seal.
   * The caller then writes the header, the transmit timestamp last, and calls
   * {@linkcode seal} at once: that one call is all that stands between the timestamp
   * and the send. Returns the reply's length.
   */
  prepare(data: Uint8Array, requestLength: number, reply: Uint8Array, at: number): number {
    const f = this.fields;
    const authenticator = at + HEADER + f.uniqueIdLength;
    let count = 1 + f.placeholders;
    while (
      count > 1 &&
      HEADER + f.uniqueIdLength + AUTHENTICATOR_BASE + count * COOKIE_FIELD > requestLength
    ) {
      count--;
    }
    reply.set(data.subarray(f.uniqueId, f.uniqueId + f.uniqueIdLength), at + HEADER);
    const cookies = this.#cookies;
    for (let i = 0; i < count; i++) {
      const field = i * COOKIE_FIELD;
      cookies[field] = NtsField.COOKIE >> 8;
      cookies[field + 1] = NtsField.COOKIE & 0xff;
      cookies[field + 2] = 0;
      cookies[field + 3] = COOKIE_FIELD;
      this.#keys.seal(this.#sessionKeys, cookies, field + 4);
    }
    const sealedLength = TAG_LENGTH + count * COOKIE_FIELD;
    const fieldLength = 4 + 4 + NONCE_LENGTH + sealedLength;
    put16(reply, authenticator, NtsField.AUTHENTICATOR);
    put16(reply, authenticator + 2, fieldLength);
    put16(reply, authenticator + 4, NONCE_LENGTH);
    put16(reply, authenticator + 6, sealedLength);
    crypto.getRandomValues(this.#nonce);
    reply.set(this.#nonce, authenticator + 8);
    this.#session.setKey(this.#sessionKeys.subarray(32, 64));
    this.#authenticator = authenticator;
    this.#count = count;
    this.#counters.ntsCookiesIssued += count;
    return HEADER + f.uniqueIdLength + fieldLength;
  }

  /** Seals the reply {@linkcode prepare} wrote, header and all, with S2C. */
  seal(reply: Uint8Array, at: number): void {
    const authenticator = this.#authenticator;
    const sealedAt = authenticator + 8 + NONCE_LENGTH;
    const plaintextLength = this.#count * COOKIE_FIELD;
    this.#session.seal(
      this.#nonce,
      reply.subarray(at, authenticator),
      this.#cookies.subarray(0, plaintextLength),
      reply.subarray(sealedAt, sealedAt + TAG_LENGTH + plaintextLength),
    );
  }

  /**
   * After a Kiss-o'-Death header with code `NTSN` is in `reply` at `at`: the Unique
   * Identifier, and no Authenticator (RFC 8915 §5.7). Returns the reply's length.
   */
  nak(data: Uint8Array, reply: Uint8Array, at: number): number {
    const f = this.fields;
    reply.set(data.subarray(f.uniqueId, f.uniqueId + f.uniqueIdLength), at + HEADER);
    return HEADER + f.uniqueIdLength;
  }
}

function put16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >> 8;
  bytes[at + 1] = value & 0xff;
}
