// Per-client rate limiting for the UDP services, after chrony's `ratelimit` and `clientloglimit`.

/** Settings of {@linkcode RateLimiter}. */
export interface RateLimitOptions {
  /** The average interval a client may keep up between requests, in seconds. */
  interval: number;
  /** How many requests a client may send at once after being quiet. */
  burst: number;
  /**
   * Answer 1 in 2^leak of the requests over the limit anyway, as chrony does, so that
   * clients sharing an address (NAT) are slowed, not cut off; 0 = never.
   */
  leak: number;
  /** Send a Kiss-o'-Death (`RATE`) to a limited NTP client, at most once per interval. */
  kissOfDeath: boolean;
  /** The most clients remembered; past it the one heard from least recently is forgotten. */
  maxClients: number;
}

/** What {@linkcode RateLimiter.check} decided for one request. */
export const RateVerdict = {
  /** Within the limit: answer. */
  ANSWER: 0,
  /** Over the limit, but this one leaks through: answer. */
  LEAK: 1,
  /** Over the limit: send a Kiss-o'-Death (NTP only; other protocols drop). */
  KISS: 2,
  /** Over the limit: drop. */
  DROP: 3,
} as const;
/** One of {@linkcode RateVerdict}'s values. */
export type RateVerdict = typeof RateVerdict[keyof typeof RateVerdict];

interface Client {
  /** Requests the client may still send at once; refills by one per interval. */
  tokens: number;
  /** When `tokens` was last brought up to date, ms (monotonic). */
  at: number;
  /** Requests over the limit since the client was last within it. */
  over: number;
  /** When the client was last sent a Kiss-o'-Death, ms (monotonic). */
  kissed: number;
}

/**
 * A token bucket per client address, in a table of at most `maxClients` entries kept in
 * least-recently-heard order (a `Map` re-inserted on each request), so a flood of spoofed
 * addresses costs bounded memory: it can only make the limiter forget, which errs on the
 * side of answering.
 *
 * @example A client allowed a burst of 2, then one request per 8 s
 * ```ts
 * import assert from "node:assert/strict";
 * import { RateLimiter, RateVerdict } from "./rate_limit.ts";
 *
 * let now = 0;
 * const limiter = new RateLimiter(
 *   { interval: 8, burst: 2, leak: 0, kissOfDeath: false, maxClients: 100 },
 *   () => now,
 * );
 * assert.equal(limiter.check("192.0.2.1"), RateVerdict.ANSWER);
 * assert.equal(limiter.check("192.0.2.1"), RateVerdict.ANSWER);
 * assert.equal(limiter.check("192.0.2.1"), RateVerdict.DROP);
 * now += 8000;
 * assert.equal(limiter.check("192.0.2.1"), RateVerdict.ANSWER);
 * ```
 */
export class RateLimiter {
  readonly #clients = new Map<string, Client>();
  #options: RateLimitOptions;
  readonly #now: () => number;
  #leakMask = -1;
  #intervalMs = 1000;

  /** @param now A monotonic clock in ms; `performance.now` when left out. */
  constructor(options: RateLimitOptions, now: () => number = () => performance.now()) {
    this.#options = options;
    this.#now = now;
    this.configure(options);
  }

  /**
   * Takes new limits (a reload), keeping what it knows of each client: their buckets
   * refill at the new rate, up to the new burst, from the next request on. A smaller
   * table forgets the clients heard from least recently.
   */
  configure(options: RateLimitOptions): void {
    this.#options = options;
    this.#leakMask = options.leak > 0 ? (1 << options.leak) - 1 : -1;
    this.#intervalMs = options.interval * 1000;
    const clients = this.#clients;
    while (clients.size > options.maxClients) clients.delete(clients.keys().next().value!);
  }

  /** How many clients the table remembers now. */
  get size(): number {
    return this.#clients.size;
  }

  /** Counts one request from `address` and says what to do with it. */
  check(address: string): RateVerdict {
    const now = this.#now();
    const { burst, kissOfDeath, maxClients } = this.#options;
    const clients = this.#clients;
    let client = clients.get(address);
    if (client === undefined) {
      if (clients.size >= maxClients) {
        clients.delete(clients.keys().next().value!);
      }
      client = { tokens: burst, at: now, over: 0, kissed: -Infinity };
    } else {
      clients.delete(address);
      client.tokens = Math.min(burst, client.tokens + (now - client.at) / this.#intervalMs);
      client.at = now;
    }
    clients.set(address, client);
    if (client.tokens >= 1) {
      client.tokens -= 1;
      client.over = 0;
      return RateVerdict.ANSWER;
    }
    client.over++;
    if ((client.over & this.#leakMask) === 0) return RateVerdict.LEAK;
    if (kissOfDeath && now - client.kissed >= this.#intervalMs) {
      client.kissed = now;
      return RateVerdict.KISS;
    }
    return RateVerdict.DROP;
  }
}
