// A hand-made SNTP client in interleaved mode (RFC 9769), as chrony's `xleave` asks, for tests.

import { writeTimestamp } from "../time/ntp.ts";
import { receiveWithin } from "./time_clients.ts";

/** What one exchange gave. */
export interface InterleavedAnswer {
  /** The reply, or null when none came in time. */
  reply: Uint8Array | null;
  /** Whether the reply is interleaved: its origin is the request's receive field. */
  interleaved: boolean;
  /** The request sent. */
  request: Uint8Array;
}

/**
 * Asks like a client in interleaved mode: each request's origin is the receive
 * timestamp of the last reply, its receive field when that reply arrived, its transmit
 * field random. The third exchange is the first a server can interleave.
 */
export class InterleavedClient {
  readonly #socket: Deno.DatagramConn;
  readonly #port: number;
  readonly #hostname: string;
  #lastReceive = new Uint8Array(8);
  #lastArrival = new Uint8Array(8);

  constructor(socket: Deno.DatagramConn, port: number, hostname = "127.0.0.1") {
    this.#socket = socket;
    this.#port = port;
    this.#hostname = hostname;
  }

  /** The next request, as {@linkcode ask} would send it. */
  request(): Uint8Array {
    const request = new Uint8Array(48);
    request[0] = (4 << 3) | 3;
    request.set(this.#lastReceive, 24);
    request.set(this.#lastArrival, 32);
    request.set(crypto.getRandomValues(new Uint8Array(8)), 40);
    return request;
  }

  /** Sends `request` (the next one by default) and reads the reply. */
  async ask(request: Uint8Array = this.request(), ms = 2000): Promise<InterleavedAnswer> {
    await this.#socket.send(request, {
      transport: "udp",
      hostname: this.#hostname,
      port: this.#port,
    });
    const reply = await receiveWithin(this.#socket, ms);
    if (reply === null || reply.length < 48) return { reply, interleaved: false, request };
    this.#lastReceive = reply.slice(32, 40);
    writeTimestamp(this.#lastArrival, 0, Date.now());
    // Never equal to the transmit field, which a server would take for a basic client.
    this.#lastArrival[7] |= 1;
    const origin = reply.subarray(24, 32);
    const interleaved = origin.every((byte, i) => byte === request[32 + i]) &&
      !origin.every((byte, i) => byte === request[40 + i]);
    return { reply, interleaved, request };
  }
}
