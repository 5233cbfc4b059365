// Roughtime's cryptography as the protocol names it: H (SHA-512 to 32 bytes) and Ed25519 with a context.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";

/** The context of the signature over SREP (RFC 10049 §5.2.1), with its terminating zero. */
export const RESPONSE_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 response signature\0",
);
/** The context of the long-term key's signature over DELE. */
export const DELEGATION_CONTEXT: Uint8Array = new TextEncoder().encode(
  "RoughTime v1 delegation signature\0",
);

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
export function hash(...parts: Uint8Array[]): Uint8Array {
  const digest = createHash("sha512");
  for (const part of parts) digest.update(part);
  return new Uint8Array(digest.digest().buffer, 0, 32).slice();
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
