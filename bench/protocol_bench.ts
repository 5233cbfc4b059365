// Micro-benchmarks of the pure protocol: framing, parsing, formatting, whole sessions.

import { Frame, LineFramer, parseRequest, Session, TimeAnswer } from "../protocol.ts";

const encoder = new TextEncoder();
const one = encoder.encode("TIME\r\n");
const pipelined = encoder.encode("TIME\r\n".repeat(32));
const time = new TimeAnswer({ timeZone: "UTC" });

Deno.bench("framer: one TIME line per push", { group: "framer", baseline: true }, () => {
  const framer = new LineFramer();
  framer.push(one);
  while (framer.next() === Frame.Line);
});

Deno.bench("framer: 32 pipelined TIME lines per push", { group: "framer" }, () => {
  const framer = new LineFramer();
  framer.push(pipelined);
  while (framer.next() === Frame.Line);
});

Deno.bench("framer: one line split over 6 pushes", { group: "framer" }, () => {
  const framer = new LineFramer();
  for (let i = 0; i < one.length; i++) {
    framer.push(one.subarray(i, i + 1));
    framer.next();
  }
});

Deno.bench("parser: TIME", () => {
  parseRequest(one, 0, 4);
});

Deno.bench(
  "formatter: cached answer within the second",
  { group: "formatter", baseline: true },
  () => {
    time.current();
  },
);

Deno.bench("formatter: format a new second (Intl)", { group: "formatter" }, () => {
  time.format(Date.now());
});

const session = new Session({ time });
Deno.bench("session: one TIME request → answer", { group: "session", baseline: true }, () => {
  session.push(one);
  while (session.pull().length > 0);
});

Deno.bench("session: 32 pipelined TIME requests → one batch", { group: "session" }, () => {
  session.push(pipelined);
  while (session.pull().length > 0);
});
