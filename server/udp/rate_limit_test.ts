// Unit tests of the per-client rate limit.

import assert from "node:assert/strict";
import { RateLimiter, type RateLimitOptions, RateVerdict } from "./rate_limit.ts";

function makeLimiter(options: Partial<RateLimitOptions> = {}) {
  const clock = { now: 0 };
  const limiter = new RateLimiter({
    interval: 2,
    burst: 4,
    leak: 0,
    kissOfDeath: false,
    maxClients: 1000,
    ...options,
  }, () => clock.now);
  return { limiter, clock };
}

function verdicts(limiter: RateLimiter, address: string, count: number): RateVerdict[] {
  return Array.from({ length: count }, () => limiter.check(address));
}

Deno.test("a client may send a burst, then one request per interval", () => {
  const { limiter, clock } = makeLimiter();
  const { ANSWER, DROP } = RateVerdict;
  assert.deepEqual(verdicts(limiter, "a", 6), [ANSWER, ANSWER, ANSWER, ANSWER, DROP, DROP]);
  clock.now += 1999;
  assert.equal(limiter.check("a"), DROP);
  clock.now += 1;
  assert.equal(limiter.check("a"), ANSWER);
  // A long silence refills the burst, no more.
  clock.now += 3_600_000;
  assert.deepEqual(verdicts(limiter, "a", 5), [ANSWER, ANSWER, ANSWER, ANSWER, DROP]);
});

Deno.test("each client has its own bucket", () => {
  const { limiter } = makeLimiter();
  verdicts(limiter, "a", 10);
  assert.equal(limiter.check("b"), RateVerdict.ANSWER);
  assert.equal(limiter.size, 2);
});

Deno.test("with leak 2, one in four requests over the limit is answered anyway", () => {
  const { limiter } = makeLimiter({ burst: 1, leak: 2 });
  const over = verdicts(limiter, "a", 41).slice(1);
  assert.equal(over.filter((v) => v === RateVerdict.LEAK).length, 10);
  assert.equal(over.filter((v) => v === RateVerdict.DROP).length, 30);
});

Deno.test("a limited client is kissed at most once per interval", () => {
  const { limiter, clock } = makeLimiter({ burst: 1, kissOfDeath: true });
  assert.equal(limiter.check("a"), RateVerdict.ANSWER);
  assert.equal(limiter.check("a"), RateVerdict.KISS);
  assert.deepEqual(verdicts(limiter, "a", 5), Array(5).fill(RateVerdict.DROP));
  clock.now += 1000; // half an interval: still no token, no second kiss
  assert.equal(limiter.check("a"), RateVerdict.DROP);
  clock.now += 1000;
  assert.equal(limiter.check("a"), RateVerdict.ANSWER);
  assert.equal(limiter.check("a"), RateVerdict.KISS);
});

Deno.test("the client table is bounded: the client heard from least recently is forgotten", () => {
  const { limiter } = makeLimiter({ maxClients: 3, burst: 1 });
  limiter.check("a");
  limiter.check("b");
  limiter.check("c");
  limiter.check("a"); // a is now the most recent
  limiter.check("d"); // forgets b
  assert.equal(limiter.size, 3);
  assert.equal(limiter.check("a"), RateVerdict.DROP, "a is remembered, still limited");
  assert.equal(limiter.check("b"), RateVerdict.ANSWER, "b was forgotten: a fresh bucket");
  for (let i = 0; i < 100_000; i++) limiter.check(`spoofed ${i}`);
  assert.equal(limiter.size, 3);
});
