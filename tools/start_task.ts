// The command of `deno task start`, read from deno.json: what the benchmark runs and the binary bakes in.

/**
 * The words of `deno task start` from deno.json, with `deno` replaced by the running
 * Deno's path, so that tools run exactly what users run; from another checkout's
 * deno.json with `tree` (the benchmark's tree before), to be run in that folder.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { startCommand } from "./start_task.ts";
 *
 * const command = startCommand();
 * assert.equal(command[1], "run");
 * assert.ok(command.at(-1)!.endsWith("main.ts"));
 * ```
 */
export function startCommand(tree?: string): string[] {
  const file = tree === undefined ? new URL("../deno.json", import.meta.url) : `${tree}/deno.json`;
  const config = JSON.parse(Deno.readTextFileSync(file));
  const [deno, ...rest] = (config.tasks.start as string).split(/\s+/);
  return [deno === "deno" ? Deno.execPath() : deno, ...rest];
}
