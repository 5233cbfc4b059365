import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import {
  certificateProblem,
  CertificateStore,
  EXPIRY_WARNING_DAYS,
  loadCertificate,
} from "./certificate.ts";
import { effectiveUid } from "../lib/libc.ts";
import { gnutlsGranted } from "./gnutls.ts";
import { haveOpenssl, makeCertificate } from "../testing/nts.ts";

const ignore = !gnutlsGranted() || !haveOpenssl;
const DAY = 86_400_000;

function capture() {
  const lines: string[] = [];
  return { lines, logger: createLogger({ level: "info", write: (line) => lines.push(line) }) };
}

Deno.test({
  name:
    "a certificate near its expiry is logged as an error at start and once a day, and an expired one says so",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-cert-" });
    const files = await makeCertificate(dir, "short", { days: 3 });
    let now = Date.now();
    const { lines, logger } = capture();
    const store = new CertificateStore(files.cert, files.key, logger, () => now);
    assert.ok(Math.abs(store.notAfter - (now + 3 * DAY)) < 60_000, "valid for three days");
    assert.equal(lines.length, 1);
    assert.match(lines[0], /ERROR NTS certificate expires soon .*daysLeft=2/);
    store.check();
    assert.equal(lines.length, 1, "not again the same day");
    now += DAY;
    store.check();
    assert.equal(lines.length, 2);
    now = store.notAfter + 1;
    store.check();
    assert.match(lines[2], /ERROR NTS certificate has expired/);
    store.close();
    const long = await makeCertificate(dir, "long", { days: EXPIRY_WARNING_DAYS + 2 });
    const quiet = capture();
    new CertificateStore(long.cert, long.key, quiet.logger).close();
    assert.deepEqual(quiet.lines, []);
  },
});

Deno.test({
  name:
    "a replaced certificate is loaded for new sessions, and a broken replacement keeps the one in force",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-cert-" });
    const first = await makeCertificate(dir, "first");
    const second = await makeCertificate(dir, "second");
    const { lines, logger } = capture();
    const store = new CertificateStore(first.cert, first.key, logger);
    const before = store.credentials;
    store.check();
    assert.equal(store.credentials, before, "unchanged files are not reloaded");
    Deno.writeFileSync(first.cert, Deno.readFileSync(second.cert));
    Deno.writeFileSync(first.key, Deno.readFileSync(second.key));
    store.check();
    assert.notEqual(store.credentials, before);
    assert.match(lines.at(-1)!, /INFO {2}NTS certificate reloaded subject="CN=second"/);
    const reloaded = store.credentials;
    Deno.writeTextFileSync(first.cert, "-----BEGIN CERTIFICATE-----\nnot one\n");
    store.check();
    assert.equal(store.credentials, reloaded);
    assert.match(lines.at(-1)!, /ERROR NTS certificate not reloaded; keeping the one in force/);
    store.close();
  },
});

Deno.test({
  name:
    "a private key others may read, or one that is a link, is refused with one line; one its group may read is used",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-cert-" });
    const files = await makeCertificate(dir, "modes");
    const uid = effectiveUid();
    Deno.chmodSync(files.key, 0o644);
    assert.throws(
      () => loadCertificate(files.cert, files.key, uid),
      /^NtsError: --nts-key .*modes.key may be read or written by others \(mode 644\): chmod 640 it$/,
    );
    Deno.chmodSync(files.key, 0o660);
    assert.throws(() => loadCertificate(files.cert, files.key, uid), /\(mode 660\): chmod 640/);
    Deno.chmodSync(files.key, 0o640);
    loadCertificate(files.cert, files.key, uid).credentials.release();
    const link = `${dir}/link.key`;
    const ln = await new Deno.Command("ln", { args: ["-s", files.key, link] }).output();
    assert.ok(ln.success);
    assert.throws(
      () => loadCertificate(files.cert, link, uid),
      /--nts-key .*link.key is a symbolic link, which is refused/,
    );
    assert.throws(
      () => loadCertificate(files.cert, `${dir}/missing.key`, uid),
      /--nts-key .*missing.key cannot be read: No such file/,
    );
  },
});

Deno.test({
  name: "a private key owned by another user is refused",
  ignore: ignore || effectiveUid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-cert-" });
    const files = await makeCertificate(dir, "theirs");
    Deno.chownSync(files.key, 65534, 65534);
    assert.throws(
      () => loadCertificate(files.cert, files.key, 0),
      /--nts-key .*theirs.key is owned by uid 65534, not by this server's user \(uid 0\)/,
    );
    loadCertificate(files.cert, files.key, 65534).credentials.release();
  },
});

Deno.test("a certificate file that does not parse is described in words, not the parser's", () => {
  const pem = (text: string) => new TextEncoder().encode(text);
  const body = "MIIBszCCAVmgAwIBAgIUKx";
  const cases: [string, RegExp][] = [
    ["", /^holds no PEM certificate: no -----BEGIN CERTIFICATE----- line$/],
    ["-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n", /private key, not a/],
    [`-----BEGIN CERTIFICATE-----\n${body}\n`, /cut short: no -----END CERTIFICATE----- line/],
    [`-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`, /does not decode/],
  ];
  for (const [text, problem] of cases) assert.match(certificateProblem(pem(text)), problem, text);
});
