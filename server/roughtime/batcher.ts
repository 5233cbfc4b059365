// What the UDP and TCP sides need of Roughtime: requests taken one by one, answered together.

import type { SignedBatch } from "../../roughtime/response.ts";

/**
 * Roughtime as a transport needs it: requests taken one by one, then answered together
 * with one signature (`RoughtimeService` in `service.ts`).
 */
export interface RoughtimeBatcher {
  /** Takes a request (a view kept until `answer`) whose reply goes to `slot`; false: dropped. */
  take(packet: Uint8Array, slot: number): boolean;
  /** Whether requests wait for `answer`. */
  readonly pending: boolean;
  /** Signs what was taken and hands each request's slot to `write`, with its response's batch. */
  answer(write: (slot: number, batch: SignedBatch, index: number) => void): void;
}
