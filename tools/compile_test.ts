// Tests of the single binary: compile it, run it, ask it the time, stop it.

import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { askTime } from "../client/client.ts";
import { startServerProcess, within } from "../testing/test_util.ts";

/**
 * Why the binary cannot be built here, or "" when it can: `deno compile` needs its
 * runtime (denort), from DENORT_BIN or downloaded from dl.deno.land.
 */
async function whyNotCompilable(): Promise<string> {
  if (Deno.env.get("DENORT_BIN")) return "";
  try {
    await fetch("https://dl.deno.land/", { method: "HEAD", signal: AbortSignal.timeout(5000) });
    return "";
  } catch (error) {
    return `DENORT_BIN is not set and dl.deno.land cannot be reached (${
      error instanceof Error ? error.message.split("\n")[0] : error
    })`;
  }
}

const skipReason = await whyNotCompilable();
if (skipReason) console.log(`compile_test.ts: skipping the compiled-binary test: ${skipReason}`);

const binary =
  new URL(`../dist/test/time-server${Deno.build.os === "windows" ? ".exe" : ""}`, import.meta.url)
    .pathname;

Deno.test({
  name: "compiled binary answers TIME, reports the version and exits 0 on SIGTERM",
  ignore: skipReason !== "",
  async fn() {
    const compile = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-run",
        "--allow-env",
        "tools/compile.ts",
        "--output",
        binary,
      ],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "null",
    }).output();
    assert.equal(compile.code, 0, new TextDecoder().decode(compile.stderr));

    const version = await new Deno.Command(binary, { args: ["--version"] }).output();
    assert.equal(new TextDecoder().decode(version.stdout), `time-server ${config.version}\n`);

    await using server = await startServerProcess(["--host", "127.0.0.1"], [binary]);
    const [answer] = await askTime({ hostname: "127.0.0.1", port: server.port });
    assert.match(answer, /^JAM \d\d:\d\d:\d\d$/);
    if (Deno.build.os !== "windows") { // Windows has no SIGTERM
      server.child.kill("SIGTERM");
      const status = await within(10000, server.child.status, "exit after SIGTERM");
      assert.equal(status.code, 0);
    }
  },
});
