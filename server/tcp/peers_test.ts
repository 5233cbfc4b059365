// Tests of workers making room for each other, two PeerEvictions over one shared array in one thread.

import assert from "node:assert/strict";
import { PeerEviction, type RoomMaker } from "./peers.ts";
import { SHARED_CONNECTION_SLOTS, SHARED_EVICTIONS_WANTED, SHARED_OPEN } from "./limits.ts";

/** A worker that holds `open` connections, some silent, and records what it closed. */
function worker(shared: Int32Array, room: { silent: number; fair: number }) {
  const closed: string[] = [];
  const close = (what: string) => {
    closed.push(what);
    Atomics.sub(shared, SHARED_OPEN, 1);
    Atomics.notify(shared, SHARED_OPEN);
  };
  const maker: RoomMaker = {
    hasSilent: () => room.silent > 0,
    evictSilent: () => {
      room.silent--;
      close("silent");
    },
    hasFairVictim: () => room.fair > 0,
    closeFairVictim: () => {
      room.fair--;
      close("fair");
    },
  };
  return { closed, peers: new PeerEviction(shared, maker) };
}

/**
 * Runs `fn` with a timer pending: Deno does not count `Atomics.waitAsync` as work that keeps
 * the event loop alive, and a server always has its sweep's.
 */
async function alive(fn: () => Promise<void>): Promise<void> {
  const timer = setInterval(() => {}, 1000);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
}

/** A full server's count: `take` succeeds once another worker has made room. */
function taker(shared: Int32Array, max: number) {
  return () => {
    if (Atomics.add(shared, SHARED_OPEN, 1) < max) return true;
    Atomics.sub(shared, SHARED_OPEN, 1);
    return false;
  };
}

Deno.test("a worker closes a busy connection of its largest holder only for a newcomer whose address is known", () =>
  alive(async () => {
    const shared = new Int32Array(new SharedArrayBuffer(4 * SHARED_CONNECTION_SLOTS));
    shared[SHARED_OPEN] = 10;
    const stop = new AbortController();
    const asker = worker(shared, { silent: 0, fair: 0 });
    const answerer = worker(shared, { silent: 0, fair: 2 });
    const answering = answerer.peers.answer(stop.signal);
    try {
      // Behind PROXY before the header, the newcomer's address is unknown: only silence may make room.
      assert.equal(await asker.peers.ask(taker(shared, 10), false, stop.signal), false);
      assert.deepEqual(answerer.closed, []);
      assert.equal(shared[SHARED_EVICTIONS_WANTED], 0, "the request was taken back");
      assert.equal(await asker.peers.ask(taker(shared, 10), true, stop.signal), true);
      assert.deepEqual(answerer.closed, ["fair"]);
      assert.equal(shared[SHARED_EVICTIONS_WANTED], 0, "the request was taken");
    } finally {
      stop.abort();
      await answering;
    }
  }));

Deno.test("a silent connection answers either request before any busy one is closed", () =>
  alive(async () => {
    const shared = new Int32Array(new SharedArrayBuffer(4 * SHARED_CONNECTION_SLOTS));
    shared[SHARED_OPEN] = 10;
    const stop = new AbortController();
    const asker = worker(shared, { silent: 0, fair: 0 });
    const answerer = worker(shared, { silent: 2, fair: 5 });
    const answering = answerer.peers.answer(stop.signal);
    try {
      assert.equal(await asker.peers.ask(taker(shared, 10), true, stop.signal), true);
      assert.equal(await asker.peers.ask(taker(shared, 10), false, stop.signal), true);
      assert.deepEqual(answerer.closed, ["silent", "silent"]);
      assert.equal(shared[SHARED_EVICTIONS_WANTED], 0);
    } finally {
      stop.abort();
      await answering;
    }
  }));
