// What a time server answers to one datagram, without the I/O: shared by both UDP engines.

import type { RoughtimeBatcher } from "../roughtime/batcher.ts";
import type { AccessList } from "../access.ts";
import { clientHost } from "../../lib/net.ts";
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
} from "../../time/ntp.ts";
import { InterleavedMode } from "./interleaved_mode.ts";
import type { NtsResponder } from "../../nts/nts_responder.ts";
import { NtsShape } from "../../nts/ntp_fields.ts";
import { fromServicePort, isAnswer } from "./loop_guard.ts";

/** The protocols a time server speaks over UDP. */
export type UdpProtocol = "daytime" | "time" | "ntp" | "roughtime";

/** What {@linkcode Responder.respond} returns for a request kept for the batch's answer. */
export const DEFERRED = -1;

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
  limiter: RateLimiter | null;
  /** Whether SNTP requests count against `limiter` (`--rate-limit`): off by default, as chrony's. */
  limitNtp: boolean;
  readonly daytimeAnswer: DaytimeAnswer;
  readonly rfc868Answer: Rfc868Answer;
  /** The time SNTP replies carry (the server's `TimeSource`). */
  readonly ntpTime: NtpTime;
  /** The server's own service ports, which Daytime and Time never answer. */
  readonly ports: Readonly<ServicePorts>;
  /** NTS on the SNTP service; null when NTS is off. */
  readonly nts: NtsResponder | null;
  /** Roughtime; null when it is off. */
  readonly roughtime: RoughtimeBatcher | null;
}

const KISS_RATE = referenceId("RATE");
const KISS_NTS_NAK = referenceId("NTSN");
/** A seal slower than this (a pause, a cold start) counts as this much. */
const MAX_SEAL_MS = 0.1;

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
 *
 * SNTP answers in interleaved mode (RFC 9769) where the client asks for it: see
 * {@linkcode InterleavedMode} and `docs/ntp.md`.
 */
export class Responder {
  readonly #host: UdpHost;
  readonly #protocol: UdpProtocol;
  readonly #transmitClock: () => number;
  /** How long sealing an NTS reply takes, ms: a moving average of the last few. */
  #sealMs = 0;
  /**
   * Whether {@linkcode respond} needs the client's address (access lists or rate limit),
   * asked per datagram: a reload may change either.
   */
  get needsPeer(): boolean {
    const host = this.#host;
    const oneAnswer = this.#protocol === "daytime" || this.#protocol === "time";
    const limited = host.limiter !== null && (oneAnswer || host.limitNtp);
    return !host.access.open || limited;
  }
  /** Whether the last reply written was an NTP reply that wants its transmit timestamp. */
  stamp = false;
  /**
   * For the last reply when it is a basic NTS one, whose transmit timestamp is sealed in
   * already: when it expects to be sent, ms since the epoch (the timestamp less
   * {@linkcode lagMs}); NaN for any other reply.
   */
  sealedFor = NaN;
  /**
   * The store slot of the last reply's timestamps, or -1: the client may ask in
   * interleaved mode when it left, so the engine tells {@linkcode timestamps} when it did.
   */
  saved = -1;
  /**
   * How long a reply takes to leave after its transmit timestamp is read, ms, as the
   * engine has measured it (the kernel's transmit timestamps): put on every timestamp.
   */
  lagMs = 0;
  /** SNTP's interleaved mode and its saved timestamps; null for Daytime and Time. */
  readonly timestamps: InterleavedMode | null;

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
    this.timestamps = protocol === "ntp" ? new InterleavedMode(host.stats) : null;
  }

  /**
   * Writes the reply to one datagram into `reply` at `at`; returns its length, 0 for
   * none. Offsets rather than views: nothing is allocated per datagram. For an NTP reply
   * (then {@linkcode stamp} is true) the transmit timestamp is left for the caller, to be
   * read as late as possible: see {@linkcode InterleavedMode.stampTransmit}.
   */
  respond(datagram: Readonly<Datagram>, reply: Uint8Array, at: number): number {
    this.stamp = false;
    this.saved = -1;
    this.sealedFor = NaN;
    const protocol = this.#protocol;
    if (protocol === "ntp") return this.#ntp(datagram, reply, at);
    if (protocol === "roughtime") return this.#roughtime(datagram, at);
    return this.#oneAnswer(protocol, datagram, reply, at);
  }

  /**
   * Roughtime: within the access list and `--rate-limit`, the request is kept for the
   * batch's one signature ({@linkcode DEFERRED}); its answer goes to `at`. A reply is
   * never larger than its request, which is at least 1024 bytes, and a response is
   * never taken for a request (TYPE 1): it amplifies nothing and cannot loop.
   */
  #roughtime(datagram: Readonly<Datagram>, at: number): number {
    const { stats, access, limiter, limitNtp } = this.#host;
    const peer = datagram.peer;
    if (peer !== null && !access.allows(peer)) {
      stats.roughtimeRefused++;
      return 0;
    }
    if (limitNtp && limiter !== null) {
      const verdict = limiter.check(clientHost(peer!));
      stats.clientsTracked = limiter.size;
      if (verdict >= RateVerdict.KISS) {
        stats.roughtimeRefused++;
        return 0;
      }
    }
    const { data, at: start, length } = datagram;
    return this.#host.roughtime!.take(data.subarray(start, start + length), at) ? DEFERRED : 0;
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
    const timestamps = this.timestamps!;
    this.stamp = !timestamps.apply(data, dataAt, reply, at);
    this.saved = timestamps.saved;
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
    const transmit = stamped + this.#sealMs + this.lagMs;
    const receivedAt = datagram.receivedAt;
    writeNtpReply(data, reply, receivedAt, transmit, ntpTime.info, dataAt, at);
    const timestamps = this.timestamps!;
    if (!timestamps.apply(data, dataAt, reply, at)) {
      timestamps.keepTransmit(reply, at);
      this.sealedFor = transmit - this.lagMs;
    }
    this.saved = timestamps.saved;
    nts.seal(reply, at);
    const took = Math.min(this.#transmitClock() - stamped, MAX_SEAL_MS);
    this.#sealMs += (took - this.#sealMs) / 8;
    stats.requestsNtp++;
    stats.requestsNts++;
    return length;
  }

  /** Daytime and Time: the answer to any datagram from a client, within the limits. */
  #oneAnswer(
    protocol: "daytime" | "time",
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
