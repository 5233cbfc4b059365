// What a server takes from a Roughtime request (RFC 10049 §5.1), or why it drops it.

import { buildMessage, buildPacket, findTags, RoughtimeFormatError, TAGS } from "./message.ts";
import { hash } from "./hashes.ts";

/** The RFC's version. */
export const VERSION_RFC = 0x00000001;
/** The version of drafts 12 to 19, which deployed clients still send; the format is the RFC's. */
export const VERSION_DRAFT = 0x8000000c;
/** The versions served, in the order preferred: the RFC's first. */
export const SUPPORTED_VERSIONS: readonly number[] = [VERSION_RFC, VERSION_DRAFT];
/** The smallest request answered, in bytes of packet: a reply is never larger than this. */
export const MIN_REQUEST = 1024;
/** The most versions a VER may list (RFC 10049 §5.1.1). */
const MAX_VERSIONS = 32;

/** Why a request gets no answer; every one is counted, none is answered (there is no error reply). */
export type DropReason = "short" | "malformed" | "version" | "server";

/** A request to answer: its nonce and the version to answer in. */
export interface AcceptedRequest {
  readonly nonce: Uint8Array;
  readonly version: number;
}

/** `SRV`'s value for a long-term public key: H(0xff ‖ key). */
export function serverId(publicKey: Uint8Array): Uint8Array {
  return hash(Uint8Array.of(0xff), publicKey);
}

/**
 * Reads a request packet: the nonce and the version to answer in, or why it is dropped:
 * `short` (under {@linkcode MIN_REQUEST} bytes), `malformed` (no ROUGHTIM packet, a
 * message out of order or bounds, no VER, NONC or TYPE 0), `version` (no version this
 * server speaks), `server` (SRV names another key than `ourId`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeRequest, readRequest, VERSION_RFC } from "./request.ts";
 *
 * const nonce = new Uint8Array(32).fill(7);
 * const accepted = readRequest(makeRequest(nonce), null);
 * assert.equal(typeof accepted === "string" ? accepted : accepted.version, VERSION_RFC);
 * assert.equal(readRequest(new Uint8Array(100), null), "short");
 * ```
 */
export function readRequest(
  packet: Uint8Array,
  ourId: Uint8Array | null,
): AcceptedRequest | DropReason {
  if (packet.length < MIN_REQUEST) return "short";
  // Read in place, allocating only the view, the nonce's view and the answer: a server
  // reads every request it gets.
  const view = new DataView(packet.buffer, packet.byteOffset, packet.length);
  try {
    findTags(view, 0, packet.length, REQUEST_TAGS, spans);
  } catch (error) {
    if (error instanceof RoughtimeFormatError) return "malformed";
    throw error;
  }
  const [verAt, verLength, nonceAt, nonceLength, typeAt, typeLength, srvAt, srvLength] = spans;
  if (typeLength !== 4 || view.getUint32(typeAt, true) !== 0) return "malformed";
  if (nonceLength !== 32) return "malformed";
  if (verLength <= 0 || verLength % 4 !== 0 || verLength > 4 * MAX_VERSIONS) return "malformed";
  if (srvAt >= 0) {
    if (srvLength !== 32) return "malformed";
    if (ourId === null) return "server";
    for (let i = 0; i < 32; i++) if (packet[srvAt + i] !== ourId[i]) return "server";
  }
  // The first of SUPPORTED_VERSIONS offered: our preference, whatever the client's order.
  let best = SUPPORTED_VERSIONS.length;
  for (let at = verAt; at < verAt + verLength; at += 4) {
    const rank = SUPPORTED_VERSIONS.indexOf(view.getUint32(at, true));
    if (rank >= 0 && rank < best) best = rank;
  }
  if (best === SUPPORTED_VERSIONS.length) return "version";
  return { nonce: packet.subarray(nonceAt, nonceAt + 32), version: SUPPORTED_VERSIONS[best] };
}

/** The tags a request is read for, and where findTags puts them (reused: one thread). */
const REQUEST_TAGS = new Map([[TAGS.VER, 0], [TAGS.NONC, 1], [TAGS.TYPE, 2], [TAGS.SRV, 3]]);
const spans = new Int32Array(8);

/**
 * A request packet as a client sends one: VER (the versions given, ascending), NONC,
 * TYPE 0, SRV when the server's key is known, and ZZZZ padding the packet to
 * {@linkcode MIN_REQUEST} bytes.
 */
export function makeRequest(
  nonce: Uint8Array,
  { versions = [VERSION_RFC], serverKey = null as Uint8Array | null } = {},
): Uint8Array {
  const ver = new Uint8Array(4 * versions.length);
  const view = new DataView(ver.buffer);
  [...versions].sort((a, b) => a - b).forEach((version, i) => view.setUint32(4 * i, version, true));
  const pairs: [number, Uint8Array][] = [
    [TAGS.VER, ver],
    [TAGS.NONC, nonce],
    [TAGS.TYPE, new Uint8Array(4)],
  ];
  if (serverKey !== null) pairs.push([TAGS.SRV, serverId(serverKey)]);
  const unpadded = buildMessage([...pairs, [TAGS.ZZZZ, new Uint8Array(0)]]).length + 12;
  pairs.push([TAGS.ZZZZ, new Uint8Array(Math.max(0, MIN_REQUEST - unpadded))]);
  return buildPacket(buildMessage(pairs));
}
