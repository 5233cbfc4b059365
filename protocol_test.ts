// Unit tests of the pure protocol: framing, parsing, formatting and sessions.

import assert from "node:assert/strict";
import {
  Command,
  ERR_LINE_TOO_LONG,
  ERR_UNKNOWN_COMMAND,
  Frame,
  isValidTimeZone,
  LineFramer,
  parseRequest,
  Session,
  TIME_ANSWER_LENGTH,
  TimeAnswer,
} from "./protocol.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);

/** Pushes the chunks one by one and collects every line (as text) and a final "TOO LONG" marker. */
function frame(chunks: (string | Uint8Array)[], maxLine = 1024, end = false): string[] {
  const framer = new LineFramer(maxLine);
  const lines: string[] = [];
  const drain = (next: () => Frame) => {
    for (;;) {
      const result = next();
      if (result === Frame.None) return false;
      if (result === Frame.TooLong) {
        lines.push("TOO LONG");
        return true;
      }
      lines.push(decoder.decode(framer.lineBuffer.subarray(framer.lineStart, framer.lineEnd)));
    }
  };
  for (const chunk of chunks) {
    // A reused buffer, overwritten between pushes, as the server does.
    const buffer = typeof chunk === "string" ? bytes(chunk) : chunk;
    framer.push(buffer);
    if (drain(() => framer.next())) return lines;
    buffer.fill(0x21);
  }
  if (end) drain(() => framer.finish());
  return lines;
}

/** Splits text into pieces of `size` bytes. */
function pieces(text: string, size: number): Uint8Array[] {
  const all = bytes(text);
  const result: Uint8Array[] = [];
  for (let i = 0; i < all.length; i += size) result.push(all.slice(i, i + size));
  return result;
}

Deno.test("framer splits lines on LF and drops the CR before it", () => {
  assert.deepEqual(frame(["TIME\r\nQUIT\n"]), ["TIME", "QUIT"]);
});

Deno.test("framer gives the same lines for fragments of every size", () => {
  const text = "TIME\r\ntime threading\r\n\r\nQUIT\nx\ry\r\n";
  const expected = ["TIME", "time threading", "", "QUIT", "x\ry"];
  for (let size = 1; size <= bytes(text).length; size++) {
    assert.deepEqual(frame(pieces(text, size)), expected, `fragments of ${size} bytes`);
  }
});

Deno.test("framer joins a CR and LF that arrive in different pushes", () => {
  assert.deepEqual(frame(["TIME\r", "\nTIME\r", "\n"]), ["TIME", "TIME"]);
  assert.deepEqual(frame(["\r", "\n"]), [""]);
});

Deno.test("framer answers pipelined lines in order", () => {
  const lines = frame([Array.from({ length: 32 }, (_, i) => `L${i}\r\n`).join("")]);
  assert.deepEqual(lines, Array.from({ length: 32 }, (_, i) => `L${i}`));
});

Deno.test("framer keeps empty lines and a lone CR inside a line", () => {
  assert.deepEqual(frame(["\n\r\n\n"]), ["", "", ""]);
  assert.deepEqual(frame(["a\rb\n"]), ["a\rb"]);
});

Deno.test("framer holds an unterminated line until more bytes come", () => {
  assert.deepEqual(frame(["TIME"]), []);
  assert.deepEqual(frame(["TI", "ME", "\n"]), ["TIME"]);
});

Deno.test("framer returns the unterminated last line at the end of the stream", () => {
  assert.deepEqual(frame(["TIME\nQU", "IT"], 1024, true), ["TIME", "QUIT"]);
  assert.deepEqual(frame(["TIME\r"], 1024, true), ["TIME"]);
  assert.deepEqual(frame(["TIME\n"], 1024, true), ["TIME"]);
});

Deno.test("framer accepts a line of exactly the limit, split or whole, with CR LF or LF", () => {
  const line = "x".repeat(16);
  for (const ending of ["\r\n", "\n"]) {
    for (let size = 1; size <= 20; size++) {
      assert.deepEqual(frame(pieces(line + ending + "TIME\n", size), 16), [line, "TIME"]);
    }
  }
  assert.deepEqual(frame([line + "\r", "\n"], 16), [line]);
});

Deno.test("framer reports a line one byte past the limit, split or whole", () => {
  const line = "x".repeat(17);
  for (let size = 1; size <= 20; size++) {
    assert.deepEqual(frame(pieces(line + "\r\n", size), 16), ["TOO LONG"], `pieces of ${size}`);
  }
  // As soon as the bytes arrive, without waiting for the line end.
  assert.deepEqual(frame([line], 16), ["TOO LONG"]);
  assert.deepEqual(frame(["x".repeat(16) + "\ry"], 16), ["TOO LONG"]);
  assert.deepEqual(frame(["x".repeat(16) + "\r", "y"], 16), ["TOO LONG"]);
});

Deno.test("framer answers the lines before an over-long one, then stays failed", () => {
  const framer = new LineFramer(4);
  framer.push(bytes("TIME\nTOOLONG"));
  assert.equal(framer.next(), Frame.Line);
  assert.equal(framer.next(), Frame.TooLong);
  framer.push(bytes("TIME\n"));
  assert.equal(framer.next(), Frame.TooLong);
  assert.equal(framer.finish(), Frame.TooLong);
});

Deno.test("framer passes binary bytes through untouched", () => {
  const binary = new Uint8Array([0x00, 0xff, 0xfe, 0x0d, 0x80, 0x0a, 0xc3, 0x28, 0x0a]);
  const framer = new LineFramer(16);
  framer.push(binary);
  assert.equal(framer.next(), Frame.Line);
  assert.deepEqual(framer.line(), new Uint8Array([0x00, 0xff, 0xfe, 0x0d, 0x80]));
  assert.equal(framer.next(), Frame.Line);
  assert.deepEqual(framer.line(), new Uint8Array([0xc3, 0x28]));
  assert.equal(framer.next(), Frame.None);
});

Deno.test("framer refuses a limit that is not a positive integer", () => {
  assert.throws(() => new LineFramer(0), RangeError);
  assert.throws(() => new LineFramer(1.5), RangeError);
});

Deno.test("parser matches the first word case-insensitively after trimming spaces and tabs", () => {
  const cases: [string, Command][] = [
    ["TIME", Command.Time],
    ["time", Command.Time],
    ["TiMe", Command.Time],
    ["  \tTIME \t", Command.Time],
    ["TIME threading", Command.Time],
    ["time\tnow please", Command.Time],
    ["QUIT", Command.Quit],
    ["quit now", Command.Quit],
    ["", Command.Empty],
    [" \t ", Command.Empty],
    ["TIMES", Command.Unknown],
    ["TIM", Command.Unknown],
    ["TIME\r", Command.Unknown],
    ["T IME", Command.Unknown],
    ["HELLO", Command.Unknown],
    ["QUIT!", Command.Unknown],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2", Command.Unknown],
    ["ｔｉｍｅ", Command.Unknown],
  ];
  for (const [line, command] of cases) {
    assert.equal(parseRequest(bytes(line)), command, JSON.stringify(line));
  }
});

Deno.test("parser reads only the given range of the buffer", () => {
  const buffer = bytes("xxTIMEyy");
  assert.equal(parseRequest(buffer, 2, 6), Command.Time);
  assert.equal(parseRequest(buffer, 2, 2), Command.Empty);
});

Deno.test("parser calls binary and invalid UTF-8 unknown", () => {
  assert.equal(parseRequest(new Uint8Array([0xff, 0xfe, 0x00, 0x01])), Command.Unknown);
  assert.equal(parseRequest(new Uint8Array([0xc3, 0x28])), Command.Unknown);
  assert.equal(parseRequest(new Uint8Array([0x54, 0x49, 0x4d, 0xc5])), Command.Unknown);
});

const at = (iso: string) => () => Date.parse(iso);

Deno.test("formatter writes JAM hh:mm:ss with CR LF, 24-hour and zero-padded", () => {
  const cases: [string, string][] = [
    ["2026-01-01T00:00:00Z", "JAM 00:00:00\r\n"],
    ["2026-01-01T09:05:03Z", "JAM 09:05:03\r\n"],
    ["2026-01-01T12:00:00Z", "JAM 12:00:00\r\n"],
    ["2026-01-01T13:07:09.999Z", "JAM 13:07:09\r\n"],
    ["2026-12-31T23:59:59.999Z", "JAM 23:59:59\r\n"],
  ];
  for (const [iso, expected] of cases) {
    const answer = new TimeAnswer({ timeZone: "UTC", now: at(iso) }).current();
    assert.equal(decoder.decode(answer), expected, iso);
    assert.equal(answer.length, TIME_ANSWER_LENGTH);
  }
});

Deno.test("formatter answers in the configured time zone", () => {
  const now = at("2026-06-15T20:30:15Z");
  assert.equal(
    decoder.decode(new TimeAnswer({ timeZone: "UTC", now }).current()),
    "JAM 20:30:15\r\n",
  );
  // Jakarta is UTC+7 all year: the next day's 03:30.
  assert.equal(
    decoder.decode(new TimeAnswer({ timeZone: "Asia/Jakarta", now }).current()),
    "JAM 03:30:15\r\n",
  );
  // Kathmandu is UTC+5:45, so minutes shift too.
  assert.equal(
    decoder.decode(new TimeAnswer({ timeZone: "Asia/Kathmandu", now }).current()),
    "JAM 02:15:15\r\n",
  );
});

Deno.test("formatter follows daylight saving time", () => {
  const zone = "Europe/Amsterdam";
  const winter = new TimeAnswer({ timeZone: zone, now: at("2026-01-15T12:00:00Z") });
  const summer = new TimeAnswer({ timeZone: zone, now: at("2026-07-15T12:00:00Z") });
  assert.equal(decoder.decode(winter.current()), "JAM 13:00:00\r\n");
  assert.equal(decoder.decode(summer.current()), "JAM 14:00:00\r\n");
});

Deno.test("formatter formats once per second and keeps handed-out answers unchanged", () => {
  let ms = Date.parse("2026-01-01T09:05:03.000Z");
  const answer = new TimeAnswer({ timeZone: "UTC", now: () => ms });
  const first = answer.current();
  ms += 999;
  assert.equal(answer.current(), first, "the same bytes within one second");
  ms += 1;
  const second = answer.current();
  assert.notEqual(second, first);
  assert.equal(decoder.decode(first), "JAM 09:05:03\r\n");
  assert.equal(decoder.decode(second), "JAM 09:05:04\r\n");
});

Deno.test("formatter repeats the answer for a run, and a new second never changes an old block", () => {
  let ms = Date.parse("2026-01-01T09:05:03.000Z");
  const answer = new TimeAnswer({ timeZone: "UTC", now: () => ms });
  assert.equal(answer.repeated(1), answer.current());
  const three = answer.repeated(3);
  assert.equal(decoder.decode(three), "JAM 09:05:03\r\n".repeat(3));
  const many = answer.repeated(200);
  assert.equal(decoder.decode(many), "JAM 09:05:03\r\n".repeat(200));
  ms += 60_000; // the same seconds digits, a minute later
  assert.equal(decoder.decode(answer.repeated(3)), "JAM 09:06:03\r\n".repeat(3));
  assert.equal(decoder.decode(three), "JAM 09:05:03\r\n".repeat(3), "handed-out bytes unchanged");
  assert.equal(decoder.decode(many), "JAM 09:05:03\r\n".repeat(200));
});

Deno.test("formatter rejects unknown time zones", () => {
  assert.equal(isValidTimeZone("Asia/Jakarta"), true);
  assert.equal(isValidTimeZone("UTC"), true);
  assert.equal(isValidTimeZone("Mars/Olympus_Mons"), false);
  assert.throws(() => new TimeAnswer({ timeZone: "Mars/Olympus_Mons" }), RangeError);
});

/** Drives a session with chunks and returns all it sends (as text) and whether it closes. */
function converse(
  chunks: string[],
  options: { maxLine?: number; outputLimit?: number; end?: boolean } = {},
) {
  const session = new Session({
    time: new TimeAnswer({ timeZone: "UTC", now: at("2026-01-01T09:05:03Z") }),
    maxLine: options.maxLine,
    outputLimit: options.outputLimit,
  });
  const writes: string[] = [];
  const pull = () => {
    for (let out = session.pull(); out.length > 0; out = session.pull()) {
      writes.push(decoder.decode(out));
    }
  };
  for (const chunk of chunks) {
    session.push(bytes(chunk));
    pull();
    if (session.closing) break;
  }
  if (options.end && !session.closing) {
    session.end();
    pull();
  }
  return { sent: writes.join(""), writes, closing: session.closing };
}

const JAM = "JAM 09:05:03\r\n";
const UNKNOWN = decoder.decode(ERR_UNKNOWN_COMMAND);
const TOO_LONG = decoder.decode(ERR_LINE_TOO_LONG);

Deno.test("session answers TIME and closes after QUIT without answering what follows", () => {
  assert.deepEqual(converse(["TIME\r\nQUIT\r\nTIME\r\n"]), {
    sent: JAM,
    writes: [JAM],
    closing: true,
  });
});

Deno.test("session batches pipelined answers into one write", () => {
  const result = converse(["TIME\r\n".repeat(32)]);
  assert.deepEqual(result.writes, [JAM.repeat(32)]);
  assert.equal(result.closing, false);
});

Deno.test("session splits a large batch at the output limit and answers all of it in order", () => {
  const result = converse(["TIME\n".repeat(100) + "nope\n" + "TIME\n"], { outputLimit: 256 });
  assert.equal(result.sent, JAM.repeat(100) + UNKNOWN + JAM);
  assert.ok(result.writes.length > 1);
  for (const write of result.writes) assert.ok(bytes(write).length <= 256);
});

Deno.test("session keeps the order of TIME runs mixed with other answers", () => {
  const result = converse(["TIME\nTIME\nnope\nTIME\n\nTIME\nTIME\nx\n"]);
  assert.equal(result.sent, JAM + JAM + UNKNOWN + JAM + JAM + JAM + UNKNOWN);
  assert.deepEqual(
    converse(["TIME\nTIME\n" + "y".repeat(9)], { maxLine: 8 }).sent,
    JAM + JAM + TOO_LONG,
  );
});

Deno.test("session answers unknown commands and stays open", () => {
  assert.deepEqual(converse(["HELLO\r\n\r\ntime\r\n"]), {
    sent: UNKNOWN + JAM,
    writes: [UNKNOWN + JAM],
    closing: false,
  });
});

Deno.test("session sends the answers owed, then the line-too-long error, then closes", () => {
  const result = converse(["TIME\r\n", "x".repeat(9)], { maxLine: 8 });
  assert.equal(result.sent, JAM + TOO_LONG);
  assert.equal(result.closing, true);
});

Deno.test("session answers an unterminated last line when the client ends", () => {
  assert.equal(converse(["TIME\nTI", "ME"], { end: true }).sent, JAM + JAM);
  assert.equal(converse(["TIME"], { end: false }).sent, "");
});

Deno.test("framer reads only the given length of a reused buffer", () => {
  const framer = new LineFramer(16);
  const buffer = bytes("TIME\nQU\nstale\n");
  framer.push(buffer, 7); // "TIME\nQU": the LFs after it are left over from an earlier read
  assert.equal(framer.next(), Frame.Line);
  assert.equal(decoder.decode(framer.line()), "TIME");
  assert.equal(framer.next(), Frame.None);
  buffer.set(bytes("IT\n"));
  framer.push(buffer, 3);
  assert.equal(framer.next(), Frame.Line);
  assert.equal(decoder.decode(framer.line()), "QUIT");
  assert.equal(framer.next(), Frame.None);
});

Deno.test("a session is idle until it holds a partial line, and keeps unanswered bytes in a copy", () => {
  const time = new TimeAnswer({ timeZone: "UTC", now: () => Date.UTC(2026, 0, 1, 9, 5, 3) });
  const session = new Session({ time, outputLimit: 14 });
  const buffer = new TextEncoder().encode("TIME\nTIME\nTI");
  assert.ok(session.idle);
  session.push(buffer);
  assert.equal(new TextDecoder().decode(session.pull()), "JAM 09:05:03\r\n");
  // The output limit stopped the pull: the rest is held, and survives the buffer's reuse.
  assert.ok(!session.idle);
  session.retain();
  buffer.fill(0x78);
  assert.equal(new TextDecoder().decode(session.pull()), "JAM 09:05:03\r\n");
  assert.equal(session.pull().length, 0);
  assert.ok(!session.idle, "TI is a line begun");
  session.push(new TextEncoder().encode("ME\n"));
  assert.equal(session.pull().length, 14);
  assert.ok(session.idle);
});
