import assert from "node:assert/strict";
import {
  KeError,
  MAX_REQUEST_LENGTH,
  readKeRequest,
  writeKeAnswer,
  writeKeError,
} from "./ke_records.ts";

const record = (type: number, critical: boolean, ...body: number[]) => [
  (critical ? 0x80 : 0) | (type >> 8),
  type & 0xff,
  body.length >> 8,
  body.length & 0xff,
  ...body,
];
const END = record(0, true);
const NTPV4 = record(1, true, 0, 0);
const SIV = record(4, true, 0, 15);
const request = (...records: number[][]) => Uint8Array.from(records.flat());

Deno.test("a KE request offering NTPv4 and AES-SIV among others is served, whatever their order", () => {
  assert.deepEqual(readKeRequest(request(NTPV4, SIV, END)), { kind: "ntpv4" });
  assert.deepEqual(readKeRequest(request(SIV, NTPV4, END)), { kind: "ntpv4" });
  const many = request(record(1, true, 0x80, 1, 0, 0), record(4, true, 0, 16, 0, 15), END);
  assert.deepEqual(readKeRequest(many), { kind: "ntpv4" });
  // The client's suggestions of where NTP should go, and unknown non-critical records.
  const hinted = request(
    NTPV4,
    SIV,
    record(6, false, 0x61),
    record(7, false, 0, 123),
    record(99, false),
    END,
  );
  assert.deepEqual(readKeRequest(hinted), { kind: "ntpv4" });
});

Deno.test("a KE request padded with unknown non-critical records is served up to 16 KiB", () => {
  // 1,028 bytes: an unknown non-critical record of 1,008, then chrony's records.
  const padded = request(record(0x4242, false, ...new Array(1008).fill(7)), NTPV4, SIV, END);
  assert.equal(padded.length, 1028);
  assert.deepEqual(readKeRequest(padded), { kind: "ntpv4" });
  const largest = request(
    record(100, false, ...new Array(MAX_REQUEST_LENGTH - 4 - 16).fill(0)),
    NTPV4,
    SIV,
    END,
  );
  assert.equal(largest.length, MAX_REQUEST_LENGTH);
  assert.deepEqual(readKeRequest(largest), { kind: "ntpv4" });
});

Deno.test("a KE request is incomplete until its End of Message, however it is split", () => {
  const whole = request(NTPV4, SIV, END);
  for (let cut = 0; cut < whole.length; cut++) {
    assert.deepEqual(
      readKeRequest(whole.subarray(0, cut)),
      { kind: "incomplete" },
      `cut at ${cut}`,
    );
  }
});

Deno.test("a bad KE request gets Error 0 for an unknown critical record and Error 1 for the rest", () => {
  const cases: [Uint8Array, number][] = [
    [request(record(42, true), NTPV4, SIV, END), KeError.UNRECOGNIZED_CRITICAL_RECORD],
    [request(NTPV4, END), KeError.BAD_REQUEST], // no AEAD
    [request(SIV, END), KeError.BAD_REQUEST], // no protocol
    [request(record(1, true, 0, 1), SIV, END), KeError.BAD_REQUEST], // no NTPv4
    [request(NTPV4, record(4, true, 0, 17), END), KeError.BAD_REQUEST], // no AES-SIV-CMAC-256
    [request(NTPV4, NTPV4, SIV, END), KeError.BAD_REQUEST], // two protocol records
    [request(NTPV4, SIV, SIV, END), KeError.BAD_REQUEST],
    [request(record(1, true, 0), SIV, END), KeError.BAD_REQUEST], // an odd-length list
    [request(NTPV4, SIV, record(0, false)), KeError.BAD_REQUEST], // End of Message not critical
    [request(NTPV4, SIV, record(0, true, 1)), KeError.BAD_REQUEST], // with a body
    [request(NTPV4, SIV, END, [0]), KeError.BAD_REQUEST], // bytes after it
    [request(record(2, true, 0, 0), NTPV4, SIV, END), KeError.BAD_REQUEST], // records of servers
    [request(record(5, false, 1, 2, 3, 4), NTPV4, SIV, END), KeError.BAD_REQUEST],
    [request(record(1, false, 0, 0), SIV, END), KeError.BAD_REQUEST], // Next Protocol not critical
    // Longer than any request needs: records that never end, or one past the bound.
    [request(record(100, false, ...new Array(20000).fill(0))), KeError.BAD_REQUEST],
    [
      request(record(100, false, ...new Array(MAX_REQUEST_LENGTH - 4 - 12).fill(0)), NTPV4, SIV),
      KeError.BAD_REQUEST, // the bound reached with no End of Message
    ],
  ];
  for (const [bytes, code] of cases) {
    const read = readKeRequest(bytes);
    assert.equal(read.kind, "error", `${[...bytes.subarray(0, 24)]}`);
    if (read.kind === "error") assert.equal(read.code, code, read.reason);
  }
});

Deno.test("the KE answer names the protocol, the AEAD, where NTP is, the cookies, then ends", () => {
  const cookies = [new Uint8Array(100).fill(1), new Uint8Array(100).fill(2)];
  const answer = writeKeAnswer({ server: "ntp.example", port: 11123 }, cookies);
  const expected = [
    ...record(1, true, 0, 0),
    ...record(4, true, 0, 15),
    ...record(6, true, ...new TextEncoder().encode("ntp.example")),
    ...record(7, true, 11123 >> 8, 11123 & 0xff),
    ...record(5, false, ...cookies[0]),
    ...record(5, false, ...cookies[1]),
    ...END,
  ];
  assert.deepEqual([...answer], expected);
  assert.deepEqual([...writeKeAnswer({ server: null, port: null }, [])], [
    ...NTPV4,
    ...SIV,
    ...END,
  ]);
  assert.deepEqual([...writeKeError(KeError.BAD_REQUEST)], [...record(2, true, 0, 1), ...END]);
});
