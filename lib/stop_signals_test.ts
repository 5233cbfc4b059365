// Tests of the stop-signal policy: one stop passed on by a parent, and a deliberate second signal.

import assert from "node:assert/strict";
import { REPEAT_WINDOW_MS, StopSignals } from "./stop_signals.ts";

Deno.test("the first stop signal stops the server", () => {
  assert.equal(new StopSignals().receive(0), "stop");
  assert.equal(new StopSignals().receive(123.5), "stop");
});

Deno.test("a signal within the window is the same stop, passed on by a parent", () => {
  const signals = new StopSignals();
  assert.equal(signals.receive(1000), "stop");
  assert.equal(signals.receive(1000), "repeat");
  assert.equal(signals.receive(1000 + REPEAT_WINDOW_MS - 1), "repeat");
});

Deno.test("a signal once the window is over forces the exit, however many repeats came before", () => {
  const signals = new StopSignals();
  signals.receive(1000);
  signals.receive(1001);
  assert.equal(signals.receive(1000 + REPEAT_WINDOW_MS), "force");
  assert.equal(signals.receive(1000 + REPEAT_WINDOW_MS + 1), "force");
});

Deno.test("a second signal one second after the first forces the exit", () => {
  const signals = new StopSignals();
  signals.receive(5000);
  assert.equal(signals.receive(6000), "force");
});

Deno.test("the window can be set: with 0 every later signal forces the exit", () => {
  const signals = new StopSignals(0);
  signals.receive(5000);
  assert.equal(signals.receive(5000), "force");
});
