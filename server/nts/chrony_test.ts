// NTS (RFC 8915) end to end: chronyd -Q trusts it, refuses forgeries, and keeps
// synchronising through hostile key establishments and hostile requests.

import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";
import { serve, type TimeServer } from "../server.ts";
import {
  exchangeDatagram,
  hasTool,
  ntpRequest,
  OFFSET_LIMIT,
  skipUnless,
  UDP_ENGINES as ENGINES,
  udpClient,
} from "../../testing/time_clients.ts";
import {
  type CertificateFiles,
  chronydNts,
  haveOpenssl,
  keExchange,
  makeCertificate,
  type NtsServerOptions,
  startNtsServer,
} from "../../testing/nts.ts";
import { freePort, until } from "../../testing/test_util.ts";
import { chronydMeasure } from "../../testing/time_clients.ts";
import { ntsMissing } from "../../nts/setup.ts";

const lacking = ntsMissing();
const ignore = skipUnless(lacking === null, `NTS cannot run here: it needs ${lacking}`) ||
  skipUnless(hasTool("chronyd"), "chronyd is not installed") ||
  skipUnless(haveOpenssl, "openssl is not installed (it makes the test certificates)");

const dir = ignore ? "" : await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-nts-" });
const trusted: CertificateFiles = ignore
  ? { cert: "", key: "" }
  : await makeCertificate(dir, "trusted", { names: ["IP:127.0.0.1", "IP:127.0.0.2"] });

function start(options: NtsServerOptions = {}, master?: Uint8Array): TimeServer {
  return startNtsServer(trusted, options, master);
}

function ports(server: TimeServer): [ke: number, ntp: number] {
  return [server.ports.ntsKe!, server.ports.ntp!];
}

Deno.test({
  name: "chronyd -Q synchronises over NTS with either UDP engine, every reply authenticated",
  ignore,
  async fn() {
    await Promise.all(ENGINES.map(async (udpEngine) => {
      await using server = start({ udpEngine });
      const { offset, output } = await chronydNts(...ports(server), trusted.cert);
      assert.ok(offset !== null, `[${udpEngine}] chronyd -Q reported no offset:\n${output}`);
      assert.ok(Math.abs(offset) < OFFSET_LIMIT[udpEngine], `[${udpEngine}] offset ${offset} s`);
      const { stats } = server;
      assert.equal(stats.keOk, 1, `[${udpEngine}] one key establishment`);
      assert.ok(stats.requestsNts >= 1, `[${udpEngine}] ${stats.requestsNts} NTS answers`);
      assert.equal(stats.requestsNts, stats.requestsNtp, `[${udpEngine}] no plain answers`);
      assert.equal(stats.ntsNaks + stats.droppedNts, 0);
      assert.equal(stats.ntsCookiesIssued, 8 + stats.requestsNts);
    }));
  },
});

Deno.test({
  name: "chronyd -x asking for interleaved mode over NTS gets it, with either UDP engine",
  ignore,
  async fn() {
    await Promise.all(ENGINES.map(async (udpEngine) => {
      await using server = start({ udpEngine });
      const [kePort, port] = ports(server);
      const { measurements, output } = await chronydMeasure({
        port,
        xleave: true,
        nts: { kePort, trusted: trusted.cert },
        seconds: 4,
      });
      const interleaved = measurements.filter((m) => m.interleaved).length;
      assert.ok(
        measurements.length >= 10,
        `[${udpEngine}] ${measurements.length} measurements:\n${output}`,
      );
      assert.ok(
        interleaved >= measurements.length / 2,
        `[${udpEngine}] ${interleaved} of ${measurements.length} interleaved`,
      );
      assert.equal(server.stats.requestsNts, server.stats.requestsNtp, "every reply authenticated");
      assert.ok(server.stats.ntpInterleaved >= interleaved);
    }));
  },
});

/**
 * An attacker on the path: NTS-KE passes through untouched (TCP, from 127.0.0.2 to the
 * server on 127.0.0.1), and NTP replies pass through `alter` (UDP, 127.0.0.2 at the
 * server's NTP port, which the KE answer names, to 127.0.0.1).
 */
function onPath(server: TimeServer, alter: (reply: Uint8Array) => void): AsyncDisposable {
  const [kePort, ntpPort] = ports(server);
  const tcp = Deno.listen({ hostname: "127.0.0.2", port: kePort });
  const udp = Deno.listenDatagram({ hostname: "127.0.0.2", port: ntpPort, transport: "udp" });
  const tasks: Promise<unknown>[] = [];
  tasks.push(
    (async () => {
      for await (const client of tcp) {
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: kePort });
        tasks.push(client.readable.pipeTo(upstream.writable).catch(() => {}));
        tasks.push(upstream.readable.pipeTo(client.writable).catch(() => {}));
      }
    })().catch(() => {}),
  );
  tasks.push(
    (async () => {
      const upstream = Deno.listenDatagram({ hostname: "127.0.0.2", port: 0, transport: "udp" });
      let client: Deno.Addr | null = null;
      const replies = (async () => {
        for await (const [reply] of upstream) {
          alter(reply);
          if (client !== null) await udp.send(reply, client);
        }
      })().catch(() => {});
      try {
        for await (const [request, from] of udp) {
          client = from;
          await upstream.send(request, { transport: "udp", hostname: "127.0.0.1", port: ntpPort });
        }
      } finally {
        upstream.close();
        await replies;
      }
    })().catch(() => {}),
  );
  return {
    async [Symbol.asyncDispose]() {
      tcp.close();
      udp.close();
      await Promise.all(tasks);
    },
  };
}

Deno.test({
  name: "chronyd -Q refuses replies altered on the path and a certificate it does not trust",
  ignore,
  async fn() {
    const stranger = await makeCertificate(dir, "stranger");
    await using honest = start();
    await using forged = start();
    const logged: string[] = [];
    await using untrusted = start({
      nts: { certFile: stranger.cert, keyFile: stranger.key },
      logger: createLogger({ level: "info", format: "json", write: (line) => logged.push(line) }),
    });
    // The same path passing replies as they are: chrony synchronises through it.
    await using _passing = onPath(honest, () => {});
    // One bit of the sealed part flipped: as if sealed with the wrong key.
    await using _altering = onPath(forged, (reply) => {
      if (reply.length > 48) reply[reply.length - 1] ^= 1;
    });
    const [passed, altered, refused] = await Promise.all([
      chronydNts(...ports(honest), trusted.cert, { host: "127.0.0.2" }),
      chronydNts(...ports(forged), trusted.cert, { host: "127.0.0.2" }),
      chronydNts(...ports(untrusted), trusted.cert),
    ]);
    assert.ok(passed.offset !== null, `through an honest path:\n${passed.output}`);
    assert.equal(altered.offset, null, `altered replies were accepted:\n${altered.output}`);
    assert.ok(forged.stats.requestsNts >= 1, "the altered path carried NTS replies");
    assert.equal(refused.offset, null, `an untrusted certificate was accepted:\n${refused.output}`);
    assert.match(refused.output, /TLS handshake .* failed/);
    assert.equal(untrusted.stats.keOk, 0);
    assert.ok(untrusted.stats.keTlsError >= 1);
    // The operator hears of it once for that client, however often it tries.
    const refusals = logged.map((line) => JSON.parse(line))
      .filter((event) => event.msg === "NTS-KE: a client refused the certificate");
    assert.equal(refusals.length, 1, logged.join("\n"));
    assert.equal(refusals[0].level, "info");
    assert.equal(refusals[0].peer, "127.0.0.1");
    assert.equal(refusals[0].how, "closed after the certificate, before its Finished");
  },
});

Deno.test({
  name:
    "chronyd keeps its cookies across a restart with the same key file; after a new one it gets a NAK and a new key establishment",
  ignore,
  async fn() {
    const dumpDir = await Deno.makeTempDir({ dir, prefix: "dump-" });
    const master = crypto.getRandomValues(new Uint8Array(32));
    const fixed = { ntpPort: freePort(), nts: { kePort: freePort() } };
    {
      await using first = start(fixed, master);
      const run = await chronydNts(...ports(first), trusted.cert, { dumpDir });
      assert.ok(run.offset !== null, run.output);
      assert.equal(first.stats.keOk, 1);
    }
    {
      await using same = start(fixed, master);
      const run = await chronydNts(...ports(same), trusted.cert, { dumpDir });
      assert.ok(run.offset !== null, run.output);
      assert.equal(same.stats.keOk, 0, "the saved cookies were used, no new key establishment");
      assert.equal(same.stats.ntsNaks, 0);
      assert.ok(same.stats.requestsNts >= 1);
    }
    {
      await using renewed = start(fixed);
      const run = await chronydNts(...ports(renewed), trusted.cert, { dumpDir });
      assert.ok(run.offset !== null, run.output);
      assert.ok(renewed.stats.ntsNaks >= 1, "the old cookies got a NAK");
      assert.equal(renewed.stats.keOk, 1, "then chrony made a new key establishment");
    }
  },
});

Deno.test({
  name: "a plain SNTP request is answered as before on an NTS server's port",
  ignore: skipUnless(lacking === null, `NTS needs ${lacking}`) ||
    skipUnless(haveOpenssl, "no openssl"),
  async fn() {
    for (const udpEngine of ENGINES) {
      await using server = start({ udpEngine });
      using client = udpClient();
      for (const length of [48, 68, 120]) {
        const reply = await exchangeDatagram(client, server.ports.ntp!, ntpRequest({ length }));
        assert.equal(reply?.length, 48, `[${udpEngine}] a ${length}-byte request`);
      }
      assert.equal(server.stats.requestsNtp, 3);
      assert.equal(server.stats.requestsNts, 0);
    }
  },
});

Deno.test({
  name: "a certificate replaced on disk is served to new key establishments without a restart",
  ignore: skipUnless(lacking === null, `NTS needs ${lacking}`) ||
    skipUnless(haveOpenssl, "no openssl"),
  async fn() {
    const live = await makeCertificate(dir, "live");
    const renewed = await makeCertificate(dir, "renewed");
    const lines: string[] = [];
    await using server = start({
      logger: createLogger({ level: "info", write: (line) => lines.push(line) }),
      nts: { certFile: live.cert, keyFile: live.key, certificateCheck: 0.05 },
    });
    const kePort = server.ports.ntsKe!;
    assert.equal((await keExchange(kePort, live.cert)).length, 12);
    Deno.writeFileSync(live.key, Deno.readFileSync(renewed.key));
    Deno.writeFileSync(live.cert, Deno.readFileSync(renewed.cert));
    await until(
      () => lines.some((line) => line.includes("NTS certificate reloaded")),
      5000,
      "reload",
    );
    assert.equal((await keExchange(kePort, renewed.cert)).length, 12);
    await assert.rejects(keExchange(kePort, trusted.cert));
  },
});

Deno.test({
  name: "with --nts-ntp-server, the KE answer sends chrony's NTP to that address",
  ignore,
  async fn() {
    await using server = start({ nts: { ntpServer: "127.0.0.2" } });
    const records = await keExchange(server.ports.ntsKe!, trusted.cert);
    const named = records.find((record) => record.type === 6);
    assert.equal(new TextDecoder().decode(named?.body), "127.0.0.2");
    // NTP to 127.0.0.2 reaches the server (on 127.0.0.1) only through this relay.
    let relayed = 0;
    await using _relay = onPath(server, () => relayed++);
    const { offset, output } = await chronydNts(...ports(server), trusted.cert);
    assert.ok(offset !== null, output);
    assert.ok(relayed >= 1 && relayed === server.stats.requestsNts, `${relayed} relayed`);
  },
});

Deno.test("a server asked for NTS without the SNTP service it protects refuses to start", () => {
  assert.throws(
    () =>
      serve({
        hostname: "127.0.0.1",
        port: 0,
        nts: { kePort: 0, certFile: "c", keyFile: "k", masterKey: new Uint8Array(32), keRate: 0 },
      }),
    /nts needs ntpPort/,
  );
});
