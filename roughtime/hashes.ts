// Roughtime's cryptography as the protocol names it: H (SHA-512 to 32 bytes) and Ed25519 with a context.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { libraryGranted, loadFirst } from "../lib/libraries.ts";
import { NETTLE_PATHS } from "../nts/aead.ts";
import { GNUTLS_PATHS } from "../nts/gnutls.ts";

/** The context of the signature over SREP (RFC 10049 §5.2.1), with its terminating zero. */
export const RESPONSE_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 response signature\0",
);
/** The context of the long-term key's signature over DELE. */
export const DELEGATION_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 delegation signature\0",
);

const NETTLE_SYMBOLS = {
  nettle_sha512_init: { parameters: ["buffer"], result: "void" },
  nettle_sha512_update: { parameters: ["buffer", "usize", "buffer"], result: "void" },
  nettle_sha512_digest: { parameters: ["buffer", "usize", "buffer"], result: "void" },
} as const;
const GNUTLS_SYMBOLS = {
  gnutls_hash_fast: { parameters: ["i32", "buffer", "usize", "buffer"], result: "i32" },
} as const;
const GNUTLS_DIG_SHA512 = 8;

/** SHA-512 of the first `length` bytes of `input`, written into `out` (64 bytes). */
export type Sha512 = (input: Uint8Array, length: number, out: Uint8Array) => void;
let sha512: Sha512 | undefined;
/** The parts of one H, one after the other, and its digest: reused, as the server has one thread. */
let input = new Uint8Array(2048);
const digest = new Uint8Array(64);
const digest32 = digest.subarray(0, 32);

/**
 * Each SHA-512 that loads here, fastest first; H uses the first. Measured on the 2-core
 * Xeon VM, a 1 KB request (the best of 9 runs): GnuTLS's `gnutls_hash_fast` (one call,
 * and GnuTLS is loaded for NTS-KE already) 2.6 µs, OpenSSL's `SHA512` 3.1 µs,
 * Nettle's 3.7 µs, node:crypto's over 5 µs; a server hashes every request it answers.
 * The libraries are those granted by `--allow-ffi`.
 */
export function sha512Implementations(): Map<string, Sha512> {
  const found = new Map<string, Sha512>();
  try {
    if (libraryGranted(GNUTLS_PATHS)) {
      const gnutls = loadFirst("GnuTLS", GNUTLS_PATHS, GNUTLS_SYMBOLS);
      found.set("GnuTLS", (bytes, length, out) => {
        if (gnutls.gnutls_hash_fast(GNUTLS_DIG_SHA512, bytes, BigInt(length), out) !== 0) {
          throw new Error("gnutls_hash_fast failed");
        }
      });
    }
  } catch { /* not here: the next */ }
  try {
    if (libraryGranted(NETTLE_PATHS)) {
      const nettle = loadFirst("Nettle", NETTLE_PATHS, NETTLE_SYMBOLS);
      const context = new Uint8Array(256); // struct sha512_ctx: 216 bytes in Nettle 3
      found.set("Nettle", (bytes, length, out) => {
        nettle.nettle_sha512_init(context);
        nettle.nettle_sha512_update(context, BigInt(length), bytes);
        nettle.nettle_sha512_digest(context, 64n, out);
      });
    }
  } catch { /* not here: node:crypto */ }
  found.set("node:crypto", (bytes, length, out) => {
    out.set(createHash("sha512").update(bytes.subarray(0, length)).digest());
  });
  return found;
}

/**
 * Writes H of the parts, one after the other, into `target` at `at` (32 bytes): a Merkle
 * tree is built in place, with nothing allocated per node.
 */
export function hashInto(
  target: Uint8Array,
  at: number,
  first: Uint8Array,
  second?: Uint8Array,
  third?: Uint8Array,
): void {
  const length = first.length + (second?.length ?? 0) + (third?.length ?? 0);
  if (length > input.length) input = new Uint8Array(2 * length);
  input.set(first);
  if (second !== undefined) input.set(second, first.length);
  if (third !== undefined) input.set(third, length - third.length);
  (sha512 ??= sha512Implementations().values().next().value!)(input, length, digest);
  target.set(digest32, at);
}

/**
 * H: the first 32 bytes of SHA-512 over the parts, one after the other (RFC 10049 §5.3).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hash } from "./hashes.ts";
 *
 * assert.equal(hash(new Uint8Array([0xff]), new Uint8Array(32)).length, 32);
 * ```
 */
export function hash(first: Uint8Array, second?: Uint8Array, third?: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  hashInto(out, 0, first, second, third);
  return out;
}

const base64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

/** An Ed25519 public key from its 32 raw bytes. */
export function publicKeyFrom(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new TypeError("an Ed25519 public key is 32 bytes");
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: base64url(raw) }, format: "jwk" });
}

/** An Ed25519 private key from its 32-byte seed and the public key that goes with it. */
export function privateKeyFrom(seed: Uint8Array, publicKey: Uint8Array): KeyObject {
  return createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: base64url(seed), x: base64url(publicKey) },
    format: "jwk",
  });
}

/** Whether `signature` is `key`'s Ed25519 signature over `context` then `value`. */
export function verifySigned(
  key: KeyObject,
  context: Uint8Array,
  value: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  const message = new Uint8Array(context.length + value.length);
  message.set(context);
  message.set(value, context.length);
  return verify(null, message, key, signature);
}

/**
 * `key`'s Ed25519 signature over `context` then `value`: 64 bytes. node:crypto's, measured
 * here at 42–74 µs a signature against Nettle's 42 µs (`ed25519_sha512_sign`, in libhogweed,
 * which no grant includes): no faster, and a server signs once per batch, not per request.
 */
export function signWith(key: KeyObject, context: Uint8Array, value: Uint8Array): Uint8Array {
  const message = new Uint8Array(context.length + value.length);
  message.set(context);
  message.set(value, context.length);
  return new Uint8Array(sign(null, message, key));
}
