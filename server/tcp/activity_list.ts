// Connections ordered by when they were last active, by slot number in typed arrays: O(1) to
// move one to the end, oldest first, and no object per connection.

/** The slot number that stands for none: the end of a list, or an empty one. */
export const NO_SLOT = -1;

/**
 * Several intrusive doubly linked lists over numbered slots, each ordered by the time its
 * slots last joined it, oldest first. A slot is in at most one list at a time;
 * {@linkcode ActivityLists.append} takes it out of the one it was in. Appending stamps the
 * slot with a time no earlier than the newest one's, so the order holds as long as the
 * clock does not run backwards. Every operation is O(1), and the links live in typed
 * arrays: an idle connection costs 17 bytes here, not a JavaScript object.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ActivityLists } from "./activity_list.ts";
 *
 * const lists = new ActivityLists(2, 8); // two lists over slots 0 to 7
 * lists.append(3, 0, 1);
 * lists.append(5, 0, 2);
 * lists.append(3, 0, 3); // slot 3 was active again
 * assert.equal(lists.oldest(0), 5);
 * lists.append(5, 1, 4); // slot 5 moves to the other list
 * assert.equal(lists.oldest(0), 3);
 * assert.equal(lists.size(1), 1);
 * ```
 */
export class ActivityLists {
  #prev: Int32Array;
  #next: Int32Array;
  #stamp: Float64Array;
  /** The list each slot is in, or -1. */
  #list: Int8Array;
  readonly #head: Int32Array;
  readonly #tail: Int32Array;
  readonly #size: Int32Array;

  /**
   * @param lists How many lists (at most 127).
   * @param capacity How many slots to begin with; {@linkcode grow} adds more.
   */
  constructor(lists: number, capacity: number) {
    this.#head = new Int32Array(lists).fill(NO_SLOT);
    this.#tail = new Int32Array(lists).fill(NO_SLOT);
    this.#size = new Int32Array(lists);
    this.#prev = new Int32Array(capacity);
    this.#next = new Int32Array(capacity);
    this.#stamp = new Float64Array(capacity);
    this.#list = new Int8Array(capacity).fill(-1);
  }

  /** Makes room for slots up to `capacity - 1`, keeping every link. */
  grow(capacity: number): void {
    if (capacity <= this.#list.length) return;
    const widen = <T extends Int32Array | Float64Array | Int8Array>(old: T, made: T): T => {
      made.set(old);
      return made;
    };
    this.#prev = widen(this.#prev, new Int32Array(capacity));
    this.#next = widen(this.#next, new Int32Array(capacity));
    this.#stamp = widen(this.#stamp, new Float64Array(capacity));
    const list = new Int8Array(capacity).fill(-1);
    this.#list = widen(this.#list, list);
  }

  /** The slot silent the longest in `list`, or {@linkcode NO_SLOT} when it is empty. */
  oldest(list: number): number {
    return this.#head[list];
  }

  /** How many slots `list` holds. */
  size(list: number): number {
    return this.#size[list];
  }

  /** When `slot` last joined a list, on the caller's clock. */
  lastActive(slot: number): number {
    return this.#stamp[slot];
  }

  /** Moves `slot` to the end of `list` (out of any other list) and stamps it with `now`. */
  append(slot: number, list: number, now: number): void {
    this.remove(slot);
    const tail = this.#tail[list];
    const newest = tail === NO_SLOT ? now : this.#stamp[tail];
    this.#stamp[slot] = newest > now ? newest : now;
    this.#list[slot] = list;
    this.#prev[slot] = tail;
    this.#next[slot] = NO_SLOT;
    if (tail === NO_SLOT) this.#head[list] = slot;
    else this.#next[tail] = slot;
    this.#tail[list] = slot;
    this.#size[list]++;
  }

  /** Takes `slot` out of the list it is in, if any. */
  remove(slot: number): void {
    const list = this.#list[slot];
    if (list < 0) return;
    const prev = this.#prev[slot], next = this.#next[slot];
    if (prev === NO_SLOT) this.#head[list] = next;
    else this.#next[prev] = next;
    if (next === NO_SLOT) this.#tail[list] = prev;
    else this.#prev[next] = prev;
    this.#list[slot] = -1;
    this.#size[list]--;
  }
}
