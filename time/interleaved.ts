// Interleaved client/server mode (RFC 9769): the server's saved (receive, transmit) timestamps.

import { read32, write32 } from "./ntp.ts";

/** Units of an NTP timestamp's fraction per second: 2³². */
const FRACTION = 0x1_0000_0000;
/** A receive timestamp this far behind the last one means the clock stepped back: start over. */
const STEP_BACK = FRACTION;
/** Entries the store holds by default: 2¹⁶, about 1.1 MB (17 bytes each). */
export const DEFAULT_CAPACITY = 1 << 16;

const USED = 1;
const HAS_TRANSMIT = 2;

/** `a − b` for two NTP timestamps given as 32-bit halves, in fraction units; wraps eras. */
function difference(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return ((aHi - bHi) | 0) * FRACTION + (aLo - bLo);
}

/**
 * The receive timestamps a server has put in its replies, each with the transmit
 * timestamp of that reply once known, so that a client in interleaved mode (RFC 9769),
 * whose next request carries the receive timestamp as its origin, can be told when the
 * earlier reply really left. chrony's server keeps the same map (`clientlog.c`).
 *
 * Rules, which chrony's client checks too:
 * - {@linkcode claimReceive} makes every receive timestamp odd and later than the last,
 *   so no two replies share one, whichever clients they go to, and a transmit timestamp
 *   (always even) never equals a receive timestamp.
 * - Pairs are keyed by the receive timestamp alone, not by the client's address or
 *   port: a client behind a NAT whose port changes is still found.
 * - {@linkcode take} hands a pair out once; a replayed request gets basic mode.
 * - Memory is fixed at construction: the oldest pair makes room for the newest, whatever
 *   a flood of spoofed origins does. Lookups are a binary search of a ring kept in order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TimestampStore } from "./interleaved.ts";
 *
 * const store = new TimestampStore(4);
 * const reply = new Uint8Array(48);
 * reply.set([0xea, 0, 0, 1, 0, 0, 0, 8], 32); // the receive timestamp written
 * store.claimReceive(reply, 32); // made odd: its last byte becomes 9
 * const slot = store.save(reply, 32);
 * store.setTransmit(slot, 0xea000001, 9, 0xea000001, 5000, true);
 * // The client's next request names that receive timestamp as its origin.
 * const next = new Uint8Array(48);
 * assert.equal(store.take(reply, 32, next, 40), true);
 * assert.deepEqual([...next.subarray(40, 48)], [0xea, 0, 0, 1, 0, 0, 0x13, 0x88]);
 * assert.equal(store.take(reply, 32, next, 40), false); // once only
 * ```
 */
export class TimestampStore {
  readonly capacity: number;
  readonly #mask: number;
  readonly #rxHi: Uint32Array;
  readonly #rxLo: Uint32Array;
  readonly #txHi: Uint32Array;
  readonly #txLo: Uint32Array;
  readonly #flags: Uint8Array;
  /** The ring: `#size` pairs from slot `#first`, in increasing receive order. */
  #first = 0;
  #size = 0;
  /** The last receive timestamp claimed; none yet while `#lastHi` and `#lastLo` are 0. */
  #lastHi = 0;
  #lastLo = 0;

  /** @param capacity Pairs held at most, a power of two. */
  constructor(capacity: number = DEFAULT_CAPACITY) {
    if (capacity < 2 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`capacity must be a power of two, got ${capacity}`);
    }
    this.capacity = capacity;
    this.#mask = capacity - 1;
    this.#rxHi = new Uint32Array(capacity);
    this.#rxLo = new Uint32Array(capacity);
    this.#txHi = new Uint32Array(capacity);
    this.#txLo = new Uint32Array(capacity);
    this.#flags = new Uint8Array(capacity);
  }

  /** Pairs held now. */
  get size(): number {
    return this.#size;
  }

  /**
   * Makes the receive timestamp at `bytes[at..at+8]` unique: its lowest bit set (so
   * that a request's origin shows it was one of ours) and later than every one before.
   * A timestamp up to a second behind the last (two sockets' stamps, a slewed clock) is
   * moved just past it; one further behind means the clock stepped back, and every pair
   * is dropped, as chrony does on a step.
   */
  claimReceive(bytes: Uint8Array, at: number): void {
    let hi = read32(bytes, at);
    let lo = (read32(bytes, at + 4) | 1) >>> 0;
    const behind = difference(this.#lastHi, this.#lastLo, hi, lo);
    if (behind >= 0 && (this.#lastHi | this.#lastLo) !== 0) {
      if (behind < STEP_BACK) {
        lo = (this.#lastLo + 2) >>> 0;
        hi = lo < 2 ? (this.#lastHi + 1) >>> 0 : this.#lastHi;
      } else {
        this.clear();
      }
    }
    this.#lastHi = hi;
    this.#lastLo = lo;
    write32(bytes, at, hi);
    write32(bytes, at + 4, lo);
  }

  /**
   * Saves the receive timestamp at `bytes[at..at+8]`, which {@linkcode claimReceive}
   * has just made the latest, with no transmit timestamp yet; returns its slot for
   * {@linkcode setTransmit}. The oldest pair makes room when the store is full.
   */
  save(bytes: Uint8Array, at: number): number {
    if (this.#size === this.capacity) this.#first = (this.#first + 1) & this.#mask;
    else this.#size++;
    const slot = (this.#first + this.#size - 1) & this.#mask;
    this.#rxHi[slot] = read32(bytes, at);
    this.#rxLo[slot] = read32(bytes, at + 4);
    this.#flags[slot] = 0;
    return slot;
  }

  /**
   * Records when the reply with receive timestamp (`rxHi`, `rxLo`), saved in `slot`,
   * left: a better timestamp (the kernel's) replaces an estimate, never the reverse
   * unless `replace`. Returns false when the slot holds another pair by now, or the
   * transmit timestamp is not within a second after the receive timestamp.
   */
  setTransmit(
    slot: number,
    rxHi: number,
    rxLo: number,
    txHi: number,
    txLo: number,
    replace: boolean,
  ): boolean {
    if (this.#rxHi[slot] !== rxHi || this.#rxLo[slot] !== rxLo || !this.#holds(slot)) return false;
    const flags = this.#flags[slot];
    if ((flags & HAS_TRANSMIT) !== 0 && !replace) return true;
    const after = difference(txHi, txLo, rxHi, rxLo);
    if (after < 0 || after >= FRACTION) return false;
    this.#txHi[slot] = txHi;
    this.#txLo[slot] = txLo;
    this.#flags[slot] = flags | HAS_TRANSMIT;
    return true;
  }

  /**
   * Finds the pair whose receive timestamp equals the origin at `origin[at..at+8]` and,
   * if it has a transmit timestamp and was not handed out before, writes that (lowest
   * bit clear) into `out` at `outAt` and returns true: the reply is interleaved. Else
   * returns false, and the reply is basic.
   */
  take(origin: Uint8Array, at: number, out: Uint8Array, outAt: number): boolean {
    const slot = this.#find(read32(origin, at), read32(origin, at + 4));
    if (slot < 0) return false;
    const flags = this.#flags[slot];
    if ((flags & USED) !== 0 || (flags & HAS_TRANSMIT) === 0) return false;
    this.#flags[slot] = flags | USED;
    write32(out, outAt, this.#txHi[slot]);
    write32(out, outAt + 4, this.#txLo[slot] & ~1);
    return true;
  }

  /** Drops every pair. */
  clear(): void {
    this.#size = 0;
    this.#first = 0;
  }

  /** Whether `slot` lies within the ring now. */
  #holds(slot: number): boolean {
    return ((slot - this.#first) & this.#mask) < this.#size;
  }

  /** The slot of the pair with this receive timestamp, or -1. */
  #find(hi: number, lo: number): number {
    let low = 0;
    let high = this.#size - 1;
    const first = this.#first;
    const mask = this.#mask;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const slot = (first + middle) & mask;
      const order = difference(this.#rxHi[slot], this.#rxLo[slot], hi, lo);
      if (order === 0) return slot;
      if (order < 0) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }
}
