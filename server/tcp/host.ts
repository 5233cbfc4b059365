// What both TCP engines need of the server that holds them: the shared policies, counters and answers.

import type { RoughtimeBatcher } from "../roughtime/batcher.ts";
import type { AccessList } from "../access.ts";
import type { CloseReason, ConnectionTable } from "./connections.ts";
import type { Limits } from "./limits.ts";
import type { Logger } from "../../lib/log.ts";
import type { TimeAnswer } from "../../protocol.ts";
import type { ServerStats } from "../stats.ts";
import type { DaytimeAnswer } from "../../time/daytime.ts";
import type { Rfc868Answer } from "../../time/rfc868.ts";

/**
 * What a TCP listener speaks: the line protocol (`TIME` → `JAM hh:mm:ss`), or one of the
 * protocols that send one answer and close, Daytime (RFC 867) and Time (RFC 868).
 */
export type TcpService = "jam" | "daytime" | "time" | "roughtime";

/** Which engine serves the line protocol: `Deno.listen` (the default) or epoll through FFI. */
export type TcpEngine = "deno" | "epoll";

/**
 * What becomes of a connection once its client's address is known: `served`, counted
 * under it; `denied` by `--allow`/`--deny`, closed at once; `busy`, refused with
 * `ERR server busy` (it waited for its PROXY header over the limit, and nobody made
 * room); `per-client`, past `maxConnectionsPerIp`, `ERR too many connections`.
 */
export type AddressVerdict = "served" | "denied" | "busy" | "per-client";

/** The largest read a connection makes at once; pipelining clients fill it. */
export const MAX_READ_SIZE = 16384;
/** The most bytes discarded while lingering before the connection is closed anyway. */
export const LINGER_MAX_BYTES = 16 * 1024 * 1024;

/**
 * The TCP side as an engine sees it (`TcpServer` in server.ts): the table and limits
 * every engine's connections share, who is served, the answers, and the calls that keep
 * the counts. An engine does the I/O; every decision is made here, once for both.
 */
export interface TcpHost {
  readonly table: ConnectionTable;
  readonly limits: Limits;
  readonly stats: ServerStats;
  readonly logger: Logger;
  /** Whether debug events are logged, read once. */
  readonly debug: boolean;
  /** The line protocol's `JAM hh:mm:ss` answer. */
  readonly jamAnswer: TimeAnswer;
  /** Daytime's ctime line (RFC 867). */
  readonly daytimeAnswer: DaytimeAnswer;
  /** Time's 32-bit seconds since 1900 (RFC 868). */
  readonly rfc868Answer: Rfc868Answer;
  /** Roughtime, which `roughtime` connections are answered by; null when it is off. */
  readonly roughtime: RoughtimeBatcher | null;
  readonly access: AccessList;
  readonly maxLine: number;
  readonly proxyProtocol: boolean;
  /** Aborts when the server stops accepting: connections waiting for a request end. */
  readonly stopping: AbortSignal;
  /**
   * Counts a new connection in `slot` against the limits, making room by eviction if it
   * may; true or false at once, or later when other workers were asked for room. False:
   * refuse it with `ERR server busy`, then {@linkcode refused}.
   */
  admit(slot: number, address: string | null): boolean | Promise<boolean>;
  /**
   * Counts an admitted connection under its client's `address`, once known (at once, or
   * after the PROXY header), and counts a refusal; `peer` tells who, for the debug log.
   * Behind PROXY a server full at accept lets the connection send its header, and
   * decides here, by its real address, whether room is made for it.
   */
  admitAddress(slot: number, address: string, peer: () => string): AddressVerdict;
  /** A connection was admitted and is being served. */
  opened(slot: number): void;
  /**
   * A connection was refused as busy; `peer` tells who, for the debug log. It keeps its
   * slot while it hears `ERR server busy` and lingers, within the lingering budget.
   */
  refused(slot: number, peer: () => string): void;
  /** Called once per connection, when its socket is closed or about to be: frees the slot. */
  ended(slot: number, reason: CloseReason): void;
}
