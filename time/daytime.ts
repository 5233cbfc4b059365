// The Daytime protocol's answer (RFC 867): one human-readable line, ctime style.

const encoder = new TextEncoder();

/**
 * Makes the Daytime answer, `Wed Nov 25 03:05:47 2026\r\n`, as inetd's built-in service
 * writes it (`ctime(3)`: the day of the month padded with a space, 24-hour time), in a
 * given time zone. Formats at most once per second; the returned bytes are never changed
 * afterwards, so they may be handed to an asynchronous write.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DaytimeAnswer } from "./daytime.ts";
 *
 * const answer = new DaytimeAnswer({ timeZone: "UTC", now: () => Date.UTC(2026, 10, 5, 3, 5, 47) });
 * assert.equal(new TextDecoder().decode(answer.current()), "Thu Nov  5 03:05:47 2026\r\n");
 * ```
 */
export class DaytimeAnswer {
  readonly #now: () => number;
  readonly #format: Intl.DateTimeFormat;
  #second = NaN;
  #bytes: Uint8Array = new Uint8Array(0);

  /**
   * @param options.timeZone An IANA time zone; the system's local zone when left out.
   * @param options.now The clock, ms since the epoch; `Date.now` when left out.
   */
  constructor(options: { timeZone?: string; now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#format = new Intl.DateTimeFormat("en-US", {
      timeZone: options.timeZone,
      weekday: "short",
      month: "short",
      day: "numeric",
      year: "numeric",
      hourCycle: "h23",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
  }

  /** The answer for the clock's current second. */
  current(): Uint8Array {
    const second = Math.floor(this.#now() / 1000);
    if (second !== this.#second) {
      this.#bytes = this.format(second * 1000);
      this.#second = second;
    }
    return this.#bytes;
  }

  /** Formats the answer for an instant (ms since the epoch), uncached. */
  format(epochMilliseconds: number): Uint8Array {
    const parts: Record<string, string> = {};
    for (const part of this.#format.formatToParts(epochMilliseconds)) parts[part.type] = part.value;
    const day = parts.day.padStart(2, " ");
    const time = `${parts.hour}:${parts.minute}:${parts.second}`;
    return encoder.encode(`${parts.weekday} ${parts.month} ${day} ${time} ${parts.year}\r\n`);
  }
}
