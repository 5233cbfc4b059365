// Tests of reading a secret's file: only the server's own regular file, kept from others.

import assert from "node:assert/strict";
import { readPrivateFile, UnsafeFileError } from "./private_file.ts";
import { effectiveUid, libcMissing } from "../lib/libc.ts";

const ignore = libcMissing() !== null;

Deno.test({
  name: "a secret's file is read when it is the server's own, and null when there is none",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-secret-" });
    const uid = effectiveUid();
    const path = `${dir}/secret`;
    assert.equal(readPrivateFile(path, { flag: "--secret", uid, groupMayRead: false }), null);
    Deno.writeTextFileSync(path, "abc\n", { mode: 0o600 });
    Deno.chmodSync(path, 0o600);
    const bytes = readPrivateFile(path, { flag: "--secret", uid, groupMayRead: false });
    assert.equal(new TextDecoder().decode(bytes!), "abc\n");
    Deno.chmodSync(path, 0o640);
    assert.throws(
      () => readPrivateFile(path, { flag: "--secret", uid, groupMayRead: false }),
      UnsafeFileError,
    );
    assert.ok(readPrivateFile(path, { flag: "--secret", uid, groupMayRead: true }));
    assert.throws(
      () => readPrivateFile(dir, { flag: "--secret", uid, groupMayRead: true }),
      /--secret .* is not a regular file/,
    );
    assert.throws(
      () => readPrivateFile(path, { flag: "--secret", uid: uid + 1, groupMayRead: true }),
      new RegExp(`is owned by uid ${uid}, not by this server's user \\(uid ${uid + 1}\\)`),
    );
  },
});
