// Roughtime's long-term key in a file: read, or made where missing, as NTS's master key is.

import { readOrCreateKeyFile } from "../nts/key_file.ts";
import { keyPairFromSeed, type RawKeyPair } from "./response.ts";

/** The flag that names the file, for messages. */
export const ROUGHTIME_KEY_FLAG = "--roughtime-key";

/**
 * The long-term key pair whose 32-byte seed is kept in `path`: 64 hex digits, mode 0600,
 * a regular file owned by `uid` (the rules of NTS's key file); made there when missing.
 * Throws one line saying what is wrong.
 */
export function readLongTermKey(path: string, uid: number): RawKeyPair & { created: boolean } {
  const { key, created } = readOrCreateKeyFile(path, uid, ROUGHTIME_KEY_FLAG);
  return { ...keyPairFromSeed(key), created };
}

/** A public key as server lists and clients write it: standard base64 of its 32 bytes. */
export function encodePublicKey(publicKey: Uint8Array): string {
  return btoa(String.fromCharCode(...publicKey));
}

/** A public key from its base64 form, or null when it is not 32 bytes of base64. */
export function decodePublicKey(text: string): Uint8Array | null {
  try {
    const bytes = Uint8Array.from(atob(text.trim()), (c) => c.charCodeAt(0));
    return bytes.length === 32 ? bytes : null;
  } catch {
    return null;
  }
}
