// Socket and address helpers shared by the server, the client, the tools and the tests.

/**
 * Writes all of `bytes` (from `written` on: what a first write already took), however
 * many writes it takes; most take everything at once.
 */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array, written = 0): Promise<void> {
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** Resolves after `ms` milliseconds, or at once when `signal` aborts (it never rejects). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Reads a connection line by line: each line with its LF (and CR), decoded as UTF-8,
 * through one reused buffer. Throws `RangeError` for a line longer than `maxLine`.
 *
 * @example
 * ```ts ignore
 * import { LineReader } from "./net.ts";
 *
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 45000 });
 * await conn.write(new TextEncoder().encode("TIME\r\n"));
 * console.log(await new LineReader(conn).next()); // "JAM 09:05:03\r\n"
 * ```
 */
export class LineReader {
  readonly #conn: Deno.Conn;
  readonly #maxLine: number;
  readonly #decoder = new TextDecoder();
  #buffer: Uint8Array | undefined;
  #pending = "";
  #ended = false;

  constructor(conn: Deno.Conn, maxLine = 65536) {
    this.#conn = conn;
    this.#maxLine = maxLine;
  }

  /** The next line with its line end; the unterminated rest, or null, at the end of the stream. */
  async next(): Promise<string | null> {
    for (;;) {
      const lf = this.#pending.indexOf("\n");
      if (lf !== -1) {
        const line = this.#pending.slice(0, lf + 1);
        this.#pending = this.#pending.slice(lf + 1);
        return line;
      }
      if (this.#pending.length > this.#maxLine) {
        throw new RangeError(`line longer than ${this.#maxLine} characters`);
      }
      if (!(await this.#fill())) return this.#take() || null;
    }
  }

  /** Everything until the end of the stream. */
  async rest(): Promise<string> {
    while (await this.#fill());
    return this.#take();
  }

  #take(): string {
    const rest = this.#pending;
    this.#pending = "";
    return rest;
  }

  async #fill(): Promise<boolean> {
    if (this.#ended) return false;
    const buffer = this.#buffer ??= new Uint8Array(65536);
    const n = await this.#conn.read(buffer);
    if (n === null) {
      this.#ended = true;
      this.#pending += this.#decoder.decode();
      return false;
    }
    this.#pending += this.#decoder.decode(buffer.subarray(0, n), { stream: true });
    return true;
  }
}

/**
 * A TCP port that is free now on `hostname`, below 32768 so that it cannot collide with
 * the ports Linux hands out to client sockets (32768–60999).
 */
export function freePort(hostname = "127.0.0.1"): number {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    try {
      Deno.listen({ hostname, port }).close();
      return port;
    } catch {
      // Taken; try another.
    }
  }
}

/**
 * Formats a socket address for logs: `127.0.0.1:5000`, `[::1]:5000`; an
 * IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is shown as its IPv4 address.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatAddress } from "./net.ts";
 *
 * assert.equal(formatAddress({ transport: "tcp", hostname: "::ffff:10.0.0.1", port: 7 }), "10.0.0.1:7");
 * assert.equal(formatAddress({ transport: "tcp", hostname: "::1", port: 7 }), "[::1]:7");
 * ```
 */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  const host = clientHost(addr.hostname);
  return host.includes(":") ? `[${host}]:${addr.port}` : `${host}:${addr.port}`;
}

/** The host part of a peer address, with IPv4-mapped IPv6 addresses turned back into IPv4. */
export function clientHost(hostname: string): string {
  return hostname.startsWith("::ffff:") && hostname.includes(".") ? hostname.slice(7) : hostname;
}

/** Closes a connection or listener, or does nothing if it is closed already. */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Already closed.
  }
}

function parseIPv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return null;
    value = value * 256 + Number(part);
  }
  return value;
}

/**
 * Parses an IPv4 or IPv6 address into 32-bit words: one for IPv4, four for IPv6.
 * IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) come back as IPv4, so one rule covers
 * both ways a dual-stack socket may report a client. Null when it is not an address.
 */
export function parseAddress(text: string): Uint32Array | null {
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  if (!text.includes(":")) {
    const v4 = parseIPv4(text);
    return v4 === null ? null : Uint32Array.of(v4);
  }
  const groups: number[] = [];
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parseHalf = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) out.push(parseInt(piece, 16));
      else return null;
    }
    return out;
  };
  const head = parseHalf(halves[0]);
  const tail = halves.length === 2 ? parseHalf(halves[1]) : [];
  if (head === null || tail === null) return null;
  if (halves.length === 1 && head.length !== 8) return null;
  if (halves.length === 2 && head.length + tail.length > 7) return null;
  groups.push(...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail);
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) words[i] = ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0;
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return Uint32Array.of(words[3]);
  return words;
}
