import assert from "node:assert/strict";
import { nettleGranted } from "./aead.ts";
import { COOKIE_LENGTH, CookieKeys, KEY_PERIOD_SECONDS, KEYS_KEPT } from "./cookies.ts";

const ignore = !nettleGranted();
const DAY = KEY_PERIOD_SECONDS * 1000;

Deno.test({
  name: "a cookie opens for a week of rotations, and the next day's key too, and no longer",
  ignore,
  fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    const start = Date.UTC(2026, 11, 1, 12);
    let now = start;
    const server = new CookieKeys(master, () => now);
    const keys = crypto.getRandomValues(new Uint8Array(64));
    const cookie = new Uint8Array(COOKIE_LENGTH);
    server.seal(keys, cookie, 0);
    const opened = new Uint8Array(64);
    for (let day = 0; day <= KEYS_KEPT; day++) {
      now = start + day * DAY;
      assert.equal(server.open(cookie, opened), true, `${day} days later`);
      assert.deepEqual(opened, keys);
    }
    assert.equal(server.rotations, KEYS_KEPT);
    now = start + (KEYS_KEPT + 1) * DAY;
    assert.equal(server.open(cookie, opened), false, "past the keys kept");
    // A server whose clock is a day behind opens today's cookies (a balancer's other instance).
    now = start - DAY;
    assert.equal(new CookieKeys(master, () => now).open(cookie, opened), true);
    now = start - 2 * DAY;
    assert.equal(new CookieKeys(master, () => now).open(cookie, opened), false);
  },
});

Deno.test({
  name: "a cookie is bound to its master, its key id and every byte, and each one is new",
  ignore,
  fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    const server = new CookieKeys(master);
    const keys = crypto.getRandomValues(new Uint8Array(64));
    const cookie = new Uint8Array(COOKIE_LENGTH), again = new Uint8Array(COOKIE_LENGTH);
    server.seal(keys, cookie, 0);
    server.seal(keys, again, 0);
    assert.notDeepEqual(cookie, again, "a fresh nonce each time: cookies cannot be linked");
    const opened = new Uint8Array(64);
    assert.equal(
      new CookieKeys(crypto.getRandomValues(new Uint8Array(32))).open(cookie, opened),
      false,
    );
    for (let i = 0; i < COOKIE_LENGTH; i++) {
      const tampered = cookie.slice();
      tampered[i] ^= 0x10;
      assert.equal(server.open(tampered, opened), false, `byte ${i} changed`);
    }
    assert.equal(server.open(cookie.subarray(0, 96), opened), false, "a short cookie");
    assert.throws(() => new CookieKeys(new Uint8Array(16)), RangeError);
  },
});
