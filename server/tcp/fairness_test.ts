// Tests of the fairness policy and its buckets, against a plain count kept beside them.

import assert from "node:assert/strict";
import { fairnessGroup, HolderBuckets, mayTakeFromLargest } from "./fairness.ts";

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
