// Datagrams with a forged source port, as an attacker sends them to start a loop between
// two servers: a raw IPv4 socket through libc (root only), on loopback.

import { LIBC_PATHS } from "../lib/libc.ts";
import { loadFirst } from "../lib/libraries.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

const AF_INET = 2;
const SOCK_RAW = 3;
const IPPROTO_UDP = 17;

/**
 * Whether this process may send raw datagrams (root, or CAP_NET_RAW, with FFI for libc).
 * Tests that need {@linkcode sendSpoofed} are skipped, saying so, where it may not.
 */
export function spoofingAllowed(): boolean {
  try {
    const c = loadFirst("libc", LIBC_PATHS, SYMBOLS);
    const fd = c.socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
    if (fd < 0) return false;
    c.close(fd);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends one UDP datagram to 127.0.0.1 `toPort` that claims to come from 127.0.0.1
 * `fromPort`, a port another socket holds: the kernel fills in the IP header, this the
 * UDP one (checksum 0, which IPv4 allows). Throws when the raw socket cannot be made.
 */
export function sendSpoofed(fromPort: number, toPort: number, payload: Uint8Array): void {
  const c = loadFirst("libc", LIBC_PATHS, SYMBOLS);
  const fd = c.socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
  if (fd < 0) throw new Error("a raw socket needs root (CAP_NET_RAW)");
  try {
    const packet = new Uint8Array(8 + payload.length);
    const view = new DataView(packet.buffer);
    view.setUint16(0, fromPort);
    view.setUint16(2, toPort);
    view.setUint16(4, packet.length);
    packet.set(payload, 8);
    const address = new Uint8Array(16);
    new DataView(address.buffer).setUint16(0, AF_INET, true);
    address.set([127, 0, 0, 1], 4);
    const sent = c.sendto(fd, packet, BigInt(packet.length), 0, address, address.length);
    if (Number(sent) !== packet.length) throw new Error("sendto failed");
  } finally {
    c.close(fd);
  }
}
