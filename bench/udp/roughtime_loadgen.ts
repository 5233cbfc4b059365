// A Roughtime load generator: closed loop over UDP through libc's sendmmsg and recvmmsg, every
// response verified, one JSON result. It runs on a core of its own and never yields to the
// event loop: a receive blocks this thread for at most RECEIVE_TIMEOUT_MS.

import { parseArgs } from "node:util";
import { cpuSeconds, type NtpLoadResult } from "./ntp_loadgen.ts";
import { makeRequest } from "../../roughtime/request.ts";
import { findTags, parseMessage, TAGS, unwrapPacket } from "../../roughtime/message.ts";
import { leafHash } from "../../roughtime/merkle.ts";
import { hashInto } from "../../roughtime/hashes.ts";
import { verifyResponse } from "../../roughtime/verify.ts";
import { decodePublicKey } from "../../roughtime/key_file.ts";
import { bufferAddress, type Libc, loadLibc, writeAddress } from "../../lib/libc.ts";
import {
  bindSocket,
  intOption,
  openSocket,
  SO_RCVBUF,
  SOCK_DGRAM,
  SOL_SOCKET,
  writeSockaddr,
} from "../../lib/sockets.ts";
import { parseAddress } from "../../lib/net.ts";

/**
 * What one Roughtime load run measured; printed as JSON on stdout. As an SNTP run's, with
 * verified responses for valid replies, and no offsets.
 */
export interface RoughtimeLoadResult extends Omit<NtpLoadResult, "offsetP50" | "offsetMaxAbs"> {
  /** Answers to a request given up as lost (sent again with another nonce): not counted. */
  late: number;
  /** Signatures seen, each batch signed once: valid / signatures is the batch size. */
  signatures: number;
}

const BATCH = 64;
const SLOT = 2048;
const MMSGHDR = 64;
const IOVEC = 16;
const SO_RCVTIMEO = 20;
const MSG_WAITFORONE = 0x10000;
const RECEIVE_TIMEOUT_MS = 20;
const RECEIVE_BUFFER = 4 * 1024 * 1024;
/** A request unanswered this long is lost, and its slot asks again with another nonce. */
const LOST_MS = 500;
/**
 * Requests each slot picks from at random, never the one it just sent: an answer to an
 * earlier one is late, not valid; and a server's batches seldom repeat. A repeat (the
 * same requests in the same second: Ed25519 is deterministic) is one signature more.
 */
const GENERATIONS = 16;
/** Batches whose signature was checked, kept to check their other responses against. */
const KEPT_BATCHES = 256;
const NODE = Uint8Array.of(0x01);

/**
 * Requests made in advance, each with its leaf hash: slot `s` sends requests
 * `s × GENERATIONS` to `s × GENERATIONS + GENERATIONS − 1`. Bytes 0–3 of a NONC are its
 * request's index, the rest random.
 */
export class RequestPool {
  readonly size: number;
  readonly packets: Uint8Array;
  readonly leaves: Uint8Array;
  readonly nonceAt: number;
  readonly count: number;

  constructor(count: number) {
    this.count = count;
    const first = makeRequest(new Uint8Array(32));
    this.size = first.length;
    const nonce = parseMessage(unwrapPacket(first)).get(TAGS.NONC)!;
    this.nonceAt = nonce.byteOffset - first.byteOffset;
    this.packets = new Uint8Array(count * this.size);
    this.leaves = new Uint8Array(count * 32);
    for (let i = 0; i < count; i++) {
      const random = crypto.getRandomValues(new Uint8Array(32));
      new DataView(random.buffer).setUint32(0, i, true);
      const packet = makeRequest(random);
      this.packets.set(packet, i * this.size);
      this.leaves.set(leafHash(packet), i * 32);
    }
  }

  packet(i: number): Uint8Array {
    return this.packets.subarray(i * this.size, (i + 1) * this.size);
  }
}

/** Tree levels and nodes per level a batch record keeps proven nodes for (our batches: 64). */
const KEPT_LEVELS = 8;
const KEPT_WIDTH = 128;

/**
 * A batch whose first response passed every check: what the others must repeat, and the
 * tree nodes proven to lead to its ROOT. Records are reused, so that checking a response
 * allocates nothing.
 */
class CheckedBatch {
  readonly sig = new Uint8Array(64);
  srep = new Uint8Array(0);
  cert = new Uint8Array(0);
  readonly root = new Uint8Array(32);
  /** The tree's height: PATH's entries in the response checked whole. */
  height = 0;
  /** Node `index` of `level` at 32 × (level × KEPT_WIDTH + index), once `proven` says so. */
  readonly nodes = new Uint8Array(32 * KEPT_LEVELS * KEPT_WIDTH);
  readonly proven = new Uint8Array(KEPT_LEVELS * KEPT_WIDTH);
  /** The INDX values answered under this signature since it was last counted. */
  readonly answered = new Uint8Array(KEPT_WIDTH);

  /** Takes a verified response's SIG, SREP, CERT and ROOT, and forgets the nodes. */
  reset(fields: ReadonlyMap<number, Uint8Array>): void {
    this.sig.set(fields.get(TAGS.SIG)!);
    this.srep = fields.get(TAGS.SREP)!.slice();
    this.cert = fields.get(TAGS.CERT)!.slice();
    this.root.set(parseMessage(this.srep).get(TAGS.ROOT)!);
    this.height = fields.get(TAGS.PATH)!.length / 32;
    this.proven.fill(0);
    this.answered.fill(0);
  }
}

const WANTED = [TAGS.SIG, TAGS.NONC, TAGS.TYPE, TAGS.PATH, TAGS.SREP, TAGS.CERT, TAGS.INDX];
const [SIG, NONC, TYPE, PATH, SREP, CERT, INDX] = WANTED.map((_, i) => i);
const WANTED_INDEX = new Map(WANTED.map((tag, i) => [tag, i]));

/**
 * Checks every response as a client would (RFC 10049 §5.4). The first response of a batch
 * (a new SIG) goes through `verifyResponse` whole, its CERT's delegation checked once per
 * CERT; the others must carry the same SIG, SREP and CERT byte for byte, and their own
 * leaf must climb their PATH to that ROOT, stopping at a node an earlier response of the
 * batch proved. Reading a response allocates only the hashes it computes.
 */
export class Verifier {
  readonly #key: Uint8Array;
  readonly #pool: RequestPool;
  readonly #checkedCerts = new Set<string>();
  /** Checked batches by the first 6 bytes of their SIG, and their records, reused in turn. */
  readonly #batches = new Map<number, CheckedBatch>();
  readonly #records = Array.from({ length: KEPT_BATCHES }, () => new CheckedBatch());
  readonly #recordKeys = new Float64Array(KEPT_BATCHES).fill(-1);
  #nextRecord = 0;
  /** Each wanted tag's value as [start, length] within the response, from readTags. */
  readonly #found = new Int32Array(2 * WANTED.length);
  /** The hash climbing a PATH, and the two children it is made from. */
  readonly #climbing = new Uint8Array(32);
  readonly #children = new Uint8Array(64);
  readonly #climbed = new Int32Array(2 * 33);
  signatures = 0;

  constructor(key: Uint8Array, pool: RequestPool) {
    this.#key = key;
    this.#pool = pool;
  }

  /**
   * The request a response in `bytes` (at `start`, `length` bytes) answers, once it has
   * passed every check; -1 when it fails one, -2 when its nonce is none of ours.
   */
  verify(bytes: Uint8Array, view: DataView, start: number, length: number): number {
    const pool = this.#pool;
    if (length > pool.size) return -1; // never larger than its request
    const found = this.#found;
    try {
      findTags(view, start, length, WANTED_INDEX, found);
    } catch {
      return -1;
    }
    for (let i = 0; i < found.length; i++) if (found[i] < 0) return -1;
    if (found[2 * NONC + 1] !== 32 || found[2 * SIG + 1] !== 64) return -1;
    const nonceAt = found[2 * NONC];
    const request = view.getUint32(nonceAt, true);
    if (request >= pool.count) return -2;
    const ours = request * pool.size + pool.nonceAt;
    for (let i = 0; i < 32; i++) if (bytes[nonceAt + i] !== pool.packets[ours + i]) return -2;
    if (found[2 * TYPE + 1] !== 4 || view.getUint32(found[2 * TYPE], true) !== 1) return -1;
    const sigAt = found[2 * SIG];
    const key = view.getUint32(sigAt, true) * 0x10000 + (view.getUint32(sigAt + 4, true) >>> 16);
    let batch = this.#batches.get(key);
    if (batch !== undefined && !this.#sameBatch(bytes, batch)) batch = undefined;
    if (batch === undefined) {
      const checked = this.#checkWhole(bytes.subarray(start, start + length), request, key);
      if (checked === null) return -1;
      batch = checked;
      this.signatures++;
    }
    if (!this.#climb(bytes, view, request, batch)) return -1;
    // A signature seen again for an INDX it answered already was made again: the same
    // requests in the same second (Ed25519 is deterministic), as with batches of one.
    const index = view.getUint32(found[2 * INDX], true);
    if (index < KEPT_WIDTH) {
      if (batch.answered[index] === 1) {
        batch.answered.fill(0);
        this.signatures++;
      }
      batch.answered[index] = 1;
    }
    return request;
  }

  /** Whether this response's SIG, SREP and CERT are the batch's, byte for byte. */
  #sameBatch(bytes: Uint8Array, batch: CheckedBatch): boolean {
    const found = this.#found;
    for (
      const [field, value] of [[SIG, batch.sig], [SREP, batch.srep], [CERT, batch.cert]] as const
    ) {
      const at = found[2 * field];
      if (found[2 * field + 1] !== value.length) return false;
      for (let i = 0; i < value.length; i++) if (bytes[at + i] !== value[i]) return false;
    }
    return true;
  }

  /** Every check of RFC 10049 §5.4 on a response: its batch's record (kept by `key`), or null. */
  #checkWhole(response: Uint8Array, request: number, key: number): CheckedBatch | null {
    try {
      verifyResponse(this.#pool.packet(request), response, this.#key, this.#checkedCerts);
    } catch {
      return null;
    }
    const slot = this.#nextRecord;
    this.#nextRecord = (slot + 1) % KEPT_BATCHES;
    const record = this.#records[slot];
    if (this.#recordKeys[slot] >= 0) this.#batches.delete(this.#recordKeys[slot]);
    record.reset(parseMessage(unwrapPacket(response)));
    this.#recordKeys[slot] = key;
    this.#batches.set(key, record);
    return record;
  }

  /**
   * Whether the request's leaf climbs PATH to the batch's ROOT, exactly as a client's fold
   * would (RFC 10049 §5.4.1): it stops early only at a node an earlier response proved
   * whose PATH above it is, entry by entry, the siblings proven with it. The nodes it
   * climbed through, and their siblings, are proven in turn.
   */
  #climb(bytes: Uint8Array, view: DataView, request: number, batch: CheckedBatch): boolean {
    const found = this.#found;
    const pathAt = found[2 * PATH], depth = found[2 * PATH + 1] / 32;
    if (!Number.isInteger(depth) || depth > 32 || found[2 * INDX + 1] !== 4) return false;
    const h = this.#climbing, children = this.#children, climbed = this.#climbed;
    h.set(this.#pool.leaves.subarray(32 * request, 32 * request + 32));
    let count = 0;
    for (let level = 0, bits = view.getUint32(found[2 * INDX], true);; level++, bits >>>= 1) {
      const kept = keptAt(level, bits);
      if (
        kept >= 0 && batch.proven[kept] === 1 && this.#restProven(bytes, level, bits, depth, batch)
      ) {
        if (!equal(h, batch.nodes, 32 * kept)) return false;
        break;
      }
      if (level === depth) {
        if (bits !== 0 || !equal(h, batch.root, 0)) return false;
        break;
      }
      const at = pathAt + 32 * level;
      const sibling = bytes.subarray(at, at + 32);
      // Written now where nothing is proven yet, proven only once the climb succeeds.
      count = tentatively(batch, kept, h, climbed, count);
      count = tentatively(batch, keptAt(level, bits ^ 1), sibling, climbed, count);
      children.set(h, (bits & 1) === 0 ? 0 : 32);
      children.set(sibling, (bits & 1) === 0 ? 32 : 0);
      hashInto(h, 0, NODE, children);
    }
    for (let i = 0; i < count; i++) batch.proven[climbed[i]] = 1;
    return true;
  }

  /**
   * Whether PATH from `level` up is the siblings already proven above node `bits` of that
   * level, to the batch's height, with no bits of INDX left over.
   */
  #restProven(
    bytes: Uint8Array,
    level: number,
    bits: number,
    depth: number,
    batch: CheckedBatch,
  ): boolean {
    if (depth !== batch.height) return false;
    const pathAt = this.#found[2 * PATH];
    for (; level < depth; level++, bits >>>= 1) {
      const sibling = keptAt(level, bits ^ 1);
      if (sibling < 0 || batch.proven[sibling] === 0) return false;
      const at = pathAt + 32 * level;
      for (let i = 0; i < 32; i++) {
        if (bytes[at + i] !== batch.nodes[32 * sibling + i]) return false;
      }
    }
    return bits === 0;
  }
}

/** Writes a node not proven yet at `position` and lists it in `climbed`: the new count. */
function tentatively(
  batch: CheckedBatch,
  position: number,
  value: Uint8Array,
  climbed: Int32Array,
  count: number,
): number {
  if (position < 0 || batch.proven[position] === 1) return count;
  batch.nodes.set(value, 32 * position);
  climbed[count] = position;
  return count + 1;
}

/** Where node `index` of `level` is kept in a batch record; -1 when it is not. */
function keptAt(level: number, index: number): number {
  return level < KEPT_LEVELS && index < KEPT_WIDTH ? level * KEPT_WIDTH + index : -1;
}

function equal(a: Uint8Array, b: Uint8Array, at: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[at + i]) return false;
  return true;
}

/** A UDP socket on 127.0.0.1 and its mmsghdr arrays: sends from the pool, receives into slots. */
class BatchSocket {
  readonly received = new Uint8Array(BATCH * SLOT);
  readonly view = new DataView(this.received.buffer);
  readonly #c: Libc;
  readonly #fd: number;
  readonly #receiveHeaders = new Uint8Array(BATCH * MMSGHDR);
  readonly #receiveInts = new Uint32Array(this.#receiveHeaders.buffer);
  readonly #receiveIovecs = new Uint32Array(BATCH * 4);
  readonly #sendHeaders = new Uint8Array(BATCH * MMSGHDR);
  readonly #sendInts = new Uint32Array(this.#sendHeaders.buffer);
  readonly #sendIovecs = new Uint32Array(BATCH * 4);
  readonly #sendAddress: bigint;
  readonly #poolAddress: number;
  readonly #size: number;
  #queued = 0;

  constructor(hostname: string, port: number, pool: RequestPool) {
    const c = this.#c = loadLibc();
    const socket = openSocket(c, hostname, 0, SOCK_DGRAM, "the Roughtime load generator");
    bindSocket(c, socket);
    this.#fd = socket.fd;
    const timeout = BigInt64Array.of(0n, BigInt(RECEIVE_TIMEOUT_MS * 1000));
    c.setsockopt(this.#fd, SOL_SOCKET, SO_RCVTIMEO, timeout, 16);
    // Room for every response outstanding: one lost here would be counted against the server.
    intOption(c, this.#fd, SOL_SOCKET, SO_RCVBUF, RECEIVE_BUFFER);
    const server = new Uint8Array(32);
    const serverLength = writeSockaddr(server, parseAddress(hostname)!, port);
    // Kept alive by this object: the kernel reads the address from it on every send.
    this.#server = server;
    const address = (bytes: ArrayBufferView, offset: number) => bufferAddress(c, bytes) + offset;
    for (let i = 0; i < BATCH; i++) {
      const at = (i * MMSGHDR) / 4;
      writeAddress(this.#receiveIovecs, 4 * i, address(this.received, i * SLOT));
      this.#receiveIovecs[4 * i + 2] = SLOT;
      writeAddress(this.#receiveInts, at + 4, address(this.#receiveIovecs, i * IOVEC));
      this.#receiveInts[at + 6] = 1;
      writeAddress(this.#sendInts, at, address(server, 0)); // msg_name
      this.#sendInts[at + 2] = serverLength;
      writeAddress(this.#sendInts, at + 4, address(this.#sendIovecs, i * IOVEC));
      this.#sendInts[at + 6] = 1;
      this.#sendIovecs[4 * i + 2] = pool.size;
    }
    this.#sendAddress = BigInt(bufferAddress(c, this.#sendHeaders));
    this.#poolAddress = bufferAddress(c, pool.packets);
    this.#size = pool.size;
  }

  readonly #server: Uint8Array;

  /** Queues request `i` of the pool; sends when BATCH are queued. */
  queue(i: number): void {
    if (this.#queued === BATCH) this.flush();
    writeAddress(this.#sendIovecs, 4 * this.#queued++, this.#poolAddress + i * this.#size);
  }

  /** Sends what is queued; what the kernel refuses is left to be found lost. */
  flush(): void {
    if (this.#queued > 0) this.#c.sendmmsg(this.#fd, this.#sendAddress, this.#queued, 0);
    this.#queued = 0;
  }

  /** Waits up to RECEIVE_TIMEOUT_MS for responses: how many came (0 on the timeout). */
  receive(): number {
    const count = this.#c.recvmmsgNow(this.#fd, this.#receiveHeaders, BATCH, MSG_WAITFORONE, null);
    return Math.max(count, 0);
  }

  /** The length of response `i` of the last receive. */
  length(i: number): number {
    return this.#receiveInts[(i * MMSGHDR) / 4 + 14];
  }

  close(): void {
    this.#c.close(this.#fd);
  }
}

/** Keeps `window` requests outstanding for `seconds`, verifying every response. */
export function runRoughtimeLoad(options: {
  hostname: string;
  port: number;
  key: Uint8Array;
  window: number;
  seconds: number;
  serverPid?: number;
}): RoughtimeLoadResult {
  const { window } = options;
  const pool = new RequestPool(window * GENERATIONS);
  const verifier = new Verifier(options.key, pool);
  const socket = new BatchSocket(options.hostname, options.port, pool);
  const counts = { sent: 0, valid: 0, invalid: 0, lost: 0, late: 0 };
  /** Each slot's request now, and when it went (-1: none outstanding). */
  const current = Int32Array.from({ length: window }, (_, s) => s * GENERATIONS);
  const sentAt = new Float64Array(window).fill(-1);
  const rtts = new Float64Array(4_000_000);
  let samples = 0;
  const send = (slot: number, now: number) => {
    const base = slot * GENERATIONS;
    const skip = 1 + Math.floor(Math.random() * (GENERATIONS - 1));
    current[slot] = base + (current[slot] - base + skip) % GENERATIONS;
    sentAt[slot] = now;
    counts.sent++;
    socket.queue(current[slot]);
  };
  const cpuBefore = options.serverPid ? cpuSeconds(options.serverPid) : NaN;
  const started = performance.now();
  const end = started + options.seconds * 1000;
  for (let slot = 0; slot < window; slot++) send(slot, started);
  socket.flush();
  let expiredAt = started;
  for (let now = started; now < end; now = performance.now()) {
    const count = socket.receive();
    now = performance.now();
    for (let i = 0; i < count; i++) {
      const request = verifier.verify(socket.received, socket.view, i * SLOT, socket.length(i));
      if (request === -1) counts.invalid++;
      if (request < 0) continue;
      const slot = Math.floor(request / GENERATIONS);
      if (current[slot] !== request || sentAt[slot] < 0) {
        counts.late++;
        continue;
      }
      counts.valid++;
      if (samples < rtts.length) rtts[samples++] = (now - sentAt[slot]) * 1000;
      send(slot, now);
    }
    if (now - expiredAt >= 50) {
      expiredAt = now;
      for (let slot = 0; slot < window; slot++) {
        if (sentAt[slot] >= 0 && sentAt[slot] < now - LOST_MS) {
          counts.lost++;
          send(slot, now);
        }
      }
    }
    socket.flush();
  }
  const elapsed = performance.now() - started;
  const cpu = options.serverPid
    ? (cpuSeconds(options.serverPid) - cpuBefore) / (elapsed / 1000)
    : -1;
  socket.close();
  const sorted = rtts.subarray(0, samples).sort();
  const at = (p: number) => samples === 0 ? 0 : sorted[Math.floor(p * (samples - 1))];
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
      window: { type: "string", default: "512" },
      duration: { type: "string", default: "5" },
      "server-pid": { type: "string" },
    },
  });
  const key = values.key === undefined ? null : decodePublicKey(values.key);
  if (!values.port || key === null) {
    console.error("roughtime_loadgen: --port and --key BASE64 are required");
    Deno.exit(2);
  }
  const result = runRoughtimeLoad({
    hostname: values.host,
    port: Number(values.port),
    key,
    window: Number(values.window),
    seconds: Number(values.duration),
    serverPid: values["server-pid"] ? Number(values["server-pid"]) : undefined,
  });
  console.log(JSON.stringify(result));
}
