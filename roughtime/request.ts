// What a server takes from a Roughtime request (RFC 10049 §5.1), or why it drops it.

import {
  buildMessage,
  buildPacket,
  parseMessage,
  RoughtimeFormatError,
  TAGS,
  unwrapPacket,
} from "./message.ts";
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
  let message;
  try {
    message = parseMessage(unwrapPacket(packet));
  } catch (error) {
    if (error instanceof RoughtimeFormatError) return "malformed";
    throw error;
  }
  const type = message.get(TAGS.TYPE), nonce = message.get(TAGS.NONC), ver = message.get(TAGS.VER);
  if (type?.length !== 4 || type.some((byte) => byte !== 0)) return "malformed";
  if (nonce?.length !== 32) return "malformed";
  if (ver === undefined || ver.length === 0 || ver.length % 4 !== 0) return "malformed";
  if (ver.length > 4 * MAX_VERSIONS) return "malformed";
  const srv = message.get(TAGS.SRV);
  if (srv !== undefined && (ourId === null || !srv.every((byte, i) => byte === ourId[i]))) {
    return srv.length === 32 ? "server" : "malformed";
  }
  const view = new DataView(ver.buffer, ver.byteOffset, ver.length);
  const offered = new Set<number>();
  for (let at = 0; at < ver.length; at += 4) offered.add(view.getUint32(at, true));
  const version = SUPPORTED_VERSIONS.find((supported) => offered.has(supported));
  if (version === undefined) return "version";
  return { nonce, version };
}

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
