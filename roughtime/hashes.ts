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

/** The context of the signature over SREP (RFC 10049 §5.2.1), with its terminating zero. */
export const RESPONSE_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 response signature\0",
);
/** The context of the long-term key's signature over DELE. */
export const DELEGATION_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 delegation signature\0",
);

const SHA512_SYMBOLS = {
  nettle_sha512_init: { parameters: ["buffer"], result: "void" },
  nettle_sha512_update: { parameters: ["buffer", "usize", "buffer"], result: "void" },
  nettle_sha512_digest: { parameters: ["buffer", "usize", "buffer"], result: "void" },
} as const;
type Sha512 = Deno.DynamicLibrary<typeof SHA512_SYMBOLS>["symbols"];
let sha512: Sha512 | null | undefined;
/** Nettle's `struct sha512_ctx` (216 bytes in Nettle 3), and the digest, reused: one thread. */
const context = new Uint8Array(256);
const digestOut = new Uint8Array(32);

/**
 * Nettle's SHA-512 where FFI may load Nettle (as NTS does), else null: measured here, 6.3 µs
 * a 1 KB request against node:crypto's 8.2 µs, and a server hashes every request it answers.
 */
function nettleSha512(): Sha512 | null {
  if (sha512 !== undefined) return sha512;
  try {
    sha512 = libraryGranted(NETTLE_PATHS)
      ? loadFirst("Nettle", NETTLE_PATHS, SHA512_SYMBOLS)
      : null;
  } catch {
    sha512 = null;
  }
  return sha512;
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
  const nettle = nettleSha512();
  if (nettle !== null) {
    nettle.nettle_sha512_init(context);
    nettle.nettle_sha512_update(context, BigInt(first.length), first);
    if (second !== undefined) nettle.nettle_sha512_update(context, BigInt(second.length), second);
    if (third !== undefined) nettle.nettle_sha512_update(context, BigInt(third.length), third);
    nettle.nettle_sha512_digest(context, 32n, digestOut);
    return digestOut.slice();
  }
  const digest = createHash("sha512").update(first);
  if (second !== undefined) digest.update(second);
  if (third !== undefined) digest.update(third);
  const full = digest.digest();
  return new Uint8Array(full.buffer, full.byteOffset, 32).slice();
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

/** `key`'s Ed25519 signature over `context` then `value`: 64 bytes. */
export function signWith(key: KeyObject, context: Uint8Array, value: Uint8Array): Uint8Array {
  const message = new Uint8Array(context.length + value.length);
  message.set(context);
  message.set(value, context.length);
  return new Uint8Array(sign(null, message, key));
}
