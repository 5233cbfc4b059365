// Tests of the repository as a whole: what the docs must say, and how big they may grow.

import assert from "node:assert/strict";
import { HELP } from "../cli/help.ts";

const root = new URL("..", import.meta.url);
/** A file of the repository, by its path from the top. */
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

Deno.test("the README's flag table lists every flag, and the docs name every task", () => {
  const readme = read("./README.md");
  const table = readme.slice(
    readme.indexOf("| flag "),
    readme.indexOf("\n\n", readme.indexOf("| flag ")),
  );
  const flags = [...HELP.matchAll(/^\s+(?:-\w, )?(--[\w-]+)/gm)].map((match) => match[1]);
  assert.ok(flags.length > 10, flags.join(" "));
  for (const flag of flags) {
    assert.match(table, new RegExp(`\`${flag}[ \`]`), `${flag} in the README's table`);
  }
  const docs = [
    readme,
    ...["docs/scale.md", "docs/reliability.md", "bench/README.md", "deploy/README.md"]
      .map((path) => read(`./${path}`)),
  ].join("\n");
  const tasks = Object.keys(JSON.parse(read("./deno.json")).tasks);
  for (const task of tasks) assert.match(docs, new RegExp(`deno task ${task}\\b`), task);
});

Deno.test("bench/results keeps only the runs the docs cite, and new runs go where git ignores them", async () => {
  const docs = [
    "README.md",
    "docs/scale.md",
    "docs/reliability.md",
    "docs/ntp.md",
    "bench/README.md",
  ]
    .map((path) => read(`./${path}`)).join("\n");
  const kept = [...Deno.readDirSync(new URL("../bench/results/", import.meta.url))].map((e) =>
    e.name
  );
  assert.ok(kept.length > 0);
  for (const name of kept) assert.ok(docs.includes(`bench/results/${name}`), `${name} is cited`);
  // Where the tools write by default, and that git ignores it.
  for (const tool of ["bench/bench.ts", "bench/attack.ts"]) {
    assert.match(read(`./${tool}`), /`\$\{root\}bench\/runs\/\$\{new Date\(\)/, tool);
  }
  const ignored = await new Deno.Command("git", {
    args: ["check-ignore", "-q", "bench/runs/2026-12-01.json"],
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  assert.equal(ignored.code, 0, "git ignores bench/runs/");
});

Deno.test("the README stays short enough to finish: at most 12 KB", () => {
  const size = Deno.statSync(new URL("../README.md", import.meta.url)).size;
  assert.ok(
    size <= 12 * 1024,
    `README.md is ${size} bytes; the details belong in docs/ and bench/`,
  );
});

Deno.test("the longer pages stay short enough to read: docs/ and bench/README.md at most 60 KB", () => {
  const pages = [...Deno.readDirSync(new URL("docs/", root))]
    .filter((entry) => entry.name.endsWith(".md")).map((entry) => `docs/${entry.name}`);
  const sizes = [...pages, "bench/README.md"].map((page) =>
    Deno.statSync(new URL(page, root)).size
  );
  const total = sizes.reduce((a, b) => a + b, 0);
  assert.ok(pages.length >= 3, pages.join(" "));
  assert.ok(
    total <= 60 * 1024,
    `docs/ and bench/README.md hold ${total} bytes; history goes to CHANGELOG.md`,
  );
});
