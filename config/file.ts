// The config file: TOML whose keys are the flags' (see flags.ts), read into flag values.

import { UsageError } from "../lib/usage.ts";
import { FLAGS, type FlagValues, SECTIONS, type Setting, SETTINGS } from "./flags.ts";

/** Parses TOML text into its tables; throws an error with the `line` it failed at. */
export type ParseToml = (text: string) => Record<string, unknown>;

/**
 * The module that holds the TOML parser. A variable, so that Deno does not fetch the
 * parser before it is needed: `deno task start` without a config file starts offline
 * from an empty cache. `deno compile` is told to include it.
 */
const TOML_PARSER: string = new URL("./toml_parser.ts", import.meta.url).href;

/**
 * The TOML parser, loaded when a config file is read. Throws a {@linkcode UsageError}
 * when it cannot be read (`deno run` without `--allow-read` for it) or fetched (a first
 * `deno task start --config` with no registry).
 */
export async function loadTomlParser(): Promise<ParseToml> {
  try {
    return (await import(TOML_PARSER)).parse;
  } catch (error) {
    // A dynamic import refused for want of permission says so in its message alone.
    if (error instanceof Error && /Requires read access/.test(error.message)) {
      const folder = decodeURIComponent(new URL(".", TOML_PARSER).pathname);
      throw new UsageError(
        `--config loads the TOML parser from ${folder}: run with --allow-read=${folder} ` +
          `(deno task start grants it; the binary embeds it)`,
      );
    }
    const why = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new UsageError(
      `--config needs the TOML parser (npm:smol-toml), which did not load: ${why}`,
    );
  }
}

/** A config file read into the values its flags would have, with each value's line. */
export interface ConfigFile {
  readonly path: string;
  readonly values: FlagValues;
  /** The line of each flag's key, 1-based. */
  readonly lines: ReadonlyMap<string, number>;
}

/**
 * Reads a config file's text. Throws {@linkcode UsageError} naming the file, the line
 * and the key, in one line, for TOML that does not parse, a section or key that is not
 * a setting, or a value of the wrong type; the value itself is checked as its flag's is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadTomlParser, readConfigFile } from "./file.ts";
 *
 * const parse = await loadTomlParser();
 * const text = "[line]\nport = 4000\n[limits]\nfairness = false\n";
 * const file = readConfigFile("a.toml", text, parse);
 * assert.deepEqual(file.values, { port: "4000", "no-fairness": true });
 * assert.equal(file.lines.get("no-fairness"), 4);
 * assert.throws(() => readConfigFile("a.toml", "[line]\nprot = 1\n", parse), /a.toml:2: unknown key prot in \[line\]/);
 * ```
 */
export function readConfigFile(path: string, text: string, parse: ParseToml): ConfigFile {
  let document: Record<string, unknown>;
  try {
    document = parse(text);
  } catch (error) {
    const line = (error as { line?: unknown }).line;
    if (!(error instanceof Error) || typeof line !== "number") throw error;
    const why = error.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
    throw new UsageError(`${path}:${line}: not valid TOML: ${why}`);
  }
  const lines = keyLines(text);
  const at = (name: string) => `${path}:${lines.get(name) ?? 1}`;
  const values: FlagValues = {};
  const flagLines = new Map<string, number>();
  for (const [name, table] of Object.entries(document)) {
    const section = SECTIONS.find((section) => section === name);
    if (section === undefined) {
      const setting = SETTINGS.find((setting) => setting.key === name);
      throw new UsageError(
        setting
          ? `${at(name)}: ${name} belongs in [${setting.section}]`
          : `${at(name)}: unknown section [${name}]; the sections are ${
            SECTIONS.map((s) => `[${s}]`).join(", ")
          }`,
      );
    }
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      throw new UsageError(`${at(name)}: ${name} must be a section, [${name}]`);
    }
    for (const [key, value] of Object.entries(table)) {
      const setting = SETTINGS.find((s) => s.section === section && s.key === key);
      const where = `${at(`${section}.${key}`)}: [${section}] ${key}`;
      if (setting === undefined) {
        const keys = SETTINGS.filter((s) => s.section === section).map((s) => s.key);
        throw new UsageError(
          `${at(`${section}.${key}`)}: unknown key ${key} in [${section}]; ` +
            `its keys are ${keys.join(", ")}`,
        );
      }
      const read = flagValue(setting, value);
      if (typeof read === "string" && read.startsWith("!")) {
        throw new UsageError(`${where} ${read.slice(1)}`);
      }
      if (read !== undefined) values[setting.flag] = read;
      flagLines.set(setting.flag, lines.get(`${section}.${key}`) ?? lines.get(section) ?? 1);
    }
  }
  return { path, values, lines: flagLines };
}

/**
 * A TOML value as its flag's text, `true` for a switch that is on, undefined for one
 * that is off, or a complaint starting with `!`.
 */
function flagValue(setting: Setting, value: unknown): string | string[] | boolean | undefined {
  const shape = shapeOf(setting);
  if (shape === "boolean") {
    if (typeof value !== "boolean") return "!must be true or false";
    return value !== setting.inverted ? true : undefined;
  }
  if (shape === "list") {
    const list = typeof value === "string" ? [value] : value;
    if (!Array.isArray(list) || !list.every((item) => typeof item === "string")) {
      return '!must be a string or a list of strings, such as ["192.0.2.0/24"]';
    }
    return list;
  }
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) {
    // TOML's 1e-3 is a number like any other here: only the command line asks for digits.
    return value.toLocaleString("en-US", { useGrouping: false, maximumFractionDigits: 20 });
  }
  return "!must be a number or a string";
}

function shapeOf(setting: Setting): "boolean" | "list" | "value" {
  const shape: { type: string; multiple?: boolean } = FLAGS[setting.flag];
  return shape.type === "boolean" ? "boolean" : shape.multiple ? "list" : "value";
}

/**
 * Where each key is, by `section.key` (and each section by its name): found by reading
 * the lines, since the parser does not say. A key it cannot find is reported at line 1.
 */
function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  let section = "";
  text.split("\n").forEach((line, index) => {
    const header = line.match(/^\s*\[\s*([A-Za-z0-9_-]+)\s*\]/);
    if (header) {
      section = header[1];
      if (!lines.has(section)) lines.set(section, index + 1);
      return;
    }
    const key = line.match(/^\s*"?([A-Za-z0-9_-]+)"?\s*=/);
    if (key) {
      const name = section === "" ? key[1] : `${section}.${key[1]}`;
      if (!lines.has(name)) lines.set(name, index + 1);
    }
  });
  return lines;
}
