// Connections ordered by when they were last active: O(1) to move one to the end, oldest first.

/** What an item needs to be kept in an {@linkcode ActivityList}; the list owns these fields. */
export interface ActivityNode {
  /** When the item last joined a list, on the caller's clock. */
  lastActive: number;
  /** The list the item is in, or null. */
  list: ActivityList<this> | null;
  /** The item before this one (older), or null. */
  prev: this | null;
  /** The item after this one (newer), or null. */
  next: this | null;
}

/**
 * An intrusive doubly linked list ordered by `lastActive`, oldest first. An item is in
 * at most one list at a time; {@linkcode ActivityList.append} takes it out of the one it
 * was in. Appending stamps the item with a time no earlier than the newest one's, so
 * the order holds as long as the clock does not run backwards. Every operation is O(1),
 * so finding the connection silent the longest costs nothing however many are open.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ActivityList, type ActivityNode } from "./activity_list.ts";
 *
 * interface Item extends ActivityNode { name: string }
 * const item = (name: string): Item => ({ name, lastActive: 0, list: null, prev: null, next: null });
 * const list = new ActivityList<Item>();
 * const a = item("a"), b = item("b");
 * list.append(a, 1);
 * list.append(b, 2);
 * list.append(a, 3); // a was active again
 * assert.equal(list.oldest?.name, "b");
 * ```
 */
export class ActivityList<T extends ActivityNode> {
  #head: T | null = null;
  #tail: T | null = null;
  #size = 0;

  /** The item silent the longest, or null when the list is empty. */
  get oldest(): T | null {
    return this.#head;
  }

  /** How many items the list holds. */
  get size(): number {
    return this.#size;
  }

  /** Moves `item` to the end of this list (out of any other list) and stamps it with `now`. */
  append(item: T, now: number): void {
    item.list?.remove(item);
    const tail = this.#tail;
    item.lastActive = tail !== null && tail.lastActive > now ? tail.lastActive : now;
    item.list = this;
    item.prev = tail;
    item.next = null;
    if (tail === null) this.#head = item;
    else tail.next = item;
    this.#tail = item;
    this.#size++;
  }

  /** Takes `item` out of this list; does nothing if it is not in it. */
  remove(item: T): void {
    if (item.list !== this) return;
    if (item.prev === null) this.#head = item.next;
    else item.prev.next = item.next;
    if (item.next === null) this.#tail = item.prev;
    else item.next.prev = item.prev;
    item.prev = item.next = null;
    item.list = null;
    this.#size--;
  }
}
