// The overload policy without I/O: how far idle timeouts shrink, and who may take whose place.

/** The share of `maxConnections` past which silent connections are closed early. */
export const HIGH_WATER = 0.9;

/**
 * The number of open connections past which the server is under pressure.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { highWaterMark } from "./overload.ts";
 *
 * assert.equal(highWaterMark(10000), 9000);
 * ```
 */
export function highWaterMark(maxConnections: number): number {
  return Math.floor(maxConnections * HIGH_WATER);
}

/**
 * The idle timeout in force with `open` connections, as Envoy's overload manager
 * scales it: the full timeout up to the high-water mark, then shrinking in a straight
 * line to `minimum` at `maxConnections`. All times in the same unit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pressureTimeout } from "./overload.ts";
 *
 * // 300 s at 90% full, 1 s at 100%, half way between at 95%.
 * assert.equal(pressureTimeout(9000, 10000, 300, 1), 300);
 * assert.equal(pressureTimeout(9500, 10000, 300, 1), 150.5);
 * assert.equal(pressureTimeout(10000, 10000, 300, 1), 1);
 * ```
 */
export function pressureTimeout(
  open: number,
  maxConnections: number,
  full: number,
  minimum: number,
): number {
  const mark = highWaterMark(maxConnections);
  if (open <= mark) return full;
  const fill = Math.min(1, (open - mark) / Math.max(1, maxConnections - mark));
  return Math.max(minimum, full - (full - minimum) * fill);
}

/**
 * Tells whether a newcomer may take the place of a silent connection when the server
 * is full: always from the same address or where an address is not known yet (behind
 * a balancer, before the PROXY header), and otherwise only when the newcomer's address
 * holds fewer connections than the victim's. Attackers that reconnect as soon as they
 * are closed thus only take each other's places, while a client from a lighter address
 * still gets in.
 *
 * @param newcomer The newcomer's address and how many connections it holds now.
 * @param victim The same for the connection that would make room.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mayReplace } from "./overload.ts";
 *
 * assert.equal(mayReplace({ address: "192.0.2.1", holds: 0 }, { address: "198.51.100.7", holds: 90 }), true);
 * assert.equal(mayReplace({ address: "198.51.100.8", holds: 90 }, { address: "198.51.100.7", holds: 90 }), false);
 * ```
 */
export function mayReplace(
  newcomer: { address: string | null; holds: number },
  victim: { address: string | null; holds: number },
): boolean {
  if (newcomer.address === null || victim.address === null) return true;
  if (newcomer.address === victim.address) return true;
  return newcomer.holds < victim.holds;
}
