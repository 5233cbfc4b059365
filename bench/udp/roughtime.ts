// The `roughtime` scenario of `deno task bench`: Roughtime on both UDP engines, with this
// server's plain SNTP in the same run as the reference for CPU per request.

import { startCommand } from "../../tools/start_task.ts";
import { freePort } from "../../lib/net.ts";
import { spawnServer, stopServer, waitForPort } from "../common/servers.ts";
import { format, median } from "../common/stats.ts";
import { load as ntpLoad } from "./ntp.ts";
import type { RoughtimeLoadResult } from "./roughtime_loadgen.ts";
import { generateKeyPair } from "../../roughtime/response.ts";
import { encodePublicKey } from "../../roughtime/key_file.ts";
import { NETTLE_PATHS } from "../../nts/aead.ts";
import { LIBC_PATHS } from "../../lib/libc.ts";

const root = new URL("../..", import.meta.url).pathname;
const loadgenModule = new URL("./roughtime_loadgen.ts", import.meta.url).pathname;
const SHAPE = { sockets: 16, window: 32 };
/** Roughtime requests outstanding, from one socket: up to eight of the server's batches of 64. */
const ROUGHTIME_WINDOW = 512;

/** One server's medians over the runs. */
export interface RoughtimeRow {
  server: string;
  rate: number;
  p50: number;
  p99: number;
  serverCpu: number;
  /** The server's CPU per response, µs. */
  cpuPerResponse: number;
  /** Responses per SREP signature, and signatures per second (Roughtime only). */
  batch: number;
  signatureRate: number;
  /** Summed over the runs: requests given up after 500 ms, and responses that did not verify. */
  lost: number;
  invalid: number;
  failed: boolean;
}

async function roughtimeLoad(
  port: number,
  pid: number,
  key: string,
  seconds: number,
  pin: boolean,
): Promise<RoughtimeLoadResult> {
  let argv = [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--unstable-net",
    "--allow-run=cat",
    `--allow-ffi=${[...LIBC_PATHS, ...NETTLE_PATHS].join(",")}`,
    loadgenModule,
    "--port",
    String(port),
    "--key",
    key,
    "--window",
    String(ROUGHTIME_WINDOW),
    "--duration",
    String(seconds),
    "--server-pid",
    String(pid),
  ];
  if (pin) argv = ["taskset", "-c", "1", ...argv];
  const output = await new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
  const text = new TextDecoder().decode(output.stdout).trim().split("\n").pop() ?? "";
  if (!output.success || text === "") {
    throw new Error(`roughtime load generator: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return JSON.parse(text) as RoughtimeLoadResult;
}

/**
 * Per run, each server in turn: this server's Roughtime with `mmsg` and with `deno` under
 * `bench/udp/roughtime_loadgen.ts` ({@linkcode roughtimeHeading}: every response verified,
 * a batch's signature checked once), and its plain SNTP (`mmsg`) under the C
 * `ntp_loadgen` where given, else `bench/udp/ntp_loadgen.ts`.
 */
export async function roughtimeBench(
  options: { runs: number; duration: number; pin: boolean; ntpLoadgen?: string },
): Promise<RoughtimeRow[]> {
  const longTerm = generateKeyPair();
  const keyFile = `${root}bench/runs/roughtime-${crypto.randomUUID()}.key`;
  await Deno.mkdir(`${root}bench/runs`, { recursive: true });
  const hex = Array.from(longTerm.seed, (byte) => byte.toString(16).padStart(2, "0")).join("");
  await Deno.writeTextFile(keyFile, `${hex}\n`, { mode: 0o600 });
  await Deno.chmod(keyFile, 0o600);
  const publicKey = encodePublicKey(longTerm.publicKey);
  const servers = [
    { label: "Roughtime (--udp-engine mmsg)", engine: "mmsg", roughtime: true },
    { label: "Roughtime (--udp-engine deno)", engine: "deno", roughtime: true },
    { label: "plain SNTP (mmsg), reference", engine: "mmsg", roughtime: false },
  ];
  const results = servers.map(() => ({ runs: [] as RoughtimeLoadResult[], failed: false }));
  try {
    for (let run = 0; run < options.runs; run++) {
      for (const [i, server] of servers.entries()) {
        const port = freePort(), tcp = freePort();
        const service = server.roughtime
          ? ["--roughtime-port", String(port), "--roughtime-key", keyFile]
          : ["--ntp-port", String(port)];
        const command = [
          ...startCommand(),
          "--port",
          String(tcp),
          ...service,
          "--udp-engine",
          server.engine,
          "--log-level",
          "warn",
        ];
        const child = spawnServer(options.pin ? ["taskset", "-c", "0", ...command] : command);
        try {
          await waitForPort(tcp, child);
          const measure = (seconds: number) =>
            server.roughtime
              ? roughtimeLoad(port, child.pid, publicKey, seconds, options.pin)
              : ntpLoad(port, child.pid, { ...SHAPE, seconds }, {
                loadgen: options.ntpLoadgen,
                pin: options.pin,
              }).then((r) => ({ ...r, signatures: 0, late: 0 }));
          await measure(1);
          const result = await measure(options.duration);
          results[i].runs.push(result);
          if (result.invalid > 0) results[i].failed = true;
        } catch (error) {
          console.error(`bench roughtime: ${server.label}: ${error}`);
          results[i].failed = true;
        } finally {
          await stopServer(child);
        }
      }
    }
  } finally {
    await Deno.remove(keyFile).catch(() => {});
  }
  return servers.map((server, i) => summarize(server.label, results[i].runs, results[i].failed));
}

/** One server's row: medians over its runs, and what was lost or invalid summed. */
function summarize(label: string, runs: RoughtimeLoadResult[], failed: boolean): RoughtimeRow {
  const rate = median(runs.map((r) => r.rate));
  const serverCpu = median(runs.map((r) => r.serverCpu));
  return {
    server: label,
    rate,
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    serverCpu,
    cpuPerResponse: rate > 0 ? serverCpu * 1e6 / rate : 0,
    batch: median(runs.map((r) => r.signatures > 0 ? r.valid / r.signatures : 0)),
    signatureRate: median(runs.map((r) => r.valid > 0 ? r.signatures * r.rate / r.valid : 0)),
    lost: runs.reduce((sum, r) => sum + r.lost, 0),
    invalid: runs.reduce((sum, r) => sum + r.invalid, 0),
    failed: failed || runs.length === 0,
  };
}

/** The line above the scenario's table: who drives what. */
export function roughtimeHeading(ntpLoadgen: string | undefined): string {
  return `roughtime: bench/udp/roughtime_loadgen.ts (sendmmsg/recvmmsg), ${ROUGHTIME_WINDOW} ` +
    `outstanding from one socket, every response verified; SNTP: ` +
    `${ntpLoadgen ?? "bench/udp/ntp_loadgen.ts"} (${SHAPE.sockets} × ${SHAPE.window})`;
}

/**
 * The scenario's table. The last row (plain SNTP) is what CPU per response is compared with,
 * when its load generator kept the server busy: at a lower rate a server spends more per request.
 */
export function roughtimeTable(rows: RoughtimeRow[]): string {
  const reference = rows.at(-1)!;
  const saturated = reference.serverCpu >= 0.9;
  const lines = [
    "| server | responses/s | p50 / p99 µs | server CPU | CPU µs per response | × SNTP's | batch | signatures/s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    const signed = row.batch > 0;
    const ratio = saturated ? format(row.cpuPerResponse / reference.cpuPerResponse, 2) : "–";
    lines.push(
      `| ${row.server}${row.failed ? " FAILED" : ""} | ${format(row.rate)} | ${
        format(row.p50)
      } / ` +
        `${format(row.p99)} | ${format(row.serverCpu, 2)} | ${format(row.cpuPerResponse, 1)} | ` +
        `${ratio} | ${signed ? format(row.batch, 1) : "–"} | ` +
        `${signed ? format(row.signatureRate) : "–"} |`,
    );
  }
  if (!saturated) {
    lines.push(
      `\nSNTP's load generator kept the server ${format(reference.serverCpu, 2)} busy, not ` +
        "saturated: no ratio. The C one (--ntp-loadgen) saturates it.",
    );
  }
  return lines.join("\n");
}
