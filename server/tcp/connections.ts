// A server's live connections, by state, oldest activity first; and the coarse clock that stamps them.

import { ActivityLists, NO_SLOT } from "./activity_list.ts";
import type { Limits } from "./limits.ts";

/**
 * Where a connection is in its life, as Go's `ConnState`. It decides what the sweep
 * and eviction may do: only `header` and `reading` connections owe the client nothing
 * and may be closed to make room.
 */
export type ConnState = "header" | "reading" | "writing" | "lingering" | "closed";

/** The states a connection lives in, each with its activity list. */
export type LiveState = Exclude<ConnState, "closed">;

/** Why a connection ended, for the debug log. */
export type CloseReason =
  | "closed by client"
  | "quit"
  | "shutdown"
  | "shutdown timeout"
  | "idle timeout"
  | "evicted"
  | "made room"
  | "per-client limit"
  | "no valid PROXY header"
  | "no PROXY header in time"
  | "answered"
  | "denied"
  | "busy"
  | "linger done"
  | "linger limit"
  | "reset"
  | "error";

/** Every {@linkcode CloseReason}, numbered by its place: a slot keeps the number. */
const CLOSE_REASONS: readonly CloseReason[] = [
  "closed by client",
  "quit",
  "shutdown",
  "shutdown timeout",
  "idle timeout",
  "evicted",
  "made room",
  "per-client limit",
  "no valid PROXY header",
  "no PROXY header in time",
  "answered",
  "denied",
  "busy",
  "linger done",
  "linger limit",
  "reset",
  "error",
];
const NO_REASON = 255;

/** The states by number; the live ones are also the numbers of their activity lists. */
const STATES: readonly ConnState[] = ["header", "reading", "writing", "lingering", "closed"];
const LIST: Record<LiveState, number> = { header: 0, reading: 1, writing: 2, lingering: 3 };
const CLOSED = 4;
/** A slot no connection holds. */
const FREE = 5;
const READING = LIST.reading;
const HEADER = LIST.header;
const LINGERING = LIST.lingering;

/**
 * What the table needs of the engine that holds a slot's socket. Each engine frees the
 * slots it opened ({@linkcode ConnectionTable.free}) once it is done with their sockets.
 */
export interface SlotSockets {
  /** Closes the slot's socket now. */
  closeSocket(slot: number): void;
  /** Sends `ERR idle, closed to make room`, then closes the slot's socket. */
  evictSocket(slot: number): void;
  /**
   * Sends the answers the slot's connection owes, then `ERR busy, closed to make room`,
   * then closes it as after QUIT (lingering). `waiting`: it owes nothing now (it waits
   * for a request), so the line goes at once.
   */
  makeRoomSocket(slot: number, waiting: boolean): void;
  /** The slot's client address, for logs. */
  peer(slot: number): string;
}

/**
 * Every live connection, as a numbered slot in the activity list of its state, so that
 * the longest silent one is found in O(1) and a sweep touches only the connections it
 * closes. What the table keeps of a slot is a few bytes in typed arrays, so an engine
 * with no object per connection keeps none here either. Entering a state stamps a slot
 * with the coarse clock, which ticks with the sweep and with accepting; the request
 * path reads it instead of the system clock.
 */
export class ConnectionTable {
  readonly #lists: ActivityLists;
  #state: Uint8Array;
  #reason: Uint8Array;
  /** Which engine holds each slot: an index into `#engines`. */
  #engineOf: Uint8Array;
  readonly #engines: SlotSockets[] = [];
  readonly #free: number[] = [];
  #capacity: number;
  #size = 0;
  readonly #limits: Limits;
  /** Read at each use: the TCP side changes them on a reload. */
  readonly #options: { readonly maxLingering: number; readonly evictAfterMs: number };
  /**
   * When the clock ticked lately, oldest first, reaching back just past `evictAfter`:
   * a stamp older than the first tick proves that much silence.
   */
  readonly #ticks: number[] = [];
  #clock = performance.now();

  constructor(limits: Limits, options: { maxLingering: number; evictAfterMs: number }) {
    this.#limits = limits;
    this.#options = options;
    const capacity = this.#capacity = 1024;
    this.#lists = new ActivityLists(4, capacity);
    this.#state = new Uint8Array(capacity).fill(FREE);
    this.#reason = new Uint8Array(capacity).fill(NO_REASON);
    this.#engineOf = new Uint8Array(capacity);
    for (let slot = capacity - 1; slot >= 0; slot--) this.#free.push(slot);
  }

  /** The coarse activity clock: `performance.now()` as of the last tick. */
  get coarseNow(): number {
    return this.#clock;
  }

  /** How many slots are held, lingering connections included. */
  get size(): number {
    return this.#size;
  }

  /** Every slot held, in no particular order. */
  *[Symbol.iterator](): IterableIterator<number> {
    const state = this.#state;
    for (let slot = 0; slot < this.#capacity; slot++) if (state[slot] !== FREE) yield slot;
  }

  /**
   * Takes a slot for a connection whose socket `engine` holds, in state `reading` but
   * in no list until it {@linkcode enter}s one.
   */
  open(engine: SlotSockets): number {
    if (this.#free.length === 0) this.#grow();
    const slot = this.#free.pop()!;
    let index = this.#engines.indexOf(engine);
    if (index < 0) index = this.#engines.push(engine) - 1;
    this.#engineOf[slot] = index;
    this.#state[slot] = READING;
    this.#reason[slot] = NO_REASON;
    this.#size++;
    return slot;
  }

  /** Gives a slot back once its engine is done with its socket; it may be taken again. */
  free(slot: number): void {
    if (this.#state[slot] === FREE) return;
    this.#lists.remove(slot);
    this.#limits.release(slot);
    this.#state[slot] = FREE;
    this.#free.push(slot);
    this.#size--;
  }

  /** The state of a slot that is held. */
  state(slot: number): ConnState {
    return STATES[this.#state[slot]];
  }

  /** Why the server closed the slot's connection, once it has. */
  reason(slot: number): CloseReason | null {
    const reason = this.#reason[slot];
    return reason === NO_REASON ? null : CLOSE_REASONS[reason];
  }

  /** When the slot last entered a state, on the coarse clock. */
  lastActive(slot: number): number {
    return this.#lists.lastActive(slot);
  }

  /** The slot's client address, for logs. */
  peer(slot: number): string {
    return this.#engines[this.#engineOf[slot]].peer(slot);
  }

  /** Advances the coarse clock, and remembers when it did for {@linkcode silentBefore}. */
  tick(): void {
    const now = this.#clock = performance.now();
    const ticks = this.#ticks;
    ticks.push(now);
    const horizon = now - this.#options.evictAfterMs;
    while (ticks.length > 1 && ticks[1] <= horizon) ticks.shift();
  }

  /**
   * A stamp below this proves `evictAfter` of silence. A stamp below a tick was made
   * before that tick happened, so a tick at least `evictAfter` ago bounds the silence
   * from below, however late timers run.
   */
  silentBefore(): number {
    const first = this.#ticks[0];
    return first !== undefined && first <= this.#clock - this.#options.evictAfterMs
      ? first
      : -Infinity;
  }

  /**
   * Moves a slot into `state`, at the end of its list, unless it is closed. A
   * connection that starts lingering stops counting against the limits, within a
   * budget of its own: past it, the oldest lingering one is closed.
   */
  enter(slot: number, state: LiveState): void {
    if (this.#state[slot] >= CLOSED) return;
    const list = LIST[state];
    this.#state[slot] = list;
    this.#lists.append(slot, list, this.#clock);
    if (list !== LINGERING) return;
    this.#limits.release(slot);
    if (this.#lists.size(LINGERING) > this.#options.maxLingering) {
      this.close(this.#lists.oldest(LINGERING), "linger limit");
    }
  }

  /**
   * Closes a connection (its socket at once unless `now` is false), takes it out of its
   * list and the limits, and records why. Closing a closed one only closes its socket.
   */
  close(slot: number, reason: CloseReason, now = true): void {
    const state = this.#state[slot];
    if (state === FREE) return;
    this.#lists.remove(slot);
    if (state !== CLOSED) {
      this.#state[slot] = CLOSED;
      this.#reason[slot] = CLOSE_REASONS.indexOf(reason);
      this.#limits.release(slot);
    }
    if (now) this.#engines[this.#engineOf[slot]].closeSocket(slot);
  }

  /**
   * Closes a silent connection to make room, after telling it why. It owes nothing and
   * is owed nothing, so its receive queue is empty and the close is a FIN after the
   * line. A client that does not read could stall that write: it waits in the
   * lingering list, whose deadline closes it then.
   */
  evict(slot: number): void {
    this.close(slot, "evicted", false);
    this.#lists.append(slot, LINGERING, this.#clock);
    this.#engines[this.#engineOf[slot]].evictSocket(slot);
  }

  /**
   * Closes a busy connection to make room for a newcomer (per-address fairness): it stops
   * counting against the limits at once, and waits in the lingering list, whose deadline
   * bounds it, while its engine sends what it owes, the line saying why, and closes.
   */
  makeRoom(slot: number): void {
    const waiting = this.#state[slot] === READING;
    this.close(slot, "made room", false);
    this.#lists.append(slot, LINGERING, this.#clock);
    this.#engines[this.#engineOf[slot]].makeRoomSocket(slot, waiting);
  }

  /**
   * The slot owing nothing (waiting for a request or a PROXY header) silent the longest,
   * or {@linkcode NO_SLOT}.
   */
  oldestSilent(): number {
    const lists = this.#lists;
    const reading = lists.oldest(READING), header = lists.oldest(HEADER);
    if (reading === NO_SLOT || header === NO_SLOT) return reading === NO_SLOT ? header : reading;
    return lists.lastActive(header) < lists.lastActive(reading) ? header : reading;
  }

  /**
   * Closes the connections in `state` last active before `deadline`, oldest first;
   * calls `each` before closing each one.
   */
  expire(
    state: LiveState,
    deadline: number,
    reason: CloseReason,
    each?: (slot: number) => void,
  ): void {
    const lists = this.#lists, list = LIST[state];
    for (let oldest = lists.oldest(list); oldest !== NO_SLOT;) {
      if (lists.lastActive(oldest) >= deadline) return;
      each?.(oldest);
      this.close(oldest, reason);
      // An engine that closes at once has freed the slot; one that closes later has
      // taken it out of the list: either way the next oldest is at the head now.
      oldest = lists.oldest(list);
    }
  }

  #grow(): void {
    const old = this.#capacity, capacity = old * 2;
    const widen = (array: Uint8Array, fill: number) => {
      const made = new Uint8Array(capacity).fill(fill);
      made.set(array);
      return made;
    };
    this.#state = widen(this.#state, FREE);
    this.#reason = widen(this.#reason, NO_REASON);
    this.#engineOf = widen(this.#engineOf, 0);
    this.#lists.grow(capacity);
    for (let slot = capacity - 1; slot >= old; slot--) this.#free.push(slot);
    this.#capacity = capacity;
  }
}
