// Admission at the limit: who gets a slot, who makes room for it (the silent, then by fairness), other workers asked.

import type { AccessList } from "../access.ts";
import { NO_SLOT } from "./activity_list.ts";
import type { ConnectionTable } from "./connections.ts";
import type { Eviction } from "./eviction.ts";
import type { AddressVerdict } from "./host.ts";
import type { Limits } from "./limits.ts";
import { PeerEviction } from "./peers.ts";

/**
 * Behind PROXY, a server full at accept lets connections send their header, so that room
 * is made by the client's real address: so many at once, a tenth of `maxConnections`
 * (at least 16), past which newcomers are refused at accept as before.
 */
const HEADER_WAIT_SHARE = 0.1;

/** What admission is set by. */
export interface AdmissionSettings {
  readonly maxConnections: number;
  /** Per-address max-min fairness when every slot is busy. */
  readonly fairness: boolean;
  readonly proxyProtocol: boolean;
  /** With workers: the array their counts share, through which they make room for each other. */
  readonly shared?: Int32Array;
}

/**
 * Decides, for each new connection, whether it gets a slot: free, or made by closing
 * the connection silent the longest (if silent long enough, {@linkcode Eviction.evictOldest}),
 * or else, by per-address fairness, the oldest connection of the address holding the
 * most, if the newcomer's would still hold fewer ({@linkcode Eviction.makeRoomFor});
 * with workers, the others may make room instead ({@linkcode PeerEviction}). Behind
 * PROXY, where the address comes with the header, a connection nobody made room for at
 * accept may still send it, and is judged by it.
 */
export class Admission {
  readonly #table: ConnectionTable;
  readonly #limits: Limits;
  readonly #eviction: Eviction;
  readonly #access: AccessList;
  #fairness: boolean;
  readonly #peers: PeerEviction | null;
  readonly #stopping: AbortSignal;
  /** Slots over the limit waiting for their PROXY header, to be judged by its address. */
  readonly #awaitingHeader = new Set<number>();
  #maxAwaitingHeader = 0;

  /** With workers, answers the others' requests for room until `stopping` aborts. */
  constructor(
    table: ConnectionTable,
    limits: Limits,
    eviction: Eviction,
    access: AccessList,
    settings: AdmissionSettings,
    stopping: AbortSignal,
  ) {
    this.#table = table;
    this.#limits = limits;
    this.#eviction = eviction;
    this.#access = access;
    this.#fairness = settings.fairness;
    this.#stopping = stopping;
    this.configure(settings);
    this.#peers = settings.shared
      ? new PeerEviction(settings.shared, {
        hasSilent: () => {
          table.tick();
          const oldest = table.oldestSilent();
          return oldest !== NO_SLOT && table.lastActive(oldest) < table.silentBefore();
        },
        evictSilent: () => eviction.evictOldest(null),
        hasFairVictim: () => limits.victimFor(null) !== NO_SLOT,
        closeFairVictim: () => eviction.makeRoomFor(null),
      })
      : null;
    this.#peers?.answer(stopping);
  }

  /** Takes new settings (a reload); the shared array, if any, stays the one it was built with. */
  configure(settings: AdmissionSettings): void {
    this.#fairness = settings.fairness;
    this.#maxAwaitingHeader = settings.proxyProtocol && settings.fairness
      ? Math.max(16, Math.ceil(settings.maxConnections * HEADER_WAIT_SHARE))
      : 0;
  }

  /**
   * Counts a new connection in `slot` against `maxConnections`, making room if it may:
   * true or false at once, or later when other workers were asked. `address` null: not
   * known until the PROXY header.
   */
  admit(slot: number, address: string | null): boolean | Promise<boolean> {
    const limits = this.#limits;
    if (limits.take(slot)) return true;
    this.#table.tick();
    // A client that will be denied makes nobody give way.
    if (address !== null && !this.#allowed(address)) return false;
    if (this.#makeRoom(slot, address)) return true;
    if (this.#peers?.mayAsk(limits.holds(address))) {
      const fair = this.#fairness && address !== null;
      const asked = this.#peers.ask(() => limits.take(slot), fair, this.#stopping);
      return address === null ? asked.then((taken) => taken || this.#awaitHeader(slot)) : asked;
    }
    return address === null && this.#awaitHeader(slot);
  }

  /**
   * Counts an admitted connection under its client's `address`: denied by `--allow` and
   * `--deny`, busy (it waited for its header over the limit, and nobody made room),
   * past the per-client limit, or served.
   */
  admitAddress(slot: number, address: string): AddressVerdict {
    if (!this.#allowed(address)) return "denied";
    if (this.#awaitingHeader.delete(slot) && !this.#limits.take(slot)) {
      this.#table.tick();
      if (!this.#makeRoom(slot, address)) return "busy";
    }
    return this.#limits.takeAddress(slot, address) ? "served" : "per-client";
  }

  /** The connection in `slot` has ended. */
  ended(slot: number): void {
    this.#awaitingHeader.delete(slot);
  }

  #allowed(address: string): boolean {
    return this.#access.open || this.#access.allows(address);
  }

  /** Makes room for `slot` among this server's own connections, and takes it; tells whether it did. */
  #makeRoom(slot: number, address: string | null): boolean {
    const limits = this.#limits, eviction = this.#eviction;
    if (eviction.evictOldest(address) && limits.take(slot)) return true;
    return address !== null && eviction.makeRoomFor(address) && limits.take(slot);
  }

  /** Lets a connection over the limit send its PROXY header, within the budget. */
  #awaitHeader(slot: number): boolean {
    if (this.#awaitingHeader.size >= this.#maxAwaitingHeader) return false;
    this.#awaitingHeader.add(slot);
    return true;
  }
}
