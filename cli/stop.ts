// The stop signals as the program hears them: SIGINT and SIGTERM, once or twice; and SIGHUP, which does not stop it.

import type { Logger } from "../lib/log.ts";
import { REPEAT_WINDOW_MS, type StopSignal, StopSignals } from "./stop_signals.ts";
import { readWatched } from "./environment.ts";

/** The stop signals as {@linkcode listenForStop} hears them. */
export interface StopRequest {
  /** Resolves with the first SIGINT or SIGTERM. */
  readonly requested: Promise<Deno.Signal>;
  /** Says the stop is over: signals from now on are ignored, the process exits 0. */
  finished(): void;
  /** What SIGHUP does from now on; without it, SIGHUP is logged and ignored. */
  onReload(reload: () => void): void;
}

/**
 * Listens for SIGINT and SIGTERM from before the server starts until the process
 * exits. The first asks for the stop; a second exits at once with code 1, unless it
 * comes within {@linkcode REPEAT_WINDOW_MS} of the first: `deno task` passes on a signal
 * that its process group has already delivered, and one Ctrl-C must not count twice.
 * Under `deno task dev` SIGINT belongs to `--watch`'s watcher, whose SIGTERM stops the
 * server (see {@linkcode StopSignals}).
 *
 * SIGHUP reloads the configuration where there is a file to read again (`onReload`);
 * otherwise it is logged and ignored.
 *
 * The listeners are never removed: removing Deno's last one restores the signal's
 * default action, so a copy passed on late, after a quick drain, would kill the
 * process before it exits 0 (exit code 143, seen under load). Installed before the
 * "listening" line, they also stop a server signalled the moment it says it listens.
 */
export function listenForStop(logger: Logger): StopRequest {
  const requested = Promise.withResolvers<Deno.Signal>();
  const signals: StopSignal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const policy = new StopSignals({ watched: readWatched() });
  let finished = false;
  let stopping = false;
  const onSignal = (signal: StopSignal) => () => {
    const verdict = policy.receive(signal, performance.now());
    if (verdict === "watcher") {
      logger.debug("SIGINT left to deno's watcher, whose SIGTERM stops the server", { signal });
      return;
    }
    if (finished || verdict === "repeat") {
      logger.debug("another signal at once, or after the stop; taken as the same stop", {
        signal,
        windowMs: REPEAT_WINDOW_MS,
      });
      return;
    }
    if (verdict === "force") {
      logger.warn("second signal; exiting now", { signal });
      Deno.exit(1);
    }
    logger.info("shutting down", { signal });
    stopping = true;
    requested.resolve(signal);
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal(signal));
  // SIGHUP's default action ends the process without a drain, as a closed terminal or a
  // dropped SSH session sends it; a daemon takes it as "reload", and there is nothing to
  // reload without a configuration file.
  let reload: (() => void) | null = null;
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGHUP", () => {
      if (stopping) logger.warn("SIGHUP while shutting down; ignored");
      else if (reload === null) logger.warn("SIGHUP: no --config file to reload; ignored");
      else reload();
    });
  }
  return {
    requested: requested.promise,
    finished: () => finished = true,
    onReload: (next) => reload = next,
  };
}
