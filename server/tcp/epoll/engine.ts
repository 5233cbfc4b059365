// The epoll TCP engine: one loop over an epoll instance through FFI to libc, for very many connections.

import type { Acceptor } from "../acceptor.ts";
import { concernsOneConnection } from "../accept_errors.ts";
import type { SlotSockets } from "../connections.ts";
import { Epoll, EPOLLIN } from "../../../lib/epoll.ts";
import { EpollConnections } from "./connections.ts";
import { errno, type Libc, loadLibc } from "../../../lib/libc.ts";
import {
  ERRNO,
  errnoError,
  listenTcp,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCKADDR_SLOT,
  sockaddrHost,
} from "../../../lib/sockets.ts";
import type { TcpHost } from "../host.ts";

/** Connections accepted per readiness of the listener before other descriptors get a turn. */
const ACCEPTS_PER_EVENT = 64;
/**
 * How long the loop keeps this thread, in ms, while events keep coming: batches are
 * handled back to back, and a busy loop waits briefly for the next on this thread
 * ({@linkcode PAUSE_US}); then one wait goes through Deno's pool, which lets timers,
 * the UDP services and the `Deno.listen` listeners run.
 */
const TURN_MS = 1;
/**
 * How long a busy loop waits on this thread for the next event, in µs: about a
 * loopback round trip. A wait through Deno's pool costs a thread hop each way, which
 * costs more CPU than the request it waits for.
 */
const PAUSE_US = 100;

/** How the epoll engine fits the TCP side's clock. */
export interface EpollOptions {
  /** Called with `performance.now()` before each batch of events: the sweep's clock. */
  beforeBatch(now: number): void;
  /** The longest wait for events, in ms: how late the sweep may run when all is quiet. */
  waitMs: number;
}

/**
 * Serves the line protocol on one listening socket through epoll: every ready descriptor
 * is handled at once, synchronously (`accept4` until it would block, one `read` into a
 * shared buffer, one `send` of the answers), and a batch of events costs one thread hop
 * at most. Admission, eviction and deadlines are the host's, as for the `deno` engine.
 * With workers, each has its own engine on an `SO_REUSEPORT` socket.
 */
export class EpollEngine implements SlotSockets {
  readonly #c: Libc;
  readonly #host: TcpHost;
  readonly #acceptor: Acceptor;
  readonly #options: EpollOptions;
  #epoll: Epoll | null = null;
  #connections: EpollConnections | null = null;
  #listenFd = -1;
  /** The descriptor of each slot this engine holds. */
  #fdOf = new Int32Array(1024);
  #nextGeneration = 1;
  readonly #address = new Uint8Array(SOCKADDR_SLOT);
  readonly #addressLength = new Uint32Array(1);
  #paused = false;
  #backoff = 0;
  #resumeTimer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #finished: Promise<void> = Promise.resolve();

  constructor(host: TcpHost, acceptor: Acceptor, options: EpollOptions) {
    this.#c = loadLibc();
    this.#host = host;
    this.#acceptor = acceptor;
    this.#options = options;
  }

  /**
   * Binds the listener on a literal address and port and starts the loop; returns the
   * address as `Deno.listen` would. Throws what `Deno.listen` would (`AddrInUse`, …).
   */
  listen(hostname: string, port: number, reusePort: boolean): Deno.NetAddr {
    const c = this.#c;
    const bound = listenTcp(c, hostname, port, reusePort);
    try {
      this.#epoll = new Epoll(c);
    } catch (error) {
      c.close(bound.fd);
      throw error;
    }
    this.#listenFd = bound.fd;
    this.#epoll.add(bound.fd, EPOLLIN, 0);
    this.#connections = new EpollConnections(c, this.#host, this.#epoll, () => this.#released());
    this.#finished = this.#run();
    return { transport: "tcp", hostname, port: bound.port };
  }

  /** Settles when the loop has ended: accepting stopped and every connection closed. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /** Stops accepting: closes the listener, and wakes the loop so that it sees. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#resumeTimer);
    if (this.#listenFd >= 0) {
      this.#c.close(this.#listenFd);
      this.#listenFd = -1;
    }
    this.#epoll?.wake();
  }

  /** A descriptor was freed: accepting, paused for want of one, resumes. */
  freed(): void {
    if (this.#paused) this.#resume();
  }

  closeSocket(slot: number): void {
    this.#connections!.close(this.#fdOf[slot]);
  }

  evictSocket(slot: number): void {
    this.#connections!.evict(this.#fdOf[slot]);
  }

  makeRoomSocket(slot: number): void {
    this.#connections!.makeRoom(this.#fdOf[slot]);
  }

  peer(slot: number): string {
    return this.#connections!.peer(this.#fdOf[slot]);
  }

  async #run(): Promise<void> {
    const epoll = this.#epoll!, connections = this.#connections!;
    let turn = -Infinity, busy = false;
    while (!this.#stopped || connections.count > 0) {
      let n = 0;
      // A busy loop's pause returns at once when events are ready, so it needs no poll first.
      if (performance.now() - turn < TURN_MS) n = busy ? epoll.pause(PAUSE_US) : epoll.poll();
      if (n === 0) {
        n = await epoll.wait(this.#options.waitMs);
        turn = performance.now();
      }
      busy = n > 0;
      this.#options.beforeBatch(performance.now());
      for (let i = 0; i < n; i++) {
        const fd = epoll.fd(i);
        try {
          if (fd === this.#listenFd && epoll.generation(i) === 0) this.#acceptAll();
          else connections.ready(fd, epoll.generation(i));
        } catch (error) {
          // A bug, not a client: log it, and let the loop serve everyone else.
          this.#host.logger.error("epoll engine: event failed", {
            error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
          });
          connections.close(fd);
        }
      }
    }
    await epoll.close();
  }

  /** Accepts until the queue is empty (or {@linkcode ACCEPTS_PER_EVENT}), admitting each. */
  #acceptAll(): void {
    const c = this.#c;
    for (let accepted = 0; accepted < ACCEPTS_PER_EVENT; accepted++) {
      this.#addressLength[0] = SOCKADDR_SLOT;
      const flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
      const fd = c.accept4(this.#listenFd, this.#address, this.#addressLength, flags);
      if (fd >= 0) {
        this.#backoff = 0;
        this.#admit(fd);
        continue;
      }
      const code = errno(c);
      if (code === ERRNO.EAGAIN) return;
      const error = errnoError("accept", code);
      if (concernsOneConnection(error)) {
        // That connection died in the queue; the next one may be fine.
        this.#host.stats.acceptAborted++;
        continue;
      }
      return this.#pause(error);
    }
  }

  #admit(fd: number): void {
    const host = this.#host, connections = this.#connections!;
    const slot = host.table.open(this);
    if (slot >= this.#fdOf.length) {
      const grown = new Int32Array(Math.max(slot + 1, this.#fdOf.length * 2));
      grown.set(this.#fdOf);
      this.#fdOf = grown;
    }
    this.#fdOf[slot] = fd;
    const generation = this.#nextGeneration;
    this.#nextGeneration = generation === 0xffff_ffff ? 1 : generation + 1;
    connections.begin(fd, slot, generation);
    // Behind a balancer the client's address comes later, in the PROXY header.
    const address = host.proxyProtocol ? null : sockaddrHost(this.#address, 0);
    const admitted = host.admit(slot, address);
    if (admitted === true) return connections.serve(fd, address);
    if (admitted === false) return connections.refuse(fd);
    admitted.then((taken) => {
      if (!connections.admitting(fd, generation)) return; // closed by the drain meanwhile
      if (taken) connections.serve(fd, address);
      else connections.refuse(fd);
    });
  }

  /**
   * Out of descriptors or memory: a level-triggered listener would report the same
   * connection again at once, so accepting pauses until a connection closes, or the
   * back-off (5 ms doubling to 1 s) ends.
   */
  #pause(error: Error): void {
    this.#backoff = this.#acceptor.shortage(error, this.#backoff);
    this.#paused = true;
    this.#epoll!.modify(this.#listenFd, 0, 0);
    this.#resumeTimer = setTimeout(() => this.#resume(), this.#backoff);
  }

  #resume(): void {
    this.#paused = false;
    clearTimeout(this.#resumeTimer);
    if (this.#listenFd >= 0) this.#epoll!.modify(this.#listenFd, EPOLLIN, 0);
  }

  #released(): void {
    if (this.#stopped && this.#connections!.count === 0) this.#epoll!.wake();
  }
}
