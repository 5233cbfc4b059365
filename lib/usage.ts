// Command-line mistakes: one error type and the checks that raise it.

/**
 * The longest number of seconds a flag takes: a day. No timeout of this server needs
 * more, and a day is well inside what a timer can wait (2^31 − 1 ms, about 24.8 days).
 */
const MAX_SECONDS = 86400;

/**
 * A mistake on the command line. Its message is one line meant for the user; the
 * program prints it and exits with code 2. The static helpers check a flag's value.
 */
export class UsageError extends Error {
  override name = "UsageError";

  /** Turns an error thrown by `node:util` `parseArgs` into a one-line UsageError. */
  static fromParseArgs(error: unknown): UsageError {
    const message = error instanceof Error ? error.message : String(error);
    const code = (error as { code?: string }).code;
    const option = message.match(/--[\w-]+/)?.[0] ?? message.match(/'(-[^' ,]*)/)?.[1];
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return new UsageError(`unknown option ${option}`);
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      return new UsageError(`unexpected argument ${message.match(/'([^']*)'/)?.[1] ?? ""}`.trim());
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      if (option && /does not take an argument/.test(message)) {
        return new UsageError(`${option} takes no value: give it alone to turn it on`);
      }
      return new UsageError(option ? `${option} needs a value` : message.split("\n")[0]);
    }
    return new UsageError(message.split("\n")[0]);
  }

  /** Reads a whole number from `min` to `max`, or throws naming the flag. */
  static integer(name: string, text: string, min: number, max: number): number {
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (value >= min && value <= max) return value;
    if (Number.isNaN(value) && otherNotation(text)) {
      throw new UsageError(
        `${name} must be written in plain digits, such as ${max}, got "${text}"`,
      );
    }
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got "${text}"`);
  }

  /**
   * Reads a number of seconds (fractions allowed, at most a day), or throws: from 0, or
   * with `aboveZero`, above it.
   */
  static seconds(name: string, text: string, { aboveZero = false } = {}): number {
    const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
    if (value <= MAX_SECONDS && (aboveZero ? value > 0 : value >= 0)) return value;
    if (Number.isNaN(value) && otherNotation(text)) {
      throw new UsageError(
        `${name} must be written in plain digits and a point, such as 0.5, got "${text}"`,
      );
    }
    const range = aboveZero ? `above 0 and at most ${MAX_SECONDS}` : `from 0 to ${MAX_SECONDS}`;
    throw new UsageError(`${name} must be a number of seconds ${range}, got "${text}"`);
  }

  /**
   * Refuses a flag given twice that is not repeatable: the last would silently win.
   * `tokens` are those of `node:util` `parseArgs` with `tokens: true`.
   */
  static givenOnce(
    tokens: readonly { kind: string; name?: string; value?: string }[],
    flags: Readonly<Record<string, FlagShape>>,
  ): void {
    const seen = new Map<string, string | undefined>();
    for (const { kind, name, value } of tokens) {
      if (kind !== "option" || name === undefined || flags[name]?.multiple) continue;
      if (!seen.has(name)) {
        seen.set(name, value);
        continue;
      }
      const values = value === undefined ? "" : ` ("${seen.get(name)}", then "${value}")`;
      throw new UsageError(`--${name} is given twice${values}: give it once`);
    }
  }

  /** Checks that a value is one of `allowed`, or throws listing them. */
  static oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
    if (!(allowed as readonly string[]).includes(text)) {
      throw new UsageError(`${name} must be one of ${allowed.join(", ")}, got "${text}"`);
    }
    return text as T;
  }
}

/**
 * Whether `text` is a number JavaScript would read, not negative, but not written in
 * plain digits: `1e3`, `0x10`, `+5`, ` 5`. Saying "from 0 to 86400" of such a value,
 * which may well be in range, would point at the wrong mistake.
 */
function otherNotation(text: string): boolean {
  const value = Number(text);
  return text.trim() !== "" && Number.isFinite(value) && value >= 0;
}

/** The part of a `node:util` `parseArgs` option that these checks read. */
export interface FlagShape {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
}

/**
 * Joins a flag that takes a value to a next argument that is a negative number
 * (`--port -1` → `--port=-1`), which `parseArgs` would otherwise take for another flag
 * and report as a missing value; the flag's own check then names the range allowed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { attachNegativeValues } from "./usage.ts";
 *
 * const flags = { port: { type: "string", short: "p" }, kod: { type: "boolean" } } as const;
 * assert.deepEqual(attachNegativeValues(["--port", "-1"], flags), ["--port=-1"]);
 * assert.deepEqual(attachNegativeValues(["-p", "-1"], flags), ["--port=-1"]);
 * assert.deepEqual(attachNegativeValues(["--kod", "-1"], flags), ["--kod", "-1"]);
 * ```
 */
export function attachNegativeValues(
  args: readonly string[],
  flags: Readonly<Record<string, FlagShape>>,
): string[] {
  const takesValue = (arg: string): string | null => {
    const long = arg.startsWith("--") ? arg.slice(2) : null;
    for (const [name, flag] of Object.entries(flags)) {
      if (flag.type === "string" && (name === long || (flag.short && arg === `-${flag.short}`))) {
        return name;
      }
    }
    return null;
  };
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return out.concat(args.slice(i));
    const name = takesValue(arg);
    const next = args[i + 1];
    if (name !== null && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}
