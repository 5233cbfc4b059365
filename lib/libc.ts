// libc through Deno's FFI: for the epoll and batched UDP engines, adjtimex and NTS-KE's sockets.

import { libraryGranted, loadFirst } from "./libraries.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: {
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  // The same call on this thread, for what is already queued (MSG_DONTWAIT).
  recvmmsgNow: {
    name: "recvmmsg",
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
  },
  sendmmsg: { parameters: ["i32", "usize", "u32", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  // One datagram to a Unix socket's address: systemd's notification socket.
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  // The TCP engine's calls. Lengths are usize, passed as BigInt to stay on V8's fast
  // path; ssize_t results are read as i32, which holds any length asked for here.
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  // The same wait on a thread of Deno's blocking pool, for when nothing is ready.
  epoll_wait_blocking: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // A wait bounded in nanoseconds (glibc 2.35, Linux 5.11); null where it is missing.
  epoll_pwait2: {
    parameters: ["i32", "buffer", "i32", "buffer", "pointer"],
    result: "i32",
    optional: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  adjtimex: { parameters: ["buffer"], result: "i32" },
  // Who owns NTS's secret files: the user the server runs as.
  geteuid: { parameters: [], result: "u32" },
  __errno_location: { parameters: [], result: "usize" },
  // memcpy returns its destination: the address of a buffer, without Deno.UnsafePointer,
  // which needs FFI permission for every library, not just libc.
  memcpy: { parameters: ["buffer", "buffer", "usize"], result: "usize" },
  // …and copies from an address (errno's) into a buffer.
  copyFrom: { name: "memcpy", parameters: ["buffer", "usize", "usize"], result: "usize" },
  // The length of a C string at an address (GnuTLS's error messages).
  strlen: { parameters: ["usize"], result: "usize" },
} as const;

/**
 * Where glibc lives on the common distributions (Debian and Ubuntu on x86_64 and arm64,
 * Fedora and RHEL, Arch). `deno task start` and the binary grant FFI for these paths only
 * (`--allow-ffi=…`), and deno.json must list the same (a test checks it).
 */
export const LIBC_PATHS: readonly string[] = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib/libc.so.6",
];

/** The libc functions this server calls. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let libc: Libc | null = null;

/**
 * Loads libc from the first of {@linkcode LIBC_PATHS} that FFI may load here; throws
 * `Deno.errors.NotCapable` when none is granted, or what `Deno.dlopen` threw.
 */
export function loadLibc(): Libc {
  libc ??= loadFirst("libc", LIBC_PATHS, SYMBOLS);
  return libc;
}

/** The flag that grants FFI for libc, as `deno task start` and the binary pass it. */
export const LIBC_FFI_FLAG: string = `--allow-ffi=${LIBC_PATHS.join(",")}`;

/**
 * What libc through FFI (the batched engine, `adjtimex`) lacks here, as a phrase that
 * follows "needs", or null when it can run: Linux on x86_64 or aarch64, with FFI granted
 * for libc, which loads. The portable engine needs none of it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libcMissing } from "./libc.ts";
 *
 * // null where it can run: Linux on x86_64 or aarch64, FFI granted for libc, which loads.
 * const missing = libcMissing();
 * if (missing !== null) assert.match(missing, /^(Linux on|FFI permission for libc|libc\.so\.6)/);
 * if (Deno.build.os !== "linux") assert.match(missing!, /^Linux on x86_64 or aarch64/);
 * ```
 */
export function libcMissing(): string | null {
  const { os, arch } = Deno.build;
  if (os !== "linux" || (arch !== "x86_64" && arch !== "aarch64")) {
    return `Linux on x86_64 or aarch64 (this is ${os} on ${arch})`;
  }
  if (!libraryGranted(LIBC_PATHS)) {
    return `FFI permission for libc: run with ${LIBC_FFI_FLAG} (deno task start and the binary grant it)`;
  }
  try {
    loadLibc();
    return null;
  } catch (error) {
    return `libc.so.6, which did not load: ${error instanceof Error ? error.message : error}`;
  }
}

/** The user this process runs as (its effective uid); throws as {@linkcode loadLibc} does. */
export function effectiveUid(): number {
  return loadLibc().geteuid();
}

/** The calling thread's errno, after a call that failed. */
export function errno(c: Libc): number {
  const value = new Int32Array(1);
  c.copyFrom(value, BigInt(c.__errno_location()), 4n);
  return value[0];
}

/**
 * Writes a 64-bit address (or length) into `ints` at `at` as two 32-bit halves, low first
 * (little-endian): a C struct's pointer field written without a BigInt.
 */
export function writeAddress(ints: Uint32Array, at: number, value: number): void {
  ints[at] = value % 0x1_0000_0000;
  ints[at + 1] = Math.floor(value / 0x1_0000_0000);
}

/** The address of a buffer's first byte (the buffer must stay referenced while it is used). */
export function bufferAddress(c: Libc, bytes: ArrayBufferView): number {
  return Number(c.memcpy(bytes as Uint8Array<ArrayBuffer>, bytes as Uint8Array<ArrayBuffer>, 0n));
}
