// TLS 1.3 for NTS-KE from the system's GnuTLS, chrony's own TLS library, through FFI.

import { libraryGranted, loadFirst } from "../lib/libraries.ts";
import { bufferAddress, type Libc, loadLibc } from "../lib/libc.ts";

// Handles (sessions, credentials, priorities) are pointers passed as usize: a pointer
// type would need Deno.UnsafePointer, which a path-scoped --allow-ffi does not grant.
const SYMBOLS = {
  gnutls_global_init: { parameters: [], result: "i32" },
  gnutls_check_version: { parameters: ["buffer"], result: "usize" },
  gnutls_certificate_allocate_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_certificate_set_x509_key_mem: {
    parameters: ["usize", "buffer", "buffer", "i32"],
    result: "i32",
  },
  gnutls_certificate_free_credentials: { parameters: ["usize"], result: "void" },
  gnutls_priority_init2: { parameters: ["buffer", "buffer", "buffer", "u32"], result: "i32" },
  gnutls_init: { parameters: ["buffer", "u32"], result: "i32" },
  gnutls_priority_set: { parameters: ["usize", "usize"], result: "i32" },
  gnutls_credentials_set: { parameters: ["usize", "i32", "usize"], result: "i32" },
  gnutls_alpn_set_protocols: { parameters: ["usize", "buffer", "u32", "u32"], result: "i32" },
  gnutls_alpn_get_selected_protocol: { parameters: ["usize", "buffer"], result: "i32" },
  gnutls_transport_set_int2: { parameters: ["usize", "i32", "i32"], result: "void" },
  // The handshake runs on Deno's blocking pool, so that its public-key arithmetic does not
  // hold up the event loop that serves SNTP; the record calls, symmetric crypto on a few
  // hundred bytes, run at once on this thread, saving a thread hop each. The socket is
  // non-blocking: a call that would wait for the client returns GNUTLS_E_AGAIN instead.
  gnutls_handshake: { parameters: ["usize"], result: "i32", nonblocking: true },
  gnutls_record_recv: { parameters: ["usize", "buffer", "usize"], result: "isize" },
  gnutls_bye: { parameters: ["usize", "i32"], result: "i32" },
  gnutls_record_send: { parameters: ["usize", "buffer", "usize"], result: "isize" },
  gnutls_record_get_direction: { parameters: ["usize"], result: "i32" },
  gnutls_protocol_get_version: { parameters: ["usize"], result: "i32" },
  gnutls_prf_rfc5705: {
    parameters: ["usize", "usize", "buffer", "usize", "buffer", "usize", "buffer"],
    result: "i32",
  },
  gnutls_deinit: { parameters: ["usize"], result: "void" },
  gnutls_strerror: { parameters: ["i32"], result: "usize" },
  gnutls_alert_get: { parameters: ["usize"], result: "i32" },
  gnutls_handshake_get_last_in: { parameters: ["usize"], result: "i32" },
  gnutls_handshake_get_last_out: { parameters: ["usize"], result: "i32" },
} as const;

/** Where GnuTLS 3.6.5 or later lives on the common distributions. */
export const GNUTLS_PATHS: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
  "/usr/lib/aarch64-linux-gnu/libgnutls.so.30",
  "/usr/lib64/libgnutls.so.30",
  "/usr/lib/libgnutls.so.30",
];

type GnuTls = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let gnutls: GnuTls | null = null;
/** chrony's priority: the system's defaults (its crypto policy), less everything before TLS 1.3. */
let priority: bigint | null = null;

const GNUTLS_SERVER = 1;
const GNUTLS_NO_TICKETS = 1 << 10;
const GNUTLS_CRD_CERTIFICATE = 1;
const GNUTLS_X509_FMT_PEM = 1;
const GNUTLS_ALPN_MANDATORY = 1;
const GNUTLS_PRIORITY_INIT_DEF_APPEND = 1;
const GNUTLS_SHUT_RDWR = 0;
const GNUTLS_TLS1_3 = 5;
const GNUTLS_E_AGAIN = -28;
const GNUTLS_E_INTERRUPTED = -52;
/** The client ended the handshake with a fatal alert (`gnutls_alert_get` says which). */
const GNUTLS_E_FATAL_ALERT_RECEIVED = -12;
/** Handshake messages (`gnutls_handshake_description_t`): the client's first, the server's last. */
const HANDSHAKE_CLIENT_HELLO = 1;
const HANDSHAKE_FINISHED = 20;

/**
 * The TLS alerts (RFC 8446 §6.2) with which a client says it does not accept the server's
 * certificate, by name: an operator's problem, unlike a scanner's garbage.
 */
const CERTIFICATE_ALERTS: Readonly<Record<number, string>> = {
  42: "bad_certificate",
  43: "unsupported_certificate",
  44: "certificate_revoked",
  45: "certificate_expired",
  46: "certificate_unknown",
  48: "unknown_ca",
};

/**
 * The name of a TLS alert that refuses the server's certificate, or null for any other.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { refusedCertificate } from "./gnutls.ts";
 *
 * assert.equal(refusedCertificate(48), "unknown_ca");
 * assert.equal(refusedCertificate(40), null); // handshake_failure: not about the certificate
 * ```
 */
export function refusedCertificate(alert: number): string | null {
  return CERTIFICATE_ALERTS[alert] ?? null;
}
const TLS13_ONLY = "-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.2:-VERS-DTLS-ALL";

/** NTS-KE's ALPN protocol id (RFC 8915 §4). */
export const ALPN = "ntske/1";
const ALPN_BYTES = new TextEncoder().encode(ALPN);
/** RFC 8915 §5.1: the exporter's label. */
const EXPORTER_LABEL = new TextEncoder().encode("EXPORTER-network-time-security");

/** Loads GnuTLS (and libc, to make its structures) and sets up the TLS 1.3 priority. */
export function loadGnuTls(): GnuTls {
  if (gnutls !== null) return gnutls;
  const lib = loadFirst("GnuTLS", GNUTLS_PATHS, SYMBOLS);
  loadLibc(); // throws here, not mid-handshake, where libc is missing
  if (lib.gnutls_check_version(cString("3.6.5")) === 0n) {
    throw new Error("GnuTLS is older than 3.6.5, which NTS needs for TLS 1.3");
  }
  check(lib.gnutls_global_init(), "gnutls_global_init");
  const out = new BigUint64Array(1);
  const errorAt = new BigUint64Array(1);
  check(
    lib.gnutls_priority_init2(
      new Uint8Array(out.buffer),
      cString(TLS13_ONLY),
      new Uint8Array(errorAt.buffer),
      GNUTLS_PRIORITY_INIT_DEF_APPEND,
    ),
    "gnutls_priority_init2",
  );
  priority = out[0];
  gnutls = lib;
  return lib;
}

/** Whether FFI may load GnuTLS from one of its paths here. */
export function gnutlsGranted(): boolean {
  return libraryGranted(GNUTLS_PATHS);
}

function cString(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

/** GnuTLS's description of an error code, copied out through libc. */
export function describeTlsError(code: number): string {
  const c = loadLibc();
  const address = loadGnuTls().gnutls_strerror(code);
  const text = new Uint8Array(Math.min(Number(c.strlen(address)), 500));
  c.copyFrom(text, address, BigInt(text.length));
  return new TextDecoder().decode(text);
}

function check(code: number, call: string): void {
  if (code < 0) throw new Error(`${call} failed: ${describeTlsError(code)}`);
}

/** A `gnutls_datum_t` for `bytes`, which must stay referenced while GnuTLS reads it. */
function datum(c: Libc, bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new BigUint64Array(2);
  out[0] = BigInt(bufferAddress(c, bytes));
  out[1] = BigInt(bytes.length);
  return new Uint8Array(out.buffer);
}

/**
 * A certificate chain and its key, loaded into GnuTLS from PEM text. Sessions hold it
 * while they run; {@linkcode TlsCredentials.release} frees it once the last has ended,
 * so that a replaced certificate is dropped without cutting handshakes short.
 */
export class TlsCredentials {
  readonly handle: bigint;
  #users = 0;
  #released = false;

  /** Loads the chain (leaf first) and its private key; throws what GnuTLS says is wrong. */
  constructor(chainPem: Uint8Array, keyPem: Uint8Array) {
    const lib = loadGnuTls();
    const c = loadLibc();
    const out = new BigUint64Array(1);
    check(lib.gnutls_certificate_allocate_credentials(new Uint8Array(out.buffer)), "allocate");
    this.handle = out[0];
    // GnuTLS wants the size without a trailing NUL; both copies stay alive for the call.
    const chain = chainPem.slice(), key = keyPem.slice();
    const code = lib.gnutls_certificate_set_x509_key_mem(
      this.handle,
      datum(c, chain),
      datum(c, key),
      GNUTLS_X509_FMT_PEM,
    );
    if (code < 0) {
      lib.gnutls_certificate_free_credentials(this.handle);
      throw new Error(`the certificate or its key: ${describeTlsError(code)}`);
    }
  }

  /** A session starts using it. */
  hold(): void {
    this.#users++;
  }

  /** A session is done with it. */
  unhold(): void {
    this.#users--;
    this.#free();
  }

  /** No new session will use it: freed when the last one ends. */
  release(): void {
    this.#released = true;
    this.#free();
  }

  #free(): void {
    if (this.#released && this.#users === 0) {
      this.#released = false; // once
      this.#users = -1;
      loadGnuTls().gnutls_certificate_free_credentials(this.handle);
    }
  }
}

/** How a session over a non-blocking socket waits for its client and runs its handshake. */
export interface TlsIo {
  /** Resolves true once the socket may be read (`write` false) or written; false: give up. */
  ready(write: boolean): Promise<boolean>;
  /** Runs one call on Deno's pool (where a bound on such calls at once may hold it back). */
  run<T>(call: () => Promise<T>): Promise<T>;
}

/**
 * One server-side TLS 1.3 session over a connected, non-blocking socket: ALPN `ntske/1`
 * only (mandatory), no session tickets. The handshake runs on Deno's pool through `io`;
 * a call that would wait for the client waits through `io`, without a thread. Closing the
 * socket's descriptor is the caller's, after {@linkcode end}.
 */
export class TlsSession {
  readonly #lib: GnuTls;
  readonly #handle: bigint;
  readonly #credentials: TlsCredentials;
  readonly #io: TlsIo;
  #ended = false;

  constructor(fd: number, credentials: TlsCredentials, io: TlsIo) {
    this.#io = io;
    const lib = loadGnuTls();
    const c = loadLibc();
    this.#lib = lib;
    const out = new BigUint64Array(1);
    check(
      lib.gnutls_init(new Uint8Array(out.buffer), GNUTLS_SERVER | GNUTLS_NO_TICKETS),
      "gnutls_init",
    );
    this.#handle = out[0];
    this.#credentials = credentials;
    credentials.hold();
    const alpn = ALPN_BYTES;
    const steps: [number, string][] = [
      [lib.gnutls_priority_set(this.#handle, priority!), "gnutls_priority_set"],
      [
        lib.gnutls_credentials_set(this.#handle, GNUTLS_CRD_CERTIFICATE, credentials.handle),
        "credentials",
      ],
      [
        lib.gnutls_alpn_set_protocols(this.#handle, datum(c, alpn), 1, GNUTLS_ALPN_MANDATORY),
        "alpn",
      ],
    ];
    for (const [code, call] of steps) {
      if (code < 0) {
        this.end();
        throw new Error(`${call} failed: ${describeTlsError(code)}`);
      }
    }
    lib.gnutls_transport_set_int2(this.#handle, fd, fd);
  }

  /** Runs the handshake; resolves with 0, or GnuTLS's (negative) error code. */
  async handshake(): Promise<number> {
    const io = this.#io, handle = this.#handle;
    const code = await this.#call(() => io.run(() => this.#lib.gnutls_handshake(handle)));
    return code < 0 ? code : 0;
  }

  /**
   * Runs `call` until it does not ask to be called again, waiting between for the
   * direction GnuTLS names; GnuTLS's result, or the code to retry with when `io` gives up.
   */
  async #call(call: () => number | bigint | Promise<number | bigint>): Promise<number> {
    for (;;) {
      const code = Number(await call());
      if (code !== GNUTLS_E_AGAIN && code !== GNUTLS_E_INTERRUPTED) return code;
      const write = this.#lib.gnutls_record_get_direction(this.#handle) === 1;
      if (!(await this.#io.ready(write))) return code;
    }
  }

  /**
   * After a handshake that failed with `code`, how the client refused the certificate,
   * or null if it did not: an alert that names the certificate (bad, expired, unknown
   * CA…), or a close right after the server's flight with the certificate and before the
   * client's Finished, which is what chrony does (GnuTLS sends no alert unless told to).
   */
  certificateRefusal(code: number): string | null {
    const lib = this.#lib, handle = this.#handle;
    if (code === GNUTLS_E_FATAL_ALERT_RECEIVED) {
      return refusedCertificate(lib.gnutls_alert_get(handle));
    }
    const sentFinished = lib.gnutls_handshake_get_last_out(handle) === HANDSHAKE_FINISHED;
    const heardHello = lib.gnutls_handshake_get_last_in(handle) === HANDSHAKE_CLIENT_HELLO;
    return sentFinished && heardHello ? "closed after the certificate, before its Finished" : null;
  }

  /** Whether the handshake agreed on TLS 1.3 and ALPN `ntske/1`. */
  isNtsKe(): boolean {
    if (this.#lib.gnutls_protocol_get_version(this.#handle) !== GNUTLS_TLS1_3) return false;
    const selected = new BigUint64Array(2);
    if (
      this.#lib.gnutls_alpn_get_selected_protocol(this.#handle, new Uint8Array(selected.buffer)) < 0
    ) {
      return false;
    }
    if (Number(selected[1] & 0xffffffffn) !== ALPN_BYTES.length) return false;
    const name = new Uint8Array(ALPN_BYTES.length);
    loadLibc().copyFrom(name, selected[0], BigInt(name.length));
    return name.every((byte, i) => byte === ALPN_BYTES[i]);
  }

  /** Reads application data into `into`: bytes read, 0 at the end, negative on error. */
  receive(into: Uint8Array): Promise<number> {
    const length = BigInt(into.length);
    const buffer = into as Uint8Array<ArrayBuffer>;
    return this.#call(() => this.#lib.gnutls_record_recv(this.#handle, buffer, length));
  }

  /**
   * Sends `bytes` (a KE answer or an Error record); a client that does not read makes it
   * wait, until the session's deadline. Resolves false if it failed.
   */
  async send(bytes: Uint8Array): Promise<boolean> {
    const length = BigInt(bytes.length);
    const buffer = bytes as Uint8Array<ArrayBuffer>;
    // Called again after GNUTLS_E_AGAIN with the same arguments, as GnuTLS asks.
    const n = await this.#call(() => this.#lib.gnutls_record_send(this.#handle, buffer, length));
    return n === bytes.length;
  }

  /**
   * The TLS exporter (RFC 8446 §7.5) with NTS's label and the context for NTPv4 and
   * AEAD `aead`: `direction` 0 gives C2S, 1 S2C (RFC 8915 §5.1). 32 bytes into `out`.
   */
  exportKey(aead: number, direction: 0 | 1, out: Uint8Array): boolean {
    const context = Uint8Array.of(0, 0, aead >> 8, aead & 0xff, direction);
    return this.#lib.gnutls_prf_rfc5705(
      this.#handle,
      BigInt(EXPORTER_LABEL.length),
      EXPORTER_LABEL,
      BigInt(context.length),
      context,
      BigInt(out.length),
      out as Uint8Array<ArrayBuffer>,
    ) === 0;
  }

  /** Sends `close_notify` and waits for the client's (or its close); resolves with the code. */
  close(): Promise<number> {
    return this.#call(() => this.#lib.gnutls_bye(this.#handle, GNUTLS_SHUT_RDWR));
  }

  /** Frees the session (no call may be in progress); the descriptor is left open. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#lib.gnutls_deinit(this.#handle);
    this.#credentials.unhold();
  }
}
