// What NTS needs before a server starts: its libraries, and the master key.

import { GNUTLS_PATHS, loadGnuTls } from "./gnutls.ts";
import { loadNettle, NETTLE_PATHS } from "./aead.ts";
import { libraryMissing } from "../lib/libraries.ts";
import { readOrCreateKeyFile } from "./key_file.ts";
import { effectiveUid, LIBC_PATHS, libcMissing } from "../lib/libc.ts";
import { UsageError } from "../lib/usage.ts";

/**
 * Every library path the server may load through FFI: libc (batched UDP, epoll,
 * adjtimex, NTS-KE's sockets), and for NTS only, GnuTLS and Nettle. `deno task start`,
 * `dev`, `test` and the binary grant exactly these (a test checks it).
 */
export const FFI_PATHS: readonly string[] = [...LIBC_PATHS, ...GNUTLS_PATHS, ...NETTLE_PATHS];

/**
 * What NTS lacks here, as a phrase that follows "needs", or null when it can run: libc
 * (NTS-KE's sockets), GnuTLS (TLS 1.3 and its exporter) and Nettle (AES-SIV), each
 * granted through FFI and loaded.
 */
export function ntsMissing(): string | null {
  return libcMissing() ?? libraryMissing("GnuTLS", GNUTLS_PATHS, loadGnuTls) ??
    libraryMissing("Nettle", NETTLE_PATHS, loadNettle);
}

/**
 * The master key cookies are sealed under: from `keysFile` (made there when missing and
 * writable), or, without one, random for this run, so that every cookie dies with the
 * process. The file must be this server's user's (`uid`, by default the effective one):
 * see {@linkcode readOrCreateKeyFile}. Throws `NtsError` with one line.
 */
export function masterKey(
  keysFile: string | null,
  uid: number = effectiveUid(),
): { key: Uint8Array; source: string } {
  if (keysFile === null) {
    return { key: crypto.getRandomValues(new Uint8Array(32)), source: "random" };
  }
  const { key, created } = readOrCreateKeyFile(keysFile, uid);
  return { key, source: created ? "created" : "file" };
}

/** NTS's flags as the command line gives them, before the master key is read. */
export interface NtsFlags {
  readonly kePort: number;
  readonly certFile: string;
  readonly keyFile: string;
  readonly keysFile: string | null;
  readonly keRate: number;
  readonly ntpServer: string | null;
}

/** `--nts-ke-rate`'s default: key establishments per second per client address. */
export const DEFAULT_KE_RATE = 10;

/** The NTS flags, by name, as `parseArgs` returns them. */
type NtsValues = Partial<Record<string, string | string[] | boolean>>;

/**
 * Reads the NTS flags: null when `--nts-ke-port` is not given (and no other NTS flag
 * is); throws {@linkcode UsageError} saying what is missing or wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseNtsFlags } from "./setup.ts";
 *
 * const flags = { "nts-ke-port": "4460", "nts-cert": "c.pem", "nts-key": "k.pem", "ntp-port": "123" };
 * assert.equal(parseNtsFlags(flags)?.kePort, 4460);
 * assert.equal(parseNtsFlags({}), null);
 * assert.throws(() => parseNtsFlags({ ...flags, "ntp-port": undefined }), /needs --ntp-port/);
 * ```
 */
export function parseNtsFlags(values: NtsValues): NtsFlags | null {
  const text = (name: string) => values[name] as string | undefined;
  if (text("nts-ke-port") === undefined) {
    const orphan = ["nts-cert", "nts-key", "nts-keys-file", "nts-ke-rate", "nts-ntp-server"]
      .find((flag) => values[flag] !== undefined);
    if (orphan) throw new UsageError(`--${orphan} needs --nts-ke-port`);
    return null;
  }
  const kePort = UsageError.integer("--nts-ke-port", text("nts-ke-port")!, 0, 65535);
  if (text("ntp-port") === undefined) {
    throw new UsageError("--nts-ke-port needs --ntp-port: NTS protects the SNTP service's replies");
  }
  for (const flag of ["nts-cert", "nts-key"]) {
    if (!text(flag)) {
      throw new UsageError(
        `--nts-ke-port needs --${flag} FILE (PEM): TLS needs a certificate and its key`,
      );
    }
  }
  const keRate = text("nts-ke-rate") === undefined
    ? DEFAULT_KE_RATE
    : UsageError.integer("--nts-ke-rate", text("nts-ke-rate")!, 0, 100000);
  const keysFile = text("nts-keys-file");
  if (keysFile === "") throw new UsageError("--nts-keys-file must not be empty");
  const ntpServer = text("nts-ntp-server");
  // RFC 8915 §4.1.7: an IP address or a host name, in ASCII.
  if (ntpServer !== undefined && !/^[A-Za-z0-9.:_-]{1,253}$/.test(ntpServer)) {
    throw new UsageError(
      `--nts-ntp-server must be a host name or IP address such as ntp1.example.com or 192.0.2.1, got "${ntpServer}"`,
    );
  }
  return {
    kePort,
    certFile: text("nts-cert")!,
    keyFile: text("nts-key")!,
    keysFile: keysFile ?? null,
    keRate,
    ntpServer: ntpServer ?? null,
  };
}
