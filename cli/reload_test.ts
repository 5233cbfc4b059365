// Tests of what a reload changes live and what it keeps for a restart.

import assert from "node:assert/strict";
import { parseCommandLine } from "./command_line.ts";
import { planReload, type Serving } from "./reload.ts";

const platform = { os: "linux", cpus: 2, libcMissing: null };
const serving = (args: string[]) => parseCommandLine(args, {}, platform) as Serving;
const NTS = [
  "--ntp-port",
  "123",
  "--nts-ke-port",
  "4460",
  "--nts-cert",
  "a.pem",
  "--nts-key",
  "a.key",
];

Deno.test("a reload with nothing changed changes nothing", () => {
  const plan = planReload(serving(["--port", "4000"]), serving(["--port", "4000"]));
  assert.deepEqual([plan.live, plan.restart], [[], []]);
});

Deno.test("a reload applies limits, access, rate limits, stratum and logs live", () => {
  const running = serving(["--ntp-port", "123", "--rate-limit", "2"]);
  const next = serving([
    "--ntp-port",
    "123",
    "--rate-limit",
    "1",
    "--kod",
    "--ntp-stratum",
    "3",
    "--deny",
    "192.0.2.0/24",
    "--idle-timeout",
    "30",
    "--no-fairness",
    "--log-level",
    "debug",
  ]);
  const plan = planReload(running, next);
  assert.deepEqual(plan.live, [
    "[line] idle-timeout",
    "[limits] fairness",
    "[limits] deny",
    "[time] ntp-stratum",
    "[time] rate-limit",
    "[time] kod",
    "[log] level",
  ]);
  assert.deepEqual(plan.restart, []);
  assert.equal(plan.invocation.options.ntpStratum, 3);
  assert.equal(plan.invocation.logLevel, "debug");
});

Deno.test("a reload keeps what needs a new socket, thread or clock as it runs, and names it", () => {
  const running = serving(["--port", "4000", ...NTS]);
  const next = serving([
    "--port",
    "4001",
    "--workers",
    "2",
    "--metrics",
    "127.0.0.1:9464",
    "--tz",
    "UTC",
    "--max-line",
    "64",
    "--ntp-port",
    "1123",
    "--nts-ke-port",
    "4461",
    "--nts-cert",
    "b.pem",
    "--nts-key",
    "b.key",
  ]);
  const plan = planReload(running, next);
  assert.deepEqual(plan.restart, [
    "[line] port",
    "[line] tz",
    "[line] max-line",
    "[line] workers",
    "[time] ntp-port",
    "[nts] ke-port",
    "[metrics] listen",
  ]);
  assert.deepEqual(plan.live, ["[nts] cert", "[nts] key"]);
  const { options, nts, workers, metrics } = plan.invocation;
  assert.deepEqual([options.port, options.timeZone, options.maxLine, options.ntpPort], [
    4000,
    undefined,
    undefined,
    123,
  ]);
  assert.deepEqual([workers, metrics], [1, null]);
  assert.deepEqual([nts?.kePort, nts?.certFile, nts?.keyFile], [4460, "b.pem", "b.key"]);
});

Deno.test("a reload that turns NTS off or on waits for a restart", () => {
  const on = serving(NTS), off = serving(["--ntp-port", "123"]);
  assert.ok(planReload(on, off).restart.includes("[nts] ke-port"));
  assert.equal(planReload(on, off).invocation.nts?.kePort, 4460);
  assert.equal(planReload(off, on).invocation.nts, null);
});
