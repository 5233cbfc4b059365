// A load generator for the time protocol, in TypeScript: drives one server and prints one JSON result.

import { parseArgs } from "node:util";
import { writeAll } from "../../lib/net.ts";
import { isTimeAnswer, TIME_ANSWER_LENGTH } from "../../protocol.ts";

/** What one load run measured; printed as JSON on stdout. */
export interface LoadResult {
  mode: string;
  /** Requests (or, for churn, connect-TIME-QUIT cycles) completed in the measured window. */
  completed: number;
  /** `completed` per second. */
  rate: number;
  /** Latency percentiles in microseconds. */
  p50: number;
  p99: number;
  p999: number;
  /** Answers that were not `JAM hh:mm:ss\r\n`, connection failures, unexpected closes. */
  errors: number;
  /** For `idle`: connections held, and seconds from the burst's first send to its last answer. */
  held?: number;
  burstSeconds?: number;
  /** For `idle`: server RSS in KiB after start, with all connections held, after the burst. */
  rssBeforeKiB?: number;
  rssLoadedKiB?: number;
  rssAfterKiB?: number;
  /** The server's CPU time per request (per cycle for churn), µs: from the C load generator's `srv_cpu`. */
  serverCpuUsPerRequest?: number;
}

const encoder = new TextEncoder();
const TIME = encoder.encode("TIME\r\n");
const QUIT = encoder.encode("QUIT\r\n");
const ANSWER_LENGTH = TIME_ANSWER_LENGTH;

/** Latency samples in microseconds, kept in a growable typed array. */
class Samples {
  #values = new Float64Array(1 << 16);
  #length = 0;
  add(value: number): void {
    if (this.#length === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.#length++] = value;
  }
  percentile(p: number): number {
    if (this.#length === 0) return 0;
    const sorted = this.#values.slice(0, this.#length).sort();
    return Math.round(sorted[Math.min(this.#length - 1, Math.floor(p * this.#length))] * 10) / 10;
  }
}

interface Window {
  start: number;
  end: number;
}

/**
 * One connection keeping `depth` TIME requests in flight until the window ends;
 * every answer is validated and its latency recorded inside the window.
 */
async function requestLoop(
  hostname: string,
  port: number,
  depth: number,
  window: Window,
  samples: Samples,
  counts: { completed: number; errors: number },
): Promise<void> {
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(true);
  const sent = new Float64Array(depth); // send times of the requests in flight, a ring
  let head = 0;
  let inFlight = 0;
  const batch = new Uint8Array(TIME.length * depth);
  for (let i = 0; i < depth; i++) batch.set(TIME, i * TIME.length);
  const buffer = new Uint8Array(64 * 1024);
  let partial = 0; // bytes of an incomplete answer at the start of buffer
  try {
    let now = performance.now();
    for (let i = 0; i < depth; i++) sent[(head + i) % depth] = now;
    inFlight = depth;
    await writeAll(conn, batch);
    while (inFlight > 0) {
      const n = await conn.read(buffer.subarray(partial));
      if (n === null) {
        counts.errors++;
        return;
      }
      now = performance.now();
      const end = partial + n;
      let answered = 0;
      let i = 0;
      for (; i + ANSWER_LENGTH <= end; i += ANSWER_LENGTH) {
        if (!isTimeAnswer(buffer, i)) {
          counts.errors++;
          return;
        }
        if (now >= window.start && now < window.end) {
          counts.completed++;
          samples.add((now - sent[head]) * 1000);
        }
        head = (head + 1) % depth;
        answered++;
      }
      partial = end - i;
      if (partial > 0) buffer.copyWithin(0, i, end);
      inFlight -= answered;
      if (now < window.end && answered > 0) {
        for (let k = 0; k < answered; k++) sent[(head + inFlight + k) % depth] = now;
        inFlight += answered;
        await writeAll(conn, batch.subarray(0, answered * TIME.length));
      }
    }
    await writeAll(conn, QUIT);
  } catch {
    counts.errors++;
  } finally {
    conn.close();
  }
}

/** Connect, TIME, read the answer, QUIT, wait for the server to close, close; repeat. */
async function churnLoop(
  hostname: string,
  port: number,
  window: Window,
  samples: Samples,
  counts: { completed: number; errors: number },
): Promise<void> {
  const buffer = new Uint8Array(256);
  while (performance.now() < window.end) {
    const started = performance.now();
    let conn: Deno.TcpConn | undefined;
    try {
      conn = await Deno.connect({ hostname, port });
      conn.setNoDelay(true);
      await writeAll(conn, TIME);
      let got = 0;
      while (got < ANSWER_LENGTH) {
        const n = await conn.read(buffer.subarray(got));
        if (n === null) break;
        got += n;
      }
      if (got !== ANSWER_LENGTH || !isTimeAnswer(buffer, 0)) {
        counts.errors++;
        continue;
      }
      await writeAll(conn, QUIT);
      if ((await conn.read(buffer)) !== null) {
        counts.errors++;
        continue;
      }
      const now = performance.now();
      if (now >= window.start && now < window.end) {
        counts.completed++;
        samples.add((now - started) * 1000);
      }
    } catch {
      counts.errors++;
    } finally {
      conn?.close();
    }
  }
}

/**
 * Reads a process's resident set size in KiB with `ps` (Deno allows reading another
 * process's /proc files only with --allow-all); 0 where unknown.
 */
function rssKiB(pid: number): number {
  if (pid <= 0) return 0;
  try {
    const output = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).outputSync();
    return Number(new TextDecoder().decode(output.stdout).trim()) || 0;
  } catch {
    return 0;
  }
}

/** Reads exactly one answer from a connection; false on anything else. */
async function readAnswer(conn: Deno.Conn, buffer: Uint8Array): Promise<boolean> {
  let got = 0;
  while (got < ANSWER_LENGTH) {
    const n = await conn.read(buffer.subarray(got, ANSWER_LENGTH));
    if (n === null) return false;
    got += n;
  }
  return isTimeAnswer(buffer, 0);
}

/**
 * Opens `count` connections (at most 256 handshakes at once), each asking TIME
 * once, holds them for `holdSeconds`, then every one asks TIME again at once.
 * Connections are spread over 127.0.0.1, 127.0.0.2, … so that more than one
 * address's worth of ephemeral ports can be used.
 */
async function idle(
  hostnames: string[],
  port: number,
  count: number,
  holdSeconds: number,
  serverPid: number,
): Promise<LoadResult> {
  const rssBeforeKiB = rssKiB(serverPid);
  const conns: Deno.TcpConn[] = [];
  let errors = 0;
  let next = 0;
  const opener = async () => {
    const local = new Uint8Array(ANSWER_LENGTH);
    while (next < count) {
      const index = next++;
      try {
        const conn = await Deno.connect({ hostname: hostnames[index % hostnames.length], port });
        conns.push(conn);
        await writeAll(conn, TIME);
        if (!(await readAnswer(conn, local))) errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: 256 }, opener));
  await new Promise((resolve) => setTimeout(resolve, holdSeconds * 1000));
  const rssLoadedKiB = rssKiB(serverPid);
  const samples = new Samples();
  const started = performance.now();
  let last = started;
  await Promise.all(conns.map(async (conn) => {
    try {
      await writeAll(conn, TIME);
      const ok = await readAnswer(conn, new Uint8Array(ANSWER_LENGTH));
      if (!ok) errors++;
      last = performance.now();
      samples.add((last - started) * 1000);
    } catch {
      errors++;
    }
  }));
  const rssAfterKiB = rssKiB(serverPid);
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed by the server.
    }
  }
  return {
    mode: "idle",
    completed: conns.length,
    rate: 0,
    p50: samples.percentile(0.5),
    p99: samples.percentile(0.99),
    p999: samples.percentile(0.999),
    errors,
    held: conns.length,
    burstSeconds: Math.round((last - started) / 10) / 100,
    rssBeforeKiB,
    rssLoadedKiB,
    rssAfterKiB,
  };
}

/** Runs one load as the flags say and returns what it measured. */
export async function runLoad(args: string[]): Promise<LoadResult> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      mode: { type: "string", default: "rr" },
      connections: { type: "string", default: "50" },
      depth: { type: "string", default: "1" },
      duration: { type: "string", default: "5" },
      warmup: { type: "string", default: "1" },
      "server-pid": { type: "string", default: "0" },
      "hold": { type: "string", default: "2" },
      "addresses": { type: "string", default: "1" },
    },
  });
  const port = Number(values.port);
  const connections = Number(values.connections);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  if (values.mode === "idle") {
    const addresses = Number(values.addresses);
    const hostnames = addresses > 1
      ? Array.from({ length: addresses }, (_, i) => `127.0.0.${i + 1}`)
      : [values.host];
    return await idle(
      hostnames,
      port,
      connections,
      Number(values.hold),
      Number(values["server-pid"]),
    );
  }
  const now = performance.now();
  const window = { start: now + warmup * 1000, end: now + (warmup + duration) * 1000 };
  const samples = new Samples();
  const counts = { completed: 0, errors: 0 };
  const loops = Array.from(
    { length: connections },
    () =>
      values.mode === "churn"
        ? churnLoop(values.host, port, window, samples, counts)
        : requestLoop(values.host, port, Number(values.depth), window, samples, counts),
  );
  await Promise.all(loops);
  return {
    mode: values.mode,
    completed: counts.completed,
    rate: Math.round(counts.completed / duration),
    p50: samples.percentile(0.5),
    p99: samples.percentile(0.99),
    p999: samples.percentile(0.999),
    errors: counts.errors,
  };
}

if (import.meta.main) {
  console.log(JSON.stringify(await runLoad(Deno.args)));
}
