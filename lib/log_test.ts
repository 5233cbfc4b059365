// Tests of logging: levels, text and JSON lines.

import assert from "node:assert/strict";
import { createLogger } from "./log.ts";

const at = () => Date.parse("2026-11-24T20:00:00.000Z");

Deno.test("logger writes events at or above its level only", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "warn", write: (line) => lines.push(line), now: at });
  log.debug("no");
  log.info("no");
  log.warn("yes");
  log.error("yes too");
  assert.equal(lines.length, 2);
  assert.equal(log.enabled("info"), false);
  assert.equal(log.enabled("error"), true);
});

Deno.test("logger writes text lines as time, level, message and key=value pairs", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (line) => lines.push(line), now: at, fields: { worker: 1 } });
  log.info("listening", { address: "[::]:45000", note: "two words", skipped: undefined });
  assert.deepEqual(lines, [
    '2026-11-24T20:00:00.000Z INFO  listening worker=1 address=[::]:45000 note="two words"',
  ]);
});

Deno.test("logger writes JSON lines whose fixed keys come first and cannot be overwritten", () => {
  const lines: string[] = [];
  const log = createLogger({ format: "json", write: (line) => lines.push(line), now: at });
  log.warn("busy", { time: 5, msg: "other", peer: "127.0.0.1:1" });
  assert.equal(
    lines[0],
    '{"time":"2026-11-24T20:00:00.000Z","level":"warn","msg":"busy","peer":"127.0.0.1:1"}',
  );
});
