// Reading a secret from a file that only this server's user controls: the NTS master key
// and the TLS private key.

/** Thrown when a secret's file is not safe to use: one line that says why and what to do. */
export class UnsafeFileError extends Error {
  override name = "UnsafeFileError";
}

/** Whose a secret's file must be, and who else may read it. */
export interface PrivateFileRules {
  /** The flag that named the file, for the message (`--nts-keys-file`). */
  readonly flag: string;
  /** The user this server runs as (its effective uid): the only owner accepted. */
  readonly uid: number;
  /**
   * Whether the file's group may read it (mode 0640), for a TLS key shared through a
   * group such as Debian's `ssl-cert`; otherwise only its owner may (0600).
   */
  readonly groupMayRead: boolean;
}

/**
 * Checks what `lstat` says of a secret's file: a regular file, not a symbolic link,
 * owned by `rules.uid`, that no one else may read or write (its group may read it if
 * `rules.groupMayRead`). Throws {@linkcode UnsafeFileError} saying why not. Whoever can
 * replace or read such a file can forge this server's time (the master key) or pose as
 * it (the TLS key): a link, or a file made first by someone else in a folder they may
 * write (`/tmp`), would hand them that.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkPrivateFile } from "./private_file.ts";
 *
 * const rules = { flag: "--nts-keys-file", uid: 1000, groupMayRead: false };
 * const file = { isFile: true, isSymlink: false, uid: 1000, mode: 0o100600 };
 * checkPrivateFile("/var/lib/keys", file, rules);
 * assert.throws(
 *   () => checkPrivateFile("/tmp/keys", { ...file, uid: 0 }, rules),
 *   /owned by uid 0, not by this server's user \(uid 1000\)/,
 * );
 * assert.throws(
 *   () => checkPrivateFile("/tmp/keys", { ...file, isFile: false, isSymlink: true }, rules),
 *   /is a symbolic link/,
 * );
 * ```
 */
export function checkPrivateFile(
  path: string,
  info: Pick<Deno.FileInfo, "isFile" | "isSymlink" | "uid" | "mode">,
  rules: PrivateFileRules,
): void {
  const { flag, uid, groupMayRead } = rules;
  if (info.isSymlink) {
    throw new UnsafeFileError(
      `${flag} ${path} is a symbolic link, which is refused: give the path of the file itself`,
    );
  }
  if (!info.isFile) throw new UnsafeFileError(`${flag} ${path} is not a regular file`);
  if (info.uid !== null && info.uid !== uid) {
    throw new UnsafeFileError(
      `${flag} ${path} is owned by uid ${info.uid}, not by this server's user (uid ${uid}): ` +
        `chown it to that user`,
    );
  }
  const refused = groupMayRead ? 0o027 : 0o077;
  if (info.mode !== null && (info.mode & refused) !== 0) {
    throw new UnsafeFileError(
      `${flag} ${path} may be read or written by others (mode ${
        (info.mode & 0o777).toString(8)
      }): chmod ${groupMayRead ? "640" : "600"} it`,
    );
  }
}

/**
 * Reads a secret's file after {@linkcode checkPrivateFile}'s checks, from the file that
 * was checked: the descriptor opened is compared with what `lstat` saw, so a file swapped
 * for a link between the two is refused. Returns null when there is no file at `path`;
 * throws {@linkcode UnsafeFileError}, or what reading threw (`NotCapable`, …).
 */
export function readPrivateFile(path: string, rules: PrivateFileRules): Uint8Array | null {
  let seen: Deno.FileInfo;
  try {
    seen = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  checkPrivateFile(path, seen, rules);
  using file = Deno.openSync(path, { read: true });
  const opened = file.statSync();
  if (opened.ino !== seen.ino || opened.dev !== seen.dev) {
    throw new UnsafeFileError(`${rules.flag} ${path} was replaced while it was read`);
  }
  checkPrivateFile(path, opened, rules);
  const bytes = new Uint8Array(opened.size);
  let read = 0;
  while (read < bytes.length) {
    const n = file.readSync(bytes.subarray(read));
    if (n === null) break;
    read += n;
  }
  return bytes.subarray(0, read);
}
