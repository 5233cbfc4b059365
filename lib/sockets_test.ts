// Unit tests of the sockaddr helpers the FFI engines share.

import assert from "node:assert/strict";
import { parseAddress } from "./net.ts";
import { sockaddrHost, sockaddrPort, writeSockaddr } from "./sockets.ts";

Deno.test("sockaddrs read back as Deno writes addresses: short IPv6, IPv4-mapped as IPv4", () => {
  const cases: [written: string, read: string][] = [
    ["192.0.2.7", "192.0.2.7"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["::1", "::1"],
    ["::", "::"],
    ["2001:db8::1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // the first of two equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group stays
    ["fe80::a:0:0:0:b", "fe80:0:0:a::b"], // the longest run
  ];
  const bytes = new Uint8Array(32);
  for (const [written, read] of cases) {
    writeSockaddr(bytes, parseAddress(written)!, 4460);
    assert.equal(sockaddrHost(bytes, 0), read, written);
    assert.equal(sockaddrPort(bytes, 0), 4460);
  }
});
