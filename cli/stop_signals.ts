// Telling a deliberate second stop signal from one signal delivered twice.

/**
 * How close together two stop signals count as one, in ms. `deno task` and `timeout`
 * pass a signal on to their child, which the process group has already delivered to
 * it: the copy arrives about a millisecond later (measured here). A person pressing
 * Ctrl-C again, or a supervisor sending SIGTERM again, is far slower than that, and a
 * second signal a second after the first still forces the exit.
 */
export const REPEAT_WINDOW_MS = 500;

/** The environment variable with which `deno task dev` says that `--watch`'s watcher owns SIGINT. */
export const WATCHED_ENV = "TIME_SERVER_WATCHED";

/**
 * What a stop signal means: `stop` (drain and exit), `repeat` (the same stop as the
 * first, passed on by a parent: ignore it), `force` (exit now), or `watcher` (a SIGINT
 * under `deno run --watch`, which its watcher answers with a SIGTERM: wait for that).
 */
export type StopVerdict = "stop" | "repeat" | "force" | "watcher";

/** The signals {@linkcode StopSignals} decides on. */
export type StopSignal = "SIGINT" | "SIGTERM";

/** How {@linkcode StopSignals} decides. */
export interface StopSignalsOptions {
  /**
   * How close together two signals count as one, in ms.
   * @default {REPEAT_WINDOW_MS}
   */
  windowMs?: number;
  /**
   * Whether `deno run --watch`'s watcher owns SIGINT. On Ctrl-C the watcher raises
   * SIGTERM in the program and ends the process once the program has finished (or
   * 500 ms later). A program that ended by itself on SIGINT could finish before the
   * watcher has taken its own copy of the signal: the watcher would then take the exit
   * for an ordinary end and wait for a file change, and one Ctrl-C would not be enough.
   * So under the watcher SIGINT is left to it, and its SIGTERM stops the server.
   * @default {false}
   */
  watched?: boolean;
}

/**
 * Decides what each SIGINT or SIGTERM means. The first stops the server; any stop
 * signal within the window of it is a repeat, whatever its kind (a parent may pass
 * SIGINT on as SIGTERM); any later one forces the exit. Under `deno run --watch`,
 * SIGINT is the watcher's: see {@linkcode StopSignalsOptions.watched}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StopSignals } from "./stop_signals.ts";
 *
 * const signals = new StopSignals();
 * assert.equal(signals.receive("SIGINT", 1000), "stop");
 * assert.equal(signals.receive("SIGINT", 1001), "repeat"); // deno task passing it on
 * assert.equal(signals.receive("SIGINT", 2000), "force"); // sent again a second later
 *
 * const watched = new StopSignals({ watched: true });
 * assert.equal(watched.receive("SIGINT", 1000), "watcher"); // Ctrl-C under deno task dev
 * assert.equal(watched.receive("SIGTERM", 1001), "stop"); // the watcher's answer to it
 * ```
 */
export class StopSignals {
  readonly #windowMs: number;
  readonly #watched: boolean;
  #first: number | null = null;

  /** The defaults suit every parent seen: `deno task`, `timeout`, systemd, a terminal. */
  constructor(options: StopSignalsOptions = {}) {
    this.#windowMs = options.windowMs ?? REPEAT_WINDOW_MS;
    this.#watched = options.watched ?? false;
  }

  /** What `signal`, received at `at` ms on a monotonic clock, means. */
  receive(signal: StopSignal, at: number): StopVerdict {
    if (this.#watched && signal === "SIGINT") return "watcher";
    if (this.#first === null) {
      this.#first = at;
      return "stop";
    }
    return at - this.#first < this.#windowMs ? "repeat" : "force";
  }
}
