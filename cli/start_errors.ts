// Why the server could not start, in one line.

import { NtsError } from "../nts/certificate.ts";
import { WorkerStartError } from "../server/workers.ts";
import { ServiceListenError } from "../server/server.ts";
import { formatAddress } from "../lib/net.ts";

/** Linux's default range for the ports of client sockets (`net.ipv4.ip_local_port_range`). */
const CLIENT_PORTS = { from: 32768, to: 60999 } as const;

/**
 * Why a listener could not bind, in the project's words. `name` stands for the error
 * when it came from a worker, as a name; `port` is the one asked for.
 */
export function describeListenError(error: unknown, port: number, name?: string): string {
  const is = (type: new (...args: never[]) => Error) => error instanceof type || name === type.name;
  if (is(Deno.errors.AddrInUse)) {
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

/** The one line that says why the server (or a worker of the pool) could not start. */
export function describeStartError(
  error: unknown,
  settings: { hostname: string; port: number },
): string {
  if (error instanceof NtsError) return error.message;
  if (error instanceof WorkerStartError && error.errorName === "NtsError") return error.message;
  if (error instanceof ServiceListenError) {
    return `cannot listen on ${error.where}: ${describeListenError(error.cause, error.port)}`;
  }
  if (error instanceof WorkerStartError) {
    const { errorName, listener } = error;
    if (listener !== null) {
      return `cannot listen on ${listener.where}: ${
        describeListenError(error, listener.port, errorName)
      }`;
    }
    if (errorName === "WorkerError") return `a worker could not start: ${error.message}`;
  }
  const name = error instanceof WorkerStartError ? error.errorName : undefined;
  const where = formatAddress({ transport: "tcp", ...settings });
  return `cannot listen on ${where}: ${describeListenError(error, settings.port, name)}`;
}
