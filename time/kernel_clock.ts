// The kernel's clock synchronisation state (adjtimex, read only), through FFI for libc.

import { errno, libcMissing, loadLibc } from "../lib/libc.ts";

const EPERM = 1;

/** What the kernel says of the system clock's synchronisation (`adjtimex`, read only). */
export interface KernelClockState {
  /** `TIME_OK` 0, `TIME_INS` 1 and `TIME_DEL` 2 (a leap second tonight), `TIME_ERROR` 5, … */
  state: number;
  /** False when `STA_UNSYNC` is set or the state is `TIME_ERROR`: no daemon disciplines it. */
  synchronised: boolean;
  /** The kernel's maximum error estimate, seconds (set by ntpd or chronyd, grows by 500 ppm). */
  maxError: number;
  /** The kernel's estimated error, seconds. */
  estimatedError: number;
}

/** `struct timex` on Linux LP64: 208 bytes; the offsets below are from <sys/timex.h>. */
const TIMEX_SIZE = 208;
const STA_UNSYNC = 0x40;
const TIME_ERROR = 5;

/**
 * Reads the kernel's clock synchronisation state with `adjtimex` and `modes` = 0, which
 * changes nothing and needs no privilege. Null where the batched engine's libc is not
 * available (not Linux, or no FFI permission). Throws when the call fails: a seccomp
 * filter such as systemd's `ProtectClock=yes` refuses `adjtimex` even for reading (EPERM).
 */
export function readKernelClock(): KernelClockState | null {
  if (libcMissing() !== null) return null;
  const c = loadLibc();
  const timex = new Uint8Array(TIMEX_SIZE);
  const state = c.adjtimex(timex);
  if (state < 0) {
    const code = errno(c);
    throw new Error(
      code === EPERM
        ? "adjtimex was refused (EPERM): a seccomp filter, such as systemd's ProtectClock=yes, blocks it even for reading"
        : `adjtimex failed (errno ${code})`,
    );
  }
  const view = new DataView(timex.buffer);
  const long = (offset: number) =>
    view.getUint32(offset, true) + view.getInt32(offset + 4, true) * 0x1_0000_0000;
  const status = view.getInt32(40, true);
  return {
    state,
    synchronised: state !== TIME_ERROR && (status & STA_UNSYNC) === 0,
    maxError: long(24) / 1e6,
    estimatedError: long(32) / 1e6,
  };
}
