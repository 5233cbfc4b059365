// The NTS-KE certificate: loaded from its files, replaced when they change, watched for expiry.

import { X509Certificate } from "node:crypto";
import type { Logger } from "../lib/log.ts";
import { TlsCredentials } from "./gnutls.ts";
import { effectiveUid } from "../lib/libc.ts";
import { readPrivateFile, UnsafeFileError } from "./private_file.ts";

/** Below this much validity left, every check logs an error (at most once a day). */
export const EXPIRY_WARNING_DAYS = 14;
const DAY_MS = 86_400_000;

/** What is wrong with NTS's files (certificate, key, master key): one line, said at start. */
export class NtsError extends Error {
  override name = "NtsError";
}

/** A certificate chain and its key as read from their files. */
export interface LoadedCertificate {
  readonly credentials: TlsCredentials;
  /** When the leaf certificate expires, ms since the epoch. */
  readonly notAfter: number;
  readonly subject: string;
}

/**
 * Reads the chain (PEM, leaf first) and key and loads them into GnuTLS; throws one line
 * that says which file is wrong and how. The key's file must be a regular file (not a
 * link) owned by `uid`, the user this server runs as, that others may not read and only
 * its group may (mode 0600 or 0640): see `checkPrivateFile` in `private_file.ts`.
 */
export function loadCertificate(
  certFile: string,
  keyFile: string,
  uid: number = effectiveUid(),
): LoadedCertificate {
  const chain = readPem(certFile, "--nts-cert");
  const key = readPrivateKey(keyFile, uid);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(chain);
  } catch {
    // The parser's own words ("nom error: Eof", "BER error: …") say nothing to an operator.
    throw new NtsError(`--nts-cert ${certFile} ${certificateProblem(chain)}`);
  }
  let credentials: TlsCredentials;
  try {
    credentials = new TlsCredentials(chain, key);
  } catch (error) {
    throw new NtsError(`--nts-cert ${certFile} and --nts-key ${keyFile}: ${message(error)}`);
  }
  return { credentials, notAfter: Date.parse(leaf.validTo), subject: leaf.subject };
}

/**
 * What is wrong with a certificate file that does not parse, in words that say what to
 * do: found by looking at its PEM lines, since the parser's own message does not.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { certificateProblem } from "./certificate.ts";
 *
 * const pem = (text: string) => new TextEncoder().encode(text);
 * assert.match(certificateProblem(pem("hello")), /^holds no PEM certificate/);
 * assert.match(certificateProblem(pem("-----BEGIN PRIVATE KEY-----\n")), /private key/);
 * ```
 */
export function certificateProblem(file: Uint8Array): string {
  const text = new TextDecoder().decode(file);
  const begin = text.indexOf("-----BEGIN CERTIFICATE-----");
  if (begin < 0) {
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
      return "holds a private key, not a certificate: give it to --nts-key, and the chain here";
    }
    return "holds no PEM certificate: no -----BEGIN CERTIFICATE----- line";
  }
  if (text.indexOf("-----END CERTIFICATE-----", begin) < 0) {
    return "holds a PEM certificate cut short: no -----END CERTIFICATE----- line after its start";
  }
  return "holds a PEM certificate that does not decode: its base64 or the X.509 inside is damaged";
}

function readPem(path: string, flag: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (error) {
    throw unreadable(path, flag, error);
  }
}

function readPrivateKey(path: string, uid: number): Uint8Array {
  const flag = "--nts-key";
  try {
    const key = readPrivateFile(path, { flag, uid, groupMayRead: true });
    if (key === null) throw new Deno.errors.NotFound("No such file or directory");
    return key;
  } catch (error) {
    if (error instanceof UnsafeFileError) throw new NtsError(error.message);
    throw unreadable(path, flag, error);
  }
}

function unreadable(path: string, flag: string, error: unknown): NtsError {
  const reason = error instanceof Deno.errors.NotCapable ? readAccessAdvice(path) : message(error);
  return new NtsError(`${flag} ${path} cannot be read: ${reason}`);
}

/**
 * Why a file of NTS's cannot be read when Deno did not grant it, and the mend for each way
 * of running: flags after `deno task start` go to the program, not to Deno, so there the
 * file must move to a folder the task grants; with `deno run`, a flag grants it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readAccessAdvice } from "./certificate.ts";
 *
 * assert.match(readAccessAdvice("/tmp/x.pem"), /\/etc\/time-server/);
 * assert.match(readAccessAdvice("/tmp/x.pem"), /--allow-read=\/tmp\/x\.pem/);
 * ```
 */
export function readAccessAdvice(path: string): string {
  return `read access not granted: put it in /etc/time-server or /var/lib/time-server, ` +
    `which the binary and deno task start may read, or with deno run, add --allow-read=${path}`;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** When each file was last changed, to tell a replaced certificate. */
function modified(paths: readonly string[]): string {
  return paths.map((path) => {
    try {
      const info = Deno.statSync(path);
      return `${info.mtime?.getTime()}:${info.size}:${info.ino}`;
    } catch {
      return "missing";
    }
  }).join("|");
}

/**
 * The certificate NTS-KE serves, replaced without a restart: {@linkcode check} (from a
 * timer) reloads it when either file has changed, and keeps the old one, with an error
 * logged, while the new files do not load (a renewal caught half-written). Sessions in
 * progress finish with the credentials they started with.
 *
 * Expired certificates are a known failure of public NTS servers, so an expired or
 * nearly expired one is logged as an error at start and then once a day.
 */
export class CertificateStore {
  readonly #files: readonly [string, string];
  readonly #logger: Logger;
  readonly #now: () => number;
  #current: LoadedCertificate;
  #stamp: string;
  #warnedAt = -Infinity;

  /** Loads the files; throws (see {@linkcode loadCertificate}) when they do not load. */
  constructor(certFile: string, keyFile: string, logger: Logger, now: () => number = Date.now) {
    this.#files = [certFile, keyFile];
    this.#logger = logger;
    this.#now = now;
    this.#stamp = modified(this.#files);
    this.#current = loadCertificate(certFile, keyFile);
    this.#checkExpiry();
  }

  /** The certificate chain's file and its key's, as given. */
  get files(): readonly [string, string] {
    return this.#files;
  }

  /** The credentials new sessions use. */
  get credentials(): TlsCredentials {
    return this.#current.credentials;
  }

  /** When the certificate in force expires, ms since the epoch. */
  get notAfter(): number {
    return this.#current.notAfter;
  }

  /** Reloads the files if they changed; checks the expiry. */
  check(): void {
    const stamp = modified(this.#files);
    if (stamp !== this.#stamp) {
      this.#stamp = stamp;
      try {
        const next = loadCertificate(...this.#files);
        this.#current.credentials.release();
        this.#current = next;
        this.#warnedAt = -Infinity;
        this.#logger.info("NTS certificate reloaded", {
          subject: next.subject,
          notAfter: new Date(next.notAfter).toISOString(),
        });
      } catch (error) {
        this.#logger.error("NTS certificate not reloaded; keeping the one in force", {
          error: message(error),
        });
      }
    }
    this.#checkExpiry();
  }

  #checkExpiry(): void {
    const now = this.#now();
    const left = this.#current.notAfter - now;
    if (left > EXPIRY_WARNING_DAYS * DAY_MS || now - this.#warnedAt < DAY_MS) return;
    this.#warnedAt = now;
    const fields = {
      cert: this.#files[0],
      notAfter: new Date(this.#current.notAfter).toISOString(),
      subject: this.#current.subject,
    };
    if (left <= 0) {
      this.#logger.error("NTS certificate has expired: clients will refuse it", fields);
    } else {
      this.#logger.error("NTS certificate expires soon", {
        ...fields,
        daysLeft: Math.floor(left / DAY_MS),
      });
    }
  }

  /** Frees the credentials once the sessions using them have ended. */
  close(): void {
    this.#current.credentials.release();
  }
}
