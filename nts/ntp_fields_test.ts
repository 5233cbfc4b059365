import assert from "node:assert/strict";
import { NtsFields, NtsShape } from "./ntp_fields.ts";

const field = (type: number, bodyLength: number, fill = 0) => {
  const length = 4 + bodyLength;
  return [type >> 8, type & 0xff, length >> 8, length & 0xff, ...new Array(bodyLength).fill(fill)];
};
const authenticator = (nonce = 16, sealed = 16, padding = 0) => {
  const pad = (n: number) => (n + 3) & ~3;
  const body = 4 + pad(nonce) + pad(sealed) + padding;
  const out = field(0x0404, body);
  out.splice(4, 4, nonce >> 8, nonce & 0xff, sealed >> 8, sealed & 0xff);
  return out;
};
const HEADER = new Array(48).fill(0);
const UID = field(0x0104, 32);
const COOKIE = field(0x0204, 100);
const packet = (...fields: number[][]) => Uint8Array.from([...HEADER, ...fields.flat()]);

function read(bytes: Uint8Array, at = 0): [NtsShape, NtsFields] {
  const fields = new NtsFields();
  return [fields.read(bytes, at, bytes.length - at), fields];
}

Deno.test("an NTS request's fields are found in place, placeholders counted", () => {
  const bytes = packet(UID, COOKIE, field(0x0304, 100), field(0x0304, 100), authenticator());
  const [shape, fields] = read(bytes);
  assert.equal(shape, NtsShape.NTS);
  assert.equal(fields.uniqueId, 48);
  assert.equal(fields.uniqueIdLength, 36);
  assert.equal(fields.cookie, 48 + 36 + 4);
  assert.equal(fields.cookieLength, 100);
  assert.equal(fields.placeholders, 2);
  assert.equal(fields.authenticator, 48 + 36 + 104 * 3);
  assert.equal(fields.nonceLength, 16);
  assert.equal(fields.ciphertextLength, 16);
  // In a buffer of many datagrams, at an offset.
  const batched = new Uint8Array(1100);
  batched.set(bytes, 600);
  assert.equal(new NtsFields().read(batched, 600, bytes.length), NtsShape.NTS);
});

Deno.test("fields in any order, unknown ones among them, are read; placeholders past 7 are not counted", () => {
  const unknown = field(0x7777, 12);
  assert.equal(read(packet(COOKIE, unknown, UID, authenticator()))[0], NtsShape.NTS);
  const [shape, fields] = read(
    packet(UID, COOKIE, ...Array(9).fill(field(0x0304, 100)), authenticator()),
  );
  assert.equal(shape, NtsShape.NTS);
  assert.equal(fields.placeholders, 7);
});

Deno.test("a request without NTS fields is plain SNTP, a legacy MAC included", () => {
  assert.equal(read(packet())[0], NtsShape.PLAIN);
  assert.equal(read(packet(new Array(20).fill(1)))[0], NtsShape.PLAIN); // key id and MD5
  assert.equal(read(packet(new Array(24).fill(1)))[0], NtsShape.PLAIN); // and SHA-1
  assert.equal(read(packet(field(0x7777, 12)))[0], NtsShape.PLAIN);
});

Deno.test("NTS fields that break the rules make the request malformed", () => {
  const cases: [string, Uint8Array][] = [
    ["no unique identifier", packet(COOKIE, authenticator())],
    ["no cookie", packet(UID, authenticator())],
    ["no authenticator", packet(UID, COOKIE)],
    ["a short unique identifier", packet(field(0x0104, 28), COOKIE, authenticator())],
    ["two unique identifiers", packet(UID, UID, COOKIE, authenticator())],
    ["two cookies", packet(UID, COOKIE, COOKIE, authenticator())],
    ["a field after the authenticator", packet(UID, COOKIE, authenticator(), field(0x7777, 12))],
    ["a MAC after the authenticator", packet(UID, COOKIE, authenticator(), new Array(20).fill(0))],
    [
      "a placeholder longer than the cookie",
      packet(UID, COOKIE, field(0x0304, 200), authenticator()),
    ],
    [
      "placeholders of two lengths",
      packet(UID, COOKIE, field(0x0304, 100), field(0x0304, 96), authenticator()),
    ],
    ["a short nonce", packet(UID, COOKIE, authenticator(8, 16))],
    ["no room for the tag", packet(UID, COOKIE, authenticator(16, 8))],
    ["lengths past the field", packet(UID, COOKIE, authenticator(16, 64).slice(0, 40))],
    ["a field past the end", packet(UID, COOKIE, authenticator()).subarray(0, 200)],
    [
      "a field length not a multiple of 4",
      packet(UID, [1, 4, 0, 39, ...new Array(35).fill(0)], authenticator()),
    ],
  ];
  for (const [what, bytes] of cases) assert.equal(read(bytes)[0], NtsShape.MALFORMED, what);
});
