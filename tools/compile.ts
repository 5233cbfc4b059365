// Builds the single binary with `deno compile`, for this machine or for every release target.

import { parseArgs } from "node:util";
import { startCommand } from "./start_task.ts";

/** The targets `--all` builds: what `deno compile --target` supports, minus Windows on ARM. */
const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const root = new URL("..", import.meta.url).pathname;

/** What the binary may read: NTS's certificate, key and key file, where deploy/README.md puts them. */
export const BINARY_READ = "--allow-read=/etc/time-server,/var/lib/time-server";

/**
 * The runtime flags of `deno task start` (permissions, V8 and unstable flags), read
 * from deno.json so that the binary runs exactly as `deno task start` does.
 */
function runtimeFlags(): string[] {
  const words = startCommand();
  // Reading the sources (for --workers) is a `deno run` need: the binary embeds them. It
  // reads only NTS's files.
  return words.slice(words.indexOf("run") + 1, words.indexOf("main.ts"))
    .map((flag) => flag.startsWith("--allow-read") ? BINARY_READ : flag);
}

/** Runs `deno compile` for one target (the host's when undefined); resolves with its exit code. */
export async function compile(output: string, target?: string): Promise<number> {
  const args = [
    "compile",
    ...runtimeFlags(),
    ...(target ? ["--target", target] : []),
    // SO_REUSEPORT for --workers; deno.json's "unstable" says so too, this makes it explicit.
    "--unstable-net",
    // The TOML parser it embeds, pinned. deno.json turns the lock file off, so that
    // `deno task` does not fetch the parser before a server that needs none starts.
    `--lock=${root}deno.lock`,
    "--frozen",
    // Loaded with `new Worker(…)` for --workers, so not found by following the imports.
    "--include",
    `${root}server/worker.ts`,
    // Imported by a specifier in a variable, so that `deno run` fetches it only when needed.
    "--include",
    `${root}config/toml_parser.ts`,
    "--output",
    output,
    `${root}main.ts`,
  ];
  console.error(`deno ${args.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), { args, stdin: "null" }).spawn();
  return (await child.status).code;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      all: { type: "boolean" },
      output: { type: "string" },
    },
  });
  const exe = Deno.build.os === "windows" ? ".exe" : "";
  let failed = 0;
  if (values.all) {
    for (const target of TARGETS) {
      const suffix = target.includes("windows") ? ".exe" : "";
      if (await compile(`${root}dist/time-server-${target}${suffix}`, target) !== 0) failed++;
    }
  } else {
    failed = await compile(values.output ?? `${root}dist/time-server${exe}`) === 0 ? 0 : 1;
  }
  if (failed > 0) {
    console.error(
      "compile failed. deno compile downloads its runtime (denort) on first use; where that " +
        "download host cannot be reached, set DENORT_BIN to a local denort binary of the same version.",
    );
  }
  Deno.exit(failed > 0 ? 1 : 0);
}
