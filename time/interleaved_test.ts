// Tests of the interleaved-mode store against RFC 9769's rules and chrony's.

import assert from "node:assert/strict";
import { TimestampStore } from "./interleaved.ts";
import { read32, write32 } from "./ntp.ts";

/** A reply whose receive timestamp is `hi`.`lo` as the server wrote it, before its claim. */
function replyAt(hi: number, lo: number): Uint8Array {
  const reply = new Uint8Array(48);
  write32(reply, 32, hi);
  write32(reply, 36, lo);
  return reply;
}

/** Claims and saves a reply's receive timestamp, with a transmit timestamp `after` units later. */
function serve(store: TimestampStore, hi: number, lo: number, after = 1000): Uint8Array {
  const reply = replyAt(hi, lo);
  store.claimReceive(reply, 32);
  const slot = store.save(reply, 32);
  const rxLo = read32(reply, 36);
  assert.ok(store.setTransmit(slot, hi, rxLo, hi, rxLo + after, true));
  return reply;
}

/** Asks with the reply's receive timestamp as the origin; the transmit timestamp or null. */
function ask(store: TimestampStore, reply: Uint8Array): number[] | null {
  const out = new Uint8Array(48);
  return store.take(reply, 32, out, 40) ? [read32(out, 40), read32(out, 44)] : null;
}

Deno.test("an origin that matches no saved receive timestamp is answered in basic mode", () => {
  const store = new TimestampStore(8);
  serve(store, 0xea000000, 100);
  assert.equal(ask(store, replyAt(0xea000000, 201)), null);
  assert.equal(ask(store, replyAt(0, 0)), null);
  assert.equal(ask(new TimestampStore(8), replyAt(0xea000000, 101)), null, "an empty store");
});

Deno.test("a saved pair answers one interleaved request, with its transmit timestamp", () => {
  const store = new TimestampStore(8);
  const reply = serve(store, 0xea000000, 100, 5000);
  assert.deepEqual(ask(store, reply), [0xea000000, 101 + 5000 - 1], "the lowest bit cleared");
  assert.equal(ask(store, reply), null, "a replay of the same request gets basic mode");
});

Deno.test("a pair without a transmit timestamp yet, or with an impossible one, is not handed out", () => {
  const store = new TimestampStore(8);
  const reply = replyAt(0xea000000, 100);
  store.claimReceive(reply, 32);
  const slot = store.save(reply, 32);
  assert.equal(ask(store, reply), null, "no transmit timestamp yet");
  const rxLo = read32(reply, 36);
  assert.equal(store.setTransmit(slot, 0xea000000, rxLo, 0xea000000, rxLo - 2, true), false);
  assert.equal(store.setTransmit(slot, 0xea000000, rxLo, 0xea000002, rxLo, true), false);
  assert.equal(store.setTransmit(slot, 0xea000000, rxLo + 2, 0xea000000, rxLo + 9, true), false);
  assert.equal(ask(store, reply), null);
  assert.ok(store.setTransmit(slot, 0xea000000, rxLo, 0xea000000, rxLo + 9, false));
  assert.ok(store.setTransmit(slot, 0xea000000, rxLo, 0xea000000, rxLo + 99, false));
  assert.deepEqual(ask(store, reply), [0xea000000, (rxLo + 9) & ~1], "an estimate never replaces");
});

Deno.test("the kernel's transmit timestamp replaces the server's estimate", () => {
  const store = new TimestampStore(8);
  const reply = replyAt(0xea000000, 100);
  store.claimReceive(reply, 32);
  const slot = store.save(reply, 32);
  assert.ok(store.setTransmit(slot, 0xea000000, 101, 0xea000000, 300, false));
  assert.ok(store.setTransmit(slot, 0xea000000, 101, 0xea000000, 700, true));
  assert.deepEqual(ask(store, reply), [0xea000000, 700]);
});

Deno.test("when full, the oldest pair makes room, and evicted pairs fall back to basic", () => {
  const store = new TimestampStore(4);
  const replies = [1, 2, 3, 4, 5, 6].map((i) => serve(store, 0xea000000 + i, 0));
  assert.equal(store.size, 4, "memory fixed at the capacity");
  assert.equal(ask(store, replies[0]), null);
  assert.equal(ask(store, replies[1]), null);
  for (const reply of replies.slice(2)) assert.notEqual(ask(store, reply), null);
});

Deno.test("a slot reused by a newer pair refuses the old reply's transmit timestamp", () => {
  const store = new TimestampStore(2);
  const first = replyAt(0xea000001, 0);
  store.claimReceive(first, 32);
  const slot = store.save(first, 32);
  serve(store, 0xea000002, 0);
  serve(store, 0xea000003, 0); // takes the first's slot
  assert.equal(store.setTransmit(slot, 0xea000001, 1, 0xea000001, 500, true), false);
});

Deno.test("no two receive timestamps are equal, and none equals a transmit timestamp", () => {
  const store = new TimestampStore(1024);
  const seen = new Set<string>();
  // Ten replies stamped in the same instant, then one a little behind (another CPU's stamp).
  const stamps = [...Array(10).fill([0xea000000, 500]), [0xea000000, 480], [0xea000000, 5000]];
  for (const [hi, lo] of stamps) {
    const reply = replyAt(hi, lo);
    store.claimReceive(reply, 32);
    const rx = `${read32(reply, 32)}.${read32(reply, 36)}`;
    assert.ok(!seen.has(rx), `receive timestamp ${rx} handed out twice`);
    seen.add(rx);
    assert.equal(read32(reply, 36) & 1, 1, "a receive timestamp is odd; transmit ones are even");
  }
  const last = replyAt(0xea000000, 0xffffffff);
  store.claimReceive(last, 32);
  const next = replyAt(0xea000000, 0xfffffff0);
  store.claimReceive(next, 32);
  assert.deepEqual(
    [read32(next, 32), read32(next, 36)],
    [0xea000001, 1],
    "carried into the seconds",
  );
});

Deno.test("a clock stepped back drops every pair, and then serves again", () => {
  const store = new TimestampStore(8);
  const before = serve(store, 0xea000100, 0);
  serve(store, 0xea000000, 0); // 256 s behind: a step
  assert.equal(store.size, 1);
  assert.equal(ask(store, before), null);
  const after = serve(store, 0xea000001, 0);
  assert.notEqual(ask(store, after), null);
});

Deno.test("pairs are found across the NTP era boundary", () => {
  const store = new TimestampStore(8);
  const late = serve(store, 0xffffffff, 0xfffffff0);
  const early = serve(store, 0, 10);
  assert.notEqual(ask(store, early), null);
  assert.notEqual(ask(store, late), null);
});

Deno.test("a flood of requests naming unknown origins changes nothing held", () => {
  const store = new TimestampStore(64);
  const held = serve(store, 0xea000000, 100);
  const origin = new Uint8Array(48);
  const out = new Uint8Array(48);
  for (let i = 0; i < 10_000; i++) {
    write32(origin, 32, 0xea000000 + (i % 3));
    write32(origin, 36, (i * 2654435761) | 1);
    store.take(origin, 32, out, 40);
  }
  assert.equal(store.size, 1);
  assert.notEqual(ask(store, held), null);
});
