// The server asked the time by clients nobody here wrote: rdate, busybox rdate, chronyd,
// nc, and (in a throwaway network namespace, for port 123) sntp, ntpdate and ntpdig.
// None of them may set the clock: testing/time_clients.ts refuses any command line that could.

import assert from "node:assert/strict";
import { createLogger } from "../lib/log.ts";
import { serve, type ServerOptions, type TimeServer } from "./server.ts";
import {
  chronydMeasure,
  chronydOffset,
  ffiFlag,
  hasTool,
  ntpRequest,
  OFFSET_LIMIT,
  runTool,
  skipUnless,
  UDP_ENGINES as ENGINES,
  udpClient,
} from "../testing/time_clients.ts";

function start(options: ServerOptions = {}): TimeServer {
  return serve({
    hostname: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "error" }),
    ...options,
  });
}

/** Reads the date rdate and busybox print (`Wed Nov 25 06:02:19 [UTC ]2026`), run with TZ=UTC. */
function parsePrintedDate(output: string): number {
  const match = output.match(/(\w{3}) +(\d{1,2}) (\d\d:\d\d:\d\d) (?:UTC )?(\d{4})/);
  if (!match) throw new Error(`no date in ${JSON.stringify(output)}`);
  return Date.parse(`${match[1]} ${match[2]} ${match[4]} ${match[3]} UTC`);
}

/**
 * Runs a client that prints the date it was told, and checks that the date lies within the
 * run: these clients print whole seconds, so no earlier than the second the run began in
 * and no later than the second it ended in (some wait after the answer, e.g. `nc -w`).
 */
async function assertPrintsNow(what: string, run: () => Promise<string>): Promise<string> {
  const began = Date.now();
  const output = await run();
  const ended = Date.now();
  const printed = parsePrintedDate(output);
  const from = Math.floor(began / 1000) * 1000;
  const to = Math.ceil(ended / 1000) * 1000;
  assert.ok(
    printed >= from && printed <= to,
    `${what} printed ${output.trim()}, run from ${new Date(began).toISOString()} to ${
      new Date(ended).toISOString()
    }`,
  );
  return output;
}

async function rdate(args: string[]): Promise<string> {
  const result = await runTool("rdate", args, 10_000);
  assert.equal(result.code, 0, `rdate ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const haveRdate = hasTool("rdate");
Deno.test({
  name: "rdate reads the time over RFC 868 on TCP",
  ignore: skipUnless(haveRdate, "rdate is not installed"),
  async fn() {
    await using server = start({ timePort: 0 });
    await assertPrintsNow("rdate", () => rdate(["-p", "-o", `${server.ports.time}`, "127.0.0.1"]));
    assert.equal(server.stats.requestsRfc868, 1);
  },
});

for (const engine of ENGINES) {
  Deno.test({
    name: `[${engine}] rdate reads the time over RFC 868 on UDP, and over SNTP`,
    ignore: skipUnless(haveRdate, "rdate is not installed"),
    async fn() {
      await using server = start({ timePort: 0, ntpPort: 0, udpEngine: engine });
      const { time, ntp } = server.ports;
      await assertPrintsNow("rdate -u", () => rdate(["-p", "-u", "-o", `${time}`, "127.0.0.1"]));
      await assertPrintsNow("rdate -n", () => rdate(["-p", "-n", "-o", `${ntp}`, "127.0.0.1"]));
      assert.equal(server.stats.requestsRfc868, 1);
      assert.ok(server.stats.requestsNtp >= 1);
    },
  });
}

Deno.test({
  name: "busybox rdate reads the time over RFC 868",
  ignore: skipUnless(hasTool("busybox"), "busybox is not installed"),
  async fn() {
    await using server = start({ timePort: 0 });
    await assertPrintsNow("busybox rdate", async () => {
      const result = await runTool("busybox", ["rdate", "-p", `127.0.0.1:${server.ports.time}`]);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout;
    });
  },
});

for (const engine of ENGINES) {
  Deno.test({
    name: `[${engine}] nc reads the daytime line over TCP and UDP`,
    ignore: skipUnless(hasTool("nc"), "nc is not installed"),
    async fn() {
      await using server = start({ daytimePort: 0, udpEngine: engine, timeZone: "UTC" });
      const port = `${server.ports.daytime}`;
      const line = /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$/;
      const tcp = await assertPrintsNow(
        "nc",
        async () => (await runTool("nc", ["-w", "2", "127.0.0.1", port])).stdout,
      );
      assert.match(tcp, line);
      // nc -u waits its -w second after the answer before it exits.
      const udp = await assertPrintsNow("nc -u", async () => {
        const args = ["-u", "-w", "1", "127.0.0.1", port];
        return (await runTool("nc", args, 10_000, new Uint8Array([10]))).stdout;
      });
      assert.match(udp, line);
    },
  });
}

const haveChronyd = hasTool("chronyd");
Deno.test({
  name: "chronyd -Q measures a small offset against the server, with either UDP engine",
  ignore: skipUnless(haveChronyd, "chronyd is not installed"),
  async fn() {
    await Promise.all(ENGINES.map(async (engine) => {
      await using server = start({ ntpPort: 0, udpEngine: engine });
      const offset = await chronydOffset(server.ports.ntp!);
      assert.ok(
        Math.abs(offset) < OFFSET_LIMIT[engine],
        `[${engine}] chronyd -Q: offset ${offset} s`,
      );
      assert.ok(server.stats.requestsNtp >= 1, `[${engine}] ${server.stats.requestsNtp} answered`);
    }));
  },
});

Deno.test({
  name: "chronyd -x asking for interleaved mode (xleave) gets it, with either UDP engine",
  ignore: skipUnless(haveChronyd, "chronyd is not installed"),
  async fn() {
    await Promise.all(ENGINES.map(async (engine) => {
      await using server = start({ ntpPort: 0, udpEngine: engine });
      // 16 polls a second for 3 s; the third exchange is the first that can be interleaved.
      const { measurements, output } = await chronydMeasure({
        port: server.ports.ntp!,
        xleave: true,
        seconds: 3,
      });
      const interleaved = measurements.filter((m) => m.interleaved).length;
      assert.ok(
        measurements.length >= 10,
        `[${engine}] ${measurements.length} measurements:\n${output}`,
      );
      assert.ok(
        interleaved >= measurements.length / 2,
        `[${engine}] ${interleaved} of ${measurements.length} interleaved`,
      );
      assert.equal(server.stats.ntpInterleaved >= interleaved, true);
      for (const { offset } of measurements) {
        assert.ok(Math.abs(offset) < OFFSET_LIMIT[engine], `[${engine}] offset ${offset} s`);
      }
    }));
  },
});

Deno.test({
  name: "a client over the rate limit is limited while chronyd -Q still syncs",
  ignore: skipUnless(haveChronyd, "chronyd is not installed"),
  async fn() {
    await using server = start({
      hostname: "0.0.0.0",
      ntpPort: 0,
      rateLimit: { interval: 2, burst: 8 },
      rateLeak: 0,
    });
    const port = server.ports.ntp!;
    using abuser = udpClient("127.0.0.2");
    let answered = 0;
    const counting = (async () => {
      try {
        for (;;) {
          await abuser.receive();
          answered++;
        }
      } catch {
        // Closed at the end of the test.
      }
    })();
    const began = performance.now();
    let sent = 0;
    const flood = setInterval(() => {
      for (let i = 0; i < 50; i++, sent++) {
        abuser.send(ntpRequest(), { transport: "udp", hostname: "127.0.0.1", port }).catch(
          () => {},
        );
      }
    }, 20);
    let offset;
    try {
      offset = await chronydOffset(port);
    } finally {
      clearInterval(flood);
    }
    const seconds = (performance.now() - began) / 1000;
    abuser.close();
    await counting;
    const limit = OFFSET_LIMIT[server.udpEngine];
    assert.ok(Math.abs(offset) < limit, `[${server.udpEngine}] chronyd -Q: offset ${offset} s`);
    // A burst of 8, then one per 2 s: everything else was dropped.
    assert.ok(
      answered <= 8 + Math.ceil(seconds / 2) + 1,
      `${answered} of ${sent} answered in ${seconds} s`,
    );
    assert.ok(sent > 1000, `only ${sent} sent`);
    assert.ok(
      server.stats.rateLimitedNtp >= sent - answered - 50,
      `${server.stats.rateLimitedNtp} limited`,
    );
  },
});

/** Whether this process may make a network namespace (root, and the kernel allows it). */
function namespacesAllowed(): boolean {
  try {
    return new Deno.Command("unshare", { args: ["-n", "true"], stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

const portOneTwoThree = ["sntp", "ntpdate", "ntpdig", "ip"].every(hasTool) && namespacesAllowed();
for (const engine of ENGINES) {
  Deno.test({
    name:
      `[${engine}] sntp, ntpdate -q and ntpdig read the time from port 123 in a network namespace`,
    ignore: skipUnless(
      portOneTwoThree,
      "sntp/ntpdate/ntpdig/ip missing, or network namespaces (unshare -n) not allowed here",
    ),
    async fn() {
      const runner = new URL("../testing/namespace_clients.ts", import.meta.url).pathname;
      const output = await new Deno.Command("unshare", {
        args: [
          "-n",
          Deno.execPath(),
          "run",
          "--unstable-net",
          "--allow-net",
          "--allow-run",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          ffiFlag(),
          runner,
          engine,
        ],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.ok(output.success, `the namespace runner failed:\n${stderr}`);
      const results = JSON.parse(new TextDecoder().decode(output.stdout));
      // Each takes one or a few samples, so a pause of the client between its own
      // timestamps (a busy machine) shows in the offset: that much is within the
      // synchronisation distance it reports, half the round trip at least, beyond which
      // only the server's error may lie.
      // sntp and ntpdate -q print "DATE TIME (+0000) +0.000029 +/- 0.000271 127.0.0.1 s10 no-leap".
      for (const tool of ["sntp", "ntpdate"]) {
        const { code, stdout, stderr } = results[tool];
        assert.equal(code, 0, `${tool}: ${stdout}${stderr}`);
        const match = stdout.match(/([+-]\d+\.\d+) \+\/- (\d+\.\d+) 127\.0\.0\.1 s10 no-leap/);
        assert.ok(match, `${tool} printed: ${stdout}`);
        assert.ok(
          Math.abs(Number(match[1])) < OFFSET_LIMIT[engine] + Number(match[2]),
          `[${engine}] ${tool}: offset ${match[1]} +/- ${match[2]} s`,
        );
      }
      // ntpdig's "precision" is its synchronisation distance.
      const dig = JSON.parse(results.ntpdig.stdout);
      assert.equal(dig.stratum, 10);
      assert.equal(dig.leap, "no-leap");
      assert.equal(dig.adjusted, false);
      assert.ok(
        Math.abs(dig.offset) < OFFSET_LIMIT[engine] + Number(dig.precision),
        `[${engine}] ntpdig: offset ${dig.offset} +/- ${dig.precision} s`,
      );
      assert.ok(results.answered >= 3);
    },
  });
}
