// Roughtime's wire format (RFC 10049 §4, §5): tagged messages and the ROUGHTIM packet around them.

/** A tag as a uint32: its ASCII letters, least significant byte first, zero-padded. */
export function tag(name: string): number {
  let value = 0;
  for (let i = 3; i >= 0; i--) value = value * 256 + (i < name.length ? name.charCodeAt(i) : 0);
  return value;
}

/** The tags this server reads and writes. */
export const TAGS = {
  SIG: tag("SIG"),
  VER: tag("VER"),
  SRV: tag("SRV"),
  NONC: tag("NONC"),
  DELE: tag("DELE"),
  TYPE: tag("TYPE"),
  PATH: tag("PATH"),
  RADI: tag("RADI"),
  PUBK: tag("PUBK"),
  MIDP: tag("MIDP"),
  SREP: tag("SREP"),
  VERS: tag("VERS"),
  MINT: tag("MINT"),
  ROOT: tag("ROOT"),
  CERT: tag("CERT"),
  MAXT: tag("MAXT"),
  INDX: tag("INDX"),
  ZZZZ: tag("ZZZZ"),
} as const;

/** "ROUGHTIM" as the packet's first 8 bytes. */
const MAGIC = new TextEncoder().encode("ROUGHTIM");
/** The packet header: the magic, then the message's length (uint32). */
export const PACKET_HEADER = 12;

/** A message that does not parse: says what is wrong, for a client's one line. */
export class RoughtimeFormatError extends Error {
  override name = "RoughtimeFormatError";
}

/** A parsed message: each tag's value, a view into the bytes it was read from. */
export type RoughtimeMessage = ReadonlyMap<number, Uint8Array>;

/**
 * Walks a message at `start`, `length` bytes of `view` (RFC 10049 §4): N, N−1 offsets, N
 * tags, the values; `visit` gets each tag with its value's start in `view` and length.
 * Throws {@linkcode RoughtimeFormatError} for anything out of bounds or out of order:
 * offsets not multiples of 4, decreasing or past the end; tags not strictly ascending (so
 * repeated).
 */
function walkMessage(
  view: DataView,
  start: number,
  length: number,
  visit: (name: number, at: number, length: number) => void,
): void {
  if (length < 4 || length % 4 !== 0) {
    throw new RoughtimeFormatError(`a message of ${length} bytes: not a multiple of 4`);
  }
  const count = view.getUint32(start, true);
  const headerLength = 8 * count;
  if (count === 0 || headerLength > length) {
    throw new RoughtimeFormatError(`${count} tags do not fit in ${length} bytes`);
  }
  const valuesLength = length - headerLength;
  let previousTag = -1, previousOffset = 0;
  for (let i = 0; i < count; i++) {
    const offset = i === 0 ? 0 : view.getUint32(start + 4 * i, true);
    const end = i === count - 1 ? valuesLength : view.getUint32(start + 4 * (i + 1), true);
    const name = view.getUint32(start + 4 * count + 4 * i, true);
    if (offset % 4 !== 0 || offset < previousOffset || end < offset || end > valuesLength) {
      throw new RoughtimeFormatError(`tag ${i}'s offset is out of order or bounds`);
    }
    if (name <= previousTag) throw new RoughtimeFormatError("tags not in ascending order");
    visit(name, start + headerLength + offset, end - offset);
    previousTag = name;
    previousOffset = offset;
  }
}

/**
 * Reads a message (RFC 10049 §4) into a map from tag to value, or throws
 * {@linkcode RoughtimeFormatError} (see {@linkcode findTags} for the checks). The values
 * are views, not copies.
 */
export function parseMessage(bytes: Uint8Array): RoughtimeMessage {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const message = new Map<number, Uint8Array>();
  walkMessage(view, 0, bytes.length, (name, at, length) => {
    message.set(name, bytes.subarray(at, at + length));
  });
  return message;
}

/**
 * Finds the `wanted` tags of the message in a packet without copying anything: where tag
 * `t` is wanted as `wanted.get(t) = k`, its value's start in `view` goes to `spans[2k]`
 * and its length to `spans[2k + 1]`; a tag not there leaves −1 in both. The packet is
 * `length` bytes at `start`. Throws {@linkcode RoughtimeFormatError} as
 * {@linkcode unwrapPacket} and {@linkcode parseMessage} do: no `ROUGHTIM`, a length that
 * is not what follows, offsets out of order or bounds, tags not strictly ascending.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildMessage, buildPacket, findTags, TAGS } from "./message.ts";
 *
 * const packet = buildPacket(buildMessage([[TAGS.NONC, new Uint8Array(32)]]));
 * const spans = new Int32Array(4);
 * const view = new DataView(packet.buffer);
 * findTags(view, 0, packet.length, new Map([[TAGS.NONC, 0], [TAGS.TYPE, 1]]), spans);
 * assert.deepEqual([...spans], [12 + 8, 32, -1, -1]);
 * ```
 */
export function findTags(
  view: DataView,
  start: number,
  length: number,
  wanted: ReadonlyMap<number, number>,
  spans: Int32Array,
): void {
  spans.fill(-1);
  if (length < PACKET_HEADER) throw notAPacket();
  for (let i = 0; i < MAGIC.length; i++) {
    if (view.getUint8(start + i) !== MAGIC[i]) throw notAPacket();
  }
  checkLength(view.getUint32(start + 8, true), length - PACKET_HEADER);
  walkMessage(view, start + PACKET_HEADER, length - PACKET_HEADER, (name, at, size) => {
    const k = wanted.get(name);
    if (k !== undefined) {
      spans[2 * k] = at;
      spans[2 * k + 1] = size;
    }
  });
}

const notAPacket = () => new RoughtimeFormatError("not a Roughtime packet (no ROUGHTIM header)");

function checkLength(said: number, follows: number): void {
  if (said !== follows) {
    throw new RoughtimeFormatError(`the header says ${said} bytes, ${follows} follow`);
  }
}

/**
 * Writes a message from `(tag, value)` pairs, sorting them by tag; each value's length must
 * be a multiple of 4, as the offsets are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildMessage, parseMessage, TAGS } from "./message.ts";
 *
 * const bytes = buildMessage([[TAGS.TYPE, new Uint8Array(4)], [TAGS.NONC, new Uint8Array(32)]]);
 * assert.equal(bytes.length, 4 + 4 + 8 + 36);
 * assert.equal(parseMessage(bytes).get(TAGS.NONC)?.length, 32);
 * ```
 */
export function buildMessage(pairs: readonly (readonly [number, Uint8Array])[]): Uint8Array {
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  const count = sorted.length;
  const valuesLength = sorted.reduce((sum, [, value]) => sum + value.length, 0);
  const bytes = new Uint8Array(8 * count + valuesLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, count, true);
  let offset = 0;
  sorted.forEach(([name, value], i) => {
    if (value.length % 4 !== 0) throw new TypeError(`a value of ${value.length} bytes`);
    if (i > 0) view.setUint32(4 * i, offset, true);
    view.setUint32(4 * count + 4 * i, name, true);
    bytes.set(value, 8 * count + offset);
    offset += value.length;
  });
  return bytes;
}

/** Wraps a message in a packet: `ROUGHTIM`, its length, the message. */
export function buildPacket(message: Uint8Array): Uint8Array {
  const packet = new Uint8Array(PACKET_HEADER + message.length);
  packet.set(MAGIC);
  new DataView(packet.buffer).setUint32(8, message.length, true);
  packet.set(message, PACKET_HEADER);
  return packet;
}

/**
 * The message inside a packet (a view), or throws {@linkcode RoughtimeFormatError}: no
 * `ROUGHTIM`, or a length that is not what follows.
 */
export function unwrapPacket(packet: Uint8Array): Uint8Array {
  if (packet.length < PACKET_HEADER || !MAGIC.every((byte, i) => packet[i] === byte)) {
    throw notAPacket();
  }
  const length = new DataView(packet.buffer, packet.byteOffset + 8, 4).getUint32(0, true);
  checkLength(length, packet.length - PACKET_HEADER);
  return packet.subarray(PACKET_HEADER);
}

/** A uint32 value's number, or throws naming the tag. */
export function readUint32(message: RoughtimeMessage, name: number, what: string): number {
  const value = message.get(name);
  if (value === undefined || value.length !== 4) {
    throw new RoughtimeFormatError(`${what} is missing or not 4 bytes`);
  }
  return new DataView(value.buffer, value.byteOffset, 4).getUint32(0, true);
}

/** A uint64 value's number (seconds fit a double exactly), or throws naming the tag. */
export function readUint64(message: RoughtimeMessage, name: number, what: string): number {
  const value = message.get(name);
  if (value === undefined || value.length !== 8) {
    throw new RoughtimeFormatError(`${what} is missing or not 8 bytes`);
  }
  const view = new DataView(value.buffer, value.byteOffset, 8);
  return view.getUint32(4, true) * 0x1_0000_0000 + view.getUint32(0, true);
}

/** A value that must be there with exactly `length` bytes (or a multiple, with `multiple`). */
export function readBytes(
  message: RoughtimeMessage,
  name: number,
  what: string,
  length: number,
  { multiple = false } = {},
): Uint8Array {
  const value = message.get(name);
  const fits = value !== undefined &&
    (multiple ? value.length % length === 0 : value.length === length);
  if (!fits) {
    throw new RoughtimeFormatError(
      `${what} is missing or not ${multiple ? "a multiple of " : ""}${length} bytes`,
    );
  }
  return value!;
}
