// Self-signed certificates for NTS-KE, made with openssl: for the tests and the benchmark.

import { hasTool } from "./time_clients.ts";

/** Whether openssl is here to make certificates. */
export const haveOpenssl: boolean = hasTool("openssl");

/** A certificate and its key, as files. */
export interface CertificateFiles {
  readonly cert: string;
  readonly key: string;
}

/**
 * Makes a self-signed ECDSA certificate for `names` (subjectAltName entries, e.g.
 * `IP:127.0.0.1`) valid for `days`, in `dir` as `name`.pem and `name`.key.
 */
export async function makeCertificate(
  dir: string,
  name: string,
  { names = ["IP:127.0.0.1", "DNS:localhost"], days = 30 } = {},
): Promise<CertificateFiles> {
  const cert = `${dir}/${name}.pem`, key = `${dir}/${name}.key`;
  const { success, stderr } = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      String(days),
      "-subj",
      `/CN=${name}`,
      "-addext",
      `subjectAltName=${names.join(",")}`,
      // A leaf, not a CA: TLS clients (rustls among them) refuse a CA as the server's certificate.
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "extendedKeyUsage=serverAuth",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`openssl failed: ${new TextDecoder().decode(stderr)}`);
  return { cert, key };
}
