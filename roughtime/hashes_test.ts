import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { hash, sha512Implementations } from "./hashes.ts";

const sizes = [0, 1, 65, 111, 112, 127, 128, 129, 1025, 1200, 5000];

Deno.test("every SHA-512 that loads here gives the same digests as node:crypto, and H is its first 32 bytes", () => {
  const implementations = sha512Implementations();
  // The test task grants GnuTLS and Nettle: the server's choice is tested, not only the fallback.
  assert.deepEqual([...implementations.keys()], ["GnuTLS", "Nettle", "node:crypto"]);
  for (const size of sizes) {
    const bytes = crypto.getRandomValues(new Uint8Array(size + 7));
    const expected = new Uint8Array(createHash("sha512").update(bytes.subarray(0, size)).digest());
    for (const [name, sha512] of implementations) {
      const out = new Uint8Array(64);
      sha512(bytes, size, out);
      assert.deepEqual(out, expected, `${name}, ${size} bytes`);
    }
    const first = bytes.subarray(0, Math.floor(size / 3)),
      rest = bytes.subarray(first.length, size);
    assert.deepEqual(hash(first, rest), expected.subarray(0, 32), `H, ${size} bytes in two parts`);
  }
});
