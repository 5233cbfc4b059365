// The default TCP engine, as the design card has it: Deno.listen, and an async loop per connection.

import { Acceptor } from "../acceptor.ts";
import { Connection } from "./connection.ts";
import type { SlotSockets } from "../connections.ts";
import { clientHost, closeQuietly, formatAddress } from "../../../lib/net.ts";
import { ERR_IDLE_EVICTED } from "../../../protocol.ts";
import type { TcpHost, TcpService } from "../host.ts";

/**
 * Serves `Deno.TcpListener`s: accepts through an {@linkcode Acceptor}, asks the host to
 * admit each connection, and runs each one's {@linkcode Connection} loop. Every choice of
 * policy is the host's; this engine holds the sockets.
 */
export class DenoEngine implements SlotSockets {
  readonly #host: TcpHost;
  readonly #acceptor: Acceptor;
  readonly #onAccept: () => void;
  /** The connection in each slot this engine holds. */
  readonly #connections: (Connection | undefined)[] = [];
  readonly #listeners: Deno.TcpListener[] = [];
  readonly #accepting: Promise<void>[] = [];
  readonly #ended = (connection: Connection) => {
    this.#connections[connection.slot] = undefined;
  };

  /** @param onAccept Called for every connection accepted, before it is admitted. */
  constructor(host: TcpHost, acceptor: Acceptor, onAccept: () => void) {
    this.#host = host;
    this.#acceptor = acceptor;
    this.#onAccept = onAccept;
  }

  /** Serves `listener` until {@linkcode stop}: its connections speak `service`. */
  serve(listener: Deno.TcpListener, service: TcpService): void {
    this.#listeners.push(listener);
    const stopping = this.#host.stopping;
    this.#accepting.push(this.#acceptor.run(listener, stopping, (conn) => {
      this.#onAccept();
      this.#admit(conn, service);
    }));
  }

  /** Settles when every accept loop has ended. */
  get finished(): Promise<void> {
    return Promise.all(this.#accepting).then(() => {});
  }

  /** Stops accepting: closes the listeners. */
  stop(): void {
    for (const listener of this.#listeners) closeQuietly(listener);
  }

  /** A descriptor was freed: an accept loop backing off for want of one tries again. */
  freed(): void {
    this.#acceptor.freed();
  }

  closeSocket(slot: number): void {
    const connection = this.#connections[slot];
    if (connection !== undefined) closeQuietly(connection.conn);
  }

  evictSocket(slot: number): void {
    const conn = this.#connections[slot]?.conn;
    conn?.write(ERR_IDLE_EVICTED).catch(() => {}).finally(() => closeQuietly(conn));
  }

  makeRoomSocket(slot: number, waiting: boolean): void {
    this.#connections[slot]?.makeRoom(waiting);
  }

  peer(slot: number): string {
    return this.#connections[slot]?.peer() ?? "?";
  }

  #admit(conn: Deno.TcpConn, service: TcpService): void {
    const host = this.#host;
    const slot = host.table.open(this);
    const connection = new Connection(conn, slot, host, service, this.#ended);
    this.#connections[slot] = connection;
    // Behind a balancer the client's address comes later, in the PROXY header.
    const address = host.proxyProtocol ? null : clientHost(conn.remoteAddr.hostname);
    const admitted = host.admit(slot, address);
    if (admitted === true) this.#serve(connection);
    else if (admitted === false) this.#refuse(connection);
    else admitted.then((taken) => taken ? this.#serve(connection) : this.#refuse(connection));
  }

  #serve(connection: Connection): void {
    this.#host.opened(connection.slot);
    connection.serve();
  }

  #refuse(connection: Connection): void {
    const conn = connection.conn;
    this.#host.refused(connection.slot, () => formatAddress(conn.remoteAddr));
    connection.refuse();
  }
}
