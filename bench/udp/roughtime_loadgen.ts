// A Roughtime load generator: closed loop over UDP, every response verified, one JSON result.

import { parseArgs } from "node:util";
import { cpuSeconds } from "./ntp_loadgen.ts";
import { makeRequest } from "../../roughtime/request.ts";
import {
  parseMessage,
  readBytes,
  readUint32,
  readUint64,
  type RoughtimeMessage,
  TAGS,
  unwrapPacket,
} from "../../roughtime/message.ts";
import {
  DELEGATION_CONTEXT,
  publicKeyFrom,
  RESPONSE_CONTEXT,
  verifySigned,
} from "../../roughtime/hashes.ts";
import type { KeyObject } from "node:crypto";
import { leafHash, rootFromPath } from "../../roughtime/merkle.ts";
import { decodePublicKey } from "../../roughtime/key_file.ts";

/** What one Roughtime load run measured; printed as JSON on stdout. */
export interface RoughtimeLoadResult {
  /** Verified responses received in the measured window, per second. */
  rate: number;
  /** Round-trip percentiles of verified responses, µs. */
  p50: number;
  p99: number;
  sent: number;
  valid: number;
  invalid: number;
  lost: number;
  /** Answers to a request given up as lost and sent again with another nonce: not counted. */
  late: number;
  /** Distinct SREP signatures seen: valid / signatures is the batch size. */
  signatures: number;
  /** The server's CPU use in cores over the window, from /proc (−1 when unknown). */
  serverCpu: number;
}

/**
 * Checks every response as a client would (RFC 10049 §5.4), memoizing what a batch shares:
 * the delegation is checked once per CERT, SREP's signature once per batch (with its MIDP
 * in the delegation's window), and each response's own leaf and PATH up to that ROOT.
 */
class Verifier {
  readonly #longTerm: KeyObject;
  /** Verified delegations, by CERT's signature: the online key and its window. */
  readonly #delegations = new Map<string, { key: KeyObject; from: number; to: number }>();
  /** Verified batches, by SREP's signature: its ROOT. */
  readonly #roots = new Map<string, Uint8Array>();
  #batches = 0;

  constructor(key: Uint8Array) {
    this.#longTerm = publicKeyFrom(key);
  }

  /** Distinct batches (SREP signatures) verified. */
  get signatures(): number {
    return this.#batches;
  }

  verify(request: Uint8Array, response: Uint8Array, nonce: Uint8Array): boolean {
    try {
      const answer = parseMessage(unwrapPacket(response));
      const got = readBytes(answer, TAGS.NONC, "NONC", 32);
      if (!got.every((byte, i) => byte === nonce[i])) return false;
      if (readUint32(answer, TAGS.TYPE, "TYPE") !== 1) return false;
      const sig = readBytes(answer, TAGS.SIG, "SIG", 64);
      const sigKey = String.fromCharCode(...sig);
      let root = this.#roots.get(sigKey);
      if (root === undefined) {
        const verified = this.#verifyBatch(answer, sig);
        if (verified === null) return false;
        root = verified;
        if (this.#roots.size > 100_000) this.#roots.clear();
        this.#roots.set(sigKey, root);
        this.#batches++;
      }
      const index = readUint32(answer, TAGS.INDX, "INDX");
      const path = readBytes(answer, TAGS.PATH, "PATH", 32, { multiple: true });
      const reached = rootFromPath(leafHash(request), index, path);
      return reached !== null && reached.every((byte, i) => byte === root![i]);
    } catch {
      return false;
    }
  }

  /** The batch's ROOT once its delegation and SREP signature check out; null if not. */
  #verifyBatch(answer: RoughtimeMessage, sig: Uint8Array): Uint8Array | null {
    const certBytes = readBytes(answer, TAGS.CERT, "CERT", 4, { multiple: true });
    const cert = parseMessage(certBytes);
    const certSig = readBytes(cert, TAGS.SIG, "CERT's SIG", 64);
    const certKey = String.fromCharCode(...certSig);
    let delegation = this.#delegations.get(certKey);
    if (delegation === undefined) {
      const dele = readBytes(cert, TAGS.DELE, "DELE", 4, { multiple: true });
      if (!verifySigned(this.#longTerm, DELEGATION_CONTEXT, dele, certSig)) return null;
      const fields = parseMessage(dele);
      delegation = {
        key: publicKeyFrom(readBytes(fields, TAGS.PUBK, "PUBK", 32)),
        from: readUint64(fields, TAGS.MINT, "MINT"),
        to: readUint64(fields, TAGS.MAXT, "MAXT"),
      };
      this.#delegations.set(certKey, delegation);
    }
    const srep = readBytes(answer, TAGS.SREP, "SREP", 4, { multiple: true });
    if (!verifySigned(delegation.key, RESPONSE_CONTEXT, srep, sig)) return null;
    const signed = parseMessage(srep);
    const midpoint = readUint64(signed, TAGS.MIDP, "MIDP");
    if (midpoint < delegation.from || midpoint > delegation.to) return null;
    if (readUint32(signed, TAGS.RADI, "RADI") === 0) return null;
    return readBytes(signed, TAGS.ROOT, "ROOT", 32).slice();
  }
}

/** Keeps `window` requests outstanding on one socket until `end`. */
async function loadOneSocket(
  to: Deno.NetAddr,
  window: number,
  end: number,
  verifier: Verifier,
  counts: { sent: number; valid: number; invalid: number; lost: number; late: number },
  rtts: number[],
): Promise<void> {
  const socket = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  // Each slot has a request of its own, sent again once answered (the nonce in byte 0 of
  // NONC tells the slots apart; the rest is random).
  const nonces = Array.from({ length: window }, (_, i) => {
    const nonce = crypto.getRandomValues(new Uint8Array(32));
    nonce[0] = i;
    return nonce;
  });
  const requests = nonces.map((nonce) => makeRequest(nonce));
  const nonceOffsets = requests.map((request) => {
    const nonce = parseMessage(unwrapPacket(request)).get(TAGS.NONC)!;
    return nonce.byteOffset - request.byteOffset;
  });
  const sentAt = new Float64Array(window).fill(-1);
  let serial = 0;
  const send = async (slot: number) => {
    // A fresh nonce each time (a serial in bytes 1–4), so no two requests share a signature.
    serial = (serial + 1) >>> 0;
    const nonce = nonces[slot];
    new DataView(nonce.buffer).setUint32(1, serial, true);
    requests[slot].set(nonce, nonceOffsets[slot]);
    sentAt[slot] = performance.now();
    counts.sent++;
    await socket.send(requests[slot], to);
  };
  for (let slot = 0; slot < window; slot++) await send(slot);
  const expire = setInterval(() => {
    const now = performance.now();
    for (let slot = 0; slot < window; slot++) {
      if (sentAt[slot] >= 0 && sentAt[slot] < now - 500) {
        counts.lost++;
        sentAt[slot] = -1;
        if (now < end) send(slot).catch(() => {});
      }
    }
    if (now >= end + 600 || (now >= end && sentAt.every((at) => at < 0))) socket.close();
  }, 50);
  try {
    for (;;) {
      let response: Uint8Array;
      try {
        response = (await socket.receive())[0];
      } catch {
        break;
      }
      const slot = nonceSlot(response);
      if (slot < 0 || slot >= window) {
        counts.invalid++;
        continue;
      }
      if (sentAt[slot] < 0 || !sameNonce(response, nonces[slot])) {
        counts.late++; // a request given up on, or answered already
        continue;
      }
      if (!verifier.verify(requests[slot], response, nonces[slot])) {
        counts.invalid++;
        continue;
      }
      const now = performance.now();
      if (now <= end) {
        counts.valid++;
        rtts.push((now - sentAt[slot]) * 1000);
        sentAt[slot] = -1;
        send(slot).catch(() => {});
      } else sentAt[slot] = -1;
    }
  } finally {
    clearInterval(expire);
  }
}

/** Whether a response carries `nonce` (a slot's current one). */
function sameNonce(response: Uint8Array, nonce: Uint8Array): boolean {
  const got = parseMessage(unwrapPacket(response)).get(TAGS.NONC)!;
  return got.every((byte, i) => byte === nonce[i]);
}

/** The slot a response answers: the first byte of its NONC; -1 when it has none. */
function nonceSlot(response: Uint8Array): number {
  try {
    const nonce = parseMessage(unwrapPacket(response)).get(TAGS.NONC);
    return nonce === undefined || nonce.length !== 32 ? -1 : nonce[0];
  } catch {
    return -1;
  }
}

/** Runs `sockets` × `window` outstanding requests for `seconds`. */
export async function runRoughtimeLoad(options: {
  hostname: string;
  port: number;
  key: Uint8Array;
  sockets: number;
  window: number;
  seconds: number;
  serverPid?: number;
}): Promise<RoughtimeLoadResult> {
  const to = { transport: "udp" as const, hostname: options.hostname, port: options.port };
  const counts = { sent: 0, valid: 0, invalid: 0, lost: 0, late: 0 };
  const rtts: number[] = [];
  const verifier = new Verifier(options.key);
  const cpuBefore = options.serverPid ? cpuSeconds(options.serverPid) : NaN;
  const started = performance.now();
  const end = started + options.seconds * 1000;
  await Promise.all(
    Array.from(
      { length: options.sockets },
      () => loadOneSocket(to, options.window, end, verifier, counts, rtts),
    ),
  );
  const elapsed = Math.min(performance.now(), end) - started;
  const cpu = options.serverPid
    ? (cpuSeconds(options.serverPid) - cpuBefore) / (elapsed / 1000)
    : -1;
  const sorted = Float64Array.from(rtts).sort();
  const at = (p: number) => sorted.length === 0 ? 0 : sorted[Math.floor(p * (sorted.length - 1))];
  return {
    rate: Math.round(counts.valid / (elapsed / 1000)),
    p50: Math.round(at(0.5)),
    p99: Math.round(at(0.99)),
    ...counts,
    signatures: verifier.signatures,
    serverCpu: Number.isNaN(cpu) ? -1 : Math.round(cpu * 100) / 100,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      key: { type: "string" },
      sockets: { type: "string", default: "8" },
      window: { type: "string", default: "16" },
      duration: { type: "string", default: "5" },
      "server-pid": { type: "string" },
    },
  });
  const key = values.key === undefined ? null : decodePublicKey(values.key);
  if (!values.port || key === null) {
    console.error("roughtime_loadgen: --port and --key BASE64 are required");
    Deno.exit(2);
  }
  const result = await runRoughtimeLoad({
    hostname: values.host,
    port: Number(values.port),
    key,
    sockets: Number(values.sockets),
    window: Number(values.window),
    seconds: Number(values.duration),
    serverPid: values["server-pid"] ? Number(values["server-pid"]) : undefined,
  });
  console.log(JSON.stringify(result));
}
