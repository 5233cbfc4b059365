// Telling systemd how the service is doing (sd_notify): ready, reloading, stopping.

import { libcMissing, loadLibc } from "./libc.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const CLOCK_MONOTONIC = 1;
/** `struct sockaddr_un`: a 2-byte family, then up to 108 bytes of path. */
const SUN_PATH = 108;

const encoder = new TextEncoder();

/**
 * `$NOTIFY_SOCKET`, which systemd sets for a `Type=notify` service, or null: not set, or
 * not readable here (`--allow-env=NOTIFY_SOCKET` not granted).
 */
export function notifySocket(): string | null {
  const granted = Deno.permissions.querySync({ name: "env", variable: "NOTIFY_SOCKET" });
  if (granted.state !== "granted") return null;
  return Deno.env.get("NOTIFY_SOCKET") || null;
}

/**
 * The socket address of `path` as `struct sockaddr_un` and its length: a path name, or
 * with a leading `@` an abstract name (its first byte 0, no terminating 0). Null when
 * the path is too long.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unixAddress } from "./systemd.ts";
 *
 * const { bytes, length } = unixAddress("/run/systemd/notify")!;
 * assert.deepEqual([bytes[0], bytes[1], bytes[2]], [1, 0, 0x2f]);
 * assert.equal(length, 2 + 19 + 1);
 * assert.equal(unixAddress("@abstract")!.length, 2 + 9);
 * ```
 */
export function unixAddress(path: string): { bytes: Uint8Array; length: number } | null {
  const name = encoder.encode(path);
  if (name.length === 0 || name.length >= SUN_PATH) return null;
  const bytes = new Uint8Array(2 + SUN_PATH);
  new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
  bytes.set(name, 2);
  const abstract = path.startsWith("@");
  if (abstract) bytes[2] = 0;
  return { bytes, length: 2 + name.length + (abstract ? 0 : 1) };
}

/**
 * Sends systemd's notification socket one message (`READY=1`, `RELOADING=1`, …), as
 * `sd_notify` does. Returns null when sent or when there is no socket to send to
 * (not run by systemd as `Type=notify`), or says why it could not be sent.
 */
export function notifySystemd(
  message: string,
  path: string | null = notifySocket(),
): string | null {
  if (path === null) return null;
  const address = unixAddress(path);
  if (address === null) return `NOTIFY_SOCKET is not a socket path: ${path}`;
  const lacking = libcMissing();
  if (lacking !== null) return `telling systemd needs ${lacking}`;
  const c = loadLibc();
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "cannot open a Unix socket to NOTIFY_SOCKET";
  try {
    const bytes = encoder.encode(message);
    const sent = c.sendto(
      fd,
      bytes,
      BigInt(bytes.length),
      MSG_NOSIGNAL,
      address.bytes,
      address.length,
    );
    return sent === bytes.length ? null : `cannot send to NOTIFY_SOCKET ${path}`;
  } finally {
    c.close(fd);
  }
}

/**
 * `RELOADING=1` with the monotonic time systemd wants of it (`MONOTONIC_USEC`, which
 * `Type=notify-reload` requires), read from the same clock systemd reads.
 */
export function reloadingMessage(): string {
  if (libcMissing() !== null) return "RELOADING=1";
  const time = new BigInt64Array(2);
  loadLibc().clock_gettime(CLOCK_MONOTONIC, time);
  return `RELOADING=1\nMONOTONIC_USEC=${time[0] * 1_000_000n + time[1] / 1000n}`;
}
