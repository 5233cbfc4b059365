// Several event loops on one port: a pool of Workers, each running a server with SO_REUSEPORT.

import type { LogFormat, LogLevel } from "../lib/log.ts";
import { SHARED_CONNECTION_SLOTS } from "./tcp/limits.ts";
import type { ServerOptions } from "./server_options.ts";
import type { ServicePorts } from "./server_options.ts";
import { type ServerStats, sumStats } from "./stats.ts";

/**
 * Server options that can cross to a Worker: all but the logger and the clocks (the
 * answers', SNTP's and the kernel's reader), which are functions and cannot be sent, and
 * the shared counter and `reusePort`, which the pool sets itself.
 */
export type WorkerServerOptions = Omit<
  ServerOptions,
  "logger" | "now" | "preciseClock" | "kernelClock" | "sharedConnections" | "reusePort"
>;

/** Messages from the pool to a worker; `request` is echoed in the reply. */
export type ToWorker =
  & { request: number }
  & (
    | {
      type: "start";
      id: number;
      options: WorkerServerOptions;
      shared: SharedArrayBuffer;
      logLevel: LogLevel;
      logFormat: LogFormat;
    }
    | { type: "stats" }
    | { type: "shutdown" }
    | {
      type: "reconfigure";
      options: WorkerServerOptions;
      logLevel: LogLevel;
      logFormat: LogFormat;
    }
  );

/** Messages from a worker to the pool, each the reply to the request it names. */
export type FromWorker =
  & { request: number }
  & (
    | { type: "listening"; port: number; ports: ServicePorts; udpEngine: "deno" | "mmsg" }
    | {
      type: "error";
      name: string;
      message: string;
      /** The listener that failed, when it was a service's. */
      listener?: { where: string; port: number };
    }
    | { type: "stats"; stats: ServerStats }
    | { type: "stopped"; stats: ServerStats }
    | { type: "reconfigured" }
  );

/** Distributive Omit, so that each member of a union keeps its own fields. */
export type WithoutRequest<T> = T extends unknown ? Omit<T, "request"> : never;

/** A running pool of workers, as returned by {@linkcode startWorkers}. */
export interface WorkerPool {
  /** The port every worker listens on. */
  readonly port: number;
  /** The ports of the other services, as the first worker bound them. */
  readonly ports: ServicePorts;
  /** The UDP engine: with `mmsg` every worker serves UDP, with `deno` only the first. */
  readonly udpEngine: "deno" | "mmsg";
  /** All workers' counters added up. */
  stats(): Promise<ServerStats>;
  /** Drains every worker (each shuts its server down) and resolves with their last counters. */
  shutdown(): Promise<ServerStats[]>;
  /**
   * Reloads every worker with new options and log settings (`TimeServer.reconfigure`):
   * the first (which runs NTS-KE, whose certificate may not load) before the others, so
   * that a reload it refuses changes none of them. Rejects with the first's error.
   */
  reconfigure(
    options: WorkerServerOptions,
    log: { level: LogLevel; format: LogFormat },
  ): Promise<void>;
}

/**
 * Thrown by {@linkcode startWorkers} when a worker cannot start. It carries the name of
 * the error the worker hit (`AddrInUse`, `NotCapable`, …) and, when a service's port
 * failed, that listener's address and port.
 */
export class WorkerStartError extends Error {
  constructor(
    readonly errorName: string,
    message: string,
    readonly listener: { where: string; port: number } | null = null,
  ) {
    super(message);
    this.name = "WorkerStartError";
  }
}

/**
 * The folder of the server's modules when a Worker could not read them for want of
 * `--allow-read`, or null. A compiled binary embeds its modules and needs no permission.
 */
export function unreadableModules(): string | null {
  const root = new URL("..", import.meta.url);
  if (root.protocol !== "file:" || Deno.build.standalone) return null;
  const path = decodeURIComponent(root.pathname);
  return Deno.permissions.querySync({ name: "read", path }).state === "granted" ? null : path;
}

class PoolWorker {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, (message: FromWorker) => void>();
  #next = 0;
  /** The counters the worker reported when it stopped; null while it runs. */
  #last: ServerStats | null = null;

  constructor() {
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<FromWorker>) => {
      this.#listening = true;
      const resolve = this.#waiting.get(event.data.request);
      this.#waiting.delete(event.data.request);
      resolve?.(event.data);
    };
    // A worker that dies before it answers (a module it cannot load) fails the start
    // with one line instead of taking the process down; later errors are bugs and do.
    this.#worker.onerror = (event: ErrorEvent) => {
      if (this.#listening) return;
      event.preventDefault();
      for (const [request, resolve] of this.#waiting) {
        const message = event.message.split("\n")[0];
        resolve({ type: "error", name: "WorkerError", message, request });
      }
      this.#waiting.clear();
    };
  }

  /** Whether the worker has answered once, so it runs. */
  #listening = false;

  /**
   * Sends a message and resolves with the worker's reply to it. Replies are matched
   * by number, since a stats request may be answered while a shutdown still drains.
   */
  request(message: WithoutRequest<ToWorker>): Promise<FromWorker> {
    const request = this.#next++;
    return new Promise((resolve) => {
      this.#waiting.set(request, resolve);
      this.#worker.postMessage({ ...message, request });
    });
  }

  /** The worker's counters; once it has stopped, the last ones it reported. */
  async stats(): Promise<ServerStats> {
    if (this.#last) return this.#last;
    return ((await this.request({ type: "stats" })) as { stats: ServerStats }).stats;
  }

  /** Drains the worker's server, ends the worker, and resolves with its last counters. */
  async shutdown(): Promise<ServerStats> {
    const reply = await this.request({ type: "shutdown" });
    const last = this.#last = (reply as { stats: ServerStats }).stats;
    this.terminate();
    // Requests the worker had no time to answer get the last counters.
    for (const [request, resolve] of this.#waiting) {
      resolve({ type: "stats", stats: last, request });
    }
    this.#waiting.clear();
    return last;
  }

  terminate(): void {
    this.#worker.terminate();
  }
}

/**
 * Starts `count` Workers, each serving on the same port with `SO_REUSEPORT` so that
 * the kernel spreads connections over them. `maxConnections` is shared by all
 * through one atomic counter, and a full worker with no silent connection of its own
 * asks the others to make room; `maxConnectionsPerIp` is counted by each worker for
 * the connections it holds. The first worker picks the port when it is 0.
 */
export async function startWorkers(
  count: number,
  options: WorkerServerOptions,
  log: { level: LogLevel; format: LogFormat },
): Promise<WorkerPool> {
  const shared = new SharedArrayBuffer(SHARED_CONNECTION_SLOTS * Int32Array.BYTES_PER_ELEMENT);
  const workers: PoolWorker[] = [];
  let port = options.port;
  let first: (FromWorker & { type: "listening" }) | null = null;
  try {
    for (let id = 0; id < count; id++) {
      const worker = new PoolWorker();
      workers.push(worker);
      // The others bind the ports the first one got; UDP too where SO_REUSEPORT is there.
      const later = first === null ? {} : {
        daytimePort: first.ports.daytime,
        timePort: first.ports.time,
        ntpPort: first.ports.ntp,
        roughtimePort: first.ports.roughtime,
        udp: first.udpEngine === "mmsg",
        // One NTS-KE service, in the first worker; every worker opens its cookies.
        nts: options.nts ? { ...options.nts, ke: false } : options.nts,
      };
      const reply = await worker.request({
        type: "start",
        id,
        options: { ...options, port, ...later },
        shared,
        logLevel: log.level,
        logFormat: log.format,
      });
      if (reply.type === "error") {
        throw new WorkerStartError(reply.name, reply.message, reply.listener ?? null);
      }
      if (reply.type === "listening") {
        port = reply.port;
        first ??= reply;
      }
    }
  } catch (error) {
    for (const worker of workers) worker.terminate();
    throw error;
  }

  const statsByWorker = () => Promise.all(workers.map((worker) => worker.stats()));
  const reconfigureOne = async (
    worker: PoolWorker,
    options: WorkerServerOptions,
    log: { level: LogLevel; format: LogFormat },
  ) => {
    const reply = await worker.request({
      type: "reconfigure",
      options,
      logLevel: log.level,
      logFormat: log.format,
    });
    if (reply.type === "error") throw new Error(reply.message);
  };
  let stopping: Promise<ServerStats[]> | null = null;
  return {
    port: port!,
    ports: first!.ports,
    udpEngine: first!.udpEngine,
    stats: async () => sumStats(await statsByWorker()),
    shutdown() {
      stopping ??= Promise.all(workers.map((worker) => worker.shutdown()));
      return stopping;
    },
    async reconfigure(options, log) {
      await reconfigureOne(workers[0], options, log);
      await Promise.all(workers.slice(1).map((worker) => reconfigureOne(worker, options, log)));
    },
  };
}
