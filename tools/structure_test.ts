// Tests of the code's shape: layers that point one way, no import cycle, small folders,
// modules, classes and functions, read from the syntax tree Deno's linter gives.

import assert from "node:assert/strict";

const root = new URL("..", import.meta.url).pathname;

/** Folders that hold no modules of the project: history, output, dependencies. */
const SKIPPED = new Set([".git", "node_modules", "dist", "bench/results", "bench/runs"]);

/** Every module of the repository (`.ts`, `.mjs`), by its path from the top. */
function modules(dir = ""): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(`${root}${dir}`)) {
    const path = dir === "" ? entry.name : `${dir}/${entry.name}`;
    if (entry.isDirectory && !SKIPPED.has(path)) found.push(...modules(path));
    else if (entry.isFile && /\.(ts|mjs)$/.test(entry.name)) found.push(path);
  }
  return found.sort();
}

const isTest = (path: string) => /_test\.ts$/.test(path) || path.startsWith("testing/");
const all = modules();
const product = all.filter((path) => !isTest(path));

/** What one module imports (relative specifiers only), and the sizes of its functions and classes. */
interface Shape {
  imports: string[];
  functions: { name: string; lines: number }[];
  classes: { name: string; lines: number }[];
}

/** Resolves a relative specifier of `from` to a path from the top. */
function resolve(from: string, specifier: string): string {
  return new URL(specifier, `file:///${from}`).pathname.slice(1);
}

const shapes = new Map<string, Shape>();
for (const path of all.filter((path) => path.endsWith(".ts"))) {
  const shape: Shape = { imports: [], functions: [], classes: [] };
  const plugin: Deno.lint.Plugin = {
    name: "structure",
    rules: {
      shape: {
        create(context) {
          const text = context.sourceCode.text;
          const lines = (node: Deno.lint.Node) =>
            text.slice(node.range[0], node.range[1]).split("\n").length;
          const source = (node: { source?: { value: unknown } | null }) => {
            const value = node.source?.value;
            if (typeof value === "string" && value.startsWith(".")) {
              shape.imports.push(resolve(path, value));
            }
          };
          // deno-lint-ignore no-explicit-any
          const named = (node: any): string =>
            node.id?.name ?? node.parent?.key?.name ?? node.parent?.id?.name ?? "(anonymous)";
          // deno-lint-ignore no-explicit-any
          const fn = (node: any) => {
            if (node.type === "ArrowFunctionExpression" && node.body.type !== "BlockStatement") {
              return;
            }
            shape.functions.push({ name: named(node), lines: lines(node) });
          };
          // deno-lint-ignore no-explicit-any
          const cls = (node: any) => shape.classes.push({ name: named(node), lines: lines(node) });
          return {
            ImportDeclaration: source,
            ExportNamedDeclaration: source,
            ExportAllDeclaration: source,
            FunctionDeclaration: fn,
            FunctionExpression: fn,
            ArrowFunctionExpression: fn,
            ClassDeclaration: cls,
            ClassExpression: cls,
          };
        },
      },
    },
  };
  Deno.lint.runPlugin(plugin, path, Deno.readTextFileSync(`${root}${path}`));
  shapes.set(path, shape);
}

Deno.test("the pure layers import nothing above them: protocol.ts, lib/, time/ and nts/", () => {
  const lower = (path: string) => path === "protocol.ts" || /^(lib|time|nts)\//.test(path);
  const above = /^(server|cli|client|bench|tools|testing)\/|^main\.ts$/;
  const wrong = product.filter(lower).flatMap((path) =>
    shapes.get(path)!.imports.filter((target) => above.test(target)).map((t) => `${path} → ${t}`)
  );
  assert.deepEqual(wrong, []);
  assert.ok(product.filter(lower).length > 20, "the layers were found");
});

Deno.test("no module imports itself back through others: the import graph has no cycle", () => {
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (path: string, trail: string[]) => {
    if (state.get(path) === "done") return;
    if (state.get(path) === "open") {
      cycles.push([...trail.slice(trail.indexOf(path)), path].join(" → "));
      return;
    }
    state.set(path, "open");
    for (const target of shapes.get(path)?.imports ?? []) {
      if (!isTest(target)) visit(target, [...trail, path]);
    }
    state.set(path, "done");
  };
  for (const path of product) visit(path, []);
  assert.deepEqual(cycles, []);
});

Deno.test("no folder holds more than 12 modules besides its tests", () => {
  const counts = new Map<string, number>();
  for (const path of product) {
    const folder = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
    counts.set(folder, (counts.get(folder) ?? 0) + 1);
  }
  const crowded = [...counts].filter(([, count]) => count > 12);
  assert.deepEqual(crowded, []);
  assert.ok(counts.size >= 10, [...counts.keys()].join(" "));
});

Deno.test("main.ts is the entry and reads in a minute: at most 250 lines", () => {
  const lines = Deno.readTextFileSync(`${root}main.ts`).split("\n").length;
  assert.ok(lines <= 250, `main.ts has ${lines} lines`);
});

Deno.test("no class is over 220 lines and no function over 80, outside the tests", () => {
  const long: string[] = [];
  for (const path of product.filter((path) => path.endsWith(".ts"))) {
    const { functions, classes } = shapes.get(path)!;
    for (const { name, lines } of functions) if (lines > 80) long.push(`${path} ${name} ${lines}`);
    for (const { name, lines } of classes) if (lines > 220) long.push(`${path} ${name} ${lines}`);
  }
  assert.deepEqual(long, []);
  const measured = product.reduce((n, path) => n + (shapes.get(path)?.functions.length ?? 0), 0);
  assert.ok(measured > 300, `${measured} functions measured`);
});
