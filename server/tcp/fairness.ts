// Per-address max-min fairness when every slot is busy (#26): the policy and its bookkeeping, without I/O.

import { parseAddress } from "../../lib/net.ts";

/**
 * The name a client's connections are counted under for fairness: an IPv4 address as it
 * is (an IPv4-mapped IPv6 one too), an IPv6 address by its /64, since one host is given
 * a /64 and could otherwise pose as many clients. Anything else (not an address) as it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fairnessGroup } from "./fairness.ts";
 *
 * assert.equal(fairnessGroup("192.0.2.7"), "192.0.2.7");
 * assert.equal(fairnessGroup("::ffff:192.0.2.7"), "192.0.2.7");
 * assert.equal(fairnessGroup("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
 * assert.equal(fairnessGroup("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
 * ```
 */
export function fairnessGroup(address: string): string {
  const words = parseAddress(address);
  if (words === null) return address;
  if (words.length === 1) {
    // parseAddress reads an IPv4-mapped address as the IPv4 one.
    const v4 = words[0];
    return `${v4 >>> 24}.${(v4 >>> 16) & 0xff}.${(v4 >>> 8) & 0xff}.${v4 & 0xff}`;
  }
  const group = (word: number, high: boolean) => (high ? word >>> 16 : word & 0xffff).toString(16);
  return `${group(words[0], true)}:${group(words[0], false)}:${group(words[1], true)}:${
    group(words[1], false)
  }::/64`;
}

/**
 * Whether a newcomer from an address that holds `newcomerHolds` connections may have one
 * of the largest holder's (`largestHolds`) closed to make room: only if, once admitted,
 * it would still hold fewer than the largest holds now. So no address holds more than
 * the others unless slots are free, and addresses with one busy connection each never
 * take each other's places.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mayTakeFromLargest } from "./fairness.ts";
 *
 * assert.equal(mayTakeFromLargest(0, 60), true);
 * assert.equal(mayTakeFromLargest(59, 60), false, "it would then hold as many");
 * assert.equal(mayTakeFromLargest(0, 1), false, "one each: no churn");
 * ```
 */
export function mayTakeFromLargest(newcomerHolds: number, largestHolds: number): boolean {
  return newcomerHolds + 1 < largestHolds;
}

const NONE = -1;

/**
 * Address numbers (as `Limits` gives them) bucketed by how many connections each holds,
 * so that the largest holder is known at once: each bucket is a doubly linked list kept
 * in typed arrays, and an address moves one bucket per connection opened or closed. Every
 * operation takes constant time, and nothing is allocated per connection.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HolderBuckets } from "./fairness.ts";
 *
 * const buckets = new HolderBuckets();
 * buckets.add(3);
 * buckets.add(3);
 * buckets.add(5);
 * assert.equal(buckets.largest(), 3);
 * assert.equal(buckets.largestCount(), 2);
 * buckets.remove(3);
 * buckets.remove(3);
 * assert.equal(buckets.largest(), 5);
 * ```
 */
export class HolderBuckets {
  /** By address number: connections held, and the neighbours in its count's bucket. */
  #count = new Int32Array(64);
  #next = new Int32Array(64).fill(NONE);
  #previous = new Int32Array(64).fill(NONE);
  /** By count: the first address number in that bucket. */
  #head = new Int32Array(64).fill(NONE);
  #top = 0;

  /** How many connections `number` holds. */
  count(number: number): number {
    return number < this.#count.length ? this.#count[number] : 0;
  }

  /** One more connection for `number`. */
  add(number: number): void {
    if (number >= this.#count.length) this.#growAddresses(number);
    const count = this.#count[number];
    if (count > 0) this.#unlink(number, count);
    const next = count + 1;
    this.#count[number] = next;
    if (next >= this.#head.length) this.#growCounts(next);
    this.#link(number, next);
    if (next > this.#top) this.#top = next;
  }

  /** One connection fewer for `number`; nothing if it holds none. */
  remove(number: number): void {
    const count = this.count(number);
    if (count === 0) return;
    this.#unlink(number, count);
    this.#count[number] = count - 1;
    if (count > 1) this.#link(number, count - 1);
    // The largest count falls by one at most: the address just moved there.
    if (count === this.#top && this.#head[count] === NONE) this.#top = count - 1;
  }

  /** An address number holding the most connections, or -1 when none holds any. */
  largest(): number {
    return this.#top === 0 ? NONE : this.#head[this.#top];
  }

  /** How many connections the largest holder holds (0 when none). */
  largestCount(): number {
    return this.#top;
  }

  #link(number: number, count: number): void {
    const head = this.#head[count];
    this.#previous[number] = NONE;
    this.#next[number] = head;
    if (head !== NONE) this.#previous[head] = number;
    this.#head[count] = number;
  }

  #unlink(number: number, count: number): void {
    const previous = this.#previous[number];
    const next = this.#next[number];
    if (previous === NONE) this.#head[count] = next;
    else this.#next[previous] = next;
    if (next !== NONE) this.#previous[next] = previous;
  }

  #growAddresses(number: number): void {
    const size = Math.max(number + 1, this.#count.length * 2);
    const grow = (old: Int32Array, fill: number) => {
      const grown = new Int32Array(size).fill(fill);
      grown.set(old);
      return grown;
    };
    this.#count = grow(this.#count, 0);
    this.#next = grow(this.#next, NONE);
    this.#previous = grow(this.#previous, NONE);
  }

  #growCounts(count: number): void {
    const grown = new Int32Array(Math.max(count + 1, this.#head.length * 2)).fill(NONE);
    grown.set(this.#head);
    this.#head = grown;
  }
}
