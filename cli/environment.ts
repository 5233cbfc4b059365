// What the program reads from its environment: PORT, and whether deno task dev watches it.

import { WATCHED_ENV } from "./stop_signals.ts";

/** The warning when `PORT` may be set but cannot be read; `deno task start` and the binary grant it. */
export const PORT_UNREADABLE = "PORT from the environment is not read without --allow-env=PORT";

/** `PORT` from the environment, and whether it could be read at all. */
export function readPort(): { env: { PORT?: string }; readable: boolean } {
  const permission = Deno.permissions.querySync({ name: "env", variable: "PORT" });
  if (permission.state !== "granted") return { env: {}, readable: false };
  return { env: { PORT: Deno.env.get("PORT") }, readable: true };
}

/** Whether `deno task dev` says that `--watch`'s watcher owns SIGINT ({@linkcode WATCHED_ENV}). */
export function readWatched(): boolean {
  const permission = Deno.permissions.querySync({ name: "env", variable: WATCHED_ENV });
  return permission.state === "granted" && Deno.env.get(WATCHED_ENV) === "1";
}
