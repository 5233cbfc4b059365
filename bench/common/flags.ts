// Reading a benchmark tool's flags: one line on a mistake, as the server's command line does.

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { attachNegativeValues, type FlagShape, UsageError } from "../../lib/usage.ts";

/**
 * Parses a tool's flags; on a mistake prints one line naming the tool and returns
 * null (the tool then exits 2).
 */
export function parseToolFlags<const T extends ParseArgsOptionsConfig>(
  tool: string,
  args: string[],
  options: T,
): ParsedValues<T> | null {
  try {
    const flags = options as Record<string, FlagShape>;
    return parseArgs({ args: attachNegativeValues(args, flags), options, strict: true })
      .values as ParsedValues<T>;
  } catch (error) {
    console.error(`${tool}: ${UsageError.fromParseArgs(error).message} (see --help)`);
    return null;
  }
}

/** The values `parseArgs` gives for `options`. */
export type ParsedValues<T extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ options: T; strict: true }>
>["values"];
