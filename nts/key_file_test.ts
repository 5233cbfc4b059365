import assert from "node:assert/strict";
import { readOrCreateKeyFile } from "./key_file.ts";

const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-keys-" });

Deno.test("the master key file is made once with mode 0600, and read back the same", () => {
  const path = `${dir}/nts.keys`;
  const made = readOrCreateKeyFile(path);
  assert.equal(made.created, true);
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  assert.match(Deno.readTextFileSync(path), /^[0-9a-f]{64}\n$/);
  const read = readOrCreateKeyFile(path);
  assert.equal(read.created, false);
  assert.deepEqual(read.key, made.key);
  assert.deepEqual(Deno.readDirSync(dir).toArray().map((entry) => entry.name), ["nts.keys"]);
});

Deno.test("a key file others may read, or one that is not 64 hex digits, is refused with one line", () => {
  const open = `${dir}/open.keys`;
  Deno.writeTextFileSync(open, `${"ab".repeat(32)}\n`, { mode: 0o644 });
  Deno.chmodSync(open, 0o644);
  assert.throws(
    () => readOrCreateKeyFile(open),
    /may be read by others \(mode 644\): chmod 600 it/,
  );
  const short = `${dir}/short.keys`;
  Deno.writeTextFileSync(short, "abcd\n", { mode: 0o600 });
  assert.throws(() => readOrCreateKeyFile(short), /is not a key file: 64 hex digits/);
  assert.throws(() => readOrCreateKeyFile(`${dir}/no/such/dir/keys`), /--nts-keys-file/);
});
