// What a failed accept means: that one connection died in the queue, or the process ran short.

/**
 * Accept errors that concern only the connection being accepted, by errno. Linux's
 * accept(2) passes a new socket's pending network errors on and says to retry them
 * at once (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP,
 * ENETUNREACH), as for ECONNABORTED and EPERM (a firewall rule). Deno reads the peer's
 * address after accept, which fails with ENOTCONN when the client has already reset.
 * Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM, or unknown) concerns the process.
 */
const CONNECTION_ACCEPT_ERRORS = new Set([
  "ENOTCONN",
  "ECONNABORTED",
  "ECONNRESET",
  "EPERM",
  "ETIMEDOUT",
  "ENETDOWN",
  "EPROTO",
  "ENOPROTOOPT",
  "EHOSTDOWN",
  "ENONET",
  "EHOSTUNREACH",
  "EOPNOTSUPP",
  "ENETUNREACH",
]);

/** The errno name of a Deno error (`"EMFILE"`, …), if it has one. */
export function errorCode(error: unknown): string | undefined {
  return (error as { code?: unknown })?.code as string | undefined;
}

/**
 * Tells whether an accept error concerns only the connection being accepted, so the
 * next one can be accepted at once; otherwise the process is short of something.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { concernsOneConnection } from "./accept_errors.ts";
 *
 * assert.ok(concernsOneConnection(Object.assign(new Error("not connected"), { code: "ENOTCONN" })));
 * assert.ok(!concernsOneConnection(Object.assign(new Error("too many files"), { code: "EMFILE" })));
 * ```
 */
export function concernsOneConnection(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && CONNECTION_ACCEPT_ERRORS.has(code);
}

/** The warning for an accept that failed for want of resources: a message and its fields. */
export function shortageWarning(
  error: unknown,
  context: { connections: number; maxConnections: number },
): [msg: string, fields: Record<string, string | number>] {
  const code = errorCode(error);
  if (code === "EMFILE" || code === "ENFILE") {
    return [
      "out of file descriptors: the open-file limit is below what --max-connections needs; " +
      "raise it (ulimit -n, systemd LimitNOFILE=) or lower --max-connections",
      context,
    ];
  }
  return ["accept failed; backing off", {
    error: error instanceof Error ? error.message : String(error),
  }];
}
