// The server's options, their defaults, and resolving one into the other, in one place.

import type { Logger } from "../lib/log.ts";
import { DEFAULT_MAX_LINE, DEFAULT_PORT } from "../protocol.ts";
import type { KernelClockState } from "../time/kernel_clock.ts";
import type { TcpSettings } from "./tcp/server.ts";

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
   * Per-address max-min fairness when every slot is busy (TCP and NTS-KE): a newcomer
   * from an address that, once in, would still hold fewer connections than the address
   * holding the most has one of that address's closed for it (its answers owed sent,
   * then `ERR busy, closed to make room`). IPv6 clients count by /64. Off: newcomers are
   * refused with `ERR server busy` whoever holds the slots.
   * @default {true}
   */
  fairness?: boolean;
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
   * The port of the Daytime service (RFC 867) on TCP and UDP; 0 = any free port (the
   * same number for both); null = off.
   * @default {null}
   */
  daytimePort?: number | null;
  /**
   * The port of the Time service (RFC 868) on TCP and UDP; 0 = any free port; null = off.
   * @default {null}
   */
  timePort?: number | null;
  /**
   * The UDP port of the SNTP service (RFC 4330 server mode); 0 = any free port; null = off.
   * @default {null}
   */
  ntpPort?: number | null;
  /**
   * The UDP port of Roughtime (RFC 10049): signed time, one signature per batch of
   * requests; 0 = any free port; null = off. Needs `roughtimeKey`.
   * @default {null}
   */
  roughtimePort?: number | null;
  /**
   * Roughtime's long-term Ed25519 key: its 32-byte seed (see `time-server roughtime-keys`).
   * The server delegates to an online key of its own, renewed daily.
   * @default {null}
   */
  roughtimeKey?: Uint8Array | null;
  /**
   * The stratum SNTP replies claim, 1 to 15. With the reference ID `LOCL`, as chrony's
   * `local stratum 10`: the server serves its system clock, whose own source it cannot see.
   * @default {10}
   */
  ntpStratum?: number;
  /**
   * Address ranges (CIDR) served by every listener; empty = all. See `deny`.
   * @default {[]}
   */
  allow?: string[];
  /**
   * Address ranges (CIDR) never served, even when in `allow`: TCP connections are
   * closed at once, datagrams dropped.
   * @default {[]}
   */
  deny?: string[];
  /**
   * The UDP rate limit per client address: on average one request per `interval`
   * seconds, in bursts of up to `burst`, for every UDP service. Null: SNTP is not
   * limited, and Daytime and Time are limited by {@linkcode ONE_ANSWER_RATE_LIMIT}.
   * @default {null}
   */
  rateLimit?: { interval: number; burst: number } | null;
  /**
   * Of the requests over the rate limit, 1 in 2^rateLeak is answered anyway (chrony's
   * `leak`), so clients behind one NAT address are slowed, not cut off; 0 = none.
   * @default {2}
   */
  rateLeak?: number;
  /**
   * Tell an NTP client over the rate limit to slow down with a Kiss-o'-Death `RATE`
   * reply, at most once per interval, instead of only dropping its requests.
   * @default {false}
   */
  kissOfDeath?: boolean;
  /**
   * The most client addresses the rate limiter remembers (chrony's `clientloglimit`).
   * @default {16384}
   */
  maxClients?: number;
  /**
   * Whether this server binds the UDP services. In a pool only the first worker does:
   * `Deno.listenDatagram` cannot share a port with `SO_REUSEPORT`.
   * @default {true}
   */
  udp?: boolean;
  /**
   * What SNTP replies say of the clock's synchronisation. `local`: always synchronised at
   * `ntpStratum` with reference ID `LOCL`, as chrony's `local stratum`; the server serves its
   * system clock and cannot see whether a daemon disciplines it. `kernel`: read the kernel's
   * state (`adjtimex`, through FFI for libc, Linux) every second: an unsynchronised clock is
   * announced as such (leap 3, stratum 16), a leap second the kernel has scheduled is passed
   * on, and the kernel's maximum error is added to the root dispersion.
   * @default {"local"}
   */
  ntpClock?: "local" | "kernel";
  /**
   * Network Time Security (RFC 8915): NTS-KE on its own TCP port, and NTS-protected
   * requests answered by the SNTP service, which `ntpPort` must turn on; null = off.
   * @default {null}
   */
  nts?: NtsOptions | null;
  /**
   * How UDP is read and written: `mmsg` receives up to 64 datagrams per system call
   * (recvmmsg through FFI, Linux only, needs `--allow-ffi`), sends each SNTP reply alone
   * and Daytime and Time answers 64 at a time, takes the kernel's receive and transmit
   * timestamps and shares the port between workers; `deno` uses
   * `Deno.listenDatagram`, one call per datagram, and needs only `--allow-net`; `auto`
   * picks `mmsg` where it can run.
   * @default {"auto"}
   */
  udpEngine?: "auto" | "deno" | "mmsg";
  /**
   * Which engine serves the line protocol: `deno`, `Deno.listen` with an async loop per
   * connection; or `epoll`, one epoll loop through FFI to libc (Linux on x86_64 or
   * aarch64, needs `--allow-ffi` for libc) with no object per idle connection, for very
   * many connections. Daytime and Time over TCP stay on `Deno.listen` either way.
   * @default {"deno"}
   */
  tcpEngine?: "deno" | "epoll";
  /**
   * The precise clock SNTP timestamps come from, ms since the epoch with sub-ms resolution
   * (tests); not the answers' clock, `now`.
   * @default {a PreciseClock: the system clock, calibrated against performance.now()}
   */
  preciseClock?: { now(): number };
  /**
   * Where `ntpClock: "kernel"` reads the kernel's synchronisation state; null when it
   * cannot (no libc), and throws when the kernel refuses (see `readKernelClock` in `time/kernel_clock.ts`).
   * @default {readKernelClock: adjtimex through FFI for libc}
   */
  kernelClock?: () => KernelClockState | null;
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
type OptionalOnly =
  | "timeZone"
  | "sharedConnections"
  | "logger"
  | "now"
  | "preciseClock"
  | "kernelClock";

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
  fairness: true,
  proxyProtocol: false,
  proxyHeaderTimeout: 5,
  reusePort: false,
  daytimePort: null,
  timePort: null,
  ntpPort: null,
  roughtimePort: null,
  roughtimeKey: null,
  ntpStratum: 10,
  allow: [],
  deny: [],
  rateLimit: null,
  rateLeak: 2,
  kissOfDeath: false,
  maxClients: 16384,
  udp: true,
  udpEngine: "auto",
  tcpEngine: "deno",
  ntpClock: "local",
  nts: null,
};

/**
 * The per-address rate limit of UDP Daytime and Time when `rateLimit` is not given: a
 * burst of 8, then one answer a second, none over it. Their answers need no more: a
 * client asks once. Without one, each would reflect a flood of spoofed datagrams at
 * its victim (1,707 answers to 2,000 datagrams from one address, measured).
 */
export const ONE_ANSWER_RATE_LIMIT = { interval: 1, burst: 8 } as const;

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

/** NTS's settings (RFC 8915), as `ServerOptions.nts` holds them. */
export interface NtsOptions {
  /** The NTS-KE port (TCP; 4460 is the standard); 0 = any free one. */
  kePort: number;
  /** PEM files: the certificate chain, leaf first, and its private key. */
  certFile: string;
  keyFile: string;
  /** The master secret cookies are sealed under, 32 bytes (see `nts/cookies.ts`). */
  masterKey: Uint8Array;
  /** Key establishments per second one client address may start, in bursts of twice that; 0 = no limit. */
  keRate: number;
  /**
   * Where NTS-KE's answer sends NTP (an NTPv4 Server record), when it is not the address
   * the client reached NTS-KE on: e.g. NTS-KE behind a TCP balancer, NTP straight to the
   * instance. Null: the record is left out.
   */
  ntpServer?: string | null;
  /** Whether this server runs NTS-KE; in a pool only the first worker does. */
  ke?: boolean;
  /** Seconds between checks of the certificate's files and expiry. */
  certificateCheck?: number;
  /** Seconds one key establishment may take (chrony's 2 s); tests hold sessions longer. */
  keTimeout?: number;
}

/** The ports of the services besides the line protocol; null when off. */
export interface ServicePorts {
  /** NTS-KE, TCP. */
  ntsKe: number | null;
  /** Daytime (RFC 867), TCP and UDP on the same number. */
  daytime: number | null;
  /** Time (RFC 868), TCP and UDP on the same number. */
  time: number | null;
  /** SNTP, UDP. */
  ntp: number | null;
  /** Roughtime, UDP. */
  roughtime: number | null;
}

/**
 * The TCP side's own settings, taken from the whole once, so that it reaches for nothing
 * else: see {@linkcode TcpSettings}.
 */
export function tcpSettings(settings: ServerSettings): TcpSettings {
  return {
    maxLine: settings.maxLine,
    idleTimeout: settings.idleTimeout,
    peerIdleTimeout: settings.idleTimeout || DEFAULTS.idleTimeout,
    maxConnections: settings.maxConnections,
    maxConnectionsPerIp: settings.maxConnectionsPerIp,
    fairness: settings.fairness,
    evictAfter: settings.evictAfter,
    proxyProtocol: settings.proxyProtocol,
    proxyHeaderTimeout: settings.proxyHeaderTimeout,
    shutdownTimeout: settings.shutdownTimeout,
    reusePort: settings.reusePort,
  };
}
