// The UDP services: Daytime (RFC 867), Time (RFC 868), SNTP (RFC 4330), Roughtime; two engines.

import { closeQuietly, parseAddress } from "../../lib/net.ts";
import { BATCH, MmsgSocket, mmsgSupported, RECEIVE_SLOT, REPLY_SLOT } from "./mmsg.ts";
import { type Datagram, DEFERRED, Responder, type UdpHost, type UdpProtocol } from "./responder.ts";
import { PendingTransmits, SendLag } from "./pending_transmits.ts";
import { read32 } from "../../time/ntp.ts";

export type { NtpTime, UdpHost, UdpProtocol } from "./responder.ts";

/** Larger datagrams are truncated; NTP requests with extension fields fit. */
const RECEIVE_SIZE = 2048;
/** Room for the longest reply: an NTS reply is no longer than its request. */
const REPLY_SIZE = RECEIVE_SIZE;
/** A reply that left later than this after its clock read (a pause) counts as this much, ms. */
const MAX_LAG_MS = 0.1;
/** How often the kernel is asked when a basic reply left, to learn how late replies leave, ms. */
const PROBE_MS = 10;
/** The record a socket fills in for each datagram it reads from `data`. */
function newDatagram(data: Uint8Array): Datagram {
  return { data, at: 0, length: 0, peer: null, peerPort: 0, receivedAt: 0 };
}

/** Tells whether a receive failed because the socket was closed, which ends the loop. */
function isClosed(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted;
}

/** How UDP is read and written: see {@linkcode UdpService} and {@linkcode MmsgService}. */
export type UdpEngine = "auto" | "deno" | "mmsg";

/**
 * Which engine `auto` means here: the batched one where it can run (Linux, `--allow-ffi`,
 * a literal listen address), else the portable one.
 */
export function chooseUdpEngine(wanted: UdpEngine, hostname: string): "deno" | "mmsg" {
  if (wanted !== "auto") return wanted;
  return mmsgSupported() && parseAddress(hostname) !== null ? "mmsg" : "deno";
}

/**
 * Binds a UDP service with the given engine. Throws what `Deno.listenDatagram` throws
 * (`AddrInUse`, `PermissionDenied`, …).
 */
export function listenUdp(
  engine: "deno" | "mmsg",
  protocol: UdpProtocol,
  address: { hostname: string; port: number; reusePort: boolean },
  host: UdpHost,
): UdpListener {
  const { hostname, port, reusePort } = address;
  if (engine === "mmsg") {
    return new MmsgService(protocol, new MmsgSocket(hostname, port, reusePort), host);
  }
  const socket = Deno.listenDatagram({ hostname, port, transport: "udp" });
  if (protocol === "roughtime") return new RoughtimeUdpService(socket, host);
  return new UdpService(protocol, socket, host);
}

/** A UDP service of either engine, as the server holds it. */
export interface UdpListener {
  readonly protocol: UdpProtocol;
  readonly port: number;
  /** Settles when the loop has ended, after {@linkcode UdpListener.close}. */
  readonly done: Promise<void>;
  close(): void;
}

/**
 * Serves one protocol on a `Deno.listenDatagram` socket until closed: one receive and one
 * send per datagram. Portable, and needs only `--allow-net`; the send is awaited before
 * the next receive, so one reply buffer serves.
 */
export class UdpService implements UdpListener {
  readonly protocol: UdpProtocol;
  readonly socket: Deno.DatagramConn;
  readonly done: Promise<void>;
  readonly #host: UdpHost;
  readonly #responder: Responder;

  constructor(protocol: UdpProtocol, socket: Deno.DatagramConn, host: UdpHost) {
    this.protocol = protocol;
    this.socket = socket;
    this.#host = host;
    this.#responder = new Responder(host, protocol);
    this.done = this.#serve();
  }

  get port(): number {
    return (this.socket.addr as Deno.NetAddr).port;
  }

  close(): void {
    closeQuietly(this.socket);
  }

  async #serve(): Promise<void> {
    const { stats } = this.#host;
    const clock = this.#host.ntpTime.clock;
    const responder = this.#responder;
    const protocol = this.protocol;
    const socket = this.socket;
    const buffer = new Uint8Array(RECEIVE_SIZE);
    const reply = new Uint8Array(REPLY_SIZE);
    const datagram = newDatagram(buffer);
    for (;;) {
      let length: number;
      let from: Deno.NetAddr;
      try {
        const received = await socket.receive(buffer);
        length = received[0].length;
        from = received[1] as Deno.NetAddr;
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, protocol, error);
        continue;
      }
      datagram.receivedAt = clock.now();
      datagram.length = length;
      datagram.peer = responder.needsPeer ? from.hostname : null;
      datagram.peerPort = from.port;
      const size = responder.respond(datagram, reply, 0);
      if (size <= 0) continue;
      const saved = responder.saved;
      if (responder.stamp) responder.timestamps!.stampTransmit(reply, 0, clock.now(), saved);
      try {
        await socket.send(size === reply.length ? reply : reply.subarray(0, size), from);
        stats.bytesSent += size;
        // For interleaved mode, when it left: the best this engine can tell.
        if (saved >= 0) {
          responder.timestamps!.sent(saved, read32(reply, 32), read32(reply, 36), clock.now());
        }
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, protocol, error);
      }
    }
  }
}

/** Receives waiting at once on the portable engine's Roughtime socket: its largest batch. */
const ROUGHTIME_RECEIVERS = 64;

/**
 * Roughtime on a `Deno.listenDatagram` socket: {@linkcode ROUGHTIME_RECEIVERS} receives
 * wait at once, each with its own buffer, and the requests whose receives complete in one
 * turn of the event loop are answered under one signature, in a microtask queued by the
 * first of them (the others' continuations are queued before it). One signature per
 * datagram would cost some 100 µs each.
 */
export class RoughtimeUdpService implements UdpListener {
  readonly protocol: UdpProtocol = "roughtime";
  readonly socket: Deno.DatagramConn;
  readonly done: Promise<void>;
  readonly #host: UdpHost;
  readonly #responder: Responder;
  /** Each receiver's response, at `k × REPLY_SIZE`, and its length (0: none). */
  readonly #replies = new Uint8Array(ROUGHTIME_RECEIVERS * REPLY_SIZE);
  readonly #sizes = new Uint32Array(ROUGHTIME_RECEIVERS);
  /** Settles when this turn's batch is answered; null when none is waiting. */
  #answered: Promise<void> | null = null;

  constructor(socket: Deno.DatagramConn, host: UdpHost) {
    this.socket = socket;
    this.#host = host;
    this.#responder = new Responder(host, "roughtime");
    const receivers = Array.from({ length: ROUGHTIME_RECEIVERS }, (_, k) => this.#serve(k));
    this.done = Promise.all(receivers).then(() => {});
  }

  get port(): number {
    return (this.socket.addr as Deno.NetAddr).port;
  }

  close(): void {
    closeQuietly(this.socket);
  }

  /** Answers the requests taken this turn, each response into its receiver's slot. */
  #answer(): void {
    this.#answered = null;
    this.#host.roughtime!.answer((at, batch, index) => {
      batch.writeTo(index, this.#replies, at);
      this.#sizes[at / REPLY_SIZE] = batch.size;
    });
  }

  /** Receiver `k`: receive, take, wait for the turn's answer, send it, again. */
  async #serve(k: number): Promise<void> {
    const { stats } = this.#host;
    const clock = this.#host.ntpTime.clock;
    const buffer = new Uint8Array(RECEIVE_SIZE);
    const at = k * REPLY_SIZE;
    const datagram = newDatagram(buffer);
    for (;;) {
      let from: Deno.NetAddr;
      try {
        const received = await this.socket.receive(buffer);
        datagram.length = received[0].length;
        from = received[1] as Deno.NetAddr;
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, this.protocol, error);
        continue;
      }
      datagram.receivedAt = clock.now();
      datagram.peer = this.#responder.needsPeer ? from.hostname : null;
      datagram.peerPort = from.port;
      // The request stays in `buffer`, which this receiver does not touch until answered.
      if (this.#responder.respond(datagram, this.#replies, at) !== DEFERRED) continue;
      await (this.#answered ??= new Promise((done) => {
        queueMicrotask(() => {
          try {
            this.#answer();
          } catch (error) {
            failed(this.#host, this.protocol, error);
          } finally {
            done();
          }
        });
      }));
      const size = this.#sizes[k];
      if (size === 0) continue; // an unsynchronised clock answers nothing
      this.#sizes[k] = 0;
      try {
        await this.socket.send(this.#replies.subarray(at, at + size), from);
        stats.bytesSent += size;
      } catch (error) {
        if (isClosed(error)) return;
        failed(this.#host, this.protocol, error);
      }
    }
  }
}

/**
 * Serves one protocol on a {@linkcode MmsgSocket} (Linux, FFI) until closed: up to 64
 * datagrams per receive, kernel receive timestamps, and `SO_REUSEPORT` so that workers
 * share the port. Daytime and Time answers go out 64 per send. Each SNTP reply goes out
 * alone, as soon as it is written, its transmit timestamp read just before: in a batch
 * the 64th reply would leave some 200 µs after the first, and a client measures half of
 * any such error as offset. The kernel's transmit timestamps (see
 * {@linkcode MmsgSocket.transmitTimes}) serve interleaved mode and teach the
 * service how long a reply takes to leave after its timestamp is read.
 */
export class MmsgService implements UdpListener {
  readonly protocol: UdpProtocol;
  readonly done: Promise<void>;
  readonly #socket: MmsgSocket;
  readonly #host: UdpHost;
  readonly #responder: Responder;
  /** Whether timestamps come from the kernel's clock, so its transmit timestamps apply. */
  readonly #kernelTime: boolean;
  /** When the kernel was last asked when a basic reply left, ms since the epoch. */
  #probedAt = -Infinity;
  /** The replies awaiting the kernel's transmit timestamp. */
  readonly #pending = new PendingTransmits();
  /** How long replies take to leave after their timestamp is read, from the kernel's. */
  readonly #lag = new SendLag(MAX_LAG_MS);
  /** Whether a reply since the last read of the error queue asked for a timestamp. */
  #asked = false;
  /** Of the pending transmits' `missing`, those added to the stats so far. */
  #missingCounted = 0;

  constructor(protocol: UdpProtocol, socket: MmsgSocket, host: UdpHost) {
    this.protocol = protocol;
    this.#socket = socket;
    this.#host = host;
    // The kernel's clock stamps replies where the kernel's receive timestamps are used;
    // an injected clock (tests) replaces both.
    const kernelTime = this.#kernelTime = host.ntpTime.isSystemClock;
    this.#responder = new Responder(
      host,
      protocol,
      kernelTime ? () => socket.now() : () => host.ntpTime.clock.now(),
    );
    this.done = this.#serve();
  }

  get port(): number {
    return this.#socket.port;
  }

  close(): void {
    this.#socket.close();
  }

  async #serve(): Promise<void> {
    const socket = this.#socket;
    const { stats } = this.#host;
    const clock = this.#host.ntpTime.clock;
    const responder = this.#responder;
    const { data, replies, lengths } = socket;
    const kernelTime = this.#kernelTime;
    const ntp = this.protocol === "ntp";
    const roughtime = this.protocol === "roughtime";
    const datagram = newDatagram(data);
    for (;;) {
      const count = await socket.receive();
      if (count === 0) return;
      for (let i = 0; i < count; i++) {
        let receivedAt = kernelTime ? socket.receivedAt(i) : NaN;
        if (Number.isNaN(receivedAt)) receivedAt = clock.now();
        datagram.receivedAt = receivedAt;
        datagram.at = i * RECEIVE_SLOT;
        datagram.length = lengths[i];
        datagram.peer = responder.needsPeer ? socket.peer(i) : null;
        datagram.peerPort = socket.peerPort(i);
        const length = responder.respond(datagram, replies, i * REPLY_SLOT);
        if (length <= 0) continue;
        stats.bytesSent += length;
        if (ntp) this.#sendNow(i, length);
        else socket.queue(i, length);
      }
      // Roughtime: the batch's requests, answered under one signature.
      if (roughtime && this.#host.roughtime!.pending) {
        this.#host.roughtime!.answer((at, batch, index) => {
          batch.writeTo(index, replies, at);
          stats.bytesSent += batch.size;
          socket.queue(at / REPLY_SLOT, batch.size);
        });
      }
      const queued = socket.queued;
      if (queued > 0) {
        const sent = socket.flush();
        if (sent < queued) stats.udpErrors += queued - sent;
      }
      if (this.#asked) this.#readTransmitTimes();
    }
  }

  /**
   * Sends the SNTP reply just written for datagram `i`, a basic one stamped first. It
   * asks the kernel when it left if the client may ask about it (interleaved mode), and
   * once every {@linkcode PROBE_MS} for a basic one, to learn the lag.
   */
  #sendNow(i: number, length: number): void {
    const socket = this.#socket;
    const responder = this.#responder;
    const saved = responder.saved;
    const clock = this.#host.ntpTime.clock;
    const kernelTime = this.#kernelTime;
    const before = kernelTime ? socket.now() : clock.now();
    const sealedFor = responder.sealedFor;
    const basic = responder.stamp || !Number.isNaN(sealedFor);
    const probe = kernelTime && basic && before - this.#probedAt >= PROBE_MS;
    const ask = kernelTime && (saved >= 0 || probe);
    const at = i * REPLY_SLOT;
    if (responder.stamp) {
      responder.timestamps!.stampTransmit(socket.replies, at, before + responder.lagMs, saved);
    }
    const id = socket.sendNow(i, length, ask);
    if (id === -2) {
      this.#host.stats.udpErrors++;
      return;
    }
    if (id === -1) return;
    if (probe) this.#probedAt = before;
    const { replies } = socket;
    const meant = Number.isNaN(sealedFor) ? before : sealedFor;
    const rxHi = read32(replies, at + 32);
    this.#pending.expect(id, saved, rxHi, read32(replies, at + 36), before, meant);
    this.#asked = true;
  }

  /**
   * Reads the kernel's transmit timestamps that have come (one bounded read of the error
   * queue, which never blocks): each goes to its saved pair, and each teaches the
   * responder's lag ({@linkcode SendLag}).
   */
  #readTransmitTimes(): void {
    const socket = this.#socket;
    const { stats } = this.#host;
    const pending = this.#pending;
    const responder = this.#responder;
    this.#asked = false;
    const times = socket.transmitTimes;
    const restarts = times.restarts;
    const count = times.read();
    for (let k = 0; k < count; k++) {
      const seconds = times.seconds[k];
      const nanoseconds = times.nanoseconds[k];
      const slot = pending.match(times.ids[k], seconds, nanoseconds);
      if (slot === -2) continue;
      this.#lag.add(pending.lag);
      responder.lagMs = this.#lag.value;
      if (
        slot >= 0 &&
        responder.timestamps!.sentAt(slot, pending.rxHi, pending.rxLo, seconds, nanoseconds)
      ) {
        stats.kernelTxTimestamps++;
      }
    }
    // What the read left (more than one read holds) waits for the next.
    if (count === BATCH) this.#asked = true;
    if (times.restarts !== restarts) pending.forget();
    stats.kernelTxMissing += pending.missing - this.#missingCounted;
    this.#missingCounted = pending.missing;
  }
}

/** A datagram that could not be received or answered: counted, logged at debug. */
function failed(host: UdpHost, protocol: UdpProtocol, error: unknown): void {
  host.stats.udpErrors++;
  if (host.logger.enabled("debug")) {
    host.logger.debug("udp error", {
      protocol,
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
    });
  }
}
