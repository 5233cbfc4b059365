// AEAD_AES_SIV_CMAC_256 (RFC 5297, RFC 5116 id 15), the one AEAD NTS requires, from Nettle.

import { libraryGranted, loadFirst } from "../lib/libraries.ts";

const SYMBOLS = {
  nettle_siv_cmac_aes128_set_key: { parameters: ["buffer", "buffer"], result: "void" },
  nettle_siv_cmac_aes128_encrypt_message: {
    parameters: ["buffer", "usize", "buffer", "usize", "buffer", "usize", "buffer", "buffer"],
    result: "void",
  },
  nettle_siv_cmac_aes128_decrypt_message: {
    parameters: ["buffer", "usize", "buffer", "usize", "buffer", "usize", "buffer", "buffer"],
    result: "i32",
  },
} as const;

/**
 * Where Nettle 3.6 or later (the library under GnuTLS, and chrony's own) lives on the
 * common distributions: Debian and Ubuntu on x86_64 and arm64, Fedora and RHEL, Arch.
 */
export const NETTLE_PATHS: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/libnettle.so.8",
  "/usr/lib/aarch64-linux-gnu/libnettle.so.8",
  "/usr/lib64/libnettle.so.8",
  "/usr/lib/libnettle.so.8",
];

type Nettle = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let nettle: Nettle | null = null;

/** Loads Nettle from the first of {@linkcode NETTLE_PATHS} that FFI may load; throws why not. */
export function loadNettle(): Nettle {
  nettle ??= loadFirst("Nettle", NETTLE_PATHS, SYMBOLS);
  return nettle;
}

/** Whether FFI may load Nettle from one of its paths here. */
export function nettleGranted(): boolean {
  return libraryGranted(NETTLE_PATHS);
}

/** The key length: two AES-128 keys, one for S2V (CMAC), one for CTR. */
export const KEY_LENGTH = 32;
/** The synthetic IV that leads every ciphertext, which is also its tag. */
export const TAG_LENGTH = 16;
/** Nettle's context (a CMAC key and two AES-128 schedules, 384 bytes), with room to spare. */
const CONTEXT_SIZE = 512;

/**
 * Lengths as BigInt, made once: `usize` parameters take a BigInt without leaving V8's
 * fast path, which a number does (measured: 0.36 against 0.46 µs per call).
 */
const LENGTHS: readonly bigint[] = Array.from({ length: 4097 }, (_, n) => BigInt(n));
function size(n: number): bigint {
  return n < LENGTHS.length ? LENGTHS[n] : BigInt(n);
}

/**
 * One AEAD_AES_SIV_CMAC_256 key, with one associated data and a nonce (RFC 5116's
 * interface, as NTS uses it: S2V over the associated data, the nonce, the plaintext).
 * The key can be replaced with {@linkcode SivCmac.setKey}, so one instance serves key
 * after key without allocating. Deterministic given the nonce: callers bring fresh ones.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SivCmac, nettleGranted, TAG_LENGTH } from "./aead.ts";
 *
 * if (nettleGranted()) {
 *   const aead = new SivCmac(new Uint8Array(32).fill(1));
 *   const nonce = new Uint8Array(16), ad = new Uint8Array([1, 2, 3]);
 *   const message = new TextEncoder().encode("cookies");
 *   const sealed = new Uint8Array(TAG_LENGTH + message.length);
 *   aead.seal(nonce, ad, message, sealed);
 *   const opened = new Uint8Array(message.length);
 *   assert.equal(aead.open(nonce, ad, sealed, opened), true);
 *   assert.deepEqual(opened, message);
 *   sealed[0] ^= 1;
 *   assert.equal(aead.open(nonce, ad, sealed, opened), false);
 * }
 * ```
 */
export class SivCmac {
  readonly #context = new Uint8Array(CONTEXT_SIZE);
  readonly #nettle: Nettle;

  /** A context for `key` (32 bytes); throws when Nettle cannot be loaded. */
  constructor(key: Uint8Array) {
    this.#nettle = loadNettle();
    this.setKey(key);
  }

  /** Makes `key` (32 bytes) the one this context seals and opens with. */
  setKey(key: Uint8Array): void {
    if (key.length !== KEY_LENGTH) throw new RangeError(`an AES-SIV key is ${KEY_LENGTH} bytes`);
    this.#nettle.nettle_siv_cmac_aes128_set_key(
      this.#context,
      key as Uint8Array<ArrayBuffer>,
    );
  }

  /** Seals `plaintext` into `out`: the 16-byte tag, then the ciphertext (`out` is that long). */
  seal(nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): void {
    this.#nettle.nettle_siv_cmac_aes128_encrypt_message(
      this.#context,
      size(nonce.length),
      nonce as Uint8Array<ArrayBuffer>,
      size(ad.length),
      ad as Uint8Array<ArrayBuffer>,
      size(out.length),
      out as Uint8Array<ArrayBuffer>,
      plaintext as Uint8Array<ArrayBuffer>,
    );
  }

  /**
   * Opens `sealed` (tag then ciphertext) into `out`, `sealed.length - 16` bytes; false
   * when it is not authentic, and then `out` holds nothing of it.
   */
  open(nonce: Uint8Array, ad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean {
    if (sealed.length < TAG_LENGTH) return false;
    return this.#nettle.nettle_siv_cmac_aes128_decrypt_message(
      this.#context,
      size(nonce.length),
      nonce as Uint8Array<ArrayBuffer>,
      size(ad.length),
      ad as Uint8Array<ArrayBuffer>,
      size(sealed.length - TAG_LENGTH),
      out as Uint8Array<ArrayBuffer>,
      sealed as Uint8Array<ArrayBuffer>,
    ) === 1;
  }
}
