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
      return new UsageError(option ? `${option} needs a value` : message.split("\n")[0]);
    }
    return new UsageError(message.split("\n")[0]);
  }

  /** Reads a whole number from `min` to `max`, or throws naming the flag. */
  static integer(name: string, text: string, min: number, max: number): number {
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(value >= min && value <= max)) {
      throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got "${text}"`);
    }
    return value;
  }

  /** Reads a non-negative number of seconds (fractions allowed, at most a day), or throws. */
  static seconds(name: string, text: string): number {
    const value = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
    if (!(value >= 0 && value <= MAX_SECONDS)) {
      throw new UsageError(
        `${name} must be a number of seconds from 0 to ${MAX_SECONDS}, got "${text}"`,
      );
    }
    return value;
  }

  /** Checks that a value is one of `allowed`, or throws listing them. */
  static oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
    if (!(allowed as readonly string[]).includes(text)) {
      throw new UsageError(`${name} must be one of ${allowed.join(", ")}, got "${text}"`);
    }
    return text as T;
  }
}
