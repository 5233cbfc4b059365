// The hostile scenarios: each a set of loops or held sockets, started and stopped on demand.

import type net from "node:net";
import { ATTACKERS, connect, proxyHeader } from "./clients.ts";

export const SCENARIOS = [
  "reset-storm",
  "silent-hog",
  "busy-hog",
  "slow-reader",
  "garbage",
  "half-open",
  "churn",
] as const;
export type Scenario = typeof SCENARIOS[number];

/** An attack under way: `stop()` ends it and closes every socket it opened. */
export interface Attack {
  count(): number;
  stop(): Promise<void>;
}

/** What an attack loop is given: its address, whether to stop, and a tally of connections made. */
interface Loop {
  address: string;
  stopped: () => boolean;
  stopping: Promise<void>;
  connected: () => void;
}

/** Runs `worker` on `concurrency` loops until stopped; each loop picks an attacker address. */
function loops(concurrency: number, worker: (loop: Loop) => Promise<void>): Attack {
  let stopped = false;
  let count = 0;
  const stopping = Promise.withResolvers<void>();
  const running = Array.from({ length: concurrency }, async (_, i) => {
    while (!stopped) {
      try {
        await worker({
          address: ATTACKERS[i % ATTACKERS.length],
          stopped: () => stopped,
          stopping: stopping.promise,
          connected: () => count++,
        });
      } catch {
        // Refused or reset: an attacker just tries again.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  });
  return {
    count: () => count,
    async stop() {
      stopped = true;
      stopping.resolve();
      await Promise.all(running);
    },
  };
}

/**
 * Holds `size` connections open, each running `hold`. One the server closes (or
 * refuses) is opened again after `reconnectMs`, as a client's retry would.
 */
function holders(
  size: number,
  port: number,
  proxy: boolean,
  reconnectMs: number,
  hold: (socket: net.Socket, stopped: () => boolean) => Promise<void>,
): Attack {
  return loops(size, async ({ address, stopped, stopping, connected }) => {
    const socket = await connect(port, address);
    connected();
    try {
      if (proxy) socket.write(proxyHeader(address, socket.localPort!));
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      await Promise.race([closed, stopping, hold(socket, stopped).then(() => stopping)]);
    } finally {
      socket.destroy();
    }
    if (!stopped()) {
      await Promise.race([stopping, new Promise((resolve) => setTimeout(resolve, reconnectMs))]);
    }
  });
}

export async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 50));
}

const randomBytes = (n: number) => crypto.getRandomValues(new Uint8Array(n));

export function startAttack(
  scenario: Scenario,
  port: number,
  proxy: boolean,
  maxConnections: number,
  reconnectMs: number,
): Attack | Promise<Attack> {
  switch (scenario) {
    case "reset-storm":
      return loops(64, async ({ address, connected }) => {
        const socket = await connect(port, address);
        connected();
        socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\n");
        await new Promise<void>((resolve) => {
          socket.once("close", () => resolve());
          socket.resetAndDestroy();
        });
      });
    case "silent-hog":
      return holders(Math.ceil(maxConnections * 1.1), port, proxy, reconnectMs, (socket) => {
        socket.resume(); // reads, to notice the close, but never asks
        return new Promise(() => {});
      });
    case "busy-hog":
      return holders(maxConnections, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.on("data", () => {});
        while (!stopped()) {
          socket.write("TIME\r\n");
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      });
    case "slow-reader":
      return holders(20, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.pause(); // never reads
        const chunk = "TIME\r\n".repeat(10000);
        while (!stopped() && !socket.destroyed) {
          if (!socket.write(chunk)) await waitUntil(() => stopped() || socket.writableLength === 0);
        }
      });
    case "garbage":
      return holders(100, port, proxy, reconnectMs, async (socket, stopped) => {
        socket.on("data", () => {});
        while (!stopped() && !socket.destroyed) {
          socket.write(randomBytes(1 + Math.floor(Math.random() * 200)));
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
        }
      });
    case "half-open":
      return halfOpen(port, proxy, Math.ceil(maxConnections * 0.5));
    case "churn":
      return loops(50, async ({ address, connected }) => {
        const socket = await connect(port, address);
        connected();
        await new Promise<void>((resolve) => {
          socket.on("data", () => socket.end());
          socket.once("close", () => resolve());
          socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\nQUIT\r\n");
        });
      });
  }
}

/**
 * Clients that connect, ask, and vanish: a helper process opens the connections and is
 * then stopped (SIGSTOP), so its sockets neither read, send nor close, as if the
 * machine behind them had dropped off the network. It is killed when the attack ends.
 */
async function halfOpen(port: number, proxy: boolean, count: number): Promise<Attack> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL("../attack.ts", import.meta.url).pathname,
      "--half-open-helper",
      `${port},${proxy ? 1 : 0},${count}`,
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  child.kill("SIGSTOP");
  const opened = Number(text.trim()) || 0;
  return {
    count: () => opened,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

export async function halfOpenHelper(spec: string): Promise<void> {
  const [port, proxy, count] = spec.split(",").map(Number);
  let opened = 0;
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    try {
      const address = ATTACKERS[i % ATTACKERS.length];
      const socket = await connect(port, address);
      socket.write((proxy ? proxyHeader(address, socket.localPort!) : "") + "TIME\r\n");
      opened++;
    } catch {
      // Refused: fewer half-open connections.
    }
  }));
  console.log(opened);
  await new Promise(() => {}); // stopped and then killed by the parent
}
