// Leveled, one-line-per-event logging to stderr, as text or JSON.

/** The log levels, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];
/** The log formats: `text` for people, `json` for log shippers. */
export const LOG_FORMATS = ["text", "json"] as const;
/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Extra keys of a log event. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Writes log events; each method is a no-op when its level is off. */
export interface Logger {
  /** Tells whether events of `level` are written, so callers can skip building them. */
  enabled(level: LogLevel): boolean;
  /** A failure that needs attention: a bug, or the server cannot go on. */
  error(msg: string, fields?: LogFields): void;
  /** Something unusual that the server handled. */
  warn(msg: string, fields?: LogFields): void;
  /** Lifecycle: start, stop, periodic summaries. */
  info(msg: string, fields?: LogFields): void;
  /** Per-connection detail; too much for a busy server's default log. */
  debug(msg: string, fields?: LogFields): void;
}

/** A logger whose level and format can change while it is in use (a reload). */
export interface ConfigurableLogger extends Logger {
  /** The most verbose level written now. */
  readonly level: LogLevel;
  /** How events are written now. */
  readonly format: LogFormat;
  /** Writes from now on at this level, in this format; left out, each stays as it is. */
  configure(options: { level?: LogLevel; format?: LogFormat }): void;
}

/**
 * Applies `change` with the logger set to `log`, and puts the logger back as it was if
 * `change` throws: a reload refused leaves the log as it was too. The logger is set
 * first because what `change` reconfigures may read it (whether debug is on).
 */
export function withLogSettings<T>(
  logger: ConfigurableLogger,
  log: { level: LogLevel; format: LogFormat },
  change: () => T,
): T {
  const before = { level: logger.level, format: logger.format };
  logger.configure(log);
  try {
    return change();
  } catch (error) {
    logger.configure(before);
    throw error;
  }
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /**
   * The most verbose level written.
   * @default {"info"}
   */
  level?: LogLevel;
  /**
   * How each event is written.
   * @default {"text"}
   */
  format?: LogFormat;
  /**
   * Where a finished line goes (without its newline).
   * @default {writes the line to stderr}
   */
  write?: (line: string) => void;
  /**
   * The clock, in milliseconds since the epoch.
   * @default {Date.now}
   */
  now?: () => number;
  /**
   * Keys added to every event, such as the worker's number.
   * @default {{}}
   */
  fields?: LogFields;
}

const encoder = new TextEncoder();

/** The keys every JSON log line starts with. */
const FIXED_KEYS = new Set(["time", "level", "msg"]);

function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) {
    written += Deno.stderr.writeSync(bytes.subarray(written));
  }
}

function textValue(value: string | number | boolean): string {
  const text = String(value);
  return text === "" || /[\s"=\\]/.test(text) ? JSON.stringify(text) : text;
}

/**
 * Creates a logger that writes one line per event: `time LEVEL msg key=value …`
 * in text format, or an object with the fixed keys `time`, `level`, `msg` and the
 * event's own keys in JSON format. Fields whose value is `undefined` are left out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLogger } from "./log.ts";
 *
 * const lines: string[] = [];
 * const log = createLogger({ format: "json", write: (line) => lines.push(line), now: () => 0 });
 * log.info("listening", { address: "[::]:45000" });
 * log.debug("not written at the default level");
 * assert.deepEqual(lines.map((line) => JSON.parse(line)), [
 *   { time: "1970-01-01T00:00:00.000Z", level: "info", msg: "listening", address: "[::]:45000" },
 * ]);
 * ```
 */
export function createLogger(options: LoggerOptions = {}): ConfigurableLogger {
  let format = options.format ?? "text";
  const write = options.write ?? writeStderr;
  const now = options.now ?? Date.now;
  let threshold = LOG_LEVELS.indexOf(options.level ?? "info");
  const base = options.fields;

  function emit(eventLevel: LogLevel, msg: string, fields?: LogFields): void {
    if (LOG_LEVELS.indexOf(eventLevel) > threshold) return;
    const time = new Date(now()).toISOString();
    if (format === "json") {
      // The fixed keys come first, and an event's own keys cannot overwrite them.
      const event: Record<string, unknown> = { time, level: eventLevel, msg };
      for (const all of [base, fields]) {
        for (const key in all) if (!FIXED_KEYS.has(key)) event[key] = all[key];
      }
      write(JSON.stringify(event));
      return;
    }
    let line = `${time} ${eventLevel.toUpperCase().padEnd(5)} ${msg}`;
    for (const all of [base, fields]) {
      for (const key in all) {
        const value = all[key];
        if (value !== undefined) line += ` ${key}=${textValue(value)}`;
      }
    }
    write(line);
  }

  return {
    get level() {
      return LOG_LEVELS[threshold];
    },
    get format() {
      return format;
    },
    configure(next) {
      if (next.level !== undefined) threshold = LOG_LEVELS.indexOf(next.level);
      if (next.format !== undefined) format = next.format;
    },
    enabled: (eventLevel) => LOG_LEVELS.indexOf(eventLevel) <= threshold,
    error: (msg, fields) => emit("error", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    debug: (msg, fields) => emit("debug", msg, fields),
  };
}
