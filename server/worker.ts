// The entry point of one worker of a pool (see workers.ts): runs a server and answers the pool.

/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

import { type ConfigurableLogger, createLogger, withLogSettings } from "../lib/log.ts";
import { serve, ServiceListenError, type TimeServer } from "./server.ts";
import type { FromWorker, ToWorker, WithoutRequest } from "./workers.ts";

let server: TimeServer | undefined;
let logger: ConfigurableLogger | undefined;

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  const reply = (answer: WithoutRequest<FromWorker>) =>
    self.postMessage({ ...answer, request: message.request });
  if (message.type === "start") {
    logger = createLogger({
      level: message.logLevel,
      format: message.logFormat,
      fields: { worker: message.id },
    });
    try {
      server = serve({
        ...message.options,
        reusePort: true,
        sharedConnections: new Int32Array(message.shared),
        logger,
      });
      reply({
        type: "listening",
        port: server.addr.port,
        ports: server.ports,
        udpEngine: server.udpEngine,
      });
    } catch (error) {
      // A service's port that failed: the pool needs the cause's name to describe it.
      const service = error instanceof ServiceListenError ? error : null;
      const cause = service ? service.cause : error;
      reply({
        type: "error",
        name: cause instanceof Error ? cause.name : "Error",
        message: cause instanceof Error ? cause.message : String(cause),
        listener: service ? { where: service.where, port: service.port } : undefined,
      });
    }
  } else if (message.type === "stats") {
    reply({ type: "stats", stats: { ...server!.stats } });
  } else if (message.type === "reconfigure") {
    try {
      const log = { level: message.logLevel, format: message.logFormat };
      withLogSettings(logger!, log, () => server!.reconfigure(message.options));
      reply({ type: "reconfigured" });
    } catch (error) {
      const name = error instanceof Error ? error.name : "Error";
      reply({
        type: "error",
        name,
        message: error instanceof Error ? error.message : String(error),
      });
    }
  } else if (message.type === "shutdown") {
    await server!.shutdown();
    reply({ type: "stopped", stats: { ...server!.stats } });
  }
};
