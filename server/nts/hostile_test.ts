// NTS against clients that mean harm, each with a bystander that must keep being served:
// garbage and stalled TLS on the KE port, a burst of 1,000 key establishments, a flood
// from one address, and NTS requests that are forged, truncated, misordered or replayed.

import assert from "node:assert/strict";
import net from "node:net";
import type { TimeServer } from "../server.ts";
import {
  hasTool,
  ntpRequest,
  parseNtpReply,
  skipUnless,
  UDP_ENGINES as ENGINES,
  udpClient,
} from "../../testing/time_clients.ts";
import {
  CHRONY_KE_REQUEST,
  chronydNts,
  haveOpenssl,
  keExchange,
  makeCertificate,
  mintSession,
  ntsRequest,
  type NtsServerOptions,
  readNtsReply,
  startNtsServer,
} from "../../testing/nts.ts";
import {
  exchangeFrom,
  JAM_LINE,
  resetStorm,
  silentFrom,
  until,
  within,
} from "../../testing/test_util.ts";
import { ntsMissing } from "../../nts/setup.ts";
import { MAX_KE_SESSIONS } from "./key_establishment.ts";
import { createLogger } from "../../lib/log.ts";

const lacking = ntsMissing();
const noNts = skipUnless(lacking === null, `NTS cannot run here: it needs ${lacking}`) ||
  skipUnless(haveOpenssl, "openssl is not installed (it makes the test certificates)");
const noChrony = noNts || skipUnless(hasTool("chronyd"), "chronyd is not installed");

const dir = noNts ? "" : await Deno.makeTempDir({ dir: "/tmp", prefix: "time-server-nts-" });
const certificate = noNts ? { cert: "", key: "" } : await makeCertificate(dir, "server");

function start(options: NtsServerOptions = {}, master?: Uint8Array): TimeServer {
  return startNtsServer(certificate, options, master);
}

/**
 * Starts a bystander chronyd and resolves once it has its cookies, while it still
 * synchronises: `synced` then gives its offset. (An object, not a promise of a promise,
 * which `await` would flatten into waiting for the whole run.)
 */
async function bystander(
  server: TimeServer,
): Promise<{ synced: Promise<number>; done(): boolean }> {
  let finished = false;
  const run = chronydNts(server.ports.ntsKe!, server.ports.ntp!, certificate.cert, { seconds: 15 })
    .finally(() => finished = true);
  await until(() => server.stats.keOk >= 1, 10_000, "the bystander's key establishment");
  const synced = run.then(({ offset, output }) => {
    if (offset === null) throw new Error(`the bystander did not synchronise:\n${output}`);
    return offset;
  });
  return { synced, done: () => finished };
}

/** A TCP connection that sends `bytes` and resolves when the server closes it. */
function sendAndWaitForClose(port: number, bytes: Uint8Array, localAddress = "127.0.0.1") {
  return new Promise<void>((resolve) => {
    const socket = net.connect(
      { host: "127.0.0.1", port, localAddress },
      () => socket.write(bytes),
    );
    socket.on("data", () => {});
    socket.on("error", () => {});
    socket.once("close", () => resolve());
  });
}

Deno.test({
  name:
    "NTS-KE survives garbage, a handshake never finished and a burst of 1,000 key establishments while a bystander chronyd synchronises",
  ignore: noChrony,
  async fn() {
    await using server = start({ udpEngine: ENGINES.at(-1) });
    const kePort = server.ports.ntsKe!;
    const chrony = await bystander(server);
    const nts = server.stats.requestsNts;
    // Text is no TLS record: refused at once. Random bytes may read as the start of a
    // hello (SSLv2's framing) longer than what follows, and then wait for the deadline.
    // Eleven hostile connections, within the sessions served at once.
    const http = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: time\r\n\r\n");
    const garbage = Array.from(
      { length: 10 },
      (_, i) =>
        sendAndWaitForClose(kePort, i < 5 ? http : crypto.getRandomValues(new Uint8Array(1024))),
    );
    // The first bytes of a TLS record, then nothing: only the deadline ends it.
    const stalled = sendAndWaitForClose(kePort, Uint8Array.of(0x16, 0x03, 0x01));
    const { stats } = server;
    await until(() => stats.keTlsError + stats.keSessions >= 11, 5000, "the hostile ones in");
    // 1,000 at least, and on for as long as the bystander is synchronising. A client that
    // finds every session busy is refused before TLS, and tries again.
    let answered = 0, refused = 0;
    const burst = Array.from({ length: 50 }, async () => {
      while (answered < 1000 || !chrony.done()) {
        const records = await keExchange(kePort, certificate.cert).catch(() => null);
        if (records === null) {
          refused++;
          continue;
        }
        answered++;
        assert.equal(records.filter((record) => record.type === 5).length, 8);
      }
    });
    await Promise.all([...garbage, stalled, ...burst]);
    const offset = await chrony.synced;
    assert.ok(Math.abs(offset) < 0.020, `the bystander's offset: ${offset} s`);
    assert.ok(stats.requestsNts > nts, "the bystander was answered during the attack");
    assert.ok(stats.keOk >= 1001, `${stats.keOk} key establishments`);
    assert.equal(stats.keRefused, refused, "each client that failed was refused as busy");
    assert.ok(stats.keTlsError >= 5, `${stats.keTlsError} TLS errors`);
    assert.ok(stats.keTimeout >= 1, "the stalled handshake was cut off at its deadline");
    assert.equal(stats.keTlsError + stats.keTimeout, 11, "every hostile connection ended");
  },
});

Deno.test({
  name:
    "forged, truncated, misordered, oversized and replayed NTS requests in a flood leave a bystander chronyd synchronising",
  ignore: noChrony,
  async fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    await using server = start({ udpEngine: ENGINES.at(-1) }, master);
    const chrony = await bystander(server);
    const session = mintSession(master);
    const request = ntsRequest(session);
    const hostile = [
      ntsRequest({ ...session, cookie: crypto.getRandomValues(new Uint8Array(100)) }),
      ntsRequest({ ...session, c2s: crypto.getRandomValues(new Uint8Array(32)) }),
      request.subarray(0, 150),
      ntsRequest({ ...session, after: [Uint8Array.of(0x7f, 0, 0, 16, ...new Array(12).fill(0))] }),
      ntsRequest({ ...session, placeholders: 3, placeholderLength: 300 }),
      request, // the same request, over and over: replayed
    ];
    using attacker = udpClient();
    const port = server.ports.ntp!;
    let sent = 0, done = false;
    let answered = 0;
    const replies = (async () => {
      try {
        for (;;) {
          await attacker.receive();
          answered++;
        }
      } catch {
        // Closed at the end.
      }
    })();
    const flood = (async () => {
      while (!done) {
        for (const bytes of hostile) {
          attacker.send(bytes, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {});
          sent++;
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    let offset: number;
    try {
      offset = await chrony.synced;
    } finally {
      done = true;
      await flood;
    }
    attacker.close();
    await replies;
    assert.ok(Math.abs(offset) < 0.020, `the bystander's offset: ${offset} s`);
    const { stats } = server;
    assert.ok(sent > 1000, `${sent} sent`);
    // Of each six, the two NAKs and the replay are answered, and nothing else.
    assert.ok(answered <= sent / 2, `${answered} of ${sent} answered`);
    assert.ok(stats.droppedNts > 0 && stats.ntsNaks > 0, `${stats.droppedNts}, ${stats.ntsNaks}`);
    assert.ok(stats.droppedNts + stats.ntsNaks <= (sent / 6) * 5, "no more refused than sent");
  },
});

Deno.test({
  name:
    "a flood of connections from one address is refused before TLS while another address establishes keys",
  ignore: noNts,
  async fn() {
    await using server = start({ hostname: "0.0.0.0", nts: { keRate: 5 } });
    const kePort = server.ports.ntsKe!;
    const began = performance.now();
    const flood = await Promise.all(
      Array.from({ length: 50 }, () => silentFrom("127.0.0.3", kePort)),
    );
    const { stats } = server;
    await until(
      () => stats.keRefused + stats.keSessions + stats.keTimeout >= 50,
      5000,
      "the flood",
    );
    const seconds = (performance.now() - began) / 1000;
    // A burst of 10 (two seconds' worth), then 5 a second, went on to TLS; the rest were closed at once.
    const served = 50 - stats.keRefused;
    assert.ok(
      served >= 10 && served <= 10 + Math.ceil(seconds * 5) + 1,
      `${served} in ${seconds} s`,
    );
    const records = await keExchange(kePort, certificate.cert);
    assert.equal(
      records.filter((record) => record.type === 5).length,
      8,
      "the bystander's cookies",
    );
    await Promise.all(flood.map((client) => client.close()));
  },
});

Deno.test({
  name:
    "with every NTS-KE session held by one address, a newcomer from another is served and one from it is refused; with fairness off, both are",
  ignore: noNts,
  async fn() {
    for (const fairness of [true, false]) {
      // Sessions held until closed, so that only fairness makes room.
      await using server = start({
        hostname: "0.0.0.0",
        fairness,
        nts: { keRate: 0, keTimeout: 60 },
      });
      const kePort = server.ports.ntsKe!;
      const { stats } = server;
      const hogs = await Promise.all(
        Array.from({ length: MAX_KE_SESSIONS }, () => silentFrom("127.0.0.3", kePort)),
      );
      try {
        await until(() => stats.keSessions === MAX_KE_SESSIONS, 5000, "every session held");
        const ended = hogs.map(() => false);
        hogs.forEach((hog, i) => hog.received.then(() => ended[i] = true));
        const late = await silentFrom("127.0.0.3", kePort);
        assert.equal(await late.received, "", "closed before TLS");
        assert.equal(stats.keRefused, 1);
        if (fairness) {
          const records = await keExchange(kePort, certificate.cert);
          assert.equal(records.filter((record) => record.type === 5).length, 8, "cookies");
          await until(() => stats.keMadeRoom === 1, 5000, "one hog's session cut off");
          await until(() => ended.filter(Boolean).length === 1, 5000, "the hog told");
          assert.equal(ended.filter(Boolean).length, 1, "one hog closed, no more");
        } else {
          await assert.rejects(keExchange(kePort, certificate.cert));
          assert.equal(stats.keMadeRoom, 0);
          assert.equal(stats.keRefused, 2);
        }
      } finally {
        await Promise.all(hogs.map((hog) => hog.close()));
      }
    }
  },
});

Deno.test({
  name:
    "silent connections holding every NTS-KE session leave SNTP and the line protocol answered at once",
  ignore: noNts,
  async fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    // Sessions held for a minute: a server whose KE waits could starve the others' waits
    // would not answer within the bound below (the bound only stops a hang).
    await using server = start({ hostname: "0.0.0.0", nts: { keRate: 0, keTimeout: 60 } }, master);
    const kePort = server.ports.ntsKe!;
    const silent = await Promise.all(
      Array.from(
        { length: MAX_KE_SESSIONS + 20 },
        (_, i) => silentFrom(`127.0.3.${1 + i}`, kePort),
      ),
    );
    try {
      await until(() => server.stats.keSessions === MAX_KE_SESSIONS, 5000, "KE full");
      const session = mintSession(master);
      using client = udpClient();
      const ntp = { transport: "udp", hostname: "127.0.0.1", port: server.ports.ntp! } as const;
      for (let i = 0; i < 3; i++) {
        await client.send(ntsRequest(session), ntp);
        const [reply] = await within(5000, client.receive(), "the NTS reply");
        assert.equal(readNtsReply(reply, session.s2c).cookies.length, 1);
      }
      const answer = exchangeFrom("127.0.0.2", server.addr.port, "TIME\r\nQUIT\r\n");
      assert.match(await within(5000, answer, "the line protocol's answer"), JAM_LINE);
    } finally {
      await Promise.all(silent.map((client) => client.close()));
    }
  },
});

Deno.test({
  name:
    "NTS-KE answers chrony's request, and one padded past 1 KB, with NTPv4, AES-SIV, the NTP port and 8 cookies, and bad requests with an Error record, then close_notify",
  ignore: noNts,
  async fn() {
    await using server = start();
    const kePort = server.ports.ntsKe!;
    const records = await keExchange(kePort, certificate.cert);
    const port = server.ports.ntp!;
    assert.deepEqual(records.map(({ type, critical }) => [type, critical]), [
      [1, true],
      [4, true],
      [7, true],
      ...Array(8).fill([5, false]),
      [0, true],
    ]);
    assert.deepEqual([...records[0].body], [0, 0]);
    assert.deepEqual([...records[1].body], [0, 15]);
    assert.deepEqual([...records[2].body], [port >> 8, port & 0xff]);
    assert.ok(records.slice(3, 11).every((record) => record.body.length === 100));
    // 1,028 bytes: an unknown non-critical record of 1,008, which RFC 8915 lets a client
    // send, then chrony's records.
    const padded = Uint8Array.of(0x42, 0x42, 1008 >> 8, 1008 & 0xff);
    const long = new Uint8Array(padded.length + 1008 + CHRONY_KE_REQUEST.length);
    long.set(padded);
    long.set(CHRONY_KE_REQUEST, padded.length + 1008);
    const served = await keExchange(kePort, certificate.cert, long);
    assert.equal(served.filter((record) => record.type === 5).length, 8, "cookies");
    const unknownCritical = Uint8Array.of(0x80, 0x42, 0, 0, ...CHRONY_KE_REQUEST);
    const noAead = Uint8Array.of(0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 1, 0x80, 0, 0, 0);
    // Next Protocol without its critical bit, which RFC 8915 §4.1.2 says MUST be set.
    const nonCritical = Uint8Array.of(0, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0);
    for (const [request, code] of [[unknownCritical, 0], [noAead, 1], [nonCritical, 1]] as const) {
      const error = await keExchange(kePort, certificate.cert, request);
      assert.deepEqual(error.map(({ type }) => type), [2, 0]);
      assert.deepEqual([...error[0].body], [0, code]);
    }
    assert.equal(server.stats.keOk, 2);
    assert.equal(server.stats.keBadRequest, 3);
  },
});

for (const udpEngine of ENGINES) {
  Deno.test({
    name:
      `forged, truncated, misordered and oversized NTS requests are refused, a replay is answered as the original was, and a bystander is served (${udpEngine} engine)`,
    ignore: noNts,
    async fn() {
      const master = crypto.getRandomValues(new Uint8Array(32));
      await using server = start({ udpEngine }, master);
      const port = server.ports.ntp!;
      const session = mintSession(master);
      using attacker = udpClient();
      using client = udpClient();
      const send = (socket: Deno.DatagramConn, bytes: Uint8Array) =>
        socket.send(bytes, { transport: "udp", hostname: "127.0.0.1", port });
      const receive = async (socket: Deno.DatagramConn) => (await socket.receive())[0];

      // Answered: a request, one with placeholders, and the same request replayed.
      const request = ntsRequest(session);
      const asking = ntsRequest({ ...session, placeholders: 3 });
      for (const bytes of [request, asking, request]) await send(client, bytes);
      const [first, more, replayed] = [
        await receive(client),
        await receive(client),
        await receive(client),
      ];
      for (
        const [reply, sent, cookies] of [[first, request, 1], [more, asking, 4], [
          replayed,
          request,
          1,
        ]] as const
      ) {
        const read = readNtsReply(reply, session.s2c);
        assert.equal(read.nak, false);
        assert.deepEqual(read.uniqueId, sent.slice(52, 84), "the unique identifier echoed");
        assert.equal(read.cookies.length, cookies);
        assert.ok(
          reply.length <= sent.length,
          `a ${reply.length}-byte reply to ${sent.length} bytes`,
        );
      }
      // A replay is answered (the server keeps no state per client) with fresh time: the
      // client, which has seen this identifier answered, discards it.
      assert.ok(parseNtpReply(replayed).receive >= parseNtpReply(first).receive);

      // A NAK: a cookie that is not the server's, and one whose request is sealed with another key.
      const forgedCookie = ntsRequest({
        ...session,
        cookie: crypto.getRandomValues(new Uint8Array(100)),
      });
      const wrongKey = ntsRequest({ ...session, c2s: crypto.getRandomValues(new Uint8Array(32)) });
      for (const forged of [forgedCookie, wrongKey]) {
        await send(attacker, forged);
        const nak = readNtsReply(await receive(attacker), session.s2c);
        assert.equal(nak.nak, true);
        assert.deepEqual(nak.uniqueId, forged.slice(52, 84));
        assert.equal(nak.cookies.length, 0);
      }
      // Dropped: truncated fields, a field after the Authenticator, oversized placeholders.
      const dropped = [
        request.subarray(0, 100),
        request.subarray(0, request.length - 4),
        ntsRequest({
          ...session,
          after: [Uint8Array.of(0x7f, 0, 0, 16, ...new Array(12).fill(0))],
        }),
        ntsRequest({ ...session, placeholders: 2, placeholderLength: 400 }),
      ];
      for (const bytes of dropped) await send(attacker, bytes);
      // The bystander's answer comes after everything the attacker sent was read.
      await send(attacker, ntpRequest());
      const plain = await receive(attacker);
      assert.equal(
        plain.length,
        48,
        "the attacker's own plain request, read after the dropped ones",
      );
      assert.equal(server.stats.droppedNts, dropped.length);
      assert.equal(server.stats.ntsNaks, 2);
      await send(client, ntsRequest(session));
      assert.equal(readNtsReply(await receive(client), session.s2c).cookies.length, 1);
      assert.equal(server.stats.requestsNts, 4);
    },
  });
}

Deno.test({
  name:
    "silent connections from 300 addresses fill NTS-KE to its cap, the rest are refused, and NTS is still answered",
  ignore: noNts,
  async fn() {
    const master = crypto.getRandomValues(new Uint8Array(32));
    await using server = start({ hostname: "0.0.0.0" }, master);
    const { stats } = server;
    const kePort = server.ports.ntsKe!, ntpPort = server.ports.ntp!;
    const silent = await Promise.all(
      Array.from(
        { length: 300 },
        (_, i) => silentFrom(`127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`, kePort),
      ),
    );
    await until(
      () => stats.keRefused + stats.keSessions + stats.keTimeout >= 300,
      10_000,
      "all seen",
    );
    assert.ok(stats.keSessions <= MAX_KE_SESSIONS, `${stats.keSessions} sessions at once`);
    assert.ok(
      stats.keRefused >= 300 - MAX_KE_SESSIONS - stats.keTimeout,
      `${stats.keRefused} refused`,
    );
    // The bystander already holds cookies: its NTS requests do not wait for KE.
    const session = mintSession(master);
    using client = udpClient();
    await client.send(ntsRequest(session), {
      transport: "udp",
      hostname: "127.0.0.1",
      port: ntpPort,
    });
    assert.equal(readNtsReply((await client.receive())[0], session.s2c).cookies.length, 1);
    // The deadline frees every slot the silent ones held: a new client is served.
    await until(() => stats.keSessions === 0, 10_000, "the silent sessions cut off");
    assert.equal(stats.keTimeout + stats.keRefused, 300);
    assert.equal(
      (await keExchange(kePort, certificate.cert)).filter((r) => r.type === 5).length,
      8,
    );
    await Promise.all(silent.map((connection) => connection.close()));
  },
});

Deno.test({
  name:
    "connections reset before accept and a client that never reads its cookies leave NTS-KE serving a bystander",
  ignore: noNts,
  async fn() {
    await using server = start();
    const { stats } = server;
    const kePort = server.ports.ntsKe!;
    await resetStorm(kePort, 200);
    // A TLS client that sends its request and never reads the answer, nor closes.
    const deaf = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: kePort,
      caCerts: [Deno.readTextFileSync(certificate.cert)],
      alpnProtocols: ["ntske/1"],
    });
    await deaf.handshake();
    await deaf.write(CHRONY_KE_REQUEST);
    await until(() => stats.keOk >= 1, 5000, "the deaf client's answer sent");
    assert.equal(
      (await keExchange(kePort, certificate.cert)).filter((r) => r.type === 5).length,
      8,
    );
    // The deaf one's slot is freed at its deadline, not held for ever.
    await until(() => stats.keSessions === 0, 10_000, "every session ended");
    assert.equal(stats.keOk, 2);
    deaf.close();
  },
});

Deno.test({
  name:
    "clients that refuse the certificate are logged once per address at info, and a bystander still gets its keys",
  ignore: noNts,
}, async () => {
  const logged: string[] = [];
  await using server = start({
    logger: createLogger({ level: "info", format: "json", write: (line) => logged.push(line) }),
  });
  const kePort = server.ports.ntsKe!;
  // Deno's TLS (rustls) trusts another certificate, so it refuses the server's with an alert.
  const stranger = await makeCertificate(dir, "stranger-client");
  for (let i = 0; i < 20; i++) await assert.rejects(keExchange(kePort, stranger.cert));
  assert.ok((await keExchange(kePort, certificate.cert)).length > 0, "the bystander");
  assert.equal(server.stats.keTlsError, 20);
  const refusals = logged.map((line) => JSON.parse(line))
    .filter((event) => event.msg === "NTS-KE: a client refused the certificate");
  assert.equal(refusals.length, 1, logged.join("\n"));
  assert.deepEqual([refusals[0].level, refusals[0].peer], ["info", "127.0.0.1"]);
  assert.match(refusals[0].how, /^(unknown_ca|bad_certificate|certificate_unknown)$/);
});
