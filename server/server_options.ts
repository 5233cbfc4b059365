// The server's options, their defaults, and resolving one into the other, in one place.

import type { Logger } from "../lib/log.ts";
import { DEFAULT_MAX_LINE, DEFAULT_PORT } from "../protocol.ts";

export interface ServerOptions {
  /**
   * The address to listen on. The default `::` is dual stack: it takes IPv4 and
   * IPv6 clients, and falls back to `0.0.0.0` with a warning where IPv6 is missing.
   * @default {"::"}
   */
  hostname?: string;
  /**
   * The TCP port; 0 picks a free one (read it back from {@linkcode TimeServer.addr}).
   * @default {DEFAULT_PORT}
   */
  port?: number;
  /**
   * The IANA time zone of the answers; the system's local zone when left out.
   * @default {undefined}
   */
  timeZone?: string;
  /**
   * The longest request line, in bytes without the CR LF.
   * @default {1024}
   */
  maxLine?: number;
  /**
   * Seconds a connection may go without a complete request before it is closed; 0 = never.
   * @default {300}
   */
  idleTimeout?: number;
  /**
   * Connections served at once. Past 90% of it, connections silent the longest are
   * closed first; at the limit, a new connection takes the place of the one silent
   * the longest (silent for a second at least), which hears `ERR idle, closed to make
   * room`. Only when none is that silent does the new one get `ERR server busy`.
   * @default {10000}
   */
  maxConnections?: number;
  /**
   * Seconds {@linkcode TimeServer.shutdown} waits for owed answers before closing what is left.
   * @default {5}
   */
  shutdownTimeout?: number;
  /**
   * Seconds between `summary` lines at info level; 0 = none.
   * @default {60}
   */
  statsInterval?: number;
  /**
   * Connections one client address may hold at once; past it a new one gets
   * `ERR too many connections` and is closed. IPv4-mapped IPv6 addresses count as
   * IPv4. 0 = no limit.
   * @default {0}
   */
  maxConnectionsPerIp?: number;
  /**
   * Expect the HAProxy PROXY protocol header (v1 or v2) at the start of every
   * connection, and treat the address it carries as the client's. A connection
   * without a valid header within `proxyHeaderTimeout` is closed.
   * @default {false}
   */
  proxyProtocol?: boolean;
  /**
   * Seconds a connection must have been silent (no request answered, nothing owed)
   * before it may be closed to make room for a new one when the server is full.
   * @default {1}
   */
  evictAfter?: number;
  /**
   * Seconds a connection may take to send its PROXY header.
   * @default {5}
   */
  proxyHeaderTimeout?: number;
  /**
   * Listen with `SO_REUSEPORT`, so that several servers (workers) share one port.
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * State shared by several servers (workers): an `Int32Array` of
   * {@linkcode SHARED_CONNECTION_SLOTS} over a `SharedArrayBuffer`, all zero at first.
   * `maxConnections` then applies to the connections of all of them, and a full server
   * may ask the others to close their longest-silent connection.
   * @default {undefined}
   */
  sharedConnections?: Int32Array;
  /**
   * Where events are logged.
   * @default {a logger at level "warn" writing text to stderr}
   */
  logger?: Logger;
  /**
   * The clock the answers are read from, in milliseconds since the epoch.
   * @default {Date.now}
   */
  now?: () => number;
}

/** The options that have a default: every setting of a running server. */
export type ServerSettings = Required<Omit<ServerOptions, OptionalOnly>>;
type OptionalOnly = "timeZone" | "sharedConnections" | "logger" | "now";

/** The defaults of {@linkcode ServerOptions}; the command line's help shows these too. */
export const DEFAULTS: Readonly<ServerSettings> = {
  hostname: "::",
  port: DEFAULT_PORT,
  maxLine: DEFAULT_MAX_LINE,
  idleTimeout: 300,
  maxConnections: 10000,
  evictAfter: 1,
  shutdownTimeout: 5,
  statsInterval: 60,
  maxConnectionsPerIp: 0,
  proxyProtocol: false,
  proxyHeaderTimeout: 5,
  reusePort: false,
};

/**
 * Fills in the defaults: the one place where an option left out becomes a setting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULTS, resolveServerOptions } from "./server_options.ts";
 *
 * const settings = resolveServerOptions({ port: 4000, idleTimeout: undefined });
 * assert.equal(settings.port, 4000);
 * assert.equal(settings.idleTimeout, DEFAULTS.idleTimeout);
 * ```
 */
export function resolveServerOptions(options: ServerOptions): ServerSettings {
  const settings: Record<string, unknown> = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof ServerSettings)[]) {
    if (options[key] !== undefined) settings[key] = options[key];
  }
  return settings as unknown as ServerSettings;
}
