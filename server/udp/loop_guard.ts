// What keeps UDP Daytime and Time from answering another server: its port, or its answer.

import type { ServicePorts } from "../server_options.ts";

/** Below this port only privileged services bind; a client's socket is given one above it. */
const FIRST_CLIENT_PORT = 1024;

/**
 * Tells whether a datagram to Daytime or Time comes from a service's port rather than a
 * client's, and so must not be answered. Both answer any datagram: a datagram spoofed from
 * another server's service port (echo, chargen, daytime, time, …, or this server's own
 * ports, or another instance of it on the same port) would make the two answer each other
 * forever, the "Loop DoS" of CVE-2024-2169. Clients send from unprivileged ports (Linux
 * gives them 32768 and up); inetd's internal services refuse their own ports the same way.
 * A server on another unprivileged port is told by its answer: see {@linkcode isAnswer}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fromServicePort } from "./loop_guard.ts";
 *
 * const ports = { daytime: 1300, time: 3700, ntp: null, ntsKe: null, roughtime: null };
 * assert.equal(fromServicePort(40_123, ports), false); // a client
 * assert.equal(fromServicePort(19, ports), true); // chargen
 * assert.equal(fromServicePort(3700, ports), true); // our own Time service
 * ```
 */
export function fromServicePort(port: number, own: Readonly<ServicePorts>): boolean {
  return port < FIRST_CLIENT_PORT || port === own.daytime || port === own.time ||
    port === own.roughtime ||
    port === own.ntp;
}

/** The longest Daytime answer recognised as one; RFC 867 suggests under 512 bytes. */
const LONGEST_DAYTIME_LINE = 512;
const COLON = 0x3a;

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/**
 * Tells whether a datagram is itself the answer of a Time or Daytime server, which no
 * client sends: RFC 868's 4 bytes (a client sends an empty datagram, as `rdate -u`
 * does), or a Daytime line, text with a time of day in it (`03:05:47`). Answering one
 * would start or keep up a loop with another server on an unprivileged port, which
 * {@linkcode fromServicePort} cannot tell: one datagram spoofed from one instance's
 * Daytime port to another's Time port set two of them answering each other 67,226 times
 * in 3 s. A client's own datagram is empty, a line break, or any text without a time in it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isAnswer } from "./loop_guard.ts";
 *
 * const text = (line: string) => new TextEncoder().encode(line);
 * assert.equal(isAnswer(new Uint8Array(4), 0, 4), true); // a Time answer
 * assert.equal(isAnswer(text("Wed Nov 25 03:05:47 2026\r\n"), 0, 26), true); // Daytime
 * assert.equal(isAnswer(new Uint8Array(0), 0, 0), false); // rdate -u's request
 * assert.equal(isAnswer(text("\n"), 0, 1), false); // echo | nc -u
 * assert.equal(isAnswer(text("what time is it?\n"), 0, 17), false);
 * ```
 */
export function isAnswer(data: Uint8Array, at: number, length: number): boolean {
  if (length === 4) return true;
  if (length < 5 || length > LONGEST_DAYTIME_LINE) return false;
  let timeOfDay = false;
  for (let i = at, end = at + length; i < end; i++) {
    const byte = data[i];
    // Printable ASCII, tab, CR and LF only: anything else is not a Daytime line.
    if ((byte < 0x20 || byte > 0x7e) && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) {
      return false;
    }
    if (
      byte === COLON && i - at >= 2 && i + 2 < end && isDigit(data[i - 1]) &&
      isDigit(data[i - 2]) && isDigit(data[i + 1]) && isDigit(data[i + 2])
    ) {
      timeOfDay = true;
    }
  }
  return timeOfDay;
}
