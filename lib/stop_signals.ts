// Telling a deliberate second stop signal from one signal delivered twice.

/**
 * How close together two stop signals count as one, in ms. `deno task` and `timeout`
 * pass a signal on to their child, which the process group has already delivered to
 * it, and `deno run --watch` (`deno task dev`) follows a SIGINT with a SIGTERM of its
 * own: the copy arrives about a millisecond later (measured here). A person pressing
 * Ctrl-C again, or a supervisor sending SIGTERM again, is far slower than that, and a
 * second signal a second after the first still forces the exit.
 */
export const REPEAT_WINDOW_MS = 500;

/**
 * What a stop signal means: `stop` (drain and exit), `repeat` (the same stop as the
 * first, passed on by a parent: ignore it), or `force` (exit now).
 */
export type StopVerdict = "stop" | "repeat" | "force";

/**
 * Decides what each SIGINT or SIGTERM means. The first stops the server; any stop
 * signal within {@linkcode REPEAT_WINDOW_MS} of it is a repeat, whatever its kind
 * (a parent may pass SIGINT on as SIGTERM); any later one forces the exit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StopSignals } from "./stop_signals.ts";
 *
 * const signals = new StopSignals();
 * assert.equal(signals.receive(1000), "stop");
 * assert.equal(signals.receive(1001), "repeat"); // deno task passing it on
 * assert.equal(signals.receive(2000), "force"); // sent again a second later
 * ```
 */
export class StopSignals {
  readonly #windowMs: number;
  #first: number | null = null;

  /** `windowMs`: how close together two signals count as one; the default suits every parent seen. */
  constructor(windowMs: number = REPEAT_WINDOW_MS) {
    this.#windowMs = windowMs;
  }

  /** What a stop signal received at `at` ms on a monotonic clock means. */
  receive(at: number): StopVerdict {
    if (this.#first === null) {
      this.#first = at;
      return "stop";
    }
    return at - this.#first < this.#windowMs ? "repeat" : "force";
  }
}
