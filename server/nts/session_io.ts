// How NTS-KE sessions wait for their clients and compute without holding Deno's blocking pool.

import type { Epoll } from "../../lib/epoll.ts";
import { EPOLLIN, EPOLLOUT } from "../../lib/epoll.ts";

/** epoll(7): report one event, then nothing until the descriptor is armed again. */
const EPOLLONESHOT = 1 << 30;
/** The epoll data of a session's socket; the listener's is 0. */
export const SESSION_DATA = 1;

/**
 * Readiness of many non-blocking sockets from the one epoll the service already waits
 * on: a session that would block arms its socket for reading or writing and awaits
 * {@linkcode SocketWaits.ready}; the service's loop hands each event on with
 * {@linkcode SocketWaits.woke}. One-shot, so a socket that hung up reports once per wait
 * and never spins the loop while its session computes. No thread is held while a client
 * takes its time.
 */
export class SocketWaits {
  readonly #epoll: Epoll;
  readonly #waiters = new Map<number, (ready: boolean) => void>();
  #closed = false;

  constructor(epoll: Epoll) {
    this.#epoll = epoll;
  }

  /** Starts watching `fd`, disarmed; false if epoll refused it. */
  watch(fd: number): boolean {
    return this.#epoll.add(fd, EPOLLONESHOT, SESSION_DATA);
  }

  /**
   * Resolves true once `fd` may be read (or written, `write`), false when its session is
   * cut off ({@linkcode cancel}) or the service closes.
   */
  ready(fd: number, write: boolean): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const armed = this.#epoll.modify(fd, (write ? EPOLLOUT : EPOLLIN) | EPOLLONESHOT, SESSION_DATA);
    if (!armed) return Promise.resolve(false);
    return new Promise((resolve) => this.#waiters.set(fd, resolve));
  }

  /** An event for `fd`: its session goes on. */
  woke(fd: number): void {
    this.#settle(fd, true);
  }

  /** Ends the wait of `fd`'s session, if it waits: its deadline, or making room. */
  cancel(fd: number): void {
    this.#settle(fd, false);
  }

  /** The service closes: every wait ends, and no new one begins. */
  close(): void {
    this.#closed = true;
    for (const fd of [...this.#waiters.keys()]) this.#settle(fd, false);
  }

  #settle(fd: number, ready: boolean): void {
    const resolve = this.#waiters.get(fd);
    if (resolve === undefined) return;
    this.#waiters.delete(fd);
    resolve(ready);
  }
}

/**
 * A bound on the calls on Deno's blocking pool at once, which has 32 threads shared with
 * every engine's wait: a burst of handshakes queues here, in JavaScript, not there.
 */
export class PoolSlots {
  #free: number;
  readonly #queue: (() => void)[] = [];

  constructor(slots: number) {
    this.#free = slots;
  }

  /** Runs `call` once a slot is free, and frees it after. */
  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#queue.push(resolve));
    try {
      return await call();
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#free++;
    }
  }
}
