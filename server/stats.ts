// What a server counts: connections, requests, refusals and closes, traffic; and adding them up.

import { newRequestCounts, type RequestCounts } from "../protocol.ts";

/**
 * What a server has done so far; the numbers only grow, except the gauges marked as
 * such. The names are the log keys of the `summary` line as they are, so they say
 * what they count: `requests…`, `refused…`, `closed…`.
 */
export interface ServerStats extends RequestCounts {
  /** Gauge: connections open now, lingering ones included. */
  connectionsOpen: number;
  /** Gauge: client addresses the server counts connections under now. */
  addressesTracked: number;
  /**
   * Connections accepted since the start, including those closed at once for the
   * per-client limit, a bad PROXY header, or no room after it; those refused with
   * `ERR server busy` at accept are not.
   */
  connectionsTotal: number;
  /** Connections refused with `ERR server busy`. */
  refusedBusy: number;
  /** Connections refused with `ERR too many connections` (per-client limit). */
  refusedPerIp: number;
  /** Silent connections closed to make room for new ones (`ERR idle, closed to make room`). */
  closedEvicted: number;
  /**
   * Busy connections closed to make room for a newcomer from an address holding fewer
   * (per-address fairness; `ERR busy, closed to make room`).
   */
  closedFairness: number;
  /** Connections closed by the idle timeout. */
  closedIdle: number;
  /** Connections that ended in a reset or broken pipe. */
  closedReset: number;
  /** Connections closed for a missing or malformed PROXY header. */
  closedProxyHeader: number;
  /** Accepts that failed for that one connection alone (it was reset or aborted before accept). */
  acceptAborted: number;
  /** Accepts that failed for want of file descriptors or memory (the server backs off). */
  acceptExhausted: number;
  /** Connections closed at once because `--deny`/`--allow` exclude the client. */
  closedDenied: number;
  /** Daytime answers sent (RFC 867), over TCP and UDP. */
  requestsDaytime: number;
  /** Time answers sent (RFC 868), over TCP and UDP. */
  requestsRfc868: number;
  /** SNTP replies sent with the time (Kiss-o'-Death replies are not counted here). */
  requestsNtp: number;
  /** Daytime datagrams dropped: the client is denied. */
  droppedDaytime: number;
  /** Time (RFC 868) datagrams dropped: the client is denied. */
  droppedRfc868: number;
  /** NTP datagrams dropped: denied, too short, not a client request, or a version we do not speak. */
  droppedNtp: number;
  /** Of `droppedNtp`, the mode 6 and 7 (ntpq/ntpdc) queries. */
  droppedNtpControl: number;
  /** Of `droppedDaytime` and `droppedRfc868`, those from a service's port: a loop refused. */
  droppedLoop: number;
  /** Daytime datagrams over the client's rate limit, dropped. */
  rateLimitedDaytime: number;
  /** Time (RFC 868) datagrams over the client's rate limit, dropped. */
  rateLimitedRfc868: number;
  /** NTP requests over the client's rate limit: dropped, or answered with a Kiss-o'-Death. */
  rateLimitedNtp: number;
  /** Kiss-o'-Death (`RATE`) replies sent. */
  kissOfDeathSent: number;
  /** Gauge: clients the UDP rate limiter remembers now. */
  clientsTracked: number;
  /** Datagrams that could not be received or sent (the socket reported an error). */
  udpErrors: number;
  /** Of `requestsNtp`, the NTS requests answered with authenticated time. */
  requestsNts: number;
  /** Of `requestsNtp`, the replies in interleaved mode (RFC 9769). */
  ntpInterleaved: number;
  /** Gauge: receive and transmit timestamp pairs saved for interleaved mode. */
  ntpTimestampsHeld: number;
  /** Kernel transmit timestamps received for saved replies (batched engine). */
  kernelTxTimestamps: number;
  /** Saved replies the kernel gave no transmit timestamp for: the server's own stands in. */
  kernelTxMissing: number;
  /** NTS NAKs sent (kiss code `NTSN`): the cookie did not open, or the request was not authentic. */
  ntsNaks: number;
  /** NTP requests with NTS fields that break the rules, dropped. */
  droppedNts: number;
  /** NTS cookies issued, in key establishments and in NTS replies. */
  ntsCookiesIssued: number;
  /** NTS key establishments completed with cookies. */
  keOk: number;
  /** NTS key establishments answered with an Error record. */
  keBadRequest: number;
  /** NTS-KE connections that failed in TLS or closed before their request. */
  keTlsError: number;
  /** NTS key establishments cut off at their deadline. */
  keTimeout: number;
  /** NTS-KE connections closed before TLS: denied, over the rate, or the service full. */
  keRefused: number;
  /** NTS key establishments cut off before their answer to make room for a newcomer (fairness). */
  keMadeRoom: number;
  /** Gauge: NTS key establishments in progress. */
  keSessions: number;
  /** Times the key that seals new cookies changed (once a day). */
  ntsKeyRotations: number;
  /** Gauge: when the NTS certificate expires, seconds since the epoch; 0 = no NTS. */
  ntsCertificateExpiry: number;
  /** Roughtime requests answered (RFC 10049), signed responses sent. */
  requestsRoughtime: number;
  /** Roughtime requests dropped unanswered: under 1024 bytes. */
  roughtimeShort: number;
  /** …not a valid request (framing, tags, NONC, TYPE, VER). */
  roughtimeMalformed: number;
  /** …offering no version this server speaks. */
  roughtimeVersion: number;
  /** …naming another server's key (SRV). */
  roughtimeServer: number;
  /** …denied by `--deny`/`--allow`, or over the rate limit. */
  roughtimeRefused: number;
  /** SREP signatures made: one per batch (and version) answered. */
  roughtimeSignatures: number;
  /** Gauge: when the online key's delegation ends (MAXT), seconds since the epoch; 0 = off. */
  roughtimeDelegationExpiry: number;
  /** Gauge: the stratum SNTP replies claim now (16: not synchronised); 0 = no SNTP. */
  ntpStratum: number;
  /** Gauge: the leap indicator SNTP replies carry (3: not synchronised). */
  ntpLeap: number;
  /** Gauge: 1 while SNTP replies say the clock is synchronised, else 0. */
  ntpSynchronized: number;
  /** Gauge: the root dispersion SNTP replies claim, in seconds. */
  ntpRootDispersion: number;
  /** Bytes read from clients. */
  bytesReceived: number;
  /** Bytes written to clients. */
  bytesSent: number;
}

/** Returns a {@linkcode ServerStats} with every count at zero. */
export function newServerStats(): ServerStats {
  return {
    ...newRequestCounts(),
    connectionsOpen: 0,
    addressesTracked: 0,
    connectionsTotal: 0,
    refusedBusy: 0,
    refusedPerIp: 0,
    closedEvicted: 0,
    closedFairness: 0,
    closedIdle: 0,
    closedReset: 0,
    closedProxyHeader: 0,
    acceptAborted: 0,
    acceptExhausted: 0,
    closedDenied: 0,
    requestsDaytime: 0,
    requestsRfc868: 0,
    requestsNtp: 0,
    droppedDaytime: 0,
    droppedRfc868: 0,
    droppedNtp: 0,
    droppedNtpControl: 0,
    droppedLoop: 0,
    rateLimitedDaytime: 0,
    rateLimitedRfc868: 0,
    rateLimitedNtp: 0,
    kissOfDeathSent: 0,
    clientsTracked: 0,
    udpErrors: 0,
    requestsNts: 0,
    ntpInterleaved: 0,
    ntpTimestampsHeld: 0,
    kernelTxTimestamps: 0,
    kernelTxMissing: 0,
    ntsNaks: 0,
    droppedNts: 0,
    ntsCookiesIssued: 0,
    keOk: 0,
    keBadRequest: 0,
    keTlsError: 0,
    keTimeout: 0,
    keRefused: 0,
    keMadeRoom: 0,
    keSessions: 0,
    ntsKeyRotations: 0,
    ntsCertificateExpiry: 0,
    requestsRoughtime: 0,
    roughtimeShort: 0,
    roughtimeMalformed: 0,
    roughtimeVersion: 0,
    roughtimeServer: 0,
    roughtimeRefused: 0,
    roughtimeSignatures: 0,
    roughtimeDelegationExpiry: 0,
    ntpStratum: 0,
    ntpLeap: 0,
    ntpSynchronized: 0,
    ntpRootDispersion: 0,
    bytesReceived: 0,
    bytesSent: 0,
  };
}

/**
 * Adds up the counters of several servers (workers) into one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newServerStats, sumStats } from "./stats.ts";
 *
 * const a = { ...newServerStats(), requestsTime: 2, connectionsOpen: 1 };
 * const b = { ...newServerStats(), requestsTime: 3, connectionsOpen: 4 };
 * assert.equal(sumStats([a, b]).requestsTime, 5);
 * // What every worker reads of the one clock is shown once.
 * assert.equal(sumStats([{ ...a, ntpStratum: 10 }, { ...b, ntpStratum: 10 }]).ntpStratum, 10);
 * ```
 */
export function sumStats(all: readonly ServerStats[]): ServerStats {
  const total = newServerStats();
  for (const stats of all) {
    for (const key in total) {
      const k = key as keyof ServerStats;
      total[k] = SHARED_GAUGES.has(k) ? Math.max(total[k], stats[k]) : total[k] + stats[k];
    }
  }
  return total;
}

/**
 * The gauges every worker reads from what they share (the system clock; NTS's one
 * certificate, which only the first holds): a pool shows the largest, never the sum.
 */
const SHARED_GAUGES: ReadonlySet<keyof ServerStats> = new Set([
  "ntsCertificateExpiry",
  "roughtimeDelegationExpiry",
  "ntpStratum",
  "ntpLeap",
  "ntpSynchronized",
  "ntpRootDispersion",
]);

/**
 * The counters of the protocols that send one answer and are done, Daytime (RFC 867) and
 * Time (RFC 868), over TCP and UDP alike: answered, dropped unanswered, over the rate limit.
 */
export const ONE_ANSWER_COUNTERS = {
  daytime: {
    answered: "requestsDaytime",
    dropped: "droppedDaytime",
    limited: "rateLimitedDaytime",
  },
  time: { answered: "requestsRfc868", dropped: "droppedRfc868", limited: "rateLimitedRfc868" },
} as const satisfies Record<
  "daytime" | "time",
  Record<"answered" | "dropped" | "limited", keyof ServerStats>
>;
