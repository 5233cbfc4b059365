// Helpers for NTS tests: certificates, chronyd -Q over NTS, and NTS requests made by hand.

import { SivCmac } from "../nts/aead.ts";
import { createLogger } from "../lib/log.ts";
import { type NtsOptions, serve, type ServerOptions, type TimeServer } from "../server/server.ts";
import { COOKIE_LENGTH, CookieKeys } from "../nts/cookies.ts";
import type { CertificateFiles } from "../tools/certificate.ts";

export { type CertificateFiles, haveOpenssl, makeCertificate } from "../tools/certificate.ts";
export { chronydNts, type ChronydNtsResult } from "../tools/time_clients.ts";

/** Options of {@linkcode startNtsServer}: the server's, with NTS's own to change. */
export type NtsServerOptions = Omit<ServerOptions, "nts"> & { nts?: Partial<NtsOptions> };

/**
 * A server on 127.0.0.1 with SNTP and NTS-KE on free ports, serving `certificate`, its
 * cookies under `master`, with no KE rate limit unless `options.nts` sets one.
 */
export function startNtsServer(
  certificate: CertificateFiles,
  options: NtsServerOptions = {},
  master: Uint8Array = crypto.getRandomValues(new Uint8Array(32)),
): TimeServer {
  const { nts, ...rest } = options;
  return serve({
    hostname: "127.0.0.1",
    port: 0,
    ntpPort: 0,
    logger: createLogger({ level: "error" }),
    ...rest,
    nts: {
      kePort: 0,
      certFile: certificate.cert,
      keyFile: certificate.key,
      masterKey: master,
      keRate: 0,
      ...nts,
    },
  });
}

/** Session keys and a cookie for them under `master`, as NTS-KE would give a client. */
export function mintSession(
  master: Uint8Array,
): { c2s: Uint8Array; s2c: Uint8Array; cookie: Uint8Array } {
  const keys = crypto.getRandomValues(new Uint8Array(64));
  const cookie = new Uint8Array(COOKIE_LENGTH);
  new CookieKeys(master).seal(keys, cookie, 0);
  return { c2s: keys.slice(0, 32), s2c: keys.slice(32), cookie };
}

function field(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  out[0] = type >> 8;
  out[1] = type & 0xff;
  out[2] = out.length >> 8;
  out[3] = out.length & 0xff;
  out.set(body, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) (out.set(part, at), at += part.length);
  return out;
}

/** What {@linkcode ntsRequest} builds. */
export interface NtsRequestOptions {
  c2s: Uint8Array;
  cookie: Uint8Array;
  uniqueId?: Uint8Array;
  /** Cookie Placeholders to send, each `placeholderLength` long (the cookie's by default). */
  placeholders?: number;
  placeholderLength?: number;
  /** Fields put after the Authenticator (which then is not last). */
  after?: Uint8Array[];
}

/** An NTS request as chrony sends one, sealed with C2S (RFC 8915 §5.6). */
export function ntsRequest(options: NtsRequestOptions): Uint8Array {
  const header = new Uint8Array(48);
  header[0] = (4 << 3) | 3;
  header.set(crypto.getRandomValues(new Uint8Array(8)), 40);
  const uniqueId = options.uniqueId ?? crypto.getRandomValues(new Uint8Array(32));
  const parts = [header, field(0x0104, uniqueId), field(0x0204, options.cookie)];
  for (let i = 0; i < (options.placeholders ?? 0); i++) {
    parts.push(field(0x0304, new Uint8Array(options.placeholderLength ?? options.cookie.length)));
  }
  const ad = concat(parts);
  const nonce = crypto.getRandomValues(new Uint8Array(16));
  const tag = new Uint8Array(16);
  new SivCmac(options.c2s).seal(nonce, ad, new Uint8Array(0), tag);
  const auth = new Uint8Array(4 + 16 + 16);
  auth[1] = 16;
  auth[3] = 16;
  auth.set(nonce, 4);
  auth.set(tag, 20);
  return concat([ad, field(0x0404, auth), ...(options.after ?? [])]);
}

/** What a client finds in an NTS reply. */
export interface NtsReply {
  /** Kiss code `NTSN` and no Authenticator: the cookie was refused. */
  readonly nak: boolean;
  readonly uniqueId: Uint8Array | null;
  /** The cookies inside the Authenticator, which opened with S2C; empty for a NAK. */
  readonly cookies: Uint8Array[];
}

/** Reads an NTS reply as a client does; throws when its Authenticator does not open with `s2c`. */
export function readNtsReply(reply: Uint8Array, s2c: Uint8Array): NtsReply {
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const nak = reply[1] === 0 && new TextDecoder().decode(reply.subarray(12, 16)) === "NTSN";
  let uniqueId: Uint8Array | null = null;
  const cookies: Uint8Array[] = [];
  for (let at = 48; at < reply.length;) {
    const type = view.getUint16(at), length = view.getUint16(at + 2);
    if (length < 16 || at + length > reply.length) throw new Error(`bad field at ${at}`);
    if (type === 0x0104) uniqueId = reply.slice(at + 4, at + length);
    if (type === 0x0404) {
      if (at + length !== reply.length) throw new Error("the Authenticator is not last");
      const nonceLength = view.getUint16(at + 4), sealedLength = view.getUint16(at + 6);
      const nonce = reply.subarray(at + 8, at + 8 + nonceLength);
      const sealedAt = at + 8 + ((nonceLength + 3) & ~3);
      const sealed = reply.subarray(sealedAt, sealedAt + sealedLength);
      const plain = new Uint8Array(sealedLength - 16);
      if (!new SivCmac(s2c).open(nonce, reply.subarray(0, at), sealed, plain)) {
        throw new Error("the Authenticator does not open with S2C");
      }
      for (let c = 0; c < plain.length;) {
        const cookieLength = (plain[c + 2] << 8) | plain[c + 3];
        if (((plain[c] << 8) | plain[c + 1]) === 0x0204) {
          cookies.push(plain.slice(c + 4, c + cookieLength));
        }
        c += cookieLength;
      }
    }
    at += length;
  }
  return { nak, uniqueId, cookies };
}

/** chrony's NTS-KE request: NTPv4, AES-SIV-CMAC-256, End of Message. */
export const CHRONY_KE_REQUEST: Uint8Array = Uint8Array.of(
  0x80,
  1,
  0,
  2,
  0,
  0,
  0x80,
  4,
  0,
  2,
  0,
  15,
  0x80,
  0,
  0,
  0,
);

/**
 * One NTS-KE exchange over TLS 1.3 (Deno's own TLS, which verifies `ca` and the address):
 * sends `request`, reads until the server closes. Resolves with the answer's records.
 */
export async function keExchange(
  port: number,
  ca: string,
  request: Uint8Array = CHRONY_KE_REQUEST,
): Promise<{ type: number; critical: boolean; body: Uint8Array }[]> {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [Deno.readTextFileSync(ca)],
    alpnProtocols: ["ntske/1"],
  });
  try {
    const { alpnProtocol } = await conn.handshake();
    if (alpnProtocol !== "ntske/1") throw new Error(`ALPN ${alpnProtocol}`);
    await conn.write(request);
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break; // close_notify
      chunks.push(buffer.slice(0, n));
    }
    const answer = concat(chunks);
    const records = [];
    for (let at = 0; at + 4 <= answer.length;) {
      const type = (answer[at] << 8) | answer[at + 1],
        length = (answer[at + 2] << 8) | answer[at + 3];
      records.push({
        type: type & 0x7fff,
        critical: (type & 0x8000) !== 0,
        body: answer.slice(at + 4, at + 4 + length),
      });
      at += 4 + length;
    }
    return records;
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the server already
    }
  }
}
