// Several event loops on one port: a pool of Workers, each running a server with SO_REUSEPORT.

import type { LogFormat, LogLevel } from "./log.ts";
import { sumStats } from "./metrics.ts";
import type { ServerOptions, ServerStats } from "./server.ts";

/** Server options that can cross to a Worker (everything but the logger and the clock). */
export type WorkerServerOptions = Omit<
  ServerOptions,
  "logger" | "now" | "sharedConnections" | "reusePort"
>;

/** Messages from the pool to a worker. */
export type ToWorker =
  | {
    type: "start";
    id: number;
    options: WorkerServerOptions;
    shared: SharedArrayBuffer;
    logLevel: LogLevel;
    logFormat: LogFormat;
  }
  | { type: "stats" }
  | { type: "shutdown" };

/** Messages from a worker to the pool. */
export type FromWorker =
  | { type: "listening"; port: number }
  | { type: "error"; name: string; message: string }
  | { type: "stats"; stats: ServerStats }
  | { type: "stopped"; stats: ServerStats };

/** A running pool of workers, as returned by {@linkcode startWorkers}. */
export interface WorkerPool {
  /** The port every worker listens on. */
  readonly port: number;
  /** Each worker's counters, in worker order. */
  statsByWorker(): Promise<ServerStats[]>;
  /** All workers' counters added up. */
  stats(): Promise<ServerStats>;
  /** Drains every worker (each shuts its server down) and resolves with their last counters. */
  shutdown(): Promise<ServerStats[]>;
}

/** Thrown by {@linkcode startWorkers} when a worker cannot listen; carries the original error name. */
export class WorkerStartError extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message);
    this.name = "WorkerStartError";
  }
}

class PoolWorker {
  readonly #worker: Worker;
  #waiting: ((message: FromWorker) => void)[] = [];

  constructor() {
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<FromWorker>) =>
      this.#waiting.shift()?.(event.data);
  }

  /** Sends a message and resolves with the worker's reply (workers answer in order). */
  request(message: ToWorker): Promise<FromWorker> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.#worker.postMessage(message);
    });
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

/**
 * Starts `count` Workers, each serving on the same port with `SO_REUSEPORT` so that
 * the kernel spreads connections over them. `maxConnections` is shared by all
 * through one atomic counter; `maxConnectionsPerIp` is counted by each worker for
 * the connections it holds. The first worker picks the port when it is 0.
 */
export async function startWorkers(
  count: number,
  options: WorkerServerOptions,
  log: { level: LogLevel; format: LogFormat },
): Promise<WorkerPool> {
  const shared = new SharedArrayBuffer(4);
  const workers: PoolWorker[] = [];
  let port = options.port;
  try {
    for (let id = 0; id < count; id++) {
      const worker = new PoolWorker();
      workers.push(worker);
      const reply = await worker.request({
        type: "start",
        id,
        options: { ...options, port },
        shared,
        logLevel: log.level,
        logFormat: log.format,
      });
      if (reply.type === "error") throw new WorkerStartError(reply.name, reply.message);
      if (reply.type === "listening") port = reply.port;
    }
  } catch (error) {
    for (const worker of workers) worker.terminate();
    throw error;
  }

  const statsByWorker = async () => {
    const replies = await Promise.all(workers.map((worker) => worker.request({ type: "stats" })));
    return replies.map((reply) => (reply as { stats: ServerStats }).stats);
  };
  let stopping: Promise<ServerStats[]> | null = null;
  return {
    port: port!,
    statsByWorker,
    stats: async () => sumStats(await statsByWorker()),
    shutdown() {
      stopping ??= Promise.all(workers.map(async (worker) => {
        const reply = await worker.request({ type: "shutdown" });
        worker.terminate();
        return (reply as { stats: ServerStats }).stats;
      }));
      return stopping;
    },
  };
}
