// Unit tests of the overload policy: the shrinking idle timeout and who may replace whom.

import assert from "node:assert/strict";
import { highWaterMark, mayReplace, pressureTimeout } from "./overload.ts";

Deno.test("the high-water mark is 90% of the connection limit, rounded down", () => {
  assert.equal(highWaterMark(10000), 9000);
  assert.equal(highWaterMark(40), 36);
  assert.equal(highWaterMark(2), 1);
  assert.equal(highWaterMark(1), 0);
});

Deno.test("the idle timeout shrinks in a straight line from the high-water mark to the limit", () => {
  const cases: [open: number, timeout: number][] = [
    [0, 300],
    [9000, 300],
    [9001, 300 - 299 / 1000],
    [9500, 150.5],
    [10000, 1],
    [12000, 1], // past the limit (other workers' count racing ahead): never below the minimum
  ];
  for (const [open, timeout] of cases) {
    assert.ok(Math.abs(pressureTimeout(open, 10000, 300, 1) - timeout) < 1e-9, `${open} open`);
  }
  // A limit so small that the mark and the limit are one apart still reaches the minimum.
  assert.equal(pressureTimeout(2, 2, 300, 1), 1);
});

Deno.test("a newcomer may replace a connection only from its own or a heavier address", () => {
  const at = (address: string | null, holds: number) => ({ address, holds });
  const cases: [newcomer: ReturnType<typeof at>, victim: ReturnType<typeof at>, ok: boolean][] = [
    [at("192.0.2.1", 0), at("198.51.100.7", 90), true], // a light newcomer
    [at("198.51.100.8", 90), at("198.51.100.7", 90), false], // as heavy: no
    [at("198.51.100.8", 91), at("198.51.100.7", 2), false], // heavier: no
    [at("198.51.100.7", 90), at("198.51.100.7", 90), true], // its own address's
    [at(null, 0), at("198.51.100.7", 1), true], // not known yet (PROXY header to come)
    [at("192.0.2.1", 5), at(null, 0), true], // a victim that never said who it is
  ];
  for (const [newcomer, victim, ok] of cases) {
    assert.equal(mayReplace(newcomer, victim), ok, JSON.stringify({ newcomer, victim }));
  }
});
