// An epoll instance through libc (FFI): interest by descriptor and generation, waits that cost no
// thread hop when something is ready, and an eventfd that wakes a wait in progress.

import type { Libc } from "./libc.ts";

/** Readable (or the peer closed, or an error): read. */
export const EPOLLIN = 0x1;
/** Writable (or an error): write what is pending. */
export const EPOLLOUT = 0x4;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_MOD = 3;
const EPOLL_CLOEXEC = 0x80000;
const EFD_NONBLOCK = 0x800;
const EFD_CLOEXEC = 0x80000;
/** Events taken from the kernel per wait. */
const MAX_EVENTS = 256;

/**
 * `struct epoll_event` in 32-bit words: `uint32_t events` then the 64-bit `data`, which
 * this engine fills with the descriptor (low half) and its generation (high half).
 * x86_64's kernel ABI packs it into 12 bytes; aarch64 aligns `data` to 8 (16 bytes).
 */
const LAYOUT = Deno.build.arch === "x86_64"
  ? { words: 3, fd: 1, generation: 2 }
  : { words: 4, fd: 2, generation: 3 };

/**
 * One epoll instance, level-triggered. Each registered descriptor carries a generation
 * number, so that an event still queued for a descriptor closed and reused within the
 * same batch can be told from one for its new owner. {@linkcode Epoll.wake} ends a wait
 * in progress: a blocking wait on Deno's pool cannot be cancelled, and the instance
 * must not be closed while one runs.
 */
export class Epoll {
  readonly #c: Libc;
  readonly #fd: number;
  readonly #wakeFd: number;
  readonly #events = new Uint32Array(MAX_EVENTS * LAYOUT.words);
  readonly #one = new Uint32Array(4);
  readonly #eight = new Uint8Array(8);
  readonly #timespec = new BigInt64Array(2);
  #pauseUs = 0;
  #waiting: Promise<number> | null = null;

  /** Creates the instance and its wake-up eventfd; throws when the kernel refuses. */
  constructor(c: Libc) {
    this.#c = c;
    this.#fd = c.epoll_create1(EPOLL_CLOEXEC);
    if (this.#fd < 0) throw new Error("epoll_create1 failed");
    this.#wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#wakeFd < 0 || !this.add(this.#wakeFd, EPOLLIN, 0)) {
      c.close(this.#fd);
      throw new Error("eventfd failed");
    }
  }

  /** Watches `fd` for `events`, tagged with `generation`; false if the kernel refused. */
  add(fd: number, events: number, generation: number): boolean {
    return this.#control(EPOLL_CTL_ADD, fd, events, generation);
  }

  /** Changes what `fd` is watched for. */
  modify(fd: number, events: number, generation: number): boolean {
    return this.#control(EPOLL_CTL_MOD, fd, events, generation);
  }

  /** The events ready now, without waiting and without leaving this thread. */
  poll(): number {
    const n = this.#c.epoll_wait(this.#fd, this.#events, MAX_EVENTS, 0);
    return n < 0 ? 0 : this.#drop(n);
  }

  /**
   * Waits up to `microseconds` for events on this thread, which blocks everything else
   * meanwhile; where libc has no `epoll_pwait2`, it only polls. For a loop that is
   * busy: the next event is likely that close, and a wait on the pool costs more.
   */
  pause(microseconds: number): number {
    const pwait2 = this.#c.epoll_pwait2;
    if (pwait2 === null) return this.poll();
    if (this.#pauseUs !== microseconds) {
      this.#pauseUs = microseconds;
      this.#timespec[1] = BigInt(microseconds * 1000);
    }
    const n = pwait2(this.#fd, this.#events, MAX_EVENTS, this.#timespec, null);
    return n < 0 ? 0 : this.#drop(n);
  }

  /**
   * Waits up to `ms` for events on a thread of Deno's pool; resolves with how many are
   * ready (0 on timeout, on a wake, or on an interrupted wait, whose errno is lost there).
   */
  async wait(ms: number): Promise<number> {
    this.#waiting = this.#c.epoll_wait_blocking(this.#fd, this.#events, MAX_EVENTS, ms);
    const n = await this.#waiting;
    this.#waiting = null;
    return n < 0 ? 0 : this.#drop(n);
  }

  /** Ends a wait in progress, or makes the next one return at once. */
  wake(): void {
    this.#eight.fill(0);
    this.#eight[0] = 1;
    this.#c.write(this.#wakeFd, this.#eight, 8n);
  }

  /** What happened to the `i`th ready descriptor: `EPOLLIN`, `EPOLLOUT` and error bits. */
  events(i: number): number {
    return this.#events[i * LAYOUT.words];
  }

  /** The `i`th ready descriptor. */
  fd(i: number): number {
    return this.#events[i * LAYOUT.words + LAYOUT.fd];
  }

  /** The generation the `i`th ready descriptor was registered with. */
  generation(i: number): number {
    return this.#events[i * LAYOUT.words + LAYOUT.generation];
  }

  /** Closes the instance once no wait is in progress. */
  async close(): Promise<void> {
    await this.#waiting?.catch(() => {});
    this.#c.close(this.#wakeFd);
    this.#c.close(this.#fd);
  }

  /**
   * Takes the wake-up event out of the `n` ready, resetting the eventfd, so that callers
   * see connections' events only; returns how many are left.
   */
  #drop(n: number): number {
    const events = this.#events, words = LAYOUT.words;
    for (let i = 0; i < n; i++) {
      if (events[i * words + LAYOUT.fd] !== this.#wakeFd) continue;
      this.#c.read(this.#wakeFd, this.#eight, 8n);
      const last = (n - 1) * words;
      for (let w = 0; w < words; w++) events[i * words + w] = events[last + w];
      return n - 1;
    }
    return n;
  }

  #control(op: number, fd: number, events: number, generation: number): boolean {
    const one = this.#one;
    one.fill(0);
    one[0] = events;
    one[LAYOUT.fd] = fd;
    one[LAYOUT.generation] = generation;
    return this.#c.epoll_ctl(this.#fd, op, fd, one) === 0;
  }
}
