// Tests of matching the kernel's transmit timestamps to the replies that asked for them.

import assert from "node:assert/strict";
import { PendingTransmits, SendLag } from "./pending_transmits.ts";

const SECOND = 1_800_000_000;
const BEFORE = SECOND * 1000; // the clock read before each send, ms

Deno.test("a transmit timestamp goes to the reply with its number, once", () => {
  const pending = new PendingTransmits();
  pending.expect(0, 11, 0xea000000, 1, BEFORE);
  pending.expect(1, -1, 0xea000000, 3, BEFORE);
  assert.equal(pending.match(1, SECOND, 2_000), -1, "a reply sent only to measure the lag");
  assert.equal(pending.match(0, SECOND, 3_000), 11);
  assert.deepEqual([pending.rxHi, pending.rxLo], [0xea000000, 1]);
  assert.ok(Math.abs(pending.lag - 0.003) < 0.001);
  assert.equal(pending.match(0, SECOND, 3_000), -2, "used");
  assert.equal(pending.match(7, SECOND, 3_000), -2, "never asked");
  assert.equal(pending.missing, 0);
});

Deno.test("a timestamp from before the send is refused, and counted as missing", () => {
  const pending = new PendingTransmits();
  pending.expect(5, 2, 0xea000000, 9, BEFORE + 10);
  assert.equal(pending.match(5, SECOND, 0), -2);
  assert.equal(pending.missing, 1);
});

Deno.test("sends whose timestamps never come are counted as missing", () => {
  const pending = new PendingTransmits();
  for (let id = 0; id < 3; id++) pending.expect(id, id, 0xea000000, 2 * id + 1, BEFORE);
  pending.match(1, SECOND, 100);
  pending.forget(); // the numbering restarted
  assert.equal(pending.missing, 2);
  assert.equal(pending.match(0, SECOND, 100), -2);
  pending.expect(0, 4, 0xea000000, 21, BEFORE);
  pending.expect(1024, 5, 0xea000000, 23, BEFORE); // the same place, 1,024 sends later
  assert.equal(pending.missing, 3);
  assert.equal(pending.match(1024, SECOND, 100), 5);
});

Deno.test("the send lag is the median of the last nine samples, each bounded", () => {
  const lag = new SendLag(0.1);
  assert.equal(lag.value, 0);
  lag.add(0.004);
  assert.equal(lag.value, 0.004);
  for (const sample of [0.002, 5, -1, 0.003]) lag.add(sample);
  // 0.004, 0.002, 0.1 (bounded), 0 (bounded), 0.003: the median is 0.003.
  assert.equal(lag.value, 0.003);
  for (let i = 0; i < 9; i++) lag.add(0.05);
  assert.equal(lag.value, 0.05, "the old samples are gone");
  for (let i = 0; i < 4; i++) lag.add(0.001);
  assert.equal(lag.value, 0.05, "four of nine do not move the median");
  lag.add(0.001);
  assert.equal(lag.value, 0.001, "five do");
});
