// The time protocol without I/O: bytes in, request lines out, answers back.

/** ASCII line feed, the request terminator. */
const LF = 0x0a;
/** ASCII carriage return, dropped when it comes right before LF. */
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;
const NO_BYTES = new Uint8Array(0);

/** The TCP port of the time protocol, where servers listen and clients connect by default. */
export const DEFAULT_PORT = 45000;

/** The longest request line, in bytes without the CR LF, that servers accept by default. */
export const DEFAULT_MAX_LINE = 1024;

/** What {@linkcode LineFramer.next} found in the bytes pushed so far. */
export const Frame = {
  /** No complete line is left; push more bytes. */
  None: 0,
  /** A complete line is available through `lineBuffer`, `lineStart` and `lineEnd`. */
  Line: 1,
  /** More than `maxLine` bytes arrived without a line end; the framer stays in this state. */
  TooLong: 2,
} as const;
/** One of the values of {@linkcode Frame}. */
export type Frame = typeof Frame[keyof typeof Frame];

/**
 * Splits a byte stream into lines ending in LF, dropping one CR right before the LF,
 * with the semantics of the standard library's `TextLineStream` plus a length limit.
 *
 * The framer works on bytes and copies only the part of a line that is split
 * across pushes, into a buffer of at most `maxLine + 1` bytes allocated on first
 * need, so memory per connection stays bounded whatever the peer sends.
 * A complete line is exposed as a range of `lineBuffer` that stays valid until the
 * next call to {@linkcode LineFramer.next} or {@linkcode LineFramer.push}.
 *
 * @example Pull the lines out of two fragments
 * ```ts
 * import assert from "node:assert/strict";
 * import { Frame, LineFramer } from "./protocol.ts";
 *
 * const framer = new LineFramer(1024);
 * const lines: string[] = [];
 * const decoder = new TextDecoder();
 * for (const chunk of ["TI", "ME\r\nQUIT\n"]) {
 *   framer.push(new TextEncoder().encode(chunk));
 *   while (framer.next() === Frame.Line) {
 *     lines.push(decoder.decode(framer.line()));
 *   }
 * }
 * assert.deepEqual(lines, ["TIME", "QUIT"]);
 * ```
 */
export class LineFramer {
  readonly #maxLine: number;
  #chunk: Uint8Array = NO_BYTES;
  #pos = 0;
  #end = 0;
  #partial: Uint8Array | null = null;
  #partialLength = 0;
  #partialIsLine = false;
  #tooLong = false;

  /** The buffer holding the last line returned by {@linkcode LineFramer.next}. */
  lineBuffer: Uint8Array = this.#chunk;
  /** Where that line starts in `lineBuffer`. */
  lineStart = 0;
  /** Where that line ends in `lineBuffer` (exclusive; CR LF not included). */
  lineEnd = 0;

  /**
   * Creates a framer.
   *
   * @param maxLine The longest line accepted, in bytes without the CR LF; a line of
   * exactly this length is still a line. Must be a positive integer.
   */
  constructor(maxLine: number = DEFAULT_MAX_LINE) {
    if (!Number.isInteger(maxLine) || maxLine < 1) {
      throw new RangeError(`maxLine must be a positive integer, got ${maxLine}`);
    }
    this.#maxLine = maxLine;
  }

  /**
   * Hands the framer the next bytes of the stream: the first `length` bytes of
   * `chunk` (all of it by default), so a reused read buffer needs no subarray.
   * Lines still pending from an earlier push must have been pulled with
   * {@linkcode LineFramer.next} first. The framer reads `chunk` only until the
   * next push, so the caller may reuse it.
   */
  push(chunk: Uint8Array, length: number = chunk.length): void {
    this.#chunk = chunk;
    this.#pos = 0;
    this.#end = length;
  }

  /** Returns the next complete line, or tells that none is left or the line is too long. */
  next(): Frame {
    if (this.#tooLong) return Frame.TooLong;
    if (this.#partialIsLine) {
      this.#partialIsLine = false;
      this.#partialLength = 0;
    }
    const chunk = this.#chunk;
    const start = this.#pos;
    const end = this.#end;
    if (start >= end) return Frame.None;
    // A byte loop beats indexOf on short lines, and stops where the limit is passed,
    // so a flood without line ends costs no more than maxLine bytes of scanning.
    const limit = Math.min(end, start + this.#maxLine + 2 - this.#partialLength);
    let lf = start;
    while (lf < limit && chunk[lf] !== LF) lf++;
    if (lf === limit) {
      if (limit < end) return this.#fail();
      this.#pos = end;
      return this.#keepPartial(chunk, start, end);
    }
    this.#pos = lf + 1;
    if (this.#partialLength === 0) {
      const lineEnd = lf > start && chunk[lf - 1] === CR ? lf - 1 : lf;
      if (lineEnd - start > this.#maxLine) return this.#fail();
      this.lineBuffer = chunk;
      this.lineStart = start;
      this.lineEnd = lineEnd;
      return Frame.Line;
    }
    // The line began in an earlier push: finish it in the partial buffer.
    if (this.#keepPartial(chunk, start, lf) === Frame.TooLong) return Frame.TooLong;
    return this.#partialLine();
  }

  /**
   * Ends the stream: returns the unterminated last line, if any, as `TextLineStream`
   * does at the end of its input. After this the framer is empty.
   */
  finish(): Frame {
    if (this.#tooLong) return Frame.TooLong;
    if (this.#partialIsLine || this.#partialLength === 0) {
      this.#partialIsLine = false;
      this.#partialLength = 0;
      return Frame.None;
    }
    return this.#partialLine();
  }

  /**
   * True while the framer holds bytes: a line begun but not ended, or pushed bytes not
   * yet framed. A framer that holds nothing is as good as a new one.
   */
  get holding(): boolean {
    return this.#pos < this.#end || (this.#partialLength > 0 && !this.#partialIsLine);
  }

  /**
   * Copies the pushed bytes not framed yet out of the caller's chunk, so that the
   * caller may reuse it before they are: for a reader that stops reading a client
   * whose answers wait to be sent.
   */
  retain(): void {
    if (this.#pos >= this.#end) return;
    this.#chunk = this.#chunk.slice(this.#pos, this.#end);
    this.#end -= this.#pos;
    this.#pos = 0;
  }

  /** Copies the last line out of `lineBuffer`; meant for tests and logs, not the hot path. */
  line(): Uint8Array {
    return this.lineBuffer.slice(this.lineStart, this.lineEnd);
  }

  #partialLine(): Frame {
    const partial = this.#partial!;
    let length = this.#partialLength;
    if (length > 0 && partial[length - 1] === CR) length--;
    if (length > this.#maxLine) return this.#fail();
    this.#partialIsLine = true;
    this.lineBuffer = partial;
    this.lineStart = 0;
    this.lineEnd = length;
    return Frame.Line;
  }

  #keepPartial(chunk: Uint8Array, start: number, end: number): Frame {
    if (start === end) return Frame.None;
    const length = this.#partialLength + end - start;
    // maxLine bytes plus a CR whose LF has not arrived yet is still within the limit.
    if (length > this.#maxLine + 1) return this.#fail();
    if (length === this.#maxLine + 1 && chunk[end - 1] !== CR) return this.#fail();
    this.#partial ??= new Uint8Array(this.#maxLine + 1);
    this.#partial.set(chunk.subarray(start, end), this.#partialLength);
    this.#partialLength = length;
    return Frame.None;
  }

  #fail(): Frame {
    this.#tooLong = true;
    this.#partial = null;
    this.#partialLength = 0;
    return Frame.TooLong;
  }
}

/** The commands of the protocol, as told apart by {@linkcode parseRequest}. */
export const Command = {
  /** An empty line (or only spaces and tabs): ignored. */
  Empty: 0,
  /** `TIME`: answer with the current time. */
  Time: 1,
  /** `QUIT`: send what is owed, then close. */
  Quit: 2,
  /** Anything else, including binary or invalid UTF-8. */
  Unknown: 3,
} as const;
/** One of the values of {@linkcode Command}. */
export type Command = typeof Command[keyof typeof Command];

/** Upper-cases an ASCII letter; other bytes are returned as they are. */
function upper(byte: number): number {
  return byte >= 0x61 && byte <= 0x7a ? byte - 0x20 : byte;
}

/**
 * Tells which command a request line holds: its first word, matched
 * case-insensitively after trimming spaces and tabs; further words are ignored.
 * Works on bytes, so it allocates nothing and never fails on binary input.
 *
 * @param line The bytes holding the line.
 * @param start Where the line starts. Defaults to 0.
 * @param end Where it ends, exclusive, without the CR LF. Defaults to `line.length`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Command, parseRequest } from "./protocol.ts";
 *
 * assert.equal(parseRequest(new TextEncoder().encode(" time threading")), Command.Time);
 * ```
 */
export function parseRequest(
  line: Uint8Array,
  start = 0,
  end: number = line.length,
): Command {
  while (start < end && (line[start] === SPACE || line[start] === TAB)) start++;
  if (start === end) return Command.Empty;
  let wordEnd = start;
  while (wordEnd < end && line[wordEnd] !== SPACE && line[wordEnd] !== TAB) wordEnd++;
  if (wordEnd - start !== 4) return Command.Unknown;
  const a = upper(line[start]), b = upper(line[start + 1]);
  const c = upper(line[start + 2]), d = upper(line[start + 3]);
  if (a === 0x54 && b === 0x49 && c === 0x4d && d === 0x45) return Command.Time; // TIME
  if (a === 0x51 && b === 0x55 && c === 0x49 && d === 0x54) return Command.Quit; // QUIT
  return Command.Unknown;
}

const encoder = new TextEncoder();

/** The answer to a line that is not a known command. */
export const ERR_UNKNOWN_COMMAND: Uint8Array = encoder.encode("ERR unknown command\r\n");
/** The answer, before closing, to a line longer than the limit. */
export const ERR_LINE_TOO_LONG: Uint8Array = encoder.encode("ERR line too long\r\n");
/** The answer, before closing, to a connection past the server's limit. */
export const ERR_SERVER_BUSY: Uint8Array = encoder.encode("ERR server busy\r\n");
/**
 * What a connection hears before it is closed to make room for a new one: it had been
 * silent the longest while the server was full.
 */
export const ERR_IDLE_EVICTED: Uint8Array = encoder.encode("ERR idle, closed to make room\r\n");
/**
 * What a connection hears, after the answers it is owed, before it is closed to make
 * room for a newcomer: the server was full, and its address held the most connections.
 */
export const ERR_BUSY_EVICTED: Uint8Array = encoder.encode("ERR busy, closed to make room\r\n");
/** The answer, before closing, to a connection past the per-client limit. */
export const ERR_TOO_MANY_CONNECTIONS: Uint8Array = encoder.encode(
  "ERR too many connections\r\n",
);

/** The length in bytes of every answer to `TIME`: `JAM hh:mm:ss\r\n`. */
export const TIME_ANSWER_LENGTH = 14;

/** The shape of every answer to TIME, with its CR LF; {@linkcode isTimeAnswer} checks bytes. */
export const TIME_ANSWER: RegExp = /^JAM ([01]\d|2[0-3]):[0-5]\d:[0-5]\d\r\n$/;

/**
 * Tells whether the 14 bytes at `at` are an answer to TIME, `JAM hh:mm:ss\r\n` with a
 * valid time, without decoding them: {@linkcode TIME_ANSWER} for load generators.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isTimeAnswer } from "./protocol.ts";
 *
 * assert.ok(isTimeAnswer(new TextEncoder().encode("JAM 23:59:59\r\n"), 0));
 * assert.ok(!isTimeAnswer(new TextEncoder().encode("JAM 24:00:00\r\n"), 0));
 * ```
 */
export function isTimeAnswer(b: Uint8Array, at: number): boolean {
  const digit = (i: number) => b[at + i] >= 0x30 && b[at + i] <= 0x39;
  const value = (i: number) => (b[at + i] - 0x30) * 10 + b[at + i + 1] - 0x30;
  return b[at] === 0x4a && b[at + 1] === 0x41 && b[at + 2] === 0x4d && b[at + 3] === 0x20 &&
    digit(4) && digit(5) && b[at + 6] === 0x3a && digit(7) && digit(8) &&
    b[at + 9] === 0x3a && digit(10) && digit(11) && b[at + 12] === 0x0d && b[at + 13] === 0x0a &&
    value(4) < 24 && value(7) < 60 && value(10) < 60;
}

/**
 * Tells whether a time zone name is one this runtime knows (an IANA name such as
 * `Asia/Jakarta`, or `UTC`).
 */
export function isValidTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes the answer to `TIME` from a clock, formatting it at most once per second:
 * every request within the same second gets the same bytes, so answering costs a
 * clock read and a comparison.
 *
 * The returned arrays are never changed after they are handed out, so a caller may
 * pass one to an asynchronous write while other requests are answered.
 *
 * @example An injected clock
 * ```ts
 * import assert from "node:assert/strict";
 * import { TimeAnswer } from "./protocol.ts";
 *
 * const answer = new TimeAnswer({ timeZone: "UTC", now: () => Date.UTC(2026, 0, 1, 9, 5, 3) });
 * assert.equal(new TextDecoder().decode(answer.current()), "JAM 09:05:03\r\n");
 * ```
 */
export class TimeAnswer {
  readonly #now: () => number;
  readonly #format: Intl.DateTimeFormat;
  #second = NaN;
  #bytes: Uint8Array = new Uint8Array(TIME_ANSWER_LENGTH);
  /** Copies of `#bytes` back to back, for answering many requests at once; rebuilt each second. */
  #block: Uint8Array = new Uint8Array(0);
  #blockSecond = NaN;
  /** The last run handed out, reused while the same count is asked for from the same block. */
  #run: Uint8Array = this.#block;

  /**
   * @param options.timeZone An IANA time zone; the system's local zone when left out.
   * Throws `RangeError` for a zone the runtime does not know.
   * @param options.now The clock, in milliseconds since the epoch. Defaults to `Date.now`.
   */
  constructor(options: { timeZone?: string; now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#format = new Intl.DateTimeFormat("en-US", {
      timeZone: options.timeZone,
      hourCycle: "h23",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
  }

  /** The answer for the clock's current second: `JAM hh:mm:ss\r\n`, 14 ASCII bytes. */
  current(): Uint8Array {
    const second = Math.floor(this.#now() / 1000);
    if (second !== this.#second) {
      this.#bytes = this.format(second * 1000);
      this.#second = second;
    }
    return this.#bytes;
  }

  /**
   * `count` answers for the current second back to back (`count` × 14 bytes), from a
   * block built at most a few times per second. Like {@linkcode TimeAnswer.current},
   * the returned bytes are never changed afterwards.
   */
  repeated(count: number): Uint8Array {
    const one = this.current();
    if (count === 1) return one;
    let block = this.#block;
    const sameSecond = this.#blockSecond === this.#second;
    if (!sameSecond || block.length < count * TIME_ANSWER_LENGTH) {
      // A new block rather than an update, so blocks already handed out stay as they are.
      const copies = Math.max(count, 64, sameSecond ? block.length / TIME_ANSWER_LENGTH : 0);
      block = new Uint8Array(copies * TIME_ANSWER_LENGTH);
      for (let i = 0; i < copies; i++) block.set(one, i * TIME_ANSWER_LENGTH);
      this.#block = block;
      this.#blockSecond = this.#second;
    }
    const length = count * TIME_ANSWER_LENGTH;
    const run = this.#run;
    // A pipelining client asks for the same run again and again: no view made each time.
    if (run.buffer === block.buffer && run.length === length) return run;
    return this.#run = block.subarray(0, length);
  }

  /** Formats the answer for a given instant (milliseconds since the epoch), uncached. */
  format(epochMilliseconds: number): Uint8Array {
    let hour = "00", minute = "00", second = "00";
    for (const part of this.#format.formatToParts(epochMilliseconds)) {
      if (part.type === "hour") hour = part.value;
      else if (part.type === "minute") minute = part.value;
      else if (part.type === "second") second = part.value;
    }
    return encoder.encode(`JAM ${hour}:${minute}:${second}\r\n`);
  }
}

/** How many requests of each kind a server has answered; {@linkcode Session} adds to it. */
export interface RequestCounts {
  /** `TIME` requests answered. */
  requestsTime: number;
  /** `QUIT` requests. */
  requestsQuit: number;
  /** Lines that were not a known command. */
  requestsUnknown: number;
  /** Connections closed for a line over the limit. */
  closedLineTooLong: number;
}

/** Returns a {@linkcode RequestCounts} with every count at zero. */
export function newRequestCounts(): RequestCounts {
  return { requestsTime: 0, requestsQuit: 0, requestsUnknown: 0, closedLineTooLong: 0 };
}

/** Options of {@linkcode Session}. */
export interface SessionOptions {
  /** Where the answers to `TIME` come from; one instance is shared by every session. */
  time: TimeAnswer;
  /**
   * The longest request line, in bytes without the CR LF.
   * @default {1024}
   */
  maxLine?: number;
  /**
   * Counts to add this session's requests to; shared by every session of a server.
   * @default {a fresh RequestCounts}
   */
  counts?: RequestCounts;
  /**
   * The most bytes of answers {@linkcode Session.pull} returns at once, so a client
   * that pipelines many requests cannot make the server hold a large output.
   * @default {16384}
   */
  outputLimit?: number;
}

const LONGEST_ANSWER = Math.max(
  TIME_ANSWER_LENGTH,
  ERR_UNKNOWN_COMMAND.length,
  ERR_LINE_TOO_LONG.length,
);

/**
 * One connection's conversation, without the socket: push the bytes that arrive,
 * pull the bytes to send, and close once {@linkcode Session.closing} is true and
 * the last pull has been sent.
 *
 * A pull answers every complete request in order, up to `outputLimit` bytes. The
 * common case, one `TIME`, returns the shared answer itself without copying; more
 * answers are gathered into one buffer so that they leave in one write.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Session, TimeAnswer } from "./protocol.ts";
 *
 * const now = () => Date.UTC(2026, 0, 1, 9, 5, 3);
 * const session = new Session({ time: new TimeAnswer({ timeZone: "UTC", now }) });
 * session.push(new TextEncoder().encode("TIME\r\nQUIT\r\nTIME\r\n"));
 * assert.equal(new TextDecoder().decode(session.pull()), "JAM 09:05:03\r\n");
 * assert.ok(session.closing, "send the answer, then close; the TIME after QUIT is not answered");
 * ```
 */
export class Session {
  readonly #time: TimeAnswer;
  readonly #framer: LineFramer;
  readonly #counts: RequestCounts;
  readonly #outputLimit: number;
  #output: Uint8Array | null = null;
  #ended = false;
  #closing = false;

  /** @param options See {@linkcode SessionOptions}. */
  constructor(options: SessionOptions) {
    this.#time = options.time;
    this.#framer = new LineFramer(options.maxLine ?? DEFAULT_MAX_LINE);
    this.#counts = options.counts ?? newRequestCounts();
    this.#outputLimit = Math.max(options.outputLimit ?? 16384, LONGEST_ANSWER);
  }

  /** True once `QUIT` or an over-long line was seen: nothing after it is answered. */
  get closing(): boolean {
    return this.#closing;
  }

  /**
   * Hands over the next bytes from the client: the first `length` bytes of `chunk`,
   * all of it by default. Pull until an empty result before pushing again; `chunk`
   * may be reused by the caller after that.
   */
  push(chunk: Uint8Array, length: number = chunk.length): void {
    this.#framer.push(chunk, length);
  }

  /**
   * True while the session is as good as a new one: nothing held, not closing, not
   * ended. An engine can then share one idle session among all its idle connections,
   * and give a connection a session of its own only while it holds something.
   */
  get idle(): boolean {
    return !this.#closing && !this.#ended && !this.#framer.holding;
  }

  /**
   * Keeps the pushed bytes not answered yet in a copy of its own (see
   * {@linkcode LineFramer.retain}), so that the caller may reuse its read buffer while
   * the answers wait to be sent.
   */
  retain(): void {
    this.#framer.retain();
  }

  /** Tells the session the client sent its last byte, so an unterminated last line is answered too. */
  end(): void {
    this.#ended = true;
  }

  /**
   * Returns the answers owed for the bytes pushed so far, at most `outputLimit`
   * bytes; an empty array when nothing more is owed. The result is valid until the
   * next call and must be sent before it.
   */
  pull(): Uint8Array {
    if (this.#closing) return NO_BYTES;
    const framer = this.#framer;
    const counts = this.#counts;
    const limit = this.#outputLimit;
    // TIME answers are counted as a run and copied in one piece when something else
    // comes; a pull that is one run returns the shared block without any copy.
    let run = 0;
    let length = 0;
    while (length + run * TIME_ANSWER_LENGTH + LONGEST_ANSWER <= limit) {
      let frame = framer.next();
      if (frame === Frame.None && this.#ended) frame = framer.finish();
      if (frame === Frame.None) break;
      if (frame === Frame.TooLong) {
        counts.closedLineTooLong++;
        this.#closing = true;
        length = this.#append(length, run, ERR_LINE_TOO_LONG);
        run = 0;
        break;
      }
      const command = parseRequest(framer.lineBuffer, framer.lineStart, framer.lineEnd);
      if (command === Command.Time) {
        counts.requestsTime++;
        run++;
      } else if (command === Command.Quit) {
        counts.requestsQuit++;
        this.#closing = true;
        break;
      } else if (command === Command.Unknown) {
        counts.requestsUnknown++;
        length = this.#append(length, run, ERR_UNKNOWN_COMMAND);
        run = 0;
      }
    }
    if (length === 0) return run === 0 ? NO_BYTES : this.#time.repeated(run);
    if (run > 0) length = this.#append(length, run, NO_BYTES);
    return this.#output!.subarray(0, length);
  }

  /**
   * Copies `run` TIME answers and then `answer` into the output after its first
   * `length` bytes; returns the new length.
   */
  #append(length: number, run: number, answer: Uint8Array): number {
    const runBytes = run * TIME_ANSWER_LENGTH;
    const output = this.#reserve(length + runBytes + answer.length, length);
    if (run > 0) output.set(this.#time.repeated(run), length);
    output.set(answer, length + runBytes);
    return length + runBytes + answer.length;
  }

  /** Returns an output buffer of at least `size` bytes that keeps its first `keep` bytes. */
  #reserve(size: number, keep: number): Uint8Array {
    const output = this.#output;
    if (output !== null && output.length >= size) return output;
    // Grown on demand: most connections send one request at a time and never need it.
    const grown = new Uint8Array(Math.min(this.#outputLimit, Math.max(256, size * 2)));
    if (output !== null && keep > 0) grown.set(output.subarray(0, keep));
    return this.#output = grown;
  }
}
