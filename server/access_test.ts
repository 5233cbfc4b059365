// Unit tests of the allow and deny lists.

import assert from "node:assert/strict";
import { AccessList, parseCidr } from "./access.ts";
import { parseAddress } from "../lib/net.ts";

Deno.test("addresses parse in every form a socket reports them", () => {
  assert.deepEqual([...parseAddress("192.0.2.1")!], [0xc0000201]);
  assert.deepEqual([...parseAddress("::1")!], [0, 0, 0, 1]);
  assert.deepEqual([...parseAddress("2001:db8::8:800:200c:417a")!], [
    0x20010db8,
    0,
    0x00080800,
    0x200c417a,
  ]);
  assert.deepEqual([...parseAddress("::ffff:192.0.2.1")!], [0xc0000201], "IPv4-mapped is IPv4");
  assert.deepEqual([...parseAddress("fe80::1%eth0")!], [0xfe800000, 0, 0, 1], "zone dropped");
  for (const bad of ["", "1.2.3", "1.2.3.256", "1:2:3", "::1::", "1:2:3:4:5:6:7:8:9", "g::1"]) {
    assert.equal(parseAddress(bad), null, bad);
  }
});

Deno.test("CIDR ranges take a prefix up to the address's length", () => {
  assert.ok(parseCidr("0.0.0.0/0"));
  assert.ok(parseCidr("::/0"));
  assert.ok(parseCidr("2001:db8::/128"));
  assert.equal(parseCidr("2001:db8::/129"), null);
  assert.equal(parseCidr("10.0.0.0/"), null);
  assert.equal(parseCidr("10.0.0.0/-1"), null);
  assert.equal(parseCidr("10.0.0.0/8/8"), null);
});

Deno.test("with an allow list only its ranges are served, and deny wins over allow", () => {
  const access = AccessList.parse(["10.0.0.0/8", "2001:db8::/32"], ["10.1.0.0/16"]);
  assert.ok(access.allows("10.0.0.1"));
  assert.ok(access.allows("10.255.255.255"));
  assert.ok(!access.allows("10.1.2.3"));
  assert.ok(!access.allows("11.0.0.1"));
  assert.ok(access.allows("2001:db8:ffff::1"));
  assert.ok(!access.allows("2001:db9::1"));
  assert.ok(access.allows("::ffff:10.0.0.1"), "IPv4-mapped matches the IPv4 rule");
  assert.ok(!access.allows("not an address"));
});

Deno.test("a deny list alone serves everyone else; no lists serve everyone", () => {
  const access = AccessList.parse([], ["127.0.0.2/32"]);
  assert.ok(access.allows("127.0.0.1"));
  assert.ok(!access.allows("127.0.0.2"));
  assert.ok(AccessList.OPEN.open);
  assert.ok(AccessList.OPEN.allows("anything at all"));
});

Deno.test("a list entry that is not a range is an error naming it", () => {
  assert.throws(() => AccessList.parse(["10.0.0.0/8", "localhost"]), /"localhost" is not/);
});
