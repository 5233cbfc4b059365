// Unit tests of the connection table and the limits: slots in typed arrays, without sockets.

import assert from "node:assert/strict";
import { ActivityLists, NO_SLOT } from "./activity_list.ts";
import { ConnectionTable, type SlotSockets } from "./connections.ts";
import { Limits } from "./limits.ts";
import { newServerStats } from "../stats.ts";

/** An engine that records what the table asks of it, and frees slots as a real one does. */
function recordingEngine() {
  const calls: string[] = [];
  let table: ConnectionTable | null = null;
  const engine: SlotSockets = {
    closeSocket: (slot) => {
      calls.push(`close ${slot}`);
      table!.free(slot);
    },
    evictSocket: (slot) => {
      calls.push(`evict ${slot}`);
      table!.free(slot);
    },
    makeRoomSocket: (slot, waiting) =>
      calls.push(`make room ${slot} ${waiting ? "waiting" : "busy"}`),
    peer: (slot) => `peer ${slot}`,
  };
  return { calls, engine, attach: (t: ConnectionTable) => table = t };
}

Deno.test("activity lists keep their order and links when they grow", () => {
  const lists = new ActivityLists(2, 2);
  lists.append(0, 0, 1);
  lists.append(1, 0, 2);
  lists.grow(8);
  lists.append(7, 0, 3);
  lists.remove(1);
  assert.equal(lists.oldest(0), 0);
  lists.remove(0);
  assert.equal(lists.oldest(0), 7);
  assert.equal(lists.size(0), 1);
  lists.remove(7);
  assert.equal(lists.oldest(0), NO_SLOT);
  // A stamp earlier than the newest one's is raised to it, so the order holds.
  lists.append(3, 1, 10);
  lists.append(4, 1, 5);
  assert.equal(lists.lastActive(4), 10);
});

Deno.test("the table finds the longest-silent slot, expires by deadline, and reuses freed slots", () => {
  const stats = newServerStats();
  const limits = new Limits({ max: 3000, maxPerAddress: 0 }, stats);
  const table = new ConnectionTable(limits, { maxLingering: 16, evictAfterMs: 0 });
  const { calls, engine, attach } = recordingEngine();
  attach(table);
  // More than the first capacity (1024), so the table grows with slots in every list.
  const slots = Array.from({ length: 2000 }, () => table.open(engine));
  for (const slot of slots) {
    assert.ok(limits.take(slot));
    table.enter(slot, "reading");
  }
  assert.equal(table.size, 2000);
  assert.equal(table.oldestSilent(), slots[0]);
  table.enter(slots[0], "writing"); // busy: not silent
  assert.equal(table.oldestSilent(), slots[1]);
  table.expire("reading", Infinity, "idle timeout");
  assert.equal(calls.length, 1999);
  assert.equal(table.state(slots[0]), "writing");
  assert.equal(limits.open, 1);
  const again = table.open(engine);
  assert.ok(slots.includes(again), "a freed slot is taken again");
});

Deno.test("an evicted slot stops counting at once and lingers until its engine frees it", () => {
  const stats = newServerStats();
  const limits = new Limits({ max: 1, maxPerAddress: 0 }, stats);
  const table = new ConnectionTable(limits, { maxLingering: 16, evictAfterMs: 0 });
  const sockets: SlotSockets = {
    closeSocket() {},
    evictSocket() {},
    makeRoomSocket() {},
    peer: () => "",
  };
  const slot = table.open(sockets);
  assert.ok(limits.take(slot) && limits.takeAddress(slot, "192.0.2.1"));
  table.enter(slot, "reading");
  table.evict(slot);
  assert.equal(table.state(slot), "closed");
  assert.equal(table.reason(slot), "evicted");
  assert.equal(limits.open, 0);
  assert.equal(limits.holds("192.0.2.1"), 0);
  assert.equal(table.size, 1, "held until the engine is done with the socket");
  table.free(slot);
  assert.equal(table.size, 0);
});

Deno.test("limits count each address once by name and free its number when the last one goes", () => {
  const stats = newServerStats();
  const limits = new Limits({ max: 10, maxPerAddress: 2 }, stats);
  assert.ok(limits.take(0) && limits.takeAddress(0, "a"));
  assert.ok(limits.take(1) && limits.takeAddress(1, "a"));
  assert.ok(limits.take(2) && !limits.takeAddress(2, "a"));
  assert.ok(limits.takeAddress(2, "b"));
  assert.equal(stats.addressesTracked, 2);
  assert.equal(limits.addressOf(1), "a");
  limits.release(0);
  limits.release(1);
  limits.release(1); // twice is safe
  assert.equal(stats.addressesTracked, 1);
  assert.equal(limits.open, 1);
  assert.ok(
    limits.take(5000) && limits.takeAddress(5000, "c"),
    "a slot past the arrays grows them",
  );
  assert.equal(limits.addressOf(5000), "c");
});

Deno.test("a slot closed to make room stops counting at once, lingers, and its engine learns if it owed answers", () => {
  const stats = newServerStats();
  const limits = new Limits({ max: 2, maxPerAddress: 0 }, stats);
  const table = new ConnectionTable(limits, { maxLingering: 16, evictAfterMs: 0 });
  const { calls, engine, attach } = recordingEngine();
  attach(table);
  const [waiting, writing] = [table.open(engine), table.open(engine)];
  for (const slot of [waiting, writing]) {
    assert.ok(limits.take(slot) && limits.takeAddress(slot, "a"));
  }
  table.enter(waiting, "reading");
  table.enter(writing, "writing");
  table.makeRoom(waiting);
  table.makeRoom(writing);
  assert.deepEqual(calls, [`make room ${waiting} waiting`, `make room ${writing} busy`]);
  assert.equal(table.reason(writing), "made room");
  assert.equal(limits.open, 0);
  assert.equal(limits.holds("a"), 0);
  // Entering a state after the close changes nothing: the lingering deadline holds it.
  table.enter(writing, "reading");
  assert.equal(table.state(writing), "closed");
  table.expire("lingering", Infinity, "linger done");
  assert.deepEqual(calls.slice(2), [`close ${waiting}`, `close ${writing}`]);
});

Deno.test("limits name the largest holder's oldest slot for a newcomer, and nobody with fairness off", () => {
  for (const fairness of [true, false]) {
    const limits = new Limits({ max: 10, maxPerAddress: 0, fairness }, newServerStats());
    for (const [slot, address] of [[0, "b"], [1, "a"], [2, "a"], [3, "a"], [4, "b"]] as const) {
      assert.ok(limits.take(slot) && limits.takeAddress(slot, address));
    }
    assert.equal(limits.victimFor("c"), fairness ? 1 : -1);
    assert.equal(limits.victimFor("b"), -1, "b would then hold as many as a");
    limits.release(1);
    // a and b hold two each: the oldest of either.
    if (fairness) assert.ok([0, 2].includes(limits.victimFor("c")), "the oldest of a or b");
    else assert.equal(limits.victimFor("c"), -1);
  }
});
