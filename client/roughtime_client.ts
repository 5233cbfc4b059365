// `time-server client --roughtime`: asks a Roughtime server over UDP and checks what it signed.

import { parseHostPort } from "../server/metrics.ts";
import { makeRequest, VERSION_DRAFT, VERSION_RFC } from "../roughtime/request.ts";
import { decodePublicKey } from "../roughtime/key_file.ts";
import { type VerifiedTime, verifyResponse } from "../roughtime/verify.ts";
import { UsageError } from "../lib/usage.ts";

/** What to ask: the server, its long-term public key, and how long to wait. */
export interface RoughtimeQuery {
  readonly hostname: string;
  readonly port: number;
  readonly publicKey: Uint8Array;
  /** Seconds to wait for the answer. */
  readonly timeout: number;
}

/** `--roughtime HOST:PORT` and `--key BASE64`, read into a query; throws {@linkcode UsageError}. */
export function roughtimeQuery(
  address: string,
  key: string | undefined,
  timeout: number,
): RoughtimeQuery {
  const where = parseHostPort(address);
  if (where === null) {
    throw new UsageError(`--roughtime must be HOST:PORT, e.g. 127.0.0.1:2002, got "${address}"`);
  }
  if (key === undefined) {
    throw new UsageError("--roughtime needs --key BASE64: the server's long-term public key");
  }
  const publicKey = decodePublicKey(key);
  if (publicKey === null) {
    throw new UsageError(`--key must be a 32-byte Ed25519 public key in base64, got "${key}"`);
  }
  return { ...where, publicKey, timeout };
}

/**
 * Sends one request (the RFC's version and the drafts', padded to 1024 bytes, naming the
 * server's key) and verifies the answer: the delegation, the window, the Merkle path,
 * the signature. Resolves with what it proves; rejects with one line saying what failed.
 */
export async function askRoughtime(query: RoughtimeQuery): Promise<VerifiedTime> {
  const nonce = crypto.getRandomValues(new Uint8Array(32));
  const request = makeRequest(nonce, {
    versions: [VERSION_RFC, VERSION_DRAFT],
    serverKey: query.publicKey,
  });
  const local = query.hostname.includes(":") ? "::" : "0.0.0.0";
  const socket = Deno.listenDatagram({ hostname: local, port: 0, transport: "udp" });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await socket.send(request, { transport: "udp", hostname: query.hostname, port: query.port });
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), query.timeout * 1000);
    });
    for (;;) {
      const received = await Promise.race([socket.receive(), timeout]);
      if (received === null) {
        throw new Error(
          `no answer within ${query.timeout} s (a server ignores a request for another key: ` +
            `is --key its public key?)`,
        );
      }
      const [response, from] = received as [Uint8Array, Deno.NetAddr];
      if (from.port !== query.port) continue; // not the server's: ignored
      return verifyResponse(request, response, query.publicKey);
    }
  } finally {
    clearTimeout(timer);
    socket.close();
  }
}

/** The line the client prints for a verified answer. */
export function describeTime(time: VerifiedTime): string {
  const when = new Date(time.midpoint * 1000).toISOString().replace(".000Z", "Z");
  const version = time.version === VERSION_RFC ? "1" : `0x${time.version.toString(16)}`;
  return `${when} ±${time.radius} s (Roughtime version ${version}, signature verified)`;
}
