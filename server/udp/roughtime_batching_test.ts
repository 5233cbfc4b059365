// Tests of how the portable UDP engine gathers Roughtime requests into one signature: a
// scripted socket hands datagrams to its waiting receives, all in one turn or over several.

import assert from "node:assert/strict";
import { RoughtimeUdpService } from "./services.ts";
import type { UdpHost } from "./responder.ts";
import { newServerStats } from "../stats.ts";
import { AccessList } from "../access.ts";
import { createLogger } from "../../lib/log.ts";
import type { RoughtimeBatcher } from "../roughtime/batcher.ts";
import type { SignedBatch } from "../../roughtime/response.ts";
import { within } from "../../testing/test_util.ts";

type Received = [Uint8Array, Deno.NetAddr];

/** A socket whose datagrams the test hands over, each to one waiting receive. */
class ScriptedSocket {
  readonly addr: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: 2002 };
  readonly sent: { bytes: Uint8Array; to: Deno.NetAddr }[] = [];
  readonly #waiting: {
    buffer: Uint8Array;
    resolve: (received: Received) => void;
    reject: (error: Error) => void;
  }[] = [];
  #whenWaiting: { count: number; resolve: () => void } | null = null;

  receive(buffer: Uint8Array): Promise<Received> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ buffer, resolve, reject });
      const when = this.#whenWaiting;
      if (when !== null && this.#waiting.length >= when.count) {
        this.#whenWaiting = null;
        when.resolve();
      }
    });
  }

  /**
   * Settles once `count` receives wait: every datagram handed over has been dealt with.
   * Bounded, so that a receiver that never comes back fails the test rather than hangs it.
   */
  waiting(count: number): Promise<void> {
    if (this.#waiting.length >= count) return Promise.resolve();
    const waited = new Promise<void>((resolve) => this.#whenWaiting = { count, resolve });
    return within(5000, waited, `${count} receives waiting`);
  }

  get receivers(): number {
    return this.#waiting.length;
  }

  /** Hands each datagram to a waiting receive, all in this one turn. */
  deliver(datagrams: { bytes: Uint8Array; from: Deno.NetAddr }[]): void {
    for (const { bytes, from } of datagrams) {
      const receive = this.#waiting.shift()!;
      receive.buffer.set(bytes);
      receive.resolve([receive.buffer.subarray(0, bytes.length), from]);
    }
  }

  send(bytes: Uint8Array, to: Deno.NetAddr): Promise<number> {
    this.sent.push({ bytes: bytes.slice(), to });
    return Promise.resolve(bytes.length);
  }

  close(): void {
    for (const receive of this.#waiting.splice(0)) {
      receive.reject(new Deno.errors.BadResource("closed"));
    }
  }
}

/** A batcher that answers each request with its first 8 bytes, and notes each batch's size. */
class EchoBatcher implements RoughtimeBatcher {
  readonly batches: number[] = [];
  synchronised = true;
  #taken: { packet: Uint8Array; slot: number }[] = [];

  take(packet: Uint8Array, slot: number): boolean {
    this.#taken.push({ packet, slot });
    return true;
  }

  get pending(): boolean {
    return this.#taken.length > 0;
  }

  answer(write: (slot: number, batch: SignedBatch, index: number) => void): void {
    const taken = this.#taken;
    this.#taken = [];
    if (!this.synchronised) return;
    this.batches.push(taken.length);
    const batch = {
      size: 8,
      writeTo: (i: number, target: Uint8Array, at: number) =>
        target.set(taken[i].packet.subarray(0, 8), at),
    } as unknown as SignedBatch;
    taken.forEach(({ slot }, i) => write(slot, batch, i));
  }
}

function start(batcher: EchoBatcher): { socket: ScriptedSocket; service: RoughtimeUdpService } {
  const host: UdpHost = {
    stats: newServerStats(),
    logger: createLogger({ level: "error" }),
    access: AccessList.OPEN,
    limiter: null,
    limitNtp: false,
    daytimeAnswer: undefined as never,
    rfc868Answer: undefined as never,
    ntpTime: { clock: { now: () => 0 }, info: undefined as never, isSystemClock: false },
    ports: { daytime: null, time: null, ntp: null, ntsKe: null, roughtime: 2002 },
    nts: null,
    roughtime: batcher,
  };
  const socket = new ScriptedSocket();
  const service = new RoughtimeUdpService(socket as unknown as Deno.DatagramConn, host);
  return { socket, service };
}

/** `count` requests from clients on ports `first`…, each 1,024 bytes that begin with its number. */
function requests(count: number, first: number) {
  return Array.from({ length: count }, (_, i) => {
    const bytes = new Uint8Array(1024).fill(i % 251);
    new DataView(bytes.buffer).setUint32(0, first + i);
    const from: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: first + i };
    return { bytes, from };
  });
}

Deno.test("the portable engine answers the Roughtime requests of one turn under one signature, each to its sender", async () => {
  const batcher = new EchoBatcher();
  const { socket, service } = start(batcher);
  const all = socket.receivers;
  assert.equal(all, 64, "64 receives wait at once");
  for (const [count, first] of [[10, 5000], [1, 6000], [64, 7000]]) {
    const datagrams = requests(count, first);
    const before = socket.sent.length;
    socket.deliver(datagrams);
    await socket.waiting(all);
    assert.equal(batcher.batches.at(-1), count, `${count} delivered in one turn, one batch`);
    const sent = socket.sent.slice(before);
    assert.equal(sent.length, count);
    for (const { bytes, to } of sent) {
      const asked = datagrams.find(({ from }) => from.port === to.port)!;
      assert.deepEqual(bytes, asked.bytes.subarray(0, 8), "each sender gets its own answer");
    }
  }
  assert.deepEqual(batcher.batches, [10, 1, 64]);
  service.close();
  await service.done;
});

Deno.test("the portable engine sends nothing for Roughtime while the clock is unsynchronised, and keeps receiving", async () => {
  const batcher = new EchoBatcher();
  batcher.synchronised = false;
  const { socket, service } = start(batcher);
  socket.deliver(requests(5, 5000));
  await socket.waiting(64);
  assert.equal(socket.sent.length, 0);
  batcher.synchronised = true;
  socket.deliver(requests(2, 6000));
  await socket.waiting(64);
  assert.equal(socket.sent.length, 2);
  service.close();
  await service.done;
});
