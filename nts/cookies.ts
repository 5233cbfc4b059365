// NTS cookies (RFC 8915 §6): the client's keys, sealed under a server key that rotates.

import { createHmac } from "node:crypto";
import { KEY_LENGTH, SivCmac, TAG_LENGTH } from "./aead.ts";

/** Bytes of the key id that leads a cookie: the number of the key's period. */
const ID_LENGTH = 4;
const NONCE_LENGTH = 16;
/** C2S then S2C, 32 bytes each. */
export const SESSION_KEYS_LENGTH = 2 * KEY_LENGTH;
/** A cookie: key id, nonce, then the sealed session keys (as chrony's: 100 bytes). */
export const COOKIE_LENGTH = ID_LENGTH + NONCE_LENGTH + TAG_LENGTH + SESSION_KEYS_LENGTH;

/**
 * How long one server key makes cookies: a day. chrony rotates weekly; a day bounds
 * what one leaked key exposes, and clients take fresh cookies with every reply.
 */
export const KEY_PERIOD_SECONDS = 86_400;
/**
 * Keys of past periods that still open cookies: a week's. A client polling as slowly
 * as NTP allows (36 h) keeps valid cookies across rotations; older ones get a NAK and
 * a new key establishment.
 */
export const KEYS_KEPT = 7;

const LABEL = new TextEncoder().encode("time-server NTS cookie key");

/**
 * The server keys that seal cookies, derived from one master secret: the key of period
 * p (days since the epoch) is HMAC-SHA256(master, label ‖ p). Every process given the
 * same master (workers, a restart, instances behind a balancer) makes and opens the
 * same cookies with no coordination; rotation is the change of period. Keys of the
 * {@linkcode KEYS_KEPT} periods before open cookies, and of the next (a clock a little
 * ahead), and no other. A leaked master exposes every period, so it is kept like the
 * TLS key (see `nts/key_file.ts`).
 *
 * @example A cookie opens under the same master, a day later too, and not under another
 * ```ts
 * import assert from "node:assert/strict";
 * import { CookieKeys, KEY_PERIOD_SECONDS } from "./cookies.ts";
 * import { nettleGranted } from "./aead.ts";
 *
 * if (nettleGranted()) {
 *   let now = Date.UTC(2026, 11, 1);
 *   const master = new Uint8Array(32).fill(9);
 *   const server = new CookieKeys(master, () => now);
 *   const keys = crypto.getRandomValues(new Uint8Array(64));
 *   const cookie = new Uint8Array(100);
 *   server.seal(keys, cookie, 0);
 *   now += KEY_PERIOD_SECONDS * 1000;
 *   const opened = new Uint8Array(64);
 *   assert.equal(new CookieKeys(master, () => now).open(cookie, opened), true);
 *   assert.deepEqual(opened, keys);
 *   assert.equal(new CookieKeys(new Uint8Array(32), () => now).open(cookie, opened), false);
 * }
 * ```
 */
export class CookieKeys {
  readonly #master: Uint8Array;
  readonly #now: () => number;
  /** Contexts by period, each set to its key once. */
  readonly #keys = new Map<number, SivCmac>();
  #period = -1;
  #current: SivCmac | null = null;
  readonly #nonce = new Uint8Array(NONCE_LENGTH);
  /** Times the current key changed after the first; metrics read it. */
  rotations = 0;

  /** `master`: at least 32 secret bytes; `now`: the wall clock in ms since the epoch. */
  constructor(master: Uint8Array, now: () => number = Date.now) {
    if (master.length < 32) throw new RangeError("the NTS master key is at least 32 bytes");
    this.#master = master.slice();
    this.#now = now;
  }

  /** The period of the current key, rotating to it when the day has changed. */
  #rotate(): number {
    const period = Math.floor(this.#now() / 1000 / KEY_PERIOD_SECONDS);
    if (period !== this.#period) {
      if (this.#period !== -1) this.rotations++;
      this.#period = period;
      this.#current = this.#key(period);
      for (const old of this.#keys.keys()) {
        if (old < period - KEYS_KEPT || old > period + 1) this.#keys.delete(old);
      }
    }
    return period;
  }

  #key(period: number): SivCmac {
    let key = this.#keys.get(period);
    if (key === undefined) {
      const id = new Uint8Array(ID_LENGTH);
      new DataView(id.buffer).setUint32(0, period);
      const secret = createHmac("sha256", this.#master).update(LABEL).update(id).digest();
      key = new SivCmac(new Uint8Array(secret.buffer, secret.byteOffset, KEY_LENGTH));
      this.#keys.set(period, key);
    }
    return key;
  }

  /**
   * Writes a cookie holding `sessionKeys` (C2S ‖ S2C, 64 bytes) into `out` at `at`,
   * {@linkcode COOKIE_LENGTH} bytes: the key id, a fresh nonce, the sealed keys.
   */
  seal(sessionKeys: Uint8Array, out: Uint8Array, at: number): void {
    const period = this.#rotate();
    out[at] = period >>> 24;
    out[at + 1] = (period >>> 16) & 0xff;
    out[at + 2] = (period >>> 8) & 0xff;
    out[at + 3] = period & 0xff;
    const nonce = this.#nonce;
    crypto.getRandomValues(nonce);
    out.set(nonce, at + ID_LENGTH);
    this.#current!.seal(
      nonce,
      out.subarray(at, at + ID_LENGTH),
      sessionKeys,
      out.subarray(at + ID_LENGTH + NONCE_LENGTH, at + COOKIE_LENGTH),
    );
  }

  /**
   * Opens a cookie into `sessionKeys` (64 bytes); false when it is not one of this
   * master's, its key has expired, or it was tampered with.
   */
  open(cookie: Uint8Array, sessionKeys: Uint8Array): boolean {
    if (cookie.length !== COOKIE_LENGTH) return false;
    const current = this.#rotate();
    const period = ((cookie[0] << 24) | (cookie[1] << 16) | (cookie[2] << 8) | cookie[3]) >>> 0;
    if (period < current - KEYS_KEPT || period > current + 1) return false;
    return this.#key(period).open(
      cookie.subarray(ID_LENGTH, ID_LENGTH + NONCE_LENGTH),
      cookie.subarray(0, ID_LENGTH),
      cookie.subarray(ID_LENGTH + NONCE_LENGTH),
      sessionKeys,
    );
  }
}
