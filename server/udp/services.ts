// The UDP services: Daytime (RFC 867), Time (RFC 868) and SNTP (RFC 4330), one loop per socket.

import type { AccessList } from "../access.ts";
import { clientHost, closeQuietly } from "../../lib/net.ts";
import type { Logger } from "../../lib/log.ts";
import { type RateLimiter, RateVerdict } from "./rate_limit.ts";
import type { ServicePorts } from "../server_options.ts";
import { ONE_ANSWER_COUNTERS, type ServerStats } from "../stats.ts";
import type { DaytimeAnswer } from "../../time/daytime.ts";
import type { Rfc868Answer } from "../../time/rfc868.ts";
import {
  checkNtpRequest,
  NTP_PACKET_LENGTH,
  NtpRequest,
  type NtpServerInfo,
  referenceId,
  writeKissOfDeath,
  writeNtpReply,
  writeTimestamp,
} from "../../time/ntp.ts";
import { BATCH, MmsgSocket, mmsgSupported, RECEIVE_SLOT, REPLY_SLOT } from "./mmsg.ts";
import { parseAddress } from "../../lib/net.ts";
import type { NtsResponder } from "../../nts/nts_responder.ts";
import { NtsShape } from "../../nts/ntp_fields.ts";
import { fromServicePort, isAnswer } from "./loop_guard.ts";

/** The protocols a time server speaks over UDP. */
export type UdpProtocol = "daytime" | "time" | "ntp";

/** What the SNTP service needs of the server's time source. */
export interface NtpTime {
  /** The clock NTP timestamps are read from, ms since the epoch with sub-ms resolution. */
  readonly clock: { now(): number };
  /** What NTP replies say about the clock; kept up to date by its owner. */
  readonly info: NtpServerInfo;
  /** Whether `clock` is the system clock, so the kernel's timestamps may stand in for it. */
  readonly isSystemClock: boolean;
}

/** What the UDP services share with the rest of the server. */
export interface UdpHost {
  readonly stats: ServerStats;
  readonly logger: Logger;
  readonly access: AccessList;
  /**
   * The per-address rate limit of Daytime and Time, and of SNTP when `limitNtp`; null
   * when Daytime and Time are off and SNTP is not limited.
   */
  readonly limiter: RateLimiter | null;
  /** Whether SNTP requests count against `limiter` (`--rate-limit`): off by default, as chrony's. */
  readonly limitNtp: boolean;
  readonly daytimeAnswer: DaytimeAnswer;
  readonly rfc868Answer: Rfc868Answer;
  /** The time SNTP replies carry (the server's `TimeSource`). */
  readonly ntpTime: NtpTime;
  /** The server's own service ports, which Daytime and Time never answer. */
  readonly ports: Readonly<ServicePorts>;
  /** NTS on the SNTP service; null when NTS is off. */
  readonly nts: NtsResponder | null;
}

/** Larger datagrams are truncated; NTP requests with extension fields fit. */
const RECEIVE_SIZE = 2048;
/** Room for the longest reply: an NTS reply is no longer than its request. */
const REPLY_SIZE = RECEIVE_SIZE;
const KISS_RATE = referenceId("RATE");
const KISS_NTS_NAK = referenceId("NTSN");
/** A seal slower than this (a pause, a cold start) counts as this much. */
const MAX_SEAL_MS = 0.1;

/** Tells whether a receive failed because the socket was closed, which ends the loop. */
function isClosed(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted;
}

/** How UDP is read and written: see {@linkcode UdpService} and {@linkcode MmsgService}. */
export type UdpEngine = "auto" | "deno" | "mmsg";

/**
 * Which engine `auto` means here: the batched one where it can run (Linux, `--allow-ffi`,
 * a literal listen address), else the portable one.
 */
export function chooseUdpEngine(wanted: UdpEngine, hostname: string): "deno" | "mmsg" {
  if (wanted !== "auto") return wanted;
  return mmsgSupported() && parseAddress(hostname) !== null ? "mmsg" : "deno";
}

/**
 * Binds a UDP service with the given engine. Throws what `Deno.listenDatagram` throws
 * (`AddrInUse`, `PermissionDenied`, …).
 */
export function listenUdp(
  engine: "deno" | "mmsg",
  protocol: UdpProtocol,
  address: { hostname: string; port: number; reusePort: boolean },
  host: UdpHost,
): UdpListener {
  const { hostname, port, reusePort } = address;
  if (engine === "mmsg") {
    return new MmsgService(protocol, new MmsgSocket(hostname, port, reusePort), host);
  }
  return new UdpService(protocol, Deno.listenDatagram({ hostname, port, transport: "udp" }), host);
}

/**
 * One received datagram as {@linkcode Responder.respond} reads it: a record each socket
 * fills in again for every datagram, so that nothing is allocated per datagram.
 */
export interface Datagram {
  /** The buffer the datagram is in: `length` bytes from `at`. */
  data: Uint8Array;
  at: number;
  length: number;
  /** The client's address, or null when no rule needs it; and its port. */
  peer: string | null;
  peerPort: number;
  /** When it was received, ms since the epoch. */
  receivedAt: number;
}

/**
 * What a time server answers to one datagram, without the I/O: shared by both UDP
 * engines. Each datagram is checked against the access list, then (NTP) for being a
 * client request, then against the rate limit. Daytime and Time answer any datagram, as
 * RFC 867 and 868 say, but only from a client's port and never one that is another
 * server's answer (see `loop_guard.ts`), so that no two servers answer each other;
 * their rate limit, on by default, bounds their use as reflectors. An NTP reply is 48 bytes and
 * answers a request of at least 48, so it amplifies nothing; it answers only client mode
 * with server mode, so it cannot loop, and clients on port 123 (ntpd's) are answered.
 */
export class Responder {
  readonly #host: UdpHost;
  readonly #protocol: UdpProtocol;
  readonly #transmitClock: () => number;
  /** How long sealing an NTS reply takes, ms: a moving average of the last few. */
  #sealMs = 0;
  /** Whether {@linkcode respond} needs the client's address (access lists or rate limit). */
  readonly needsPeer: boolean;
  /** Whether the last reply written was an NTP reply that wants its transmit timestamp. */
  stamp = false;

  /**
   * @param transmitClock What the engine stamps transmit timestamps with (the kernel's
   * clock where it takes the kernel's receive timestamps), for the replies it cannot
   * stamp itself: an NTS reply's timestamp is sealed with it.
   */
  constructor(
    host: UdpHost,
    protocol: UdpProtocol,
    transmitClock: () => number = () => host.ntpTime.clock.now(),
  ) {
    this.#host = host;
    this.#protocol = protocol;
    this.#transmitClock = transmitClock;
    const limited = host.limiter !== null && (protocol !== "ntp" || host.limitNtp);
    this.needsPeer = !host.access.open || limited;
  }

  /**
   * Writes the reply to one datagram into `reply` at `at`; returns its length, 0 for
   * none. Offsets rather than views: nothing is allocated per datagram. For an NTP reply
   * (then {@linkcode stamp} is true) the transmit timestamp is left for the caller, to be
   * read as late as possible: see {@linkcode stampTransmit}.
   */
  respond(datagram: Readonly<Datagram>, reply: Uint8Array, at: number): number {
    this.stamp = false;
    const protocol = this.#protocol;
    return protocol === "ntp"
      ? this.#ntp(datagram, reply, at)
      : this.#oneAnswer(protocol, datagram, reply, at);
  }

  #ntp(datagram: Readonly<Datagram>, reply: Uint8Array, at: number): number {
    const { stats, access, limiter, limitNtp } = this.#host;
    const { data, at: dataAt, peer } = datagram;
    if (peer !== null && !access.allows(peer)) {
      stats.droppedNtp++;
      return 0;
    }
    const kind = checkNtpRequest(data, datagram.length, dataAt);
    if (kind !== NtpRequest.CLIENT) {
      stats.droppedNtp++;
      if (kind === NtpRequest.CONTROL) stats.droppedNtpControl++;
      return 0;
    }
    if (limitNtp && limiter !== null) {
      const verdict = limiter.check(clientHost(peer!));
      stats.clientsTracked = limiter.size;
      if (verdict === RateVerdict.DROP) {
        stats.rateLimitedNtp++;
        return 0;
      }
      if (verdict === RateVerdict.KISS) {
        stats.rateLimitedNtp++;
        stats.kissOfDeathSent++;
        writeKissOfDeath(data, reply, KISS_RATE, dataAt, at);
        return NTP_PACKET_LENGTH;
      }
    }
    const receivedAt = datagram.receivedAt;
    const nts = this.#host.nts;
    if (nts !== null && datagram.length > NTP_PACKET_LENGTH) {
      const shape = nts.read(data, dataAt, datagram.length);
      if (shape !== NtsShape.PLAIN) return this.#nts(nts, shape, datagram, reply, at);
    }
    writeNtpReply(data, reply, receivedAt, receivedAt, this.#host.ntpTime.info, dataAt, at);
    stats.requestsNtp++;
    this.stamp = true;
    return NTP_PACKET_LENGTH;
  }

  /**
   * An NTS request: authenticated time, a NAK, or nothing. The authenticator covers the
   * transmit timestamp, so it is written before the seal: everything else is ready first,
   * and the timestamp is put ahead by what the seal has been taking (as chrony does), so
   * that it is not early by that much.
   */
  #nts(
    nts: NtsResponder,
    shape: NtsShape,
    datagram: Readonly<Datagram>,
    reply: Uint8Array,
    at: number,
  ): number {
    const { stats, ntpTime } = this.#host;
    const { data, at: dataAt } = datagram;
    if (shape === NtsShape.MALFORMED) {
      stats.droppedNts++;
      return 0;
    }
    if (!nts.open(data, dataAt)) {
      stats.ntsNaks++;
      writeKissOfDeath(data, reply, KISS_NTS_NAK, dataAt, at);
      return nts.nak(data, reply, at);
    }
    const length = nts.prepare(data, datagram.length, reply, at);
    const stamped = this.#transmitClock();
    const transmit = stamped + this.#sealMs;
    const receivedAt = datagram.receivedAt;
    writeNtpReply(data, reply, receivedAt, transmit, ntpTime.info, dataAt, at);
    nts.seal(reply, at);
    const took = Math.min(this.#transmitClock() - stamped, MAX_SEAL_MS);
    this.#sealMs += (took - this.#sealMs) / 8;
    stats.requestsNtp++;
    stats.requestsNts++;
    return length;
  }

  /** Daytime and Time: the answer to any datagram from a client, within the limits. */
  #oneAnswer(
    protocol: Exclude<UdpProtocol, "ntp">,
    datagram: Readonly<Datagram>,
    reply: Uint8Array,
    at: number,
  ): number {
    const { stats, access, limiter } = this.#host;
    const counters = ONE_ANSWER_COUNTERS[protocol];
    const peer = datagram.peer;
    if (
      fromServicePort(datagram.peerPort, this.#host.ports) ||
      isAnswer(datagram.data, datagram.at, datagram.length)
    ) {
      stats[counters.dropped]++;
      stats.droppedLoop++;
      return 0;
    }
    if (peer !== null && !access.allows(peer)) {
      stats[counters.dropped]++;
      return 0;
    }
    if (limiter !== null) {
      const verdict = limiter.check(clientHost(peer!));
      stats.clientsTracked = limiter.size;
      if (verdict >= RateVerdict.KISS) {
        stats[counters.limited]++;
        return 0;
      }
    }
    const answer = (protocol === "daytime" ? this.#host.daytimeAnswer : this.#host.rfc868Answer)
      .current();
    reply.set(answer, at);
    stats[counters.answered]++;
    return answer.length;
  }
}

/** Writes an NTP reply's transmit timestamp: the last thing before it goes to the kernel. */
export function stampTransmit(reply: Uint8Array, at: number, now: number): void {
  writeTimestamp(reply, at + 40, now);
}

/** A UDP service of either engine, as the server holds it. */
export interface UdpListener {
  readonly protocol: UdpProtocol;
  readonly port: number;
  /** Settles when the loop has ended, after {@linkcode UdpListener.close}. */
  readonly done: Promise<void>;
  close(): void;
}

/**
 * Serves one protocol on a `Deno.listenDatagram` socket until closed: one receive and one
 * send per datagram. Portable, and needs only `--allow-net`; the send is awaited before
 * the next receive, so one reply buffer serves.
 */
export class UdpService implements UdpListener {
  readonly protocol: UdpProtocol;
  readonly socket: Deno.DatagramConn;
  readonly done: Promise<void>;
  readonly #host: UdpHost;
  readonly #responder: Responder;

  constructor(protocol: UdpProtocol, socket: Deno.DatagramConn, host: UdpHost) {
    this.protocol = protocol;
    this.socket = socket;
    this.#host = host;
    this.#responder = new Responder(host, protocol);
    this.done = this.#serve();
  }

  get port(): number {
    return (this.socket.addr as Deno.NetAddr).port;
  }

  close(): void {
    closeQuietly(this.socket);
  }

  async #serve(): Promise<void> {
    const { stats } = this.#host;
    const clock = this.#host.ntpTime.clock;
    const responder = this.#responder;
    const protocol = this.protocol;
    const socket = this.socket;
    const buffer = new Uint8Array(RECEIVE_SIZE);
    const reply = new Uint8Array(REPLY_SIZE);
    const datagram: Datagram = {
      data: buffer,
      at: 0,
      length: 0,
      peer: null,
      peerPort: 0,
      receivedAt: 0,
    };
    for (;;) {
      let length: number;
      let from: Deno.NetAddr;
      try {
        const received = await socket.receive(buffer);
        length = received[0].length;
        from = received[1] as Deno.NetAddr;
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, protocol, error);
        continue;
      }
      datagram.receivedAt = clock.now();
      datagram.length = length;
      datagram.peer = responder.needsPeer ? from.hostname : null;
      datagram.peerPort = from.port;
      const size = responder.respond(datagram, reply, 0);
      if (size === 0) continue;
      if (responder.stamp) stampTransmit(reply, 0, clock.now());
      try {
        await socket.send(size === reply.length ? reply : reply.subarray(0, size), from);
        stats.bytesSent += size;
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, protocol, error);
      }
    }
  }
}

/**
 * Serves one protocol on a {@linkcode MmsgSocket} (Linux, FFI) until closed: up to 64
 * datagrams per receive and per send, kernel receive timestamps, and `SO_REUSEPORT` so
 * that workers share the port.
 */
export class MmsgService implements UdpListener {
  readonly protocol: UdpProtocol;
  readonly done: Promise<void>;
  readonly #socket: MmsgSocket;
  readonly #host: UdpHost;
  readonly #responder: Responder;

  constructor(protocol: UdpProtocol, socket: MmsgSocket, host: UdpHost) {
    this.protocol = protocol;
    this.#socket = socket;
    this.#host = host;
    // The kernel's clock stamps replies where the kernel's receive timestamps are used.
    const kernelTime = host.ntpTime.isSystemClock;
    this.#responder = new Responder(
      host,
      protocol,
      kernelTime ? () => socket.now() : () => host.ntpTime.clock.now(),
    );
    this.done = this.#serve();
  }

  get port(): number {
    return this.#socket.port;
  }

  close(): void {
    this.#socket.close();
  }

  async #serve(): Promise<void> {
    const socket = this.#socket;
    const { stats } = this.#host;
    const clock = this.#host.ntpTime.clock;
    const responder = this.#responder;
    const { data, replies, lengths } = socket;
    // An injected clock (tests) replaces the kernel's timestamps too.
    const kernelTime = this.#host.ntpTime.isSystemClock;
    const stamped = new Uint8Array(BATCH);
    const datagram: Datagram = { data, at: 0, length: 0, peer: null, peerPort: 0, receivedAt: 0 };
    for (;;) {
      const count = await socket.receive();
      if (count === 0) return;
      for (let i = 0; i < count; i++) {
        let receivedAt = kernelTime ? socket.receivedAt(i) : NaN;
        if (Number.isNaN(receivedAt)) receivedAt = clock.now();
        datagram.receivedAt = receivedAt;
        datagram.at = i * RECEIVE_SLOT;
        datagram.length = lengths[i];
        datagram.peer = responder.needsPeer ? socket.peer(i) : null;
        datagram.peerPort = socket.peerPort(i);
        const length = responder.respond(datagram, replies, i * REPLY_SLOT);
        if (length === 0) continue;
        stamped[socket.queued] = responder.stamp ? 1 : 0;
        socket.queue(i, length);
        stats.bytesSent += length;
      }
      const queued = socket.queued;
      if (queued === 0) continue;
      const now = kernelTime ? socket.now() : clock.now();
      for (let j = 0; j < queued; j++) {
        if (stamped[j] === 1) stampTransmit(replies, socket.queuedSlot(j) * REPLY_SLOT, now);
      }
      const sent = socket.flush();
      if (sent < queued) stats.udpErrors += queued - sent;
    }
  }
}

/** A datagram that could not be received or answered: counted, logged at debug. */
function failed(host: UdpHost, protocol: UdpProtocol, error: unknown): void {
  host.stats.udpErrors++;
  if (host.logger.enabled("debug")) {
    host.logger.debug("udp error", {
      protocol,
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
  }
}
