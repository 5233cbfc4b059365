import assert from "node:assert/strict";
import { createCipheriv } from "node:crypto";
import { nettleGranted, SivCmac, TAG_LENGTH } from "./aead.ts";

const hex = (text: string) =>
  Uint8Array.from(text.replace(/\s/g, "").match(/../g)!, (b) => parseInt(b, 16));
const ignore = !nettleGranted();

/**
 * RFC 5297's SIV over any number of strings, from node:crypto's AES: the reference the
 * test holds Nettle to, since Nettle's interface (one AD, one nonce) cannot take the
 * RFC's own vectors (A.1 has no nonce, A.2 two ADs).
 */
function referenceSiv(key: Uint8Array, strings: Uint8Array[], plaintext: Uint8Array): Uint8Array {
  const aes = (k: Uint8Array, block: Uint8Array) => {
    const cipher = createCipheriv("aes-128-ecb", k, null).setAutoPadding(false);
    return new Uint8Array(cipher.update(block));
  };
  const double = (block: Uint8Array) => {
    const out = new Uint8Array(16);
    for (let i = 0; i < 16; i++) {
      out[i] = ((block[i] << 1) | (i < 15 ? block[i + 1] >> 7 : 0)) & 0xff;
    }
    if (block[0] & 0x80) out[15] ^= 0x87;
    return out;
  };
  const xor = (a: Uint8Array, b: Uint8Array) => a.map((byte, i) => byte ^ b[i]);
  const macKey = key.subarray(0, 16);
  const cmac = (message: Uint8Array) => {
    const k1 = double(aes(macKey, new Uint8Array(16)));
    const k2 = double(k1);
    const blocks = Math.max(1, Math.ceil(message.length / 16));
    let state: Uint8Array = new Uint8Array(16);
    for (let i = 0; i < blocks; i++) {
      const block = new Uint8Array(16);
      block.set(message.subarray(i * 16, i * 16 + 16));
      if (i === blocks - 1) {
        const whole = message.length > 0 && message.length % 16 === 0;
        if (!whole) block[message.length - i * 16] = 0x80;
        state = aes(macKey, xor(xor(state, block), whole ? k1 : k2));
      } else state = aes(macKey, xor(state, block));
    }
    return state;
  };
  let d = cmac(new Uint8Array(16));
  for (const string of strings) d = xor(double(d), cmac(string));
  let t: Uint8Array;
  if (plaintext.length >= 16) {
    t = plaintext.slice();
    t.set(xor(t.subarray(t.length - 16), d), t.length - 16);
  } else {
    const padded = new Uint8Array(16);
    padded.set(plaintext);
    padded[plaintext.length] = 0x80;
    t = xor(double(d), padded);
  }
  const v = cmac(t);
  const iv = v.slice();
  iv[8] &= 0x7f;
  iv[12] &= 0x7f;
  const ctr = createCipheriv("aes-128-ctr", key.subarray(16), iv);
  const out = new Uint8Array(16 + plaintext.length);
  out.set(v);
  out.set(new Uint8Array(ctr.update(plaintext)), 16);
  return out;
}

Deno.test("the reference SIV gives RFC 5297's A.1 and A.2 answers", () => {
  const a1 = referenceSiv(
    hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff"),
    [hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")],
    hex("11223344 55667788 99aabbcc ddee"),
  );
  assert.deepEqual(a1, hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c"));
  const a2 = referenceSiv(
    hex("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f"),
    [
      hex(
        "00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100",
      ),
      hex("10203040 50607080 90a0"),
      hex("09f91102 9d74e35b d84156c5 635688c0"),
    ],
    hex(
      "74686973 20697320 736f6d65 20706c61 696e7465 78742074 6f20656e 63727970 74207573 696e6720 5349562d 414553",
    ),
  );
  assert.deepEqual(
    a2,
    hex(
      "7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17 dba77ceb 094fa663 b7a3f748 ba8af829 ea64ad54 4a272e9c 485b62a3 fd5c0d",
    ),
  );
});

Deno.test({
  name:
    "Nettle's AES-SIV seals as RFC 5297 says, for every shape NTS uses, and opens only what it sealed",
  ignore,
  fn() {
    const key = hex("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f");
    const aead = new SivCmac(key);
    // 0: a request's empty plaintext; 64: a cookie's keys; 104·n: a reply's cookies.
    for (const length of [0, 1, 15, 16, 17, 64, 104, 832]) {
      const nonce = crypto.getRandomValues(new Uint8Array(16));
      const ad = crypto.getRandomValues(new Uint8Array(length % 3 === 0 ? 180 : 5));
      const plaintext = crypto.getRandomValues(new Uint8Array(length));
      const sealed = new Uint8Array(TAG_LENGTH + length);
      aead.seal(nonce, ad, plaintext, sealed);
      assert.deepEqual(sealed, referenceSiv(key, [ad, nonce], plaintext), `length ${length}`);
      const opened = new Uint8Array(length);
      assert.equal(aead.open(nonce, ad, sealed, opened), true);
      assert.deepEqual(opened, plaintext);
      for (
        const tamper of [() => sealed[length % 16] ^= 0x40, () => ad[0] ^= 1, () => nonce[15] ^= 1]
      ) {
        tamper();
        assert.equal(aead.open(nonce, ad, sealed, opened), false, `length ${length}, tampered`);
        tamper();
      }
    }
  },
});

Deno.test({
  name: "a key of the wrong length is refused rather than read past its end",
  ignore,
  fn() {
    assert.throws(() => new SivCmac(new Uint8Array(16)), RangeError);
  },
});
