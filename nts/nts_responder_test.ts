import assert from "node:assert/strict";
import { nettleGranted } from "./aead.ts";
import { CookieKeys } from "./cookies.ts";
import { NtsShape } from "./ntp_fields.ts";
import { type NtsCounters, NtsResponder } from "./nts_responder.ts";
import { mintSession, ntsRequest, readNtsReply } from "../testing/nts.ts";

const ignore = !nettleGranted();

function responder(master: Uint8Array): [NtsResponder, NtsCounters] {
  const counters = { requestsNts: 0, ntsNaks: 0, droppedNts: 0, ntsCookiesIssued: 0 };
  return [new NtsResponder(new CookieKeys(master), counters), counters];
}

Deno.test({
  name:
    "an NTS reply echoes the identifier and seals a cookie per placeholder with S2C, never longer than the request",
  ignore,
  fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    const [nts, counters] = responder(master);
    const session = mintSession(master);
    for (const placeholders of [0, 1, 7, 9]) {
      const request = ntsRequest({ ...session, placeholders });
      assert.equal(nts.read(request, 0, request.length), NtsShape.NTS);
      assert.equal(nts.open(request, 0), true);
      const reply = new Uint8Array(2048);
      reply[0] = 0x24; // the header the caller writes
      const length = nts.prepare(request, request.length, reply, 0);
      nts.seal(reply, 0);
      assert.ok(length <= request.length, `${length} > ${request.length}`);
      const read = readNtsReply(reply.subarray(0, length), session.s2c);
      assert.deepEqual(read.uniqueId, request.slice(52, 84));
      assert.equal(read.cookies.length, 1 + Math.min(placeholders, 7));
      // The new cookies hold the same keys: the server opens them, and the client keeps them.
      for (const cookie of read.cookies) {
        const next = ntsRequest({ ...session, cookie });
        nts.read(next, 0, next.length);
        assert.equal(nts.open(next, 0), true);
      }
    }
    assert.equal(counters.ntsCookiesIssued, 1 + 2 + 8 + 8);
  },
});

Deno.test({
  name: "a NAK carries the identifier and nothing sealed; a request opens only with its own C2S",
  ignore,
  fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    const [nts] = responder(master);
    const session = mintSession(master);
    const other = mintSession(crypto.getRandomValues(new Uint8Array(32)));
    for (const request of [ntsRequest(other), ntsRequest({ ...session, c2s: other.c2s })]) {
      assert.equal(nts.read(request, 0, request.length), NtsShape.NTS);
      assert.equal(nts.open(request, 0), false);
      const reply = new Uint8Array(2048);
      const length = nts.nak(request, reply, 0);
      assert.equal(length, 48 + 36);
      assert.deepEqual(reply.subarray(48, 84), request.subarray(48, 84));
    }
    // Every byte of the request is authenticated.
    const request = ntsRequest(session);
    for (const at of [0, 40, 47, 60, 200, request.length - 1]) {
      const tampered = request.slice();
      tampered[at] ^= 1;
      nts.read(tampered, 0, tampered.length);
      assert.equal(nts.open(tampered, 0), false, `byte ${at} changed`);
    }
  },
});
