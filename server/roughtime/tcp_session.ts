// Roughtime over TCP (RFC 10049 §5): a stream of ROUGHTIM packets, each request answered in order.

import type { RoughtimeBatcher } from "./batcher.ts";

/** The largest request packet read over TCP: past it the client is closed, not buffered. */
export const MAX_TCP_PACKET = 16 * 1024;
const MAGIC = new TextEncoder().encode("ROUGHTIM");
const HEADER = 12;

/**
 * One TCP connection's Roughtime conversation, with the interface the line protocol's
 * `Session` gives the connection loop: `push` what was read, `pull` the answers, `closing`
 * once it should be closed. The complete packets of each push are answered together, under
 * one signature. A request that is not answered (short, malformed, another key, no version)
 * gets nothing, as over UDP; a stream that is not ROUGHTIM packets, or a packet over
 * {@linkcode MAX_TCP_PACKET}, ends the conversation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RoughtimeSession } from "./tcp_session.ts";
 *
 * const session = new RoughtimeSession({ take: () => false, pending: false, answer() {} });
 * session.push(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
 * assert.equal(session.closing, true);
 * ```
 */
export class RoughtimeSession {
  readonly #batcher: RoughtimeBatcher;
  #buffered = new Uint8Array(0);
  #output: Uint8Array[] = [];
  #closing = false;

  constructor(batcher: RoughtimeBatcher) {
    this.#batcher = batcher;
  }

  /** Whether the connection should be closed once what is owed is sent. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Takes bytes read from the client and answers every complete request among them. */
  push(chunk: Uint8Array, length: number = chunk.length): void {
    if (this.#closing) return;
    // Read straight from the chunk when nothing waits from before: it is not reused before
    // this push's answers are written, and what is left over is copied below.
    let all = chunk.subarray(0, length);
    if (this.#buffered.length > 0) {
      all = new Uint8Array(this.#buffered.length + length);
      all.set(this.#buffered);
      all.set(chunk.subarray(0, length), this.#buffered.length);
    }
    let at = 0;
    const packets: Uint8Array[] = [];
    while (all.length - at >= HEADER) {
      if (!MAGIC.every((byte, i) => all[at + i] === byte)) return this.#close();
      const size = HEADER + new DataView(all.buffer, all.byteOffset + at + 8, 4).getUint32(0, true);
      if (size > MAX_TCP_PACKET) return this.#close();
      if (all.length - at < size) break;
      packets.push(all.subarray(at, at + size));
      at += size;
    }
    if (
      all.length - at > 0 && !MAGIC.subarray(0, Math.min(8, all.length - at))
        .every((byte, i) => all[at + i] === byte)
    ) {
      return this.#close();
    }
    this.#buffered = all.slice(at);
    const answers: Uint8Array[] = [];
    packets.forEach((packet, slot) => this.#batcher.take(packet, slot));
    if (this.#batcher.pending) {
      this.#batcher.answer((slot, batch, i) => answers[slot] = batch.response(i));
    }
    for (const answer of answers) if (answer !== undefined) this.#output.push(answer);
  }

  /** The client half-closed: a request cut short is dropped, and the conversation ends. */
  end(): void {
    this.#buffered = new Uint8Array(0);
    this.#closing = true;
  }

  /** The answers owed, in order, as one chunk; empty when none. */
  pull(): Uint8Array {
    const output = this.#output;
    if (output.length === 0) return new Uint8Array(0);
    this.#output = [];
    if (output.length === 1) return output[0];
    const bytes = new Uint8Array(output.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of output) (bytes.set(part, at), at += part.length);
    return bytes;
  }

  #close(): void {
    this.#buffered = new Uint8Array(0);
    this.#closing = true;
  }
}
