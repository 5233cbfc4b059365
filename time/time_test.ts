// Unit tests of the time protocols' pure parts: Daytime and Time answers, SNTP packets, the clock.

import assert from "node:assert/strict";
import { PreciseClock } from "./clock.ts";
import { DaytimeAnswer } from "./daytime.ts";
import {
  checkNtpRequest,
  NtpRequest,
  readTimestamp,
  referenceId,
  writeKissOfDeath,
  writeNtpReply,
  writeTimestamp,
} from "./ntp.ts";
import { Rfc868Answer, secondsSince1900 } from "./rfc868.ts";

const decoder = new TextDecoder();

Deno.test("the daytime answer is ctime's layout with CR LF, in the zone asked for", () => {
  const at = Date.UTC(2026, 10, 25, 3, 5, 47);
  const utc = new DaytimeAnswer({ timeZone: "UTC", now: () => at });
  assert.equal(decoder.decode(utc.current()), "Wed Nov 25 03:05:47 2026\r\n");
  const jakarta = new DaytimeAnswer({ timeZone: "Asia/Jakarta", now: () => at });
  assert.equal(decoder.decode(jakarta.current()), "Wed Nov 25 10:05:47 2026\r\n");
  // A single-digit day is padded with a space; midnight is 00, not 24.
  assert.equal(
    decoder.decode(utc.format(Date.UTC(2027, 0, 3, 0, 0, 9))),
    "Sun Jan  3 00:00:09 2027\r\n",
  );
});

Deno.test("the daytime answer changes with the second and stays the same within it", () => {
  let now = Date.UTC(2026, 0, 1, 12, 0, 0, 100);
  const answer = new DaytimeAnswer({ timeZone: "UTC", now: () => now });
  const first = answer.current();
  now += 800;
  assert.equal(answer.current(), first);
  now += 200;
  assert.equal(decoder.decode(answer.current()), "Thu Jan  1 12:00:01 2026\r\n");
  assert.equal(decoder.decode(first), "Thu Jan  1 12:00:00 2026\r\n");
});

Deno.test("the RFC 868 answer counts seconds from 1900 and wraps to era 1 in February 2036", () => {
  assert.equal(secondsSince1900(Date.UTC(1900, 0, 1)), 0);
  assert.equal(secondsSince1900(Date.UTC(2026, 10, 25, 3, 5, 47)), 4_004_564_747);
  const wrap = Date.UTC(2036, 1, 7, 6, 28, 16);
  let now = wrap - 1000;
  const answer = new Rfc868Answer(() => now);
  const read = () => new DataView(answer.current().buffer).getUint32(0);
  assert.equal(read(), 0xffffffff);
  now = wrap;
  assert.equal(read(), 0);
  now = wrap + 86_400_000;
  assert.equal(read(), 86_400);
});

/** A client request as chrony sends one: VN, mode 3, poll, and a transmit timestamp. */
function request(version = 4, mode = 3, length = 48): Uint8Array {
  const packet = new Uint8Array(length);
  packet[0] = (version << 3) | mode;
  packet[2] = 6;
  if (length >= 48) packet.set([0xe8, 0x1a, 0x2b, 0x3c, 0x12, 0x34, 0x56, 0x78], 40);
  return packet;
}

Deno.test("only client requests of 48 bytes or more, version 1 to 4, are answered", () => {
  assert.equal(checkNtpRequest(request(4), 48), NtpRequest.CLIENT);
  assert.equal(checkNtpRequest(request(3), 48), NtpRequest.CLIENT);
  assert.equal(checkNtpRequest(request(1), 48), NtpRequest.CLIENT);
  assert.equal(checkNtpRequest(request(4, 3, 68), 68), NtpRequest.CLIENT); // with a MAC
  assert.equal(checkNtpRequest(request(4, 3, 47), 47), NtpRequest.SHORT);
  assert.equal(checkNtpRequest(new Uint8Array(0), 0), NtpRequest.SHORT);
  assert.equal(checkNtpRequest(request(0), 48), NtpRequest.BAD_VERSION);
  assert.equal(checkNtpRequest(request(5), 48), NtpRequest.BAD_VERSION);
  assert.equal(checkNtpRequest(request(2, 6), 48), NtpRequest.CONTROL);
  assert.equal(checkNtpRequest(request(2, 7), 48), NtpRequest.CONTROL);
  for (const mode of [0, 1, 2, 4, 5]) {
    assert.equal(checkNtpRequest(request(4, mode), 48), NtpRequest.NOT_CLIENT);
  }
});

Deno.test("an NTP reply echoes the request and carries the server's timestamps", () => {
  const req = request(3);
  const reply = new Uint8Array(48).fill(0xaa);
  const received = Date.UTC(2026, 10, 25, 3, 5, 47, 123.456);
  const transmitted = received + 0.0375;
  const info = {
    leap: 0,
    stratum: 10,
    referenceId: referenceId("LOCL"),
    precision: -23,
    rootDispersion: 0.0015,
    referenceTime: received - 60_000,
  };
  writeNtpReply(req, reply, received, transmitted, info);
  const view = new DataView(reply.buffer);
  assert.equal(reply[0] >> 6, 0, "leap indicator");
  assert.equal((reply[0] >> 3) & 7, 3, "version copied");
  assert.equal(reply[0] & 7, 4, "server mode");
  assert.equal(reply[1], 10);
  assert.equal(reply[2], 6, "poll copied");
  assert.equal(view.getInt8(3), -23);
  assert.equal(view.getUint32(4), 0, "root delay");
  assert.equal(view.getUint32(8), Math.ceil(0.0015 * 65536), "root dispersion, 16.16");
  assert.equal(decoder.decode(reply.subarray(12, 16)), "LOCL");
  assert.deepEqual(reply.subarray(24, 32), req.subarray(40, 48), "originate = client's transmit");
  const near = Date.UTC(2026, 0, 1);
  assert.ok(Math.abs(readTimestamp(reply, 16, near) - info.referenceTime) < 1e-6);
  assert.ok(Math.abs(readTimestamp(reply, 32, near) - received) < 1e-6);
  assert.ok(Math.abs(readTimestamp(reply, 40, near) - transmitted) < 1e-6);
});

Deno.test("NTP timestamps keep sub-microsecond fractions and wrap into era 1 in 2036", () => {
  const bytes = new Uint8Array(8);
  const beforeWrap = Date.UTC(2036, 1, 7, 6, 28, 15, 999.9995);
  writeTimestamp(bytes, 0, beforeWrap);
  assert.equal(new DataView(bytes.buffer).getUint32(0), 0xffffffff);
  assert.ok(Math.abs(readTimestamp(bytes, 0, Date.UTC(2036, 0, 1)) - beforeWrap) < 1e-6);
  const afterWrap = Date.UTC(2036, 1, 7, 6, 28, 16, 0.25);
  writeTimestamp(bytes, 0, afterWrap);
  assert.equal(new DataView(bytes.buffer).getUint32(0), 0);
  assert.ok(Math.abs(readTimestamp(bytes, 0, Date.UTC(2036, 5, 1)) - afterWrap) < 1e-6);
});

Deno.test("a Kiss-o'-Death says RATE with stratum 0 and tells no time", () => {
  const req = request(4);
  const reply = new Uint8Array(48).fill(0xaa);
  writeKissOfDeath(req, reply, referenceId("RATE"));
  assert.equal(reply[0] >> 6, 3);
  assert.equal((reply[0] >> 3) & 7, 4);
  assert.equal(reply[0] & 7, 4);
  assert.equal(reply[1], 0, "stratum 0: a kiss");
  assert.equal(decoder.decode(reply.subarray(12, 16)), "RATE");
  for (const offset of [24, 32, 40]) {
    assert.deepEqual(reply.subarray(offset, offset + 8), req.subarray(40, 48));
  }
  assert.deepEqual(reply.subarray(16, 24), new Uint8Array(8));
});

/** A fake pair of clocks: the monotonic one advances 0.05 µs per read; the wall one can be stepped. */
function fakeSources(start: number) {
  let monotonic = 0;
  let step = 0;
  return {
    sources: {
      monotonic: () => (monotonic += 0.00005),
      wall: () => Math.floor(start + monotonic + step),
    },
    truth: () => start + monotonic + step,
    stepBy: (ms: number) => step += ms,
  };
}

Deno.test("the precise clock agrees with the wall clock to within a microsecond", () => {
  const fake = fakeSources(1_764_000_000_000.3);
  const clock = new PreciseClock(fake.sources);
  assert.ok(Math.abs(clock.now() - fake.truth()) < 0.001, `${clock.now() - fake.truth()} ms`);
  assert.ok(clock.uncertainty < 0.001);
  assert.equal(clock.check(), false);
  assert.equal(clock.calibrations, 1);
});

Deno.test("the precise clock follows a step of the system clock at the next check", () => {
  const fake = fakeSources(1_764_000_000_000.7);
  const clock = new PreciseClock(fake.sources);
  fake.stepBy(-3_600_000.25);
  assert.ok(Math.abs(clock.now() - fake.truth()) > 3_600_000, "not followed before the check");
  assert.equal(clock.check(), true);
  assert.equal(clock.calibrations, 2);
  assert.ok(Math.abs(clock.now() - fake.truth()) < 0.001);
  // A step smaller than the check's tolerance but larger than a millisecond is followed too.
  fake.stepBy(2);
  assert.equal(clock.check(), true);
  assert.ok(Math.abs(clock.now() - fake.truth()) < 0.001);
});

Deno.test("a pause around a check's read of the wall clock is not taken for a step of it", () => {
  for (const when of ["before", "after"] as const) {
    for (const pauseMs of [2, 50, 1000]) {
      let monotonic = 0;
      let pause = false;
      const start = 1_764_000_000_000.3;
      const clock = new PreciseClock({
        monotonic: () => (monotonic += 0.00005),
        wall: () => {
          // The thread is descheduled just before, or just after, it reads the wall clock.
          if (pause && when === "before") (pause = false, monotonic += pauseMs);
          const reading = Math.floor(start + monotonic);
          if (pause && when === "after") (pause = false, monotonic += pauseMs);
          return reading;
        },
      });
      pause = true;
      assert.equal(clock.check(), false, `a pause of ${pauseMs} ms ${when} the wall read`);
      assert.equal(clock.calibrations, 1);
      assert.ok(Math.abs(clock.now() - (start + monotonic)) < 0.001);
    }
  }
});

Deno.test("the precise clock falls back to a plain reading when the wall clock does not tick", () => {
  let monotonic = 0;
  const clock = new PreciseClock({ monotonic: () => (monotonic += 0.01), wall: () => 5_000 });
  assert.equal(clock.uncertainty, 1, "a plain reading is only good to a millisecond");
  assert.equal(clock.tighten(), false, "a wall clock that does not tick is not tried again");
  const now = clock.now();
  assert.ok(now >= 5_000 && now <= 5_001 + 0.1, `${now}`);
  assert.equal(clock.calibrations, 1);
});

/**
 * Like {@linkcode fakeSources}, but the thread is descheduled for `pauseMs` right after it
 * reads each of the first `pauses` ticks of the wall clock, as a busy machine does.
 */
function pausingSources(start: number, pauses: number, pauseMs: number) {
  let monotonic = 0;
  let lastWall = Math.floor(start);
  let left = pauses;
  return {
    sources: {
      monotonic: () => (monotonic += 0.00005),
      wall: () => {
        const wall = Math.floor(start + monotonic);
        if (wall !== lastWall && left > 0) {
          left--;
          monotonic += pauseMs;
        }
        lastWall = wall;
        return wall;
      },
    },
    truth: () => start + monotonic,
  };
}

Deno.test("the precise clock measures again when a pause straddles the tick it calibrates on", () => {
  const fake = pausingSources(1_764_000_000_000.3, 1, 2.5);
  const clock = new PreciseClock(fake.sources);
  assert.ok(Math.abs(clock.now() - fake.truth()) < 0.001, `${clock.now() - fake.truth()} ms`);
  assert.ok(clock.uncertainty < 0.001, `uncertainty ${clock.uncertainty} ms`);
});

Deno.test("the precise clock recalibrates at a check while its calibration is loose, and only then", () => {
  // Every try of the first calibration is paused: the best it can do is loose.
  const fake = pausingSources(1_764_000_000_000.6, 5, 0.2);
  const clock = new PreciseClock(fake.sources);
  assert.ok(clock.uncertainty > 0.05, `uncertainty ${clock.uncertainty} ms`);
  assert.equal(clock.tighten(), true);
  assert.ok(clock.uncertainty < 0.001, `uncertainty ${clock.uncertainty} ms`);
  assert.ok(Math.abs(clock.now() - fake.truth()) < 0.001, `${clock.now() - fake.truth()} ms`);
  assert.equal(clock.tighten(), false, "a tight calibration is left alone");
  assert.equal(clock.calibrations, 2);
});

Deno.test("the real precise clock stays within a millisecond of Date.now()", () => {
  const clock = new PreciseClock();
  for (let i = 0; i < 10_000; i++) {
    const before = Date.now();
    const now = clock.now();
    const after = Date.now();
    assert.ok(now >= before - 0.01 && now < after + 1.01, `${now} not in [${before}, ${after}]`);
  }
});
