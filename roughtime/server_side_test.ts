// Tests of the server's side of Roughtime: requests read or dropped, and batches answered with one signature.

import assert from "node:assert/strict";
import { answerBatch, delegate, generateKeyPair } from "./response.ts";
import {
  makeRequest,
  MIN_REQUEST,
  readRequest,
  serverId,
  VERSION_DRAFT,
  VERSION_RFC,
} from "./request.ts";
import { buildMessage, buildPacket, parseMessage, TAGS, unwrapPacket } from "./message.ts";
import { verifyResponse } from "./verify.ts";

const longTerm = generateKeyPair();
const now = Math.floor(Date.now() / 1000);
const delegation = delegate(longTerm, now - 60, now + 3600);
const nonce = (n: number) => new Uint8Array(32).fill(n);

Deno.test("a server answers in the RFC's version, or the drafts' for a client that offers only that", () => {
  const both = readRequest(makeRequest(nonce(1), { versions: [VERSION_DRAFT, VERSION_RFC] }), null);
  assert.equal(typeof both !== "string" && both.version, VERSION_RFC);
  const draft = readRequest(makeRequest(nonce(1), { versions: [VERSION_DRAFT] }), null);
  assert.equal(typeof draft !== "string" && draft.version, VERSION_DRAFT);
  assert.equal(readRequest(makeRequest(nonce(1), { versions: [0x80000007, 5] }), null), "version");
});

Deno.test("a batch of requests is answered with one signature, each response verifying with its own PATH", () => {
  for (const size of [1, 2, 3, 7, 64]) {
    const packets = Array.from({ length: size }, (_, i) => makeRequest(nonce(i)));
    const batch = packets.map((packet, i) => ({ packet, nonce: nonce(i) }));
    const signed = answerBatch(batch, VERSION_RFC, now, 3, delegation);
    // Written in place, as the UDP engine does, into one buffer at odd offsets.
    const buffer = new Uint8Array(size * (signed.size + 3) + 1);
    const responses = packets.map((_, i) => {
      const at = 1 + i * (signed.size + 3);
      signed.writeTo(i, buffer, at);
      return buffer.subarray(at, at + signed.size);
    });
    assert.deepEqual(responses.at(-1), signed.response(size - 1));
    const signatures = new Set<string>();
    responses.forEach((response, i) => {
      const time = verifyResponse(packets[i], response, longTerm.publicKey);
      assert.deepEqual([time.midpoint, time.radius], [now, 3]);
      assert.ok(response.length <= packets[i].length, "never larger than the request");
      const sig = parseMessage(unwrapPacket(response)).get(TAGS.SIG)!;
      signatures.add(sig.join(","));
    });
    assert.equal(signatures.size, 1, `${size} requests, one signature`);
    // Another request's response does not verify for this one.
    if (size > 1) assert.throws(() => verifyResponse(packets[0], responses[1], longTerm.publicKey));
  }
});

Deno.test("a server drops short, malformed, foreign and versionless requests, and answers none of them", () => {
  const good = makeRequest(nonce(9));
  const ours = serverId(longTerm.publicKey);
  const other = serverId(generateKeyPair().publicKey);
  const pad = (pairs: [number, Uint8Array][]) => {
    const size = buildMessage([...pairs, [TAGS.ZZZZ, new Uint8Array(0)]]).length + 12;
    return buildPacket(buildMessage([...pairs, [TAGS.ZZZZ, new Uint8Array(MIN_REQUEST - size)]]));
  };
  const ver = Uint8Array.of(1, 0, 0, 0);
  const cases: [string, Uint8Array, string][] = [
    ["short", good.subarray(0, MIN_REQUEST - 1), "short"],
    ["no ROUGHTIM", Uint8Array.from(good).fill(0, 0, 8), "malformed"],
    [
      "a length that lies",
      (() => {
        const p = good.slice();
        p[8] ^= 4;
        return p;
      })(),
      "malformed",
    ],
    [
      "tags out of order",
      (() => {
        const p = good.slice();
        // Swap the first two tags of the header: VER and NONC.
        const tags = 12 + 4 + 4 * 3;
        const first = p.slice(tags, tags + 4);
        p.copyWithin(tags, tags + 4, tags + 8);
        p.set(first, tags + 4);
        return p;
      })(),
      "malformed",
    ],
    ["no NONC", pad([[TAGS.VER, ver], [TAGS.TYPE, new Uint8Array(4)]]), "malformed"],
    [
      "TYPE 1",
      pad([[TAGS.VER, ver], [TAGS.NONC, nonce(1)], [TAGS.TYPE, Uint8Array.of(1, 0, 0, 0)]]),
      "malformed",
    ],
    ["no VER", pad([[TAGS.NONC, nonce(1)], [TAGS.TYPE, new Uint8Array(4)]]), "malformed"],
    [
      "another server's SRV",
      makeRequest(nonce(1), { serverKey: generateKeyPair().publicKey }),
      "server",
    ],
    [
      "an offset past the end",
      (() => {
        const p = good.slice();
        new DataView(p.buffer).setUint32(12 + 4, 0x10000, true);
        return p;
      })(),
      "malformed",
    ],
  ];
  for (const [what, packet, reason] of cases) {
    assert.equal(readRequest(packet, ours), reason, what);
  }
  assert.notEqual(
    typeof readRequest(makeRequest(nonce(1), { serverKey: longTerm.publicKey }), ours),
    "string",
  );
  assert.equal(
    readRequest(makeRequest(nonce(1), { serverKey: longTerm.publicKey }), other),
    "server",
  );
});

Deno.test("a response outside its delegation's window is refused by the client", () => {
  const packet = makeRequest(nonce(3));
  const late = answerBatch([{ packet, nonce: nonce(3) }], VERSION_RFC, now + 7200, 3, delegation)
    .response(0);
  assert.throws(
    () => verifyResponse(packet, late, longTerm.publicKey),
    /outside the delegation's window/,
  );
});
