// The NTS master key in a file: what makes cookies survive restarts, and shared by workers.

import { NtsError, readAccessAdvice } from "./certificate.ts";
import { readPrivateFile, UnsafeFileError } from "./private_file.ts";

const KEY_BYTES = 32;
/** The flag whose file this is, for messages: NTS's, unless another key (Roughtime's) is read. */
const FLAG = "--nts-keys-file";

/**
 * The master key kept in `path` (see {@linkcode CookieKeys}): read when the file is there,
 * made and written otherwise, with mode 0600. A new key is written to a file of its own
 * and then linked into place, which fails when the path exists: so a crash leaves either
 * no file or a whole one, and of instances that start together and find no file, every
 * one ends up with the key of the first to publish it.
 *
 * The file must be a regular file (not a link) owned by `uid`, the user this server
 * runs as, that no one else may read or write: whoever reads it can forge this server's
 * time. It is one line of 64 hex digits, as `openssl rand -hex 32` prints. Throws one
 * line that says what is wrong.
 */
export function readOrCreateKeyFile(
  path: string,
  uid: number,
  flag: string = FLAG,
): { key: Uint8Array; created: boolean } {
  // Twice at most: a file that appears between the read and the publishing is the
  // winner's, and is read the second time.
  for (let attempt = 0; attempt < 2; attempt++) {
    const existing = readKeyFile(path, uid, flag);
    if (existing !== null) return { key: existing, created: false };
    const key = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
    if (publishKeyFile(path, key, flag)) return { key, created: true };
  }
  throw new NtsError(`${flag} ${path} keeps appearing and disappearing`);
}

/** The key in `path`, or null when there is no file there; throws one line. */
function readKeyFile(path: string, uid: number, flag: string): Uint8Array | null {
  let bytes: Uint8Array | null;
  try {
    bytes = readPrivateFile(path, { flag, uid, groupMayRead: false });
  } catch (error) {
    throw describe(error, path, flag);
  }
  return bytes === null ? null : parseKeyFile(new TextDecoder().decode(bytes), path, flag);
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
export function parseKeyFile(text: string, path: string, flag: string = FLAG): Uint8Array {
  const hex = text.trim();
  if (!/^[0-9a-f]{64}$/i.test(hex)) {
    throw new NtsError(
      `${flag} ${path} is not a key file: 64 hex digits (openssl rand -hex 32)`,
    );
  }
  return Uint8Array.from(hex.match(/../g)!, (byte) => parseInt(byte, 16));
}

/**
 * Writes `key` to `path` unless a file is there already: written whole to a temporary
 * file first, then hard-linked into place, which, unlike a rename, never replaces what
 * another process has just published. Returns false when the path was taken; throws
 * one line when the file cannot be written.
 */
export function publishKeyFile(path: string, key: Uint8Array, flag: string = FLAG): boolean {
  const hex = Array.from(key, (byte) => byte.toString(16).padStart(2, "0")).join("");
  const temporary = `${path}.${Deno.pid}.${crypto.randomUUID()}.tmp`;
  try {
    using file = Deno.openSync(temporary, { write: true, createNew: true, mode: 0o600 });
    Deno.chmodSync(temporary, 0o600); // exactly: the umask applies to `mode`
    const text = new TextEncoder().encode(`${hex}\n`);
    for (let written = 0; written < text.length;) written += file.writeSync(text.subarray(written));
    file.syncSync();
  } catch (error) {
    removeQuietly(temporary);
    throw describe(error, path, flag, "missing");
  }
  try {
    Deno.linkSync(temporary, path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    throw describe(error, path, flag);
  } finally {
    removeQuietly(temporary);
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // never written, or already gone
  }
}

/**
 * One line for a failure with the key file. `missing`: it was read and is not there, so
 * only the writing failed; a process not granted that is told to make the file, or where
 * this server may write, rather than to grant a read it has.
 */
function describe(error: unknown, path: string, flag: string, missing?: "missing"): Error {
  const make = `(umask 077; openssl rand -hex 32 > ${path})`;
  if (error instanceof Deno.errors.NotCapable && missing) {
    return new NtsError(
      `${flag} ${path} does not exist, and this process may not write there to make it: ` +
        `run ${make}, or give a path in /var/lib/time-server, where the binary and ` +
        `deno task start may write`,
    );
  }
  if (error instanceof Deno.errors.NotCapable) {
    return new NtsError(`${flag} ${path} cannot be read: ${readAccessAdvice(path)}`);
  }
  if (error instanceof UnsafeFileError) return new NtsError(error.message);
  return error instanceof Error && error.message.startsWith(flag)
    ? error
    : new NtsError(`${flag} ${path}: ${error instanceof Error ? error.message : error}`);
}
