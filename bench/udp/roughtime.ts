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
  /** Responses per SREP signature (Roughtime only). */
  batch: number;
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
 * Per run, each server in turn: this server's Roughtime with `mmsg` and with `deno` under the
 * Deno load generator (16 sockets × 32 outstanding, every response verified, signatures
 * checked once per batch), and its plain SNTP (`mmsg`) under `bench/udp/ntp_loadgen.ts`.
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
  return servers.map((server, i) => {
    const runs = results[i].runs;
    const rate = median(runs.map((r) => r.rate));
    const serverCpu = median(runs.map((r) => r.serverCpu));
    const batch = median(runs.map((r) => r.signatures > 0 ? r.valid / r.signatures : 0));
    return {
      server: server.label,
      rate,
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      serverCpu,
      cpuPerResponse: rate > 0 ? serverCpu * 1e6 / rate : 0,
      batch,
      lost: runs.reduce((sum, r) => sum + r.lost, 0),
      invalid: runs.reduce((sum, r) => sum + r.invalid, 0),
      failed: results[i].failed || runs.length === 0,
    };
  });
}

/** The scenario's table. */
export function roughtimeTable(rows: RoughtimeRow[]): string {
  const lines = [
    "| server | responses/s | p50 / p99 µs | server CPU | CPU µs per response | batch |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.server}${row.failed ? " FAILED" : ""} | ${format(row.rate)} | ${
        format(row.p50)
      } / ` +
        `${format(row.p99)} | ${format(row.serverCpu, 2)} | ${format(row.cpuPerResponse, 1)} | ` +
        `${row.batch > 0 ? format(row.batch, 1) : "–"} |`,
    );
  }
  return lines.join("\n");
}
