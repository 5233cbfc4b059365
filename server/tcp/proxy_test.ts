// Unit tests of the PROXY protocol parser.

import assert from "node:assert/strict";
import { parseProxyHeader, PROXY_HEADER_MAX, PROXY_V2_SIGNATURE } from "./proxy.ts";

const text = (s: string) => new TextEncoder().encode(s);
const SIGNATURE = [...PROXY_V2_SIGNATURE];

/** Builds a v2 header: command 1 = PROXY, 0 = LOCAL. */
function v2(command: number, family: number, address: number[], extra: number[] = []): Uint8Array {
  const body = [...address, ...extra];
  return new Uint8Array([
    ...SIGNATURE,
    0x20 | command,
    family,
    body.length >> 8,
    body.length & 0xff,
    ...body,
  ]);
}

Deno.test("proxy v1 header gives the client address and its length", () => {
  const header = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 45000\r\n";
  assert.deepEqual(parseProxyHeader(text(header + "TIME\r\n")), {
    status: "ok",
    length: header.length,
    source: { hostname: "203.0.113.7", port: 51000 },
  });
  assert.deepEqual(parseProxyHeader(text("PROXY TCP6 2001:DB8::1 ::1 4000 45000\r\n")), {
    status: "ok",
    length: 39,
    source: { hostname: "2001:db8::1", port: 4000 },
  });
  assert.deepEqual(
    parseProxyHeader(text("PROXY TCP6 ::ffff:192.0.2.1 ::1 4000 45000\r\n")).status,
    "ok",
  );
  assert.deepEqual(parseProxyHeader(text("PROXY UNKNOWN\r\n")), { status: "ok", length: 15 });
});

Deno.test("proxy v1 header is incomplete until its CR LF arrives, at every split", () => {
  const header = text("PROXY TCP4 203.0.113.7 10.0.0.1 51000 45000\r\n");
  for (let n = 0; n < header.length; n++) {
    assert.deepEqual(parseProxyHeader(header, n), { status: "incomplete" }, `${n} bytes`);
  }
  assert.equal(parseProxyHeader(header).status, "ok");
});

Deno.test("proxy v1 header refuses malformed input", () => {
  const cases = [
    "TIME\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "PROXY " + "x".repeat(120),
  ];
  for (const input of cases) {
    assert.equal(parseProxyHeader(text(input)).status, "invalid", JSON.stringify(input));
  }
  assert.equal(parseProxyHeader(new Uint8Array([0x50, 0x52, 0xff])).status, "invalid");
});

Deno.test("proxy v2 header gives IPv4 and IPv6 client addresses", () => {
  const ipv4 = v2(1, 0x11, [203, 0, 113, 7, 10, 0, 0, 1, 0xc7, 0x38, 0xaf, 0xc8]);
  assert.deepEqual(parseProxyHeader(ipv4), {
    status: "ok",
    length: 28,
    source: { hostname: "203.0.113.7", port: 51000 },
  });
  const ipv6Source = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  const ipv6 = v2(1, 0x21, [...ipv6Source, ...new Array(15).fill(0), 1, 0x0f, 0xa0, 0xaf, 0xc8]);
  assert.deepEqual(parseProxyHeader(ipv6), {
    status: "ok",
    length: 52,
    source: { hostname: "2001:db8::1", port: 4000 },
  });
  const mapped = [...new Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 1];
  const ipv4Mapped = v2(1, 0x21, [...mapped, ...new Array(16).fill(0), 0, 80, 0, 81]);
  assert.deepEqual(parseProxyHeader(ipv4Mapped), {
    status: "ok",
    length: 52,
    source: { hostname: "192.0.2.1", port: 80 },
  });
});

Deno.test("proxy v2 LOCAL header and TLVs are accepted; LOCAL carries no address", () => {
  assert.deepEqual(parseProxyHeader(v2(0, 0x00, [])), { status: "ok", length: 16 });
  const withTlv = v2(1, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], [0x04, 0x00, 0x01, 0x00]);
  assert.deepEqual(parseProxyHeader(withTlv), {
    status: "ok",
    length: 32,
    source: { hostname: "1.2.3.4", port: 1 },
  });
});

Deno.test("proxy v2 header is incomplete at every split and refuses bad ones", () => {
  const header = v2(1, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
  for (let n = 0; n < header.length; n++) {
    assert.deepEqual(parseProxyHeader(header, n), { status: "incomplete" }, `${n} bytes`);
  }
  const badVersion = header.slice();
  badVersion[12] = 0x11;
  assert.equal(parseProxyHeader(badVersion).status, "invalid");
  const badCommand = header.slice();
  badCommand[12] = 0x22;
  assert.equal(parseProxyHeader(badCommand).status, "invalid");
  const tooLong = new Uint8Array([...SIGNATURE, 0x21, 0x11, 0xff, 0xff]);
  assert.equal(parseProxyHeader(tooLong).status, "invalid", "longer than PROXY_HEADER_MAX");
  assert.ok(PROXY_HEADER_MAX < 0xffff);
  const shortBlock = v2(1, 0x11, [1, 2, 3, 4]);
  assert.equal(parseProxyHeader(shortBlock).status, "invalid");
});
