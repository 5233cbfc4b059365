// A server's side of Roughtime (RFC 10049 §5.2): the delegation, and one signature per batch.

import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { buildMessage, buildPacket, parseMessage, TAGS, unwrapPacket } from "./message.ts";
import { DELEGATION_CONTEXT, privateKeyFrom, RESPONSE_CONTEXT, signWith } from "./hashes.ts";
import { leafHashInto, MerkleTree } from "./merkle.ts";
import { SUPPORTED_VERSIONS } from "./request.ts";

/** An Ed25519 key pair as raw bytes: the 32-byte seed and the 32-byte public key. */
export interface RawKeyPair {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
}

const fromBase64url = (text: string) =>
  Uint8Array.from(atob(text.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));

/** PKCS #8's wrapping of an Ed25519 seed (RFC 8410), before the 32 bytes. */
const PKCS8_ED25519 = Uint8Array.of(
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
);

/**
 * The key pair of a 32-byte seed, as a key file holds it: any 32 random bytes are one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { generateKeyPair, keyPairFromSeed } from "./response.ts";
 *
 * const pair = generateKeyPair();
 * assert.deepEqual(keyPairFromSeed(pair.seed).publicKey, pair.publicKey);
 * ```
 */
export function keyPairFromSeed(seed: Uint8Array): RawKeyPair {
  if (seed.length !== 32) throw new TypeError("an Ed25519 seed is 32 bytes");
  const der = new Uint8Array(PKCS8_ED25519.length + 32);
  der.set(PKCS8_ED25519);
  der.set(seed, PKCS8_ED25519.length);
  const privateKey = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  return { seed: seed.slice(), publicKey: fromBase64url(jwk.x!) };
}

/** A new Ed25519 key pair, from the system's random source. */
export function generateKeyPair(): RawKeyPair {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  return { seed: fromBase64url(jwk.d!), publicKey: fromBase64url(jwk.x!) };
}

/** The online key a server signs with, and the long-term key's delegation to it (CERT). */
export interface Delegation {
  readonly key: KeyObject;
  /** CERT's value: {SIG, DELE {PUBK, MINT, MAXT}}. */
  readonly cert: Uint8Array;
  /** MINT and MAXT, seconds since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
}

const u32 = (value: number) => {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value, true);
  return bytes;
};
const u64 = (value: number) => {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, value % 0x1_0000_0000, true);
  view.setUint32(4, Math.floor(value / 0x1_0000_0000), true);
  return bytes;
};

/**
 * Makes a fresh online key and has the long-term key sign it for `notBefore..notAfter`
 * (seconds since the epoch): the CERT every response of that key carries.
 */
export function delegate(longTerm: RawKeyPair, notBefore: number, notAfter: number): Delegation {
  const online = generateKeyPair();
  const dele = buildMessage([
    [TAGS.PUBK, online.publicKey],
    [TAGS.MINT, u64(notBefore)],
    [TAGS.MAXT, u64(notAfter)],
  ]);
  const signer = privateKeyFrom(longTerm.seed, longTerm.publicKey);
  const cert = buildMessage([[TAGS.SIG, signWith(signer, DELEGATION_CONTEXT, dele)], [
    TAGS.DELE,
    dele,
  ]]);
  return { key: privateKeyFrom(online.seed, online.publicKey), cert, notBefore, notAfter };
}

/** VERS: every version served, ascending. */
const VERS = (() => {
  const sorted = [...SUPPORTED_VERSIONS].sort((a, b) => a - b);
  const bytes = new Uint8Array(4 * sorted.length);
  sorted.forEach((version, i) => new DataView(bytes.buffer).setUint32(4 * i, version, true));
  return bytes;
})();

/** One request of a batch: its whole packet (the leaf) and its nonce. */
export interface BatchRequest {
  readonly packet: Uint8Array;
  readonly nonce: Uint8Array;
}

/**
 * The responses to one batch, signed once: every response has the same tags and lengths,
 * so the first is written whole and the others are copies of it with their own NONC,
 * PATH and INDX, written straight where they are sent from.
 */
export class SignedBatch {
  /** Bytes in each response. */
  readonly size: number;
  readonly #requests: readonly BatchRequest[];
  readonly #tree: MerkleTree;
  readonly #template: Uint8Array;
  readonly #nonceAt: number;
  readonly #pathAt: number;
  readonly #indexAt: number;

  constructor(requests: readonly BatchRequest[], tree: MerkleTree, template: Uint8Array) {
    this.#requests = requests;
    this.#tree = tree;
    this.#template = template;
    this.size = template.length;
    const fields = parseMessage(unwrapPacket(template));
    const at = (name: number) => fields.get(name)!.byteOffset - template.byteOffset;
    this.#nonceAt = at(TAGS.NONC);
    this.#pathAt = at(TAGS.PATH);
    this.#indexAt = at(TAGS.INDX);
  }

  /** How many responses: one per request. */
  get length(): number {
    return this.#requests.length;
  }

  /** Writes the response to request `i` into `target` at `at` ({@linkcode size} bytes). */
  writeTo(i: number, target: Uint8Array, at: number): void {
    target.set(this.#template, at);
    target.set(this.#requests[i].nonce, at + this.#nonceAt);
    this.#tree.writePath(i, target, at + this.#pathAt);
    const index = at + this.#indexAt;
    target[index] = i & 0xff;
    target[index + 1] = (i >>> 8) & 0xff;
    target[index + 2] = (i >>> 16) & 0xff;
    target[index + 3] = i >>> 24;
  }

  /** The response to request `i`, as a packet of its own. */
  response(i: number): Uint8Array {
    const packet = new Uint8Array(this.size);
    this.writeTo(i, packet, 0);
    return packet;
  }
}

/**
 * Answers a batch of requests, all in `version`, at `midpoint` ± `radius` seconds, with
 * one signature: the tree over the requests' packets, SREP with its ROOT signed once by
 * the online key, and for each request its response packet with its PATH and INDX.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { answerBatch, delegate, generateKeyPair } from "./response.ts";
 * import { makeRequest, VERSION_RFC } from "./request.ts";
 * import { verifyResponse } from "./verify.ts";
 *
 * const longTerm = generateKeyPair();
 * const now = Math.floor(Date.now() / 1000);
 * const delegation = delegate(longTerm, now - 60, now + 3600);
 * const nonces = [1, 2, 3].map((n) => new Uint8Array(32).fill(n));
 * const packets = nonces.map((nonce) => makeRequest(nonce));
 * const batch = answerBatch(
 *   packets.map((packet, i) => ({ packet, nonce: nonces[i] })),
 *   VERSION_RFC,
 *   now,
 *   3,
 *   delegation,
 * );
 * packets.forEach((packet, i) => {
 *   assert.equal(verifyResponse(packet, batch.response(i), longTerm.publicKey).midpoint, now);
 * });
 * ```
 */
export function answerBatch(
  requests: readonly BatchRequest[],
  version: number,
  midpoint: number,
  radius: number,
  delegation: Delegation,
): SignedBatch {
  const tree = new MerkleTree(
    requests.length,
    (i, nodes, at) => leafHashInto(requests[i].packet, nodes, at),
  );
  const srep = buildMessage([
    [TAGS.VER, u32(version)],
    [TAGS.RADI, u32(radius)],
    [TAGS.MIDP, u64(midpoint)],
    [TAGS.VERS, VERS],
    [TAGS.ROOT, tree.root],
  ]);
  const sig = signWith(delegation.key, RESPONSE_CONTEXT, srep);
  const template = buildPacket(buildMessage([
    [TAGS.SIG, sig],
    [TAGS.NONC, requests[0].nonce],
    [TAGS.TYPE, u32(1)],
    [TAGS.PATH, tree.path(0)],
    [TAGS.SREP, srep],
    [TAGS.CERT, delegation.cert],
    [TAGS.INDX, u32(0)],
  ]));
  return new SignedBatch(requests, tree, template);
}
