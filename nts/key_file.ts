// The NTS master key in a file: what makes cookies survive restarts, and shared by workers.

import { NtsError } from "./certificate.ts";

const KEY_BYTES = 32;

/**
 * The master key kept in `path` (see {@linkcode CookieKeys}): read when the file is there,
 * made and written otherwise, with mode 0600, atomically (a new file renamed into
 * place), so that a crash leaves either no file or a whole one. A file that others may
 * read or write is refused: whoever reads it can forge this server's time.
 *
 * The file is one line of 64 hex digits, as `openssl rand -hex 32` prints. Throws one
 * line that says what is wrong.
 */
export function readOrCreateKeyFile(path: string): { key: Uint8Array; created: boolean } {
  let text: string;
  try {
    const info = Deno.statSync(path);
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      throw new NtsError(
        `--nts-keys-file ${path} may be read by others (mode ${
          (info.mode & 0o777).toString(8)
        }): chmod 600 it`,
      );
    }
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw describe(error, path);
    return { key: createKeyFile(path), created: true };
  }
  return { key: parseKeyFile(text, path), created: false };
}

/**
 * Reads the key from the file's text; throws saying why it is not one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseKeyFile } from "./key_file.ts";
 *
 * assert.equal(parseKeyFile(`${"ab".repeat(32)}\n`, "keys").length, 32);
 * assert.throws(() => parseKeyFile("ab".repeat(16), "keys"));
 * ```
 */
export function parseKeyFile(text: string, path: string): Uint8Array {
  const hex = text.trim();
  if (!/^[0-9a-f]{64}$/i.test(hex)) {
    throw new NtsError(
      `--nts-keys-file ${path} is not a key file: 64 hex digits (openssl rand -hex 32)`,
    );
  }
  return Uint8Array.from(hex.match(/../g)!, (byte) => parseInt(byte, 16));
}

function createKeyFile(path: string): Uint8Array {
  const key = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const hex = Array.from(key, (byte) => byte.toString(16).padStart(2, "0")).join("");
  const temporary = `${path}.${Deno.pid}.tmp`;
  try {
    Deno.writeTextFileSync(temporary, `${hex}\n`, { mode: 0o600, createNew: true });
    Deno.chmodSync(temporary, 0o600); // exactly: the umask applies to `mode`
    Deno.renameSync(temporary, path);
  } catch (error) {
    try {
      Deno.removeSync(temporary);
    } catch {
      // never written
    }
    throw describe(error, path);
  }
  return key;
}

function describe(error: unknown, path: string): Error {
  if (error instanceof Deno.errors.NotCapable) {
    return new NtsError(
      `--nts-keys-file ${path} needs --allow-read for it, and to create it --allow-write; ` +
        `or make it: openssl rand -hex 32 > ${path}; chmod 600 ${path}`,
    );
  }
  return error instanceof Error && error.message.startsWith("--nts-keys-file")
    ? error
    : new NtsError(`--nts-keys-file ${path}: ${error instanceof Error ? error.message : error}`);
}
