// Why the server could not start, in one line.

import { NtsError } from "../nts/certificate.ts";
import { WorkerStartError } from "../server/workers.ts";
import { ServiceListenError } from "../server/server.ts";
import { formatAddress } from "../lib/net.ts";

/** Linux's default range for the ports of client sockets (`net.ipv4.ip_local_port_range`). */
const CLIENT_PORTS = { from: 32768, to: 60999 } as const;

/**
 * Why a listener could not bind, in the project's words. `name` stands for the error
 * when it came from a worker, as a name; `port` is the one asked for; `listens` says,
 * for a TCP port in use, whether another program listens on it (unknown: undefined).
 */
export function describeListenError(
  error: unknown,
  port: number,
  name?: string,
  listens?: boolean,
): string {
  const is = (type: new (...args: never[]) => Error) => error instanceof type || name === type.name;
  if (is(Deno.errors.AddrInUse)) {
    if (listens) {
      return `address already in use: another program listens on it (see ss -ltnp 'sport = :${port}')`;
    }
    if (Deno.build.os !== "linux" || port < CLIENT_PORTS.from || port > CLIENT_PORTS.to) {
      return "address already in use";
    }
    return `address already in use; ${port} is inside Linux's range for client sockets ` +
      `(${CLIENT_PORTS.from}-${CLIENT_PORTS.to} by default), where an outgoing connection ` +
      `can hold it even when nothing listens: see ss -tan | grep ':${port} '`;
  }
  if (is(Deno.errors.AddrNotAvailable)) {
    return "this machine has no such address (--host takes one of its own, or :: or 0.0.0.0 for all)";
  }
  if (is(Deno.errors.PermissionDenied)) {
    return "permission denied (ports below 1024 need privileges)";
  }
  if (is(Deno.errors.NotCapable)) return "network access not granted (run with --allow-net)";
  return error instanceof Error ? error.message : String(error);
}

/**
 * The one line that says why the server (or a worker of the pool) could not start.
 * `listens`: see {@linkcode describeListenError}.
 */
export function describeStartError(
  error: unknown,
  settings: { hostname: string; port: number },
  listens?: boolean,
): string {
  if (error instanceof NtsError) return error.message;
  if (error instanceof WorkerStartError && error.errorName === "NtsError") return error.message;
  if (error instanceof ServiceListenError) {
    const reason = describeListenError(error.cause, error.port, undefined, listens);
    return `cannot listen on ${error.where}: ${reason}`;
  }
  if (error instanceof WorkerStartError) {
    const { errorName, listener } = error;
    if (listener !== null) {
      return `cannot listen on ${listener.where}: ${
        describeListenError(error, listener.port, errorName, listens)
      }`;
    }
    if (errorName === "WorkerError") return `a worker could not start: ${error.message}`;
  }
  const name = error instanceof WorkerStartError ? error.errorName : undefined;
  const where = formatAddress({ transport: "tcp", ...settings });
  return `cannot listen on ${where}: ${describeListenError(error, settings.port, name, listens)}`;
}

/**
 * {@linkcode describeStartError}, having first asked, when a TCP port was in use,
 * whether another program listens on it: a client socket holding a port looks the
 * same to `bind`, and the two are mended differently.
 */
export async function explainStartError(
  error: unknown,
  settings: { hostname: string; port: number },
): Promise<string> {
  const port = tcpPortInUse(error, settings);
  const listens = port === null ? undefined : await someoneListens(settings.hostname, port);
  return describeStartError(error, settings, listens);
}

/** The TCP port a start failed on because it was in use, or null. */
function tcpPortInUse(error: unknown, settings: { port: number }): number | null {
  const inUse = (e: unknown, name?: string) =>
    e instanceof Deno.errors.AddrInUse || name === "AddrInUse";
  if (error instanceof ServiceListenError) {
    return inUse(error.cause) && !error.where.includes("UDP") ? error.port : null;
  }
  if (error instanceof WorkerStartError) {
    if (!inUse(error, error.errorName)) return null;
    const listener = error.listener;
    if (listener === null) return settings.port;
    return listener.where.includes("UDP") ? null : listener.port;
  }
  return inUse(error) ? settings.port : null;
}

/**
 * Whether a listener answers on `port` at `hostname` (for a wildcard, on loopback, IPv4
 * and IPv6). Connecting is the one way to ask that needs no permission beyond those
 * listening took; a second is the most it waits.
 */
async function someoneListens(hostname: string, port: number): Promise<boolean> {
  const wildcard = hostname === "::" || hostname === "0.0.0.0" || hostname === "";
  const hosts = wildcard ? ["127.0.0.1", "::1"] : [hostname];
  for (const host of hosts) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), 1000));
    const attempt = Deno.connect({ hostname: host, port }).catch(() => null);
    const conn = await Promise.race([attempt, timeout]);
    clearTimeout(timer);
    if (conn === null) {
      attempt.then((late) => late?.close());
      continue;
    }
    conn.close();
    return true;
  }
  return false;
}
