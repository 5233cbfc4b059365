// Per-address max-min fairness when every slot is busy: the policy and its bookkeeping, without I/O.

import { parseAddress } from "../lib/net.ts";

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
  if (!address.includes(":")) return address;
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
 * Group numbers (as {@linkcode FairShares} gives them) bucketed by how many slots each holds,
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
    this.#count = grown(this.#count, size, 0);
    this.#next = grown(this.#next, size, NONE);
    this.#previous = grown(this.#previous, size, NONE);
  }

  #growCounts(count: number): void {
    this.#head = grown(this.#head, Math.max(count + 1, this.#head.length * 2), NONE);
  }
}

/**
 * What is counted per fairness group ({@linkcode fairnessGroup}): how many slots each
 * group holds, the largest holder ({@linkcode HolderBuckets}), and each group's slots
 * oldest first, so that {@linkcode FairShares.victimFor} names the slot to close for a
 * newcomer in constant time. Slots are the caller's numbers (a connection table's, or
 * descriptors); what is kept of each is 12 bytes in typed arrays, and each group's name
 * once.
 *
 * The victim is the largest holder's oldest slot: the order changes only when a slot
 * joins or leaves, so requests cost nothing here (least recently active would reorder
 * on every request); the oldest has been served the longest; and a connection just
 * admitted from that group, perhaps not answered yet, goes last.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FairShares } from "./fairness.ts";
 *
 * const shares = new FairShares();
 * shares.join(0, "192.0.2.1");
 * shares.join(1, "192.0.2.1");
 * shares.join(2, "198.51.100.7");
 * assert.equal(shares.victimFor("203.0.113.5"), 0, "the largest holder's oldest");
 * assert.equal(shares.victimFor("198.51.100.7"), -1, "it would hold as many: refused");
 * assert.equal(shares.victimFor("192.0.2.1"), -1, "the largest holder itself");
 * shares.leave(0);
 * assert.equal(shares.victimFor("203.0.113.5"), -1, "one each: nobody gives way");
 * ```
 */
export class FairShares {
  readonly #numbers = new Map<string, number>();
  readonly #names: string[] = [];
  readonly #freeNumbers: number[] = [];
  readonly #buckets = new HolderBuckets();
  /** By slot: its group's number, and its neighbours in that group's list. */
  #groupOf = new Int32Array(64).fill(NONE);
  #next = new Int32Array(64);
  #previous = new Int32Array(64);
  /** By group number: its oldest slot and its newest. */
  #first = new Int32Array(64).fill(NONE);
  #last = new Int32Array(64).fill(NONE);
  #size = 0;

  /** How many slots are counted. */
  get size(): number {
    return this.#size;
  }

  /** How many slots the group of `address` holds. */
  holds(address: string): number {
    const number = this.#numbers.get(fairnessGroup(address));
    return number === undefined ? 0 : this.#buckets.count(number);
  }

  /** Counts `slot` under the group of `address`, as its newest; a slot counted already moves. */
  join(slot: number, address: string): void {
    if (slot >= this.#groupOf.length) this.#growSlots(slot);
    this.leave(slot);
    const group = fairnessGroup(address);
    let number = this.#numbers.get(group);
    if (number === undefined) {
      number = this.#freeNumbers.pop() ?? this.#names.length;
      if (number >= this.#first.length) this.#growGroups(number);
      this.#names[number] = group;
      this.#numbers.set(group, number);
    }
    this.#groupOf[slot] = number;
    const last = this.#last[number];
    this.#previous[slot] = last;
    this.#next[slot] = NONE;
    if (last === NONE) this.#first[number] = slot;
    else this.#next[last] = slot;
    this.#last[number] = slot;
    this.#buckets.add(number);
    this.#size++;
  }

  /** Stops counting `slot`; nothing if it is not counted. */
  leave(slot: number): void {
    const number = slot < this.#groupOf.length ? this.#groupOf[slot] : NONE;
    if (number === NONE) return;
    this.#groupOf[slot] = NONE;
    const previous = this.#previous[slot], next = this.#next[slot];
    if (previous === NONE) this.#first[number] = next;
    else this.#next[previous] = next;
    if (next === NONE) this.#last[number] = previous;
    else this.#previous[next] = previous;
    this.#buckets.remove(number);
    this.#size--;
    if (this.#buckets.count(number) === 0) {
      this.#numbers.delete(this.#names[number]);
      this.#names[number] = "";
      this.#freeNumbers.push(number);
    }
  }

  /**
   * The slot to close so that a newcomer from `address` may have one, or -1 when it may
   * not ({@linkcode mayTakeFromLargest}): the largest holder's oldest. A null address (a
   * newcomer this side cannot see, as another worker's) is taken to hold nothing here.
   */
  victimFor(address: string | null): number {
    const largest = this.#buckets.largest();
    if (largest === NONE) return NONE;
    const holds = address === null ? 0 : this.holds(address);
    if (!mayTakeFromLargest(holds, this.#buckets.largestCount())) return NONE;
    return this.#first[largest];
  }

  #growSlots(slot: number): void {
    const size = Math.max(slot + 1, this.#groupOf.length * 2);
    this.#groupOf = grown(this.#groupOf, size, NONE);
    this.#next = grown(this.#next, size, 0);
    this.#previous = grown(this.#previous, size, 0);
  }

  #growGroups(number: number): void {
    const size = Math.max(number + 1, this.#first.length * 2);
    this.#first = grown(this.#first, size, NONE);
    this.#last = grown(this.#last, size, NONE);
  }
}

/** `old`, copied into a new array of `size` whose other entries are `fill`. */
function grown(old: Int32Array, size: number, fill: number): Int32Array<ArrayBuffer> {
  const made = new Int32Array(size).fill(fill);
  made.set(old);
  return made;
}
