// Tests of what UDP Daytime and Time refuse to answer: service ports and other servers' answers.

import assert from "node:assert/strict";
import { fromServicePort, isAnswer } from "./loop_guard.ts";

const text = (line: string) => new TextEncoder().encode(line);

Deno.test("another server's Daytime or Time answer is recognised, and a client's request is not", () => {
  const answers = [
    new Uint8Array(4), // RFC 868: seconds since 1900
    text("Wed Nov 25 03:05:47 2026\r\n"), // ctime, as this server sends it
    text("Wednesday, November 25, 2026 03:05:47-UTC\n"), // inetd's and others' formats
    text("61004 25-11-26 03:05:47 00 0 0  50.0 UTC(NIST) *\r\n"), // NIST's
    text("03:05:47"), // no line break at all
  ];
  for (const answer of answers) {
    assert.equal(isAnswer(answer, 0, answer.length), true, JSON.stringify([...answer]));
  }
  const requests = [
    new Uint8Array(0), // rdate -u, and RFC 868's own client
    text("\n"), // echo | nc -u
    new Uint8Array(1),
    text("hello\r\n"),
    text("what time is it?\n"),
    text("at 12:3\n"), // a time of day needs two digits each side
    Uint8Array.of(0x31, 0x32, 0x3a, 0x33, 0x34, 0x00), // a time of day, then a NUL: not text
    text(`${"x".repeat(600)} 03:05:47\n`), // longer than any Daytime line
    new Uint8Array(48), // an NTP request sent to the wrong port
  ];
  for (const request of requests) {
    assert.equal(isAnswer(request, 0, request.length), false, JSON.stringify([...request]));
  }
});

Deno.test("the answer test reads only the datagram's own bytes within a larger buffer", () => {
  const buffer = text("xx03:05:47 and more");
  assert.equal(isAnswer(buffer, 2, 8), true);
  // The digits around the colon at the edges of the datagram are outside it.
  assert.equal(isAnswer(buffer, 3, 6), false);
  assert.equal(isAnswer(buffer, 11, 8), false);
});

Deno.test("service ports are refused: below 1024, and this server's own", () => {
  const ports = { daytime: 1300, time: 3700, ntp: 12300, ntsKe: null, roughtime: 2002 };
  for (const port of [0, 7, 13, 19, 37, 123, 1023, 1300, 2002, 3700, 12300]) {
    assert.equal(fromServicePort(port, ports), true, `${port}`);
  }
  for (const port of [1024, 32768, 45000, 60999, 65535]) {
    assert.equal(fromServicePort(port, ports), false, `${port}`);
  }
});
