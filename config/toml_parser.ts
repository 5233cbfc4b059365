// The TOML parser, on its own so that it is loaded only when a config file is read.

/**
 * Parses TOML text: `smol-toml`'s `parse`, pinned by `deno.lock`. `loadTomlParser` in
 * `file.ts` imports this module when a config file is given, and `deno compile`
 * embeds it (`tools/compile.ts` includes it).
 */
export { parse } from "npm:smol-toml@1.9.1";
