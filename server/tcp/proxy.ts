// The HAProxy PROXY protocol header (v1 text and v2 binary), parsed from bytes without I/O.

import { parseAddress } from "../../lib/net.ts";

/** The most bytes a PROXY header may take here; a longer one is refused, so waiting for it is bounded. */
export const PROXY_HEADER_MAX = 1024;

/** The longest v1 header, CR LF included, as the specification sets it. */
const V1_MAX = 107;
const V1_PREFIX = new TextEncoder().encode("PROXY ");
/** The 12 bytes a PROXY protocol v2 header starts with. */
export const PROXY_V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

/** A client address carried by a PROXY header. */
export interface ProxiedAddress {
  /** IPv4 dotted quad or IPv6 text; IPv4-mapped IPv6 addresses are given as IPv4. */
  hostname: string;
  port: number;
}

/** What {@linkcode parseProxyHeader} found at the start of a connection. */
export type ProxyHeader =
  /** Not enough bytes yet: read more (up to {@linkcode PROXY_HEADER_MAX}). */
  | { readonly status: "incomplete" }
  /** Not a valid header: close the connection. */
  | { readonly status: "invalid"; readonly reason: string }
  /**
   * A valid header of `length` bytes. `source` is the real client; it is absent for
   * v2 LOCAL (the balancer's own health checks) and v1 UNKNOWN, where the socket's
   * peer address stands.
   */
  | { readonly status: "ok"; readonly length: number; readonly source?: ProxiedAddress };

const INCOMPLETE: ProxyHeader = { status: "incomplete" };
const invalid = (reason: string): ProxyHeader => ({ status: "invalid", reason });

/** Tells whether `bytes[0, length)` matches the start of `prefix` for as far as either goes. */
function matchesPrefix(bytes: Uint8Array, length: number, prefix: Uint8Array): boolean {
  const n = Math.min(length, prefix.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/**
 * Parses the PROXY protocol header at the start of `bytes[0, length)`: version 1
 * (`PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`) or version 2 (the binary form with
 * its 12-byte signature). Never throws; malformed input is `invalid`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseProxyHeader } from "./proxy.ts";
 *
 * const bytes = new TextEncoder().encode("PROXY TCP4 203.0.113.7 10.0.0.1 51000 45000\r\nTIME\r\n");
 * assert.deepEqual(parseProxyHeader(bytes), {
 *   status: "ok",
 *   length: 45,
 *   source: { hostname: "203.0.113.7", port: 51000 },
 * });
 * ```
 */
export function parseProxyHeader(bytes: Uint8Array, length: number = bytes.length): ProxyHeader {
  if (length === 0) return INCOMPLETE;
  if (matchesPrefix(bytes, length, PROXY_V2_SIGNATURE)) return parseV2(bytes, length);
  if (matchesPrefix(bytes, length, V1_PREFIX)) return parseV1(bytes, length);
  return invalid("no PROXY header");
}

function parseV1(bytes: Uint8Array, length: number): ProxyHeader {
  const limit = Math.min(length, V1_MAX);
  let lf = -1;
  for (let i = 0; i < limit; i++) {
    if (bytes[i] === 0x0a) {
      lf = i;
      break;
    }
  }
  if (lf === -1) return length >= V1_MAX ? invalid("v1 header longer than 107 bytes") : INCOMPLETE;
  if (lf === 0 || bytes[lf - 1] !== 0x0d) return invalid("v1 header does not end in CR LF");
  let line = "";
  for (let i = 0; i < lf - 1; i++) {
    if (bytes[i] < 0x20 || bytes[i] > 0x7e) return invalid("v1 header has a non-ASCII byte");
    line += String.fromCharCode(bytes[i]);
  }
  const words = line.split(" ");
  if (words[1] === "UNKNOWN") return { status: "ok", length: lf + 1 };
  if (words.length !== 6) return invalid("v1 header needs 6 fields");
  const [, protocol, source, destination, sourcePort, destinationPort] = words;
  const valid = protocol === "TCP4"
    ? isIPv4(source) && isIPv4(destination)
    : protocol === "TCP6" && isIPv6(source) && isIPv6(destination);
  if (!valid) return invalid(`v1 header has a bad ${protocol} address`);
  const port = parsePort(sourcePort);
  if (port === null || parsePort(destinationPort) === null) {
    return invalid("v1 header has a bad port");
  }
  const hostname = protocol === "TCP6" ? unmapIPv4(source.toLowerCase()) : source;
  return { status: "ok", length: lf + 1, source: { hostname, port } };
}

function parseV2(bytes: Uint8Array, length: number): ProxyHeader {
  if (length < 16) return INCOMPLETE;
  const versionCommand = bytes[12];
  if (versionCommand >> 4 !== 2) return invalid("v2 header has an unknown version");
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid("v2 header has an unknown command");
  const addressLength = (bytes[14] << 8) | bytes[15];
  const total = 16 + addressLength;
  if (total > PROXY_HEADER_MAX) return invalid(`v2 header longer than ${PROXY_HEADER_MAX} bytes`);
  if (length < total) return INCOMPLETE;
  // LOCAL: the balancer speaks for itself (health checks); the socket's address stands.
  if (command === 0) return { status: "ok", length: total };
  const family = bytes[13];
  if (family === 0x11 || family === 0x12) { // TCP or UDP over IPv4
    if (addressLength < 12) return invalid("v2 IPv4 address block too short");
    const hostname = `${bytes[16]}.${bytes[17]}.${bytes[18]}.${bytes[19]}`;
    return {
      status: "ok",
      length: total,
      source: { hostname, port: (bytes[24] << 8) | bytes[25] },
    };
  }
  if (family === 0x21 || family === 0x22) { // TCP or UDP over IPv6
    if (addressLength < 36) return invalid("v2 IPv6 address block too short");
    const hostname = formatIPv6(bytes.subarray(16, 32));
    return {
      status: "ok",
      length: total,
      source: { hostname, port: (bytes[48] << 8) | bytes[49] },
    };
  }
  // UNSPEC or UNIX: no IP address to report.
  if ((family >> 4) === 0 || (family >> 4) === 3) return { status: "ok", length: total };
  return invalid("v2 header has an unknown address family");
}

function parsePort(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

/**
 * A PROXY v1 IPv4 address: a plain dotted quad, without the leading zeros that some
 * parsers read as octal, and without a zone.
 */
function isIPv4(text: string): boolean {
  return !text.includes(":") && !text.includes("%") && !/(^|\.)0\d/.test(text) &&
    parseAddress(text) !== null;
}

/** A PROXY v1 IPv6 address: at most 45 characters, no zone, an embedded IPv4 as above. */
function isIPv6(text: string): boolean {
  if (!text.includes(":") || text.includes("%") || text.length > 45) return false;
  const last = text.slice(text.lastIndexOf(":") + 1);
  return (!last.includes(".") || isIPv4(last)) && parseAddress(text) !== null;
}

/** Formats 16 bytes as IPv6 text with the longest run of zero groups compressed. */
function formatIPv6(b: Uint8Array): string {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart === -1) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

function unmapIPv4(text: string): string {
  const match = text.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/);
  return match ? match[1] : text;
}
