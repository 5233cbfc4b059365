// An SNTP load generator in TypeScript: closed loop, validates every reply, prints one JSON
// result. The C one (shared/bench/ntp_loadgen.c) is faster; this one needs nothing but Deno.

import { parseArgs } from "node:util";
import { PreciseClock } from "../../time/clock.ts";
import { readTimestamp, writeTimestamp } from "../../time/ntp.ts";

/** What one SNTP load run measured; printed as JSON on stdout. */
export interface NtpLoadResult {
  /** Valid replies received in the measured window, per second. */
  rate: number;
  /** Round-trip percentiles of valid replies, µs. */
  p50: number;
  p99: number;
  /** Requests sent, valid and invalid replies, and requests never answered. */
  sent: number;
  valid: number;
  invalid: number;
  lost: number;
  /** NTP offsets ((T2−T1)+(T3−T4))/2 of valid replies, µs: median and the largest |offset|. */
  offsetP50: number;
  offsetMaxAbs: number;
  /** The server's CPU use in cores over the window, from /proc (−1 when unknown). */
  serverCpu: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** The server's user+system CPU time in seconds, from /proc/PID/stat (via cat). */
export function cpuSeconds(pid: number): number {
  try {
    const output = new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).outputSync();
    const fields = new TextDecoder().decode(output.stdout).split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** One run's shared state: the clock, the target, when it ends, and what it counted. */
interface NtpRun {
  clock: PreciseClock;
  to: Deno.NetAddr;
  end: number;
  window: number;
  counts: { sent: number; valid: number; invalid: number; lost: number };
  rtts: number[];
  offsets: number[];
}

/** Keeps `run.window` requests outstanding on one socket until the run ends. */
async function loadOneSocket(run: NtpRun): Promise<void> {
  const socket = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  // Outstanding requests by the low 32 bits of their transmit timestamp (unique per socket).
  const outstanding = new Map<number, { sentAt: number; t1: number }>();
  let serial = 0;
  const send = async () => {
    const request = new Uint8Array(48);
    request[0] = (4 << 3) | 3;
    const t1 = run.clock.now();
    writeTimestamp(request, 40, t1);
    // The fraction carries a serial number instead (T1 is kept here): the server must
    // echo it verbatim, and it tells the outstanding requests apart.
    const id = serial = (serial + 1) >>> 0;
    new DataView(request.buffer).setUint32(44, id);
    outstanding.set(id, { sentAt: performance.now(), t1 });
    run.counts.sent++;
    await socket.send(request, run.to);
  };
  for (let i = 0; i < run.window; i++) await send();
  // Every 50 ms: requests unanswered for 500 ms are lost (and replaced while the window
  // lasts); after the window, the socket closes once nothing is outstanding or 600 ms on.
  const expire = setInterval(() => {
    const now = performance.now();
    for (const [id, request] of outstanding) {
      if (request.sentAt < now - 500) {
        outstanding.delete(id);
        run.counts.lost++;
        if (now < run.end) send().catch(() => {});
      }
    }
    if (now >= run.end && (outstanding.size === 0 || now >= run.end + 600)) socket.close();
  }, 50);
  try {
    for (;;) {
      let reply: Uint8Array;
      try {
        reply = (await socket.receive())[0];
      } catch {
        break; // closed
      }
      const t4 = run.clock.now();
      const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
      const id = reply.length >= 48 ? view.getUint32(28) : -1;
      const request = outstanding.get(id);
      if (request === undefined || !isServerReply(reply)) {
        run.counts.invalid++;
        continue;
      }
      outstanding.delete(id);
      const now = performance.now();
      if (now <= run.end) {
        run.counts.valid++;
        run.rtts.push((now - request.sentAt) * 1000);
        const t2 = readTimestamp(reply, 32, t4);
        const t3 = readTimestamp(reply, 40, t4);
        run.offsets.push(((t2 - request.t1) + (t3 - t4)) / 2 * 1000);
        send().catch(() => {});
      }
    }
  } finally {
    clearInterval(expire);
  }
}

/**
 * Keeps `window` requests outstanding on each of `sockets` sockets for `seconds`; a request
 * unanswered after 500 ms is lost and replaced.
 */
export async function runNtpLoad(options: {
  hostname: string;
  port: number;
  sockets: number;
  window: number;
  seconds: number;
  serverPid?: number;
}): Promise<NtpLoadResult> {
  const clock = new PreciseClock();
  const { hostname, port } = options;
  const to = { transport: "udp" as const, hostname, port };
  const cpuBefore = options.serverPid ? cpuSeconds(options.serverPid) : NaN;
  const started = performance.now();
  const end = started + options.seconds * 1000;
  const run: NtpRun = {
    clock,
    to,
    end,
    window: options.window,
    counts: { sent: 0, valid: 0, invalid: 0, lost: 0 },
    rtts: [],
    offsets: [],
  };
  const loops = Array.from({ length: options.sockets }, () => loadOneSocket(run));
  await Promise.all(loops);
  const elapsed = Math.min(performance.now(), end) - started;
  const cpuAfter = options.serverPid ? cpuSeconds(options.serverPid) : NaN;
  const cpu = Number.isNaN(cpuBefore) ? -1 : (cpuAfter - cpuBefore) / (elapsed / 1000);
  return summarise(run.counts, run.rtts, run.offsets, elapsed, cpu);
}

/** Whether a datagram is an SNTPv4 server reply (mode 4) from a synchronised stratum 1–15. */
function isServerReply(reply: Uint8Array): boolean {
  return reply.length >= 48 && (reply[0] & 7) === 4 && ((reply[0] >> 3) & 7) === 4 &&
    reply[1] >= 1 && reply[1] <= 15 && reply[0] >> 6 !== 3;
}

/** The run's result: rates, round trips (µs), offsets (µs) and the server's CPU (cores, -1: unknown). */
function summarise(
  counts: { sent: number; valid: number; invalid: number; lost: number },
  rtts: number[],
  offsets: number[],
  elapsedMs: number,
  cpu: number,
): NtpLoadResult {
  const sortedRtt = Float64Array.from(rtts).sort();
  const sortedOffsets = Float64Array.from(offsets).sort();
  const maxAbs = offsets.reduce((max, offset) => Math.max(max, Math.abs(offset)), 0);
  return {
    rate: Math.round(counts.valid / (elapsedMs / 1000)),
    p50: Math.round(percentile(sortedRtt, 0.5)),
    p99: Math.round(percentile(sortedRtt, 0.99)),
    ...counts,
    offsetP50: Math.round(percentile(sortedOffsets, 0.5) * 10) / 10,
    offsetMaxAbs: Math.round(maxAbs * 10) / 10,
    serverCpu: cpu === -1 ? -1 : Math.round(cpu * 100) / 100,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      sockets: { type: "string", default: "8" },
      window: { type: "string", default: "16" },
      duration: { type: "string", default: "5" },
      "server-pid": { type: "string" },
    },
  });
  if (!values.port) {
    console.error("ntp_loadgen: --port is required");
    Deno.exit(2);
  }
  const result = await runNtpLoad({
    hostname: values.host,
    port: Number(values.port),
    sockets: Number(values.sockets),
    window: Number(values.window),
    seconds: Number(values.duration),
    serverPid: values["server-pid"] ? Number(values["server-pid"]) : undefined,
  });
  console.log(JSON.stringify(result));
}
