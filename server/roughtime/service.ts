// Roughtime as the server runs it: the online key and its renewal, and one signature per batch of requests.

import type { Logger } from "../../lib/log.ts";
import {
  answerBatch,
  type BatchRequest,
  delegate,
  type Delegation,
  type SignedBatch,
} from "../../roughtime/response.ts";
import type { RawKeyPair } from "../../roughtime/response.ts";
import { readRequest, serverId } from "../../roughtime/request.ts";
import type { ServerStats } from "../stats.ts";

/** How long a delegation is valid, and how often a new one is made (before the old ends). */
const DELEGATION_SECONDS = 48 * 3600;
const RENEW_MS = 24 * 3600 * 1000;
/** MINT this far back, so that a delegation is valid from the second it is made. */
const MINT_SLACK_SECONDS = 60;
/**
 * The least RADI, seconds: the RFC's minimum for a server without leap-second knowledge,
 * which also covers MIDP being the second the request was processed in.
 */
export const MIN_RADIUS = 3;

/** What Roughtime needs of the server: counters, logs, and the clock it vouches for. */
export interface RoughtimeHost {
  readonly stats: ServerStats;
  readonly logger: Logger;
  /** The time now, ms since the epoch, and what the server knows of its error. */
  readonly clock: () => { now: number; rootDispersion: number; synchronised: boolean };
}

/**
 * RADI for a clock whose error is within `rootDispersion` seconds: rounded up, plus the
 * second MIDP truncates, and never under {@linkcode MIN_RADIUS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { radiusFor } from "./service.ts";
 *
 * assert.equal(radiusFor(0.000017), 3);
 * assert.equal(radiusFor(16), 17); // the kernel's maximum error, unsynchronised for a while
 * ```
 */
export function radiusFor(rootDispersion: number): number {
  return Math.max(MIN_RADIUS, Math.ceil(rootDispersion) + 1);
}

/**
 * Answers Roughtime requests in batches: {@linkcode take} reads each request of a batch
 * (a view into the socket's buffer, kept until {@linkcode answer}), and `answer` signs
 * once per version present and writes every response. A request that is dropped is
 * counted by reason; none gets an answer it should not (RFC 10049 has no error reply).
 * The online key is delegated for 48 h and renewed every 24 h.
 */
export class RoughtimeService {
  readonly publicKey: Uint8Array;
  readonly #longTerm: RawKeyPair;
  readonly #ourId: Uint8Array;
  readonly #host: RoughtimeHost;
  #delegation: Delegation;
  readonly #timer: ReturnType<typeof setInterval>;
  /** This batch's requests, by version, with the slots their answers go to. */
  readonly #batches = new Map<number, { slots: number[]; requests: BatchRequest[] }>();

  constructor(longTerm: RawKeyPair, host: RoughtimeHost) {
    this.#longTerm = longTerm;
    this.publicKey = longTerm.publicKey;
    this.#ourId = serverId(longTerm.publicKey);
    this.#host = host;
    this.#delegation = this.#delegate();
    this.#timer = setInterval(() => this.#delegation = this.#delegate(), RENEW_MS);
    Deno.unrefTimer(this.#timer);
  }

  #delegate(): Delegation {
    const now = Math.floor(this.#host.clock().now / 1000);
    const delegation = delegate(this.#longTerm, now - MINT_SLACK_SECONDS, now + DELEGATION_SECONDS);
    this.#host.stats.roughtimeDelegationExpiry = delegation.notAfter;
    return delegation;
  }

  /**
   * Takes the request `packet` (a view that must stay valid until {@linkcode answer}),
   * whose answer goes to `slot`; false, counted, when it is dropped.
   */
  take(packet: Uint8Array, slot: number): boolean {
    const stats = this.#host.stats;
    const request = readRequest(packet, this.#ourId);
    if (typeof request === "string") {
      if (request === "short") stats.roughtimeShort++;
      else if (request === "malformed") stats.roughtimeMalformed++;
      else if (request === "version") stats.roughtimeVersion++;
      else stats.roughtimeServer++;
      return false;
    }
    let batch = this.#batches.get(request.version);
    if (batch === undefined) {
      this.#batches.set(request.version, batch = { slots: [], requests: [] });
    }
    batch.slots.push(slot);
    batch.requests.push({ packet, nonce: request.nonce });
    return true;
  }

  /** Whether requests are waiting for {@linkcode answer}. */
  get pending(): boolean {
    return this.#batches.size > 0;
  }

  /**
   * Signs the batch taken since the last call (one signature per version) and hands each
   * request's slot to `write`, with the signed batch and the request's index in it. An
   * unsynchronised clock answers nothing: the server could not vouch for MIDP ± RADI (the
   * requests are counted as refused).
   */
  answer(write: (slot: number, batch: SignedBatch, index: number) => void): void {
    const { stats } = this.#host;
    const clock = this.#host.clock();
    if (!clock.synchronised) {
      for (const { slots } of this.#batches.values()) stats.roughtimeRefused += slots.length;
      this.#batches.clear();
      return;
    }
    const midpoint = Math.floor(clock.now / 1000);
    if (midpoint > this.#delegation.notAfter - MINT_SLACK_SECONDS) {
      this.#delegation = this.#delegate(); // the timer was late (a suspended machine)
    }
    const radius = radiusFor(clock.rootDispersion);
    for (const [version, { slots, requests }] of this.#batches) {
      const batch = answerBatch(requests, version, midpoint, radius, this.#delegation);
      stats.roughtimeSignatures++;
      stats.requestsRoughtime += batch.length;
      for (let i = 0; i < slots.length; i++) write(slots[i], batch, i);
    }
    this.#batches.clear();
  }

  /** Stops renewing the delegation. */
  close(): void {
    clearInterval(this.#timer);
  }
}
