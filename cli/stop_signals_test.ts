// Tests of the stop-signal policy: one stop passed on by a parent, a deliberate second
// signal, and SIGINT left to `deno run --watch`'s watcher.

import assert from "node:assert/strict";
import { REPEAT_WINDOW_MS, StopSignals } from "./stop_signals.ts";

Deno.test("the first stop signal stops the server", () => {
  assert.equal(new StopSignals().receive("SIGINT", 0), "stop");
  assert.equal(new StopSignals().receive("SIGTERM", 123.5), "stop");
});

Deno.test("a signal within the window is the same stop, passed on by a parent", () => {
  const signals = new StopSignals();
  assert.equal(signals.receive("SIGINT", 1000), "stop");
  assert.equal(signals.receive("SIGINT", 1000), "repeat");
  assert.equal(signals.receive("SIGTERM", 1000 + REPEAT_WINDOW_MS - 1), "repeat");
});

Deno.test("a signal once the window is over forces the exit, however many repeats came before", () => {
  const signals = new StopSignals();
  signals.receive("SIGINT", 1000);
  signals.receive("SIGINT", 1001);
  assert.equal(signals.receive("SIGINT", 1000 + REPEAT_WINDOW_MS), "force");
  assert.equal(signals.receive("SIGTERM", 1000 + REPEAT_WINDOW_MS + 1), "force");
});

Deno.test("a second signal one second after the first forces the exit", () => {
  const signals = new StopSignals();
  signals.receive("SIGTERM", 5000);
  assert.equal(signals.receive("SIGTERM", 6000), "force");
});

Deno.test("the window can be set: with 0 every later signal forces the exit", () => {
  const signals = new StopSignals({ windowMs: 0 });
  signals.receive("SIGINT", 5000);
  assert.equal(signals.receive("SIGINT", 5000), "force");
});

Deno.test("under the watcher SIGINT is left to it, however often, and its SIGTERM stops", () => {
  const signals = new StopSignals({ watched: true });
  assert.equal(signals.receive("SIGINT", 1000), "watcher");
  assert.equal(signals.receive("SIGINT", 1001), "watcher");
  assert.equal(signals.receive("SIGTERM", 1002), "stop");
  assert.equal(signals.receive("SIGINT", 1003), "watcher");
  assert.equal(signals.receive("SIGTERM", 1003), "repeat");
  assert.equal(signals.receive("SIGTERM", 1002 + REPEAT_WINDOW_MS), "force");
});
