// Tests of a client's checks, on the RFC's own packets (Appendix B) and on every bit they sign.

import assert from "node:assert/strict";
import { RoughtimeVerifyError, verifyResponse } from "./verify.ts";
import { parseMessage, TAGS, unwrapPacket } from "./message.ts";

const vectors = JSON.parse(
  await Deno.readTextFile(new URL("./testdata/rfc10049_appendix_b.json", import.meta.url)),
) as { responses: { publicKey: string; request: string; response: string }[] };
const bytes = (base64: string) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
const cases = vectors.responses.map((v) => ({
  key: bytes(v.publicKey),
  request: bytes(v.request),
  response: bytes(v.response),
}));

Deno.test("the RFC's example responses parse and verify against their servers' keys", () => {
  assert.equal(cases.length, 3);
  for (const { key, request, response } of cases) {
    const time = verifyResponse(request, response, key);
    assert.equal(time.version, 1);
    assert.equal(time.radius, 3);
    assert.ok(time.notBefore <= time.midpoint && time.midpoint <= time.notAfter);
    // October 2026, when the report was made.
    const date = new Date(time.midpoint * 1000).toISOString();
    assert.match(date, /^2026-/);
    assert.equal(request.length, 12 + 1024, "the request is padded to 1024 bytes");
    assert.ok(response.length <= request.length, "the response is no larger");
  }
});

Deno.test("a response is refused with another server's key", () => {
  const [a, b] = cases;
  assert.throws(
    () => verifyResponse(a.request, a.response, b.key),
    /not signed by the server's long-term key/,
  );
});

Deno.test("a response is refused for another request: its nonce, and its leaf", () => {
  const [a, b] = cases;
  assert.throws(() => verifyResponse(b.request, a.response, a.key), /NONC is not the request's/);
});

Deno.test("flipping any bit of the signed parts, the nonce, PATH or INDX makes the response refused", () => {
  const { key, request, response } = cases[0];
  const message = unwrapPacket(response);
  const answer = parseMessage(message);
  const start = (value: Uint8Array) => value.byteOffset - response.byteOffset;
  const regions = [TAGS.SIG, TAGS.NONC, TAGS.PATH, TAGS.SREP, TAGS.CERT, TAGS.INDX]
    .map((name) => answer.get(name)!)
    .filter((value) => value.length > 0)
    .map((value) => [start(value), value.length] as const);
  let tried = 0;
  for (const [from, length] of regions) {
    for (let at = from; at < from + length; at++) {
      for (const bit of [0x01, 0x80]) {
        const forged = response.slice();
        forged[at] ^= bit;
        assert.throws(
          () => verifyResponse(request, forged, key),
          RoughtimeVerifyError,
          `byte ${at} bit ${bit} was accepted`,
        );
        tried++;
      }
    }
  }
  assert.ok(tried > 2 * 300, `${tried} forgeries tried`);
});

Deno.test("a client that keeps the delegations it checked keeps only those that verified", () => {
  const [a, b] = cases;
  const checked = new Set<string>();
  assert.throws(() => verifyResponse(a.request, a.response, b.key, checked), RoughtimeVerifyError);
  assert.equal(checked.size, 0, "a delegation another key did not sign is not kept");
  verifyResponse(a.request, a.response, a.key, checked);
  assert.equal(checked.size, 1);
  verifyResponse(a.request, a.response, a.key, checked);
  assert.equal(checked.size, 1, "kept once");
  // What the set spares is the delegation's signature only: SREP's is still checked.
  const forged = a.response.slice();
  const srep = parseMessage(unwrapPacket(forged)).get(TAGS.SREP)!;
  srep[srep.length - 1] ^= 1;
  assert.throws(() => verifyResponse(a.request, forged, a.key, checked), /SREP is not signed/);
});
