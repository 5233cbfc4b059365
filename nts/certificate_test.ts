import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { CertificateStore, EXPIRY_WARNING_DAYS } from "./certificate.ts";
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
