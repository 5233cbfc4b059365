// Tests of the fairness policy and its buckets, against a plain count kept beside them.

import assert from "node:assert/strict";
import { fairnessGroup, FairShares, HolderBuckets, mayTakeFromLargest } from "./fairness.ts";

Deno.test("the largest holder is known after any sequence of opens and closes", () => {
  const buckets = new HolderBuckets();
  const counts = new Map<number, number>();
  let seed = 7;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let step = 0; step < 20_000; step++) {
    const number = random(300);
    const held = counts.get(number) ?? 0;
    if (random(3) === 0 && held > 0) {
      buckets.remove(number);
      counts.set(number, held - 1);
    } else {
      buckets.add(number);
      counts.set(number, held + 1);
    }
    const most = Math.max(0, ...counts.values());
    assert.equal(buckets.largestCount(), most, `step ${step}`);
    const largest = buckets.largest();
    if (most === 0) assert.equal(largest, -1);
    else {assert.equal(
        counts.get(largest),
        most,
        `step ${step}: ${largest} is not a largest holder`,
      );}
    assert.equal(buckets.count(number), counts.get(number));
  }
});

Deno.test("closing what an address does not hold changes nothing", () => {
  const buckets = new HolderBuckets();
  buckets.remove(5);
  buckets.add(2);
  buckets.remove(9999);
  assert.equal(buckets.largest(), 2);
  assert.equal(buckets.count(9999), 0);
});

Deno.test("a newcomer takes a slot from the largest holder only while it would still hold fewer", () => {
  assert.equal(mayTakeFromLargest(0, 2), true);
  assert.equal(mayTakeFromLargest(1, 2), false, "1 + 1 is not fewer than 2");
  assert.equal(mayTakeFromLargest(0, 1), false, "many addresses with one each: no churn");
  assert.equal(mayTakeFromLargest(10, 60), true);
  assert.equal(mayTakeFromLargest(60, 60), false, "the largest holder's own address");
});

Deno.test("IPv6 clients are grouped by /64, IPv4 ones by address", () => {
  assert.equal(fairnessGroup("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(fairnessGroup("2001:db8::ffff:1"), "2001:db8:0:0::/64");
  assert.notEqual(fairnessGroup("2001:db8:0:1::1"), fairnessGroup("2001:db8:0:2::1"));
  assert.equal(fairnessGroup("::1"), "0:0:0:0::/64");
  assert.equal(fairnessGroup("127.0.0.3"), "127.0.0.3");
  assert.equal(fairnessGroup("::ffff:127.0.0.3"), "127.0.0.3");
  assert.notEqual(fairnessGroup("127.0.0.3"), fairnessGroup("127.0.0.4"));
  assert.equal(fairnessGroup("not an address"), "not an address");
});

Deno.test("the victim is always the oldest slot of a largest holder, after any opens and closes", () => {
  const shares = new FairShares();
  /** A model: each group's slots in the order they joined. */
  const groups = new Map<string, number[]>();
  let seed = 11;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const free: number[] = Array.from({ length: 400 }, (_, slot) => 399 - slot);
  const held = new Map<number, string>();
  for (let step = 0; step < 20_000; step++) {
    if (random(3) === 0 && held.size > 0) {
      const slots = [...held.keys()];
      const slot = slots[random(slots.length)];
      const address = held.get(slot)!;
      shares.leave(slot);
      held.delete(slot);
      const list = groups.get(address)!;
      list.splice(list.indexOf(slot), 1);
      if (list.length === 0) groups.delete(address);
      free.push(slot);
    } else if (free.length > 0) {
      const slot = free.pop()!;
      const address = `192.0.2.${random(12)}`;
      shares.join(slot, address);
      held.set(slot, address);
      groups.set(address, [...(groups.get(address) ?? []), slot]);
    }
    assert.equal(shares.size, held.size);
    const newcomer = `192.0.2.${random(13)}`;
    const most = Math.max(0, ...[...groups.values()].map((list) => list.length));
    const mine = groups.get(newcomer)?.length ?? 0;
    assert.equal(shares.holds(newcomer), mine);
    const victim = shares.victimFor(newcomer);
    if (mine + 1 >= most) assert.equal(victim, -1, `step ${step}`);
    else {
      const list = groups.get(held.get(victim)!)!;
      assert.equal(list.length, most, `step ${step}: the victim's address holds the most`);
      assert.equal(list[0], victim, `step ${step}: the victim is its address's oldest`);
    }
  }
});

Deno.test("one host's IPv6 addresses count as one: its /64 gives way to a newcomer", () => {
  const shares = new FairShares();
  for (let slot = 0; slot < 3; slot++) shares.join(slot, `2001:db8:1:2::${slot + 1}`);
  shares.join(3, "2001:db8:1:3::1");
  assert.equal(shares.holds("2001:db8:1:2::ffff"), 3);
  assert.equal(shares.victimFor("2001:db8:1:3::2"), 0, "the /64 holding three gives way");
  assert.equal(shares.victimFor("2001:db8:1:2::9"), -1, "not to its own /64");
  assert.equal(shares.victimFor("::ffff:192.0.2.1"), 0);
});

Deno.test("a stranger from another worker makes room only where someone holds two or more", () => {
  const shares = new FairShares();
  shares.join(0, "192.0.2.1");
  shares.join(1, "192.0.2.2");
  assert.equal(shares.victimFor(null), -1);
  shares.join(2, "192.0.2.2");
  assert.equal(shares.victimFor(null), 1);
});
