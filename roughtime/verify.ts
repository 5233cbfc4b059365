// A client's checks of a Roughtime response (RFC 10049 §5.4): every signature, the window, the path.

import {
  parseMessage,
  readBytes,
  readUint32,
  readUint64,
  RoughtimeFormatError,
  TAGS,
  unwrapPacket,
} from "./message.ts";
import { DELEGATION_CONTEXT, publicKeyFrom, RESPONSE_CONTEXT, verifySigned } from "./hashes.ts";
import { leafHash, rootFromPath } from "./merkle.ts";

/** What a valid response proves: the server signed MIDP ± RADI, in this version. */
export interface VerifiedTime {
  /** MIDP: the moment the server processed the request, seconds since the epoch. */
  readonly midpoint: number;
  /** RADI: the true time was within `midpoint ± radius` seconds then. */
  readonly radius: number;
  /** The version the server answered in (VER in SREP). */
  readonly version: number;
  /** The delegation's window, MINT to MAXT, seconds since the epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** A response that is not valid: the message says which check failed, in one line. */
export class RoughtimeVerifyError extends Error {
  override name = "RoughtimeVerifyError";
}

/** The version numbers in a VER or VERS value. */
function versions(value: Uint8Array): number[] {
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  return Array.from({ length: value.length / 4 }, (_, i) => view.getUint32(4 * i, true));
}

/**
 * Checks `response` to `request` (both whole packets) against the server's long-term
 * Ed25519 public key, as RFC 10049 §5.4 lists: the delegation signed by that key, MIDP
 * within MINT..MAXT, the request in the Merkle tree under ROOT, SREP signed by the
 * delegated key; and that the nonce is the request's, TYPE is 1, RADI is not 0, and the
 * version is one the request offered and VERS lists. Throws {@linkcode RoughtimeVerifyError}
 * saying which check failed.
 *
 * A client that asks often may pass `checked`, the CERTs whose delegation signature it has
 * verified against this `longTermKey` (each CERT's bytes as a string): a CERT found there is
 * not verified again, and one verified is added.
 */
export function verifyResponse(
  request: Uint8Array,
  response: Uint8Array,
  longTermKey: Uint8Array,
  checked?: Set<string>,
): VerifiedTime {
  try {
    return check(request, response, longTermKey, checked);
  } catch (error) {
    if (error instanceof RoughtimeFormatError) throw new RoughtimeVerifyError(error.message);
    throw error;
  }
}

function check(
  request: Uint8Array,
  response: Uint8Array,
  longTermKey: Uint8Array,
  checked: Set<string> | undefined,
): VerifiedTime {
  const asked = parseMessage(unwrapPacket(request));
  const answer = parseMessage(unwrapPacket(response));
  const fail = (why: string): never => {
    throw new RoughtimeVerifyError(why);
  };
  if (readUint32(answer, TAGS.TYPE, "TYPE") !== 1) fail("TYPE is not 1: not a response");
  const nonce = readBytes(answer, TAGS.NONC, "NONC", 32);
  const ourNonce = readBytes(asked, TAGS.NONC, "the request's NONC", 32);
  if (!nonce.every((byte, i) => byte === ourNonce[i])) fail("NONC is not the request's");

  const certBytes = readBytes(answer, TAGS.CERT, "CERT", 4, { multiple: true });
  const cert = parseMessage(certBytes);
  const dele = readBytes(cert, TAGS.DELE, "DELE", 4, { multiple: true });
  const deleSig = readBytes(cert, TAGS.SIG, "CERT's SIG", 64);
  const certKey = checked === undefined ? "" : String.fromCharCode(...certBytes);
  if (!checked?.has(certKey)) {
    if (!verifySigned(publicKeyFrom(longTermKey), DELEGATION_CONTEXT, dele, deleSig)) {
      fail("the delegation is not signed by the server's long-term key");
    }
    checked?.add(certKey);
  }
  const delegation = parseMessage(dele);
  const onlineKey = readBytes(delegation, TAGS.PUBK, "PUBK", 32);
  const notBefore = readUint64(delegation, TAGS.MINT, "MINT");
  const notAfter = readUint64(delegation, TAGS.MAXT, "MAXT");

  const srep = readBytes(answer, TAGS.SREP, "SREP", 4, { multiple: true });
  const srepSig = readBytes(answer, TAGS.SIG, "SIG", 64);
  if (!verifySigned(publicKeyFrom(onlineKey), RESPONSE_CONTEXT, srep, srepSig)) {
    fail("SREP is not signed by the delegated key");
  }
  const signed = parseMessage(srep);
  const version = readUint32(signed, TAGS.VER, "SREP's VER");
  const radius = readUint32(signed, TAGS.RADI, "RADI");
  const midpoint = readUint64(signed, TAGS.MIDP, "MIDP");
  const root = readBytes(signed, TAGS.ROOT, "ROOT", 32);
  const supported = versions(readBytes(signed, TAGS.VERS, "VERS", 4, { multiple: true }));
  const offered = versions(readBytes(asked, TAGS.VER, "the request's VER", 4, { multiple: true }));
  if (radius === 0) fail("RADI is 0");
  if (!supported.includes(version)) fail(`VERS does not list the version answered, ${version}`);
  if (!offered.includes(version)) fail(`the server answered in version ${version}, not offered`);
  if (midpoint < notBefore || midpoint > notAfter) {
    fail(`MIDP ${midpoint} is outside the delegation's window ${notBefore}..${notAfter}`);
  }

  const index = readUint32(answer, TAGS.INDX, "INDX");
  const path = readBytes(answer, TAGS.PATH, "PATH", 32, { multiple: true });
  const reached = rootFromPath(leafHash(request), index, path);
  if (reached === null || !reached.every((byte, i) => byte === root[i])) {
    fail("the request is not in the Merkle tree that SREP signs (PATH, INDX, ROOT)");
  }
  return { midpoint, radius, version, notBefore, notAfter };
}
