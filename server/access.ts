// Who may be served: allow and deny lists of address ranges (CIDR), for every listener.

import { parseAddress } from "../lib/net.ts";

/** An address range: the family, the address as 32-bit words, and the prefix length. */
interface Range {
  readonly words: Uint32Array;
  readonly prefix: number;
}

/**
 * Parses `ADDRESS[/PREFIX]` (a bare address is a single host). Null when malformed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCidr } from "./access.ts";
 *
 * assert.ok(parseCidr("10.0.0.0/8"));
 * assert.ok(parseCidr("2001:db8::/32"));
 * assert.equal(parseCidr("10.0.0.0/33"), null);
 * assert.equal(parseCidr("example.com"), null);
 * ```
 */
export function parseCidr(text: string): Range | null {
  const slash = text.indexOf("/");
  const words = parseAddress(slash < 0 ? text : text.slice(0, slash));
  if (words === null) return null;
  const bits = words.length * 32;
  let prefix = bits;
  if (slash >= 0) {
    const suffix = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(suffix) || Number(suffix) > bits) return null;
    prefix = Number(suffix);
  }
  return { words, prefix };
}

function contains(range: Range, address: Uint32Array): boolean {
  if (range.words.length !== address.length) return false;
  let left = range.prefix;
  for (let i = 0; i < address.length && left > 0; i++, left -= 32) {
    const mask = left >= 32 ? 0xffffffff : (0xffffffff << (32 - left)) >>> 0;
    if (((range.words[i] ^ address[i]) & mask) !== 0) return false;
  }
  return true;
}

/**
 * Decides from the client's address whether it is served, as xinetd's `only_from` and
 * `no_access`: with an allow list, only addresses in it; an address in the deny list
 * never, even when it is allowed too. With both lists empty, everyone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AccessList } from "./access.ts";
 *
 * const access = AccessList.parse(["127.0.0.0/8", "::1"], ["127.0.0.2"]);
 * assert.ok(access.allows("127.0.0.1"));
 * assert.ok(access.allows("::ffff:127.0.0.3"));
 * assert.ok(!access.allows("127.0.0.2"));
 * assert.ok(!access.allows("192.0.2.1"));
 * ```
 */
export class AccessList {
  #allow: readonly Range[] = [];
  #deny: readonly Range[] = [];
  /** Whether every address is allowed, so the check costs nothing. */
  open = true;

  private constructor(allow: readonly Range[], deny: readonly Range[]) {
    this.#set(allow, deny);
  }

  #set(allow: readonly Range[], deny: readonly Range[]): void {
    this.#allow = allow;
    this.#deny = deny;
    this.open = allow.length === 0 && deny.length === 0;
  }

  /** Everyone is served. */
  static readonly OPEN: AccessList = new AccessList([], []);

  /** Builds the lists; throws `SyntaxError` naming the first entry that is not a CIDR. */
  static parse(allow: readonly string[] = [], deny: readonly string[] = []): AccessList {
    const parse = (text: string) => {
      const range = parseCidr(text.trim());
      if (range === null) throw new SyntaxError(`"${text}" is not an address or CIDR range`);
      return range;
    };
    return new AccessList(allow.map(parse), deny.map(parse));
  }

  /**
   * Takes new lists in place (a reload), so that every listener holding this one sees
   * them at once; throws as {@linkcode AccessList.parse} does, changing nothing.
   */
  replace(allow: readonly string[], deny: readonly string[]): void {
    if (this === AccessList.OPEN) throw new TypeError("AccessList.OPEN is shared: parse one");
    const next = AccessList.parse(allow, deny);
    this.#set(next.#allow, next.#deny);
  }

  /** Whether a client at this address (as a socket reports it) may be served. */
  allows(hostname: string): boolean {
    if (this.open) return true;
    const address = parseAddress(hostname);
    if (address === null) return false;
    for (const range of this.#deny) if (contains(range, address)) return false;
    if (this.#allow.length === 0) return true;
    for (const range of this.#allow) if (contains(range, address)) return true;
    return false;
  }
}
