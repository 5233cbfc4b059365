// Helpers for tests that ask the server the time with tools nobody here wrote (rdate, chronyd,
// sntp, ntpdate, ntpdig, busybox, nc), and with hand-made datagrams.

import { referenceId } from "../time/ntp.ts";
import { mmsgSupported } from "../server/udp/mmsg.ts";

/** The UDP engines the SNTP tests run on: both where the batched one can run. */
export const UDP_ENGINES: readonly ("deno" | "mmsg")[] = mmsgSupported()
  ? ["deno", "mmsg"]
  : ["deno"];

export {
  chronydMeasure,
  chronydOffset,
  hasTool,
  runTool,
  type ToolResult,
} from "../tools/time_clients.ts";

/**
 * The largest offset a client may measure against the server, in seconds, by UDP engine.
 * The batched engine stamps packets in the kernel: 1 ms, and it has never come close. The
 * portable one stamps them in JavaScript, where an idle vCPU can take milliseconds to wake
 * (2 of 90 single samples over 1 ms here, up to 2.5 ms): 20 ms still catches every wrong
 * timestamp field (a wrong second, era or byte order, the 250 ms coarse clock), and how
 * accurate it is belongs to the benchmark, which reports it (`deno task bench --scenario ntp`).
 */
export const OFFSET_LIMIT = { mmsg: 0.001, deno: 0.020 } as const;

/** Logs why a test is skipped, so that a skipped test is never silent. */
export function skipUnless(ready: boolean, why: string): boolean {
  if (!ready) console.log(`SKIPPED: ${why}`);
  return !ready;
}

/** Options of {@linkcode ntpRequest}. */
export interface RequestOptions {
  version?: number;
  mode?: number;
  poll?: number;
  length?: number;
  /** The transmit timestamp, as 8 bytes; random when left out. */
  transmit?: Uint8Array;
}

/** A client request as a real client makes one, with a random transmit timestamp. */
export function ntpRequest(options: RequestOptions = {}): Uint8Array {
  const { version = 4, mode = 3, poll = 6, length = 48 } = options;
  const packet = new Uint8Array(length);
  packet[0] = (version << 3) | mode;
  packet[2] = poll;
  if (length >= 48) packet.set(options.transmit ?? crypto.getRandomValues(new Uint8Array(8)), 40);
  return packet;
}

/** The fields of an NTP reply a test looks at. */
export interface NtpReply {
  length: number;
  leap: number;
  version: number;
  mode: number;
  stratum: number;
  poll: number;
  precision: number;
  referenceId: string;
  originate: Uint8Array;
  /** Receive and transmit timestamps as ms since the epoch (era 0). */
  receive: number;
  transmit: number;
}

/** Decodes the header of an NTP reply. */
export function parseNtpReply(bytes: Uint8Array): NtpReply {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const time = (offset: number) =>
    (view.getUint32(offset) - 2_208_988_800) * 1000 + view.getUint32(offset + 4) / 4_294_967.296;
  return {
    length: bytes.length,
    leap: bytes[0] >> 6,
    version: (bytes[0] >> 3) & 7,
    mode: bytes[0] & 7,
    stratum: bytes[1],
    poll: bytes[2],
    precision: view.getInt8(3),
    referenceId: new TextDecoder().decode(bytes.subarray(12, 16)),
    originate: bytes.slice(24, 32),
    receive: time(32),
    transmit: time(40),
  };
}

/** The reference ID of a kiss code, for comparing with {@linkcode NtpReply.referenceId}. */
export const RATE_KISS: number = referenceId("RATE");

/**
 * A UDP socket bound to a loopback address, for asking a server and reading its replies;
 * closed by `using`.
 */
export function udpClient(hostname = "127.0.0.1"): Deno.DatagramConn & Disposable {
  const socket = Deno.listenDatagram({ hostname, port: 0, transport: "udp" });
  return Object.assign(socket, {
    [Symbol.dispose]() {
      try {
        socket.close();
      } catch {
        // Closed already.
      }
    },
  });
}

/** Sends one datagram and waits for one reply (up to `ms`); null when none came. */
export async function exchangeDatagram(
  socket: Deno.DatagramConn,
  port: number,
  payload: Uint8Array,
  ms = 2000,
  hostname = "127.0.0.1",
): Promise<Uint8Array | null> {
  await socket.send(payload, { transport: "udp", hostname, port });
  return await receiveWithin(socket, ms);
}

/**
 * The next datagram on the socket, or null if none arrives within `ms`. Used to show that
 * nothing comes back, after the server's counters prove it has handled the request.
 */
export async function receiveWithin(
  socket: Deno.DatagramConn,
  ms: number,
): Promise<Uint8Array | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
  try {
    const received = await Promise.race([socket.receive(), timeout]);
    return received === null ? null : received[0];
  } finally {
    clearTimeout(timer);
  }
}

/** The FFI permission flag of deno.json's start task: libc only. */
export function ffiFlag(): string {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  const flag = (config.tasks.start as string).split(/\s+/).find((word) =>
    word.startsWith("--allow-ffi")
  );
  if (!flag) throw new Error("deno.json's start task grants no FFI");
  return flag;
}
