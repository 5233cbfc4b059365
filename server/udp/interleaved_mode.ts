// SNTP's interleaved mode (RFC 9769) as the responder applies it to each reply.

import { TimestampStore } from "../../time/interleaved.ts";
import { read32, writeTimestamp } from "../../time/ntp.ts";
import { SECONDS_1900_TO_1970 } from "../../time/rfc868.ts";
import type { ServerStats } from "../stats.ts";

/**
 * Interleaved mode for one socket's replies: the {@linkcode TimestampStore} of what it
 * sent, and the rules for putting it in a reply. {@linkcode apply} runs on every SNTP
 * reply once its header is written; the engine then reports, reply by reply, when each
 * saved one left ({@linkcode stampTransmit}, {@linkcode sent}, {@linkcode sentAt}).
 */
export class InterleavedMode {
  readonly #store = new TimestampStore();
  readonly #stats: Pick<ServerStats, "ntpInterleaved" | "ntpTimestampsHeld">;
  /** The store slot {@linkcode apply} saved the last reply's timestamps in, or -1. */
  saved = -1;

  constructor(stats: Pick<ServerStats, "ntpInterleaved" | "ntpTimestampsHeld">) {
    this.#stats = stats;
  }

  /**
   * Turns the basic reply just written at `at` into an interleaved one when the request
   * at `dataAt` asks for it and the store holds the transmit timestamp of the reply it
   * names: the origin becomes the request's receive timestamp and the transmit timestamp
   * that of the earlier reply. Then claims the reply's receive timestamp and, when the
   * client may ask about this reply next, saves it ({@linkcode saved}). Returns whether
   * it interleaved. chrony's rule for who may ask: version 4, an origin with its lowest
   * bit set (one of our receive timestamps) and receive ≠ transmit, so that basic
   * clients, which send neither, cost nothing.
   */
  apply(data: Uint8Array, dataAt: number, reply: Uint8Array, at: number): boolean {
    const store = this.#store;
    this.saved = -1;
    const asks = (data[dataAt] & 0x38) === 0x20 && (data[dataAt + 31] & 1) === 1 &&
      (read32(data, dataAt + 32) !== read32(data, dataAt + 40) ||
        read32(data, dataAt + 36) !== read32(data, dataAt + 44));
    const interleaved = asks && store.take(data, dataAt + 24, reply, at + 40);
    if (interleaved) {
      for (let i = 0; i < 8; i++) reply[at + 24 + i] = data[dataAt + 32 + i];
      this.#stats.ntpInterleaved++;
    }
    store.claimReceive(reply, at + 32);
    if (asks) {
      this.saved = store.save(reply, at + 32);
      this.#stats.ntpTimestampsHeld = store.size;
    }
    return interleaved;
  }

  /**
   * Writes the transmit timestamp of the basic reply at `at`, `now` (ms since the epoch),
   * as late before the send as the engine can, then keeps it as
   * {@linkcode keepTransmit} does. `slot` is the reply's saved slot, or -1.
   */
  stampTransmit(reply: Uint8Array, at: number, now: number, slot: number): void {
    writeTimestamp(reply, at + 40, now);
    this.#keep(reply, at, slot);
  }

  /**
   * For a basic reply whose transmit timestamp is written already (NTS seals it): clears
   * its lowest bit, so that it never equals a receive timestamp, makes it differ from the
   * origin (RFC 9769), and keeps it for the slot {@linkcode apply} saved, if any.
   */
  keepTransmit(reply: Uint8Array, at: number): void {
    this.#keep(reply, at, this.saved);
  }

  #keep(reply: Uint8Array, at: number, slot: number): void {
    reply[at + 47] &= 0xfe;
    if (
      read32(reply, at + 40) === read32(reply, at + 24) &&
      read32(reply, at + 44) === read32(reply, at + 28)
    ) reply[at + 47] ^= 2;
    if (slot < 0) return;
    this.#store.setTransmit(
      slot,
      read32(reply, at + 32),
      read32(reply, at + 36),
      read32(reply, at + 40),
      read32(reply, at + 44),
      false,
    );
  }

  /**
   * Records when the reply saved in `slot`, with receive timestamp (`rxHi`, `rxLo`), left:
   * `now`, ms since the epoch, read once its send returned. The portable engine's best.
   */
  sent(slot: number, rxHi: number, rxLo: number, now: number): void {
    const seconds = Math.floor(now / 1000);
    this.sentAt(slot, rxHi, rxLo, seconds, Math.round((now - seconds * 1000) * 1e6));
  }

  /**
   * Records the kernel's transmit timestamp (`seconds`, `nanoseconds` since the Unix
   * epoch) of the reply saved in `slot`; returns false when the slot holds another pair
   * by now or the timestamp cannot belong to it.
   */
  sentAt(slot: number, rxHi: number, rxLo: number, seconds: number, nanoseconds: number): boolean {
    const hi = (seconds + SECONDS_1900_TO_1970) >>> 0;
    const lo = Math.floor(nanoseconds * 4.294967296) >>> 0;
    return this.#store.setTransmit(slot, rxHi, rxLo, hi, lo, true);
  }
}
