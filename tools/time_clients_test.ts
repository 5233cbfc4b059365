// Tests of the guard that keeps every time client the tests and the benchmark run from setting the clock.

import assert from "node:assert/strict";
import { assertCannotSetClock } from "./time_clients.ts";

Deno.test("time clients run only with the flag that keeps them from setting the clock", () => {
  const safe: [string, string[]][] = [
    ["rdate", ["-p", "127.0.0.1"]],
    ["rdate", ["-p", "-u", "-o", "3700", "127.0.0.1"]],
    ["busybox", ["rdate", "-p", "127.0.0.1"]],
    ["busybox", ["nc", "127.0.0.1", "1300"]],
    ["chronyd", ["-Q", "-t", "10", "server 127.0.0.1 port 12300 iburst"]],
    ["chronyd", ["-x", "-d", "server 127.0.0.1 port 12300 xleave", "port 0"]],
    ["ntpdate", ["-q", "127.0.0.1"]],
    ["sntp", ["127.0.0.1"]],
    ["ntpdig", ["-j", "127.0.0.1"]],
    ["nc", ["-u", "127.0.0.1", "1300"]],
  ];
  for (const [command, args] of safe) assertCannotSetClock(command, args);
  const unsafe: [string, string[]][] = [
    ["rdate", ["127.0.0.1"]],
    ["rdate", ["-s", "127.0.0.1"]],
    ["rdate", ["-p", "-s", "127.0.0.1"]],
    ["rdate", ["-p", "-a", "127.0.0.1"]],
    ["busybox", ["rdate", "127.0.0.1"]],
    ["busybox", ["rdate", "-p", "-s", "127.0.0.1"]],
    ["chronyd", ["server 127.0.0.1 iburst"]],
    ["chronyd", ["-q", "server 127.0.0.1 iburst"]],
    ["chronyd", ["-x", "-q", "server 127.0.0.1 iburst"]],
    ["ntpdate", ["127.0.0.1"]],
    ["sntp", ["-S", "127.0.0.1"]],
    ["sntp", ["--step", "127.0.0.1"]],
    ["ntpdig", ["-s", "127.0.0.1"]],
  ];
  for (const [command, args] of unsafe) {
    assert.throws(
      () => assertCannotSetClock(command, args),
      /could set the clock/,
      `${command} ${args.join(" ")}`,
    );
  }
});
