import assert from "node:assert/strict";
import { RequestPool, Verifier } from "./roughtime_loadgen.ts";
import { answerBatch, delegate, generateKeyPair } from "../../roughtime/response.ts";
import { readRequest } from "../../roughtime/request.ts";

// The benchmark's figures are verified responses per second: its shortcuts (a batch's
// signature checked once, proven tree nodes kept) must refuse whatever a client would.

const longTerm = generateKeyPair();
const now = Math.floor(Date.now() / 1000);
const delegation = delegate(longTerm, now - 60, now + 3600);
const pool = new RequestPool(16);
const asked = [3, 4, 5, 9, 12];

/** The server's responses to `asked`, one batch, each at its own place in one buffer. */
function respond(): { bytes: Uint8Array; size: number } {
  const requests = asked.map((i) => {
    const packet = pool.packet(i);
    const read = readRequest(packet, null);
    assert.ok(typeof read !== "string");
    return { packet, nonce: read.nonce };
  });
  const batch = answerBatch(requests, 1, now, 3, delegation);
  const bytes = new Uint8Array(asked.length * batch.size);
  asked.forEach((_, k) => batch.writeTo(k, bytes, k * batch.size));
  return { bytes, size: batch.size };
}

const check = (verifier: Verifier, bytes: Uint8Array, k: number, size: number) =>
  verifier.verify(bytes, new DataView(bytes.buffer), k * size, size);

Deno.test("the Roughtime load generator accepts each response of a batch, checking the signature once", () => {
  const { bytes, size } = respond();
  const verifier = new Verifier(longTerm.publicKey, pool);
  asked.forEach((request, k) => assert.equal(check(verifier, bytes, k, size), request));
  assert.equal(verifier.signatures, 1);
});

Deno.test("the Roughtime load generator refuses a response with any bit flipped, first of its batch or not", () => {
  const { bytes, size } = respond();
  for (let at = 0; at < size; at++) {
    for (const first of [true, false]) {
      const verifier = new Verifier(longTerm.publicKey, pool);
      // Not first: an untouched response of the batch was verified before, so the
      // signature and the tree nodes it proved are kept and the shortcuts are taken.
      if (!first) assert.equal(check(verifier, bytes, 0, size), asked[0]);
      const tampered = bytes.slice();
      tampered[size + at] ^= 0x10;
      const verdict = check(verifier, tampered, 1, size);
      assert.ok(verdict < 0, `byte ${at} flipped (${first ? "first" : "after another"})`);
    }
  }
});

Deno.test("the Roughtime load generator refuses another key's responses and responses to requests it did not send", () => {
  const { bytes, size } = respond();
  assert.equal(check(new Verifier(generateKeyPair().publicKey, pool), bytes, 0, size), -1);
  const other = new RequestPool(16); // the same indices, other nonces
  assert.equal(check(new Verifier(longTerm.publicKey, other), bytes, 0, size), -2);
});

Deno.test("the Roughtime load generator counts a batch signed again as another signature", () => {
  const packet = pool.packet(7);
  const read = readRequest(packet, null);
  assert.ok(typeof read !== "string");
  // A batch of one, as a request alone in its turn is signed: the same request in the same
  // second gets the same signature each time.
  const response = answerBatch([{ packet, nonce: read.nonce }], 1, now, 3, delegation).response(0);
  const verifier = new Verifier(longTerm.publicKey, pool);
  for (let i = 0; i < 3; i++) assert.equal(check(verifier, response, 0, response.length), 7);
  assert.equal(verifier.signatures, 3);
});
