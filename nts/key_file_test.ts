// Tests of the NTS master key file: made once and shared, raced for, and refused when
// someone else could read or replace it.

import assert from "node:assert/strict";
import { publishKeyFile, readOrCreateKeyFile } from "./key_file.ts";
import { effectiveUid, libcMissing } from "../lib/libc.ts";

const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-keys-" });
const ignore = libcMissing() !== null;
const uid = ignore ? -1 : effectiveUid();
const KEY = `${"ab".repeat(32)}\n`;

/** A symbolic link, made by `ln`: Deno.symlinkSync needs unscoped read and write access. */
async function symlink(target: string, link: string): Promise<void> {
  const { success } = await new Deno.Command("ln", { args: ["-s", target, link] }).output();
  assert.ok(success, `ln -s ${target} ${link}`);
}

Deno.test({
  name: "the master key file is made once with mode 0600, and read back the same",
  ignore,
  fn() {
    const path = `${dir}/nts.keys`;
    const made = readOrCreateKeyFile(path, uid);
    assert.equal(made.created, true);
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    assert.match(Deno.readTextFileSync(path), /^[0-9a-f]{64}\n$/);
    const read = readOrCreateKeyFile(path, uid);
    assert.equal(read.created, false);
    assert.deepEqual(read.key, made.key);
    assert.deepEqual(Deno.readDirSync(dir).toArray().map((entry) => entry.name), ["nts.keys"]);
  },
});

Deno.test({
  name: "a key published first by another instance is kept, and the loser reads it back",
  ignore,
  fn() {
    const path = `${dir}/raced.keys`;
    const first = crypto.getRandomValues(new Uint8Array(32));
    assert.equal(publishKeyFile(path, first), true);
    // The second instance found no file a moment ago, and now publishes its own key.
    assert.equal(publishKeyFile(path, crypto.getRandomValues(new Uint8Array(32))), false);
    const read = readOrCreateKeyFile(path, uid);
    assert.equal(read.created, false);
    assert.deepEqual(read.key, first);
    assert.deepEqual(
      Deno.readDirSync(dir).toArray().filter((entry) => entry.name.startsWith("raced")).length,
      1,
      "no temporary file left behind",
    );
  },
});

Deno.test({
  name: "instances started together on a fresh path all end up with one key",
  ignore,
  async fn() {
    const module = new URL("./key_file.ts", import.meta.url).href;
    for (let round = 0; round < 3; round++) {
      const path = `${dir}/together-${round}.keys`;
      // Each waits for the same moment, so that their reads and writes overlap.
      const start = Date.now() + 600;
      const script = `import { readOrCreateKeyFile } from "${module}";
        while (Date.now() < ${start});
        const { key } = readOrCreateKeyFile("${path}", ${uid});
        console.log(Array.from(key, (b) => b.toString(16).padStart(2, "0")).join(""));`;
      const outputs = await Promise.all(Array.from({ length: 4 }, async () => {
        const output = await new Deno.Command(Deno.execPath(), {
          args: ["eval", "--no-config", script],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(output.success, new TextDecoder().decode(output.stderr));
        return new TextDecoder().decode(output.stdout).trim();
      }));
      const onDisk = Deno.readTextFileSync(path).trim();
      assert.deepEqual(outputs, outputs.map(() => onDisk), `round ${round}`);
    }
  },
});

Deno.test({
  name: "a key file others may read, or one that is not 64 hex digits, is refused with one line",
  ignore,
  fn() {
    const open = `${dir}/open.keys`;
    Deno.writeTextFileSync(open, KEY, { mode: 0o644 });
    Deno.chmodSync(open, 0o644);
    assert.throws(
      () => readOrCreateKeyFile(open, uid),
      /--nts-keys-file .*open.keys may be read or written by others \(mode 644\): chmod 600 it/,
    );
    Deno.chmodSync(open, 0o640);
    assert.throws(() => readOrCreateKeyFile(open, uid), /\(mode 640\): chmod 600 it/);
    const short = `${dir}/short.keys`;
    Deno.writeTextFileSync(short, "abcd\n", { mode: 0o600 });
    assert.throws(() => readOrCreateKeyFile(short, uid), /is not a key file: 64 hex digits/);
    assert.throws(() => readOrCreateKeyFile(`${dir}/no/such/dir/keys`, uid), /--nts-keys-file/);
  },
});

Deno.test({
  name: "a key file that is a symbolic link is refused, even to a good file",
  ignore,
  async fn() {
    const target = `${dir}/target.keys`;
    Deno.writeTextFileSync(target, KEY, { mode: 0o600 });
    Deno.chmodSync(target, 0o600);
    const link = `${dir}/link.keys`;
    await symlink(target, link);
    assert.throws(
      () => readOrCreateKeyFile(link, uid),
      /--nts-keys-file .*link.keys is a symbolic link, which is refused/,
    );
    const dangling = `${dir}/dangling.keys`;
    await symlink(`${dir}/nothing-here`, dangling);
    assert.throws(() => readOrCreateKeyFile(dangling, uid), /is a symbolic link/);
    assert.throws(() => Deno.statSync(`${dir}/nothing-here`), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "a key file owned by another user is refused, and so is a link to one",
  ignore: ignore || uid !== 0,
  async fn() {
    // As root: a 0600 file that nobody (65534) owns, which nobody could have put there.
    const theirs = `${dir}/theirs.keys`;
    Deno.writeTextFileSync(theirs, KEY, { mode: 0o600 });
    Deno.chmodSync(theirs, 0o600);
    Deno.chownSync(theirs, 65534, 65534);
    assert.throws(
      () => readOrCreateKeyFile(theirs, uid),
      /--nts-keys-file .*theirs.keys is owned by uid 65534, not by this server's user \(uid 0\)/,
    );
    const link = `${dir}/to-theirs.keys`;
    await symlink(theirs, link);
    assert.throws(() => readOrCreateKeyFile(link, uid), /is a symbolic link/);
    // Run as the owner, the same file is accepted.
    assert.equal(readOrCreateKeyFile(theirs, 65534).created, false);
  },
});
