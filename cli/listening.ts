// The "listening" line: where the server listens, and every setting in force.

import type { LogFields } from "../lib/log.ts";
import { formatAddress } from "../lib/net.ts";
import { ONE_ANSWER_RATE_LIMIT, resolveServerOptions } from "../server/server.ts";
import type { Invocation } from "./command_line.ts";
import { VERSION } from "./help.ts";
import type { ServicePorts } from "../server/server.ts";

/** What the "listening" line needs of the server or pool that runs. */
export interface Listening {
  /** The TCP address, formatted. */
  readonly address: string;
  readonly port: number;
  readonly ports: ServicePorts;
  readonly udpEngine: "deno" | "mmsg";
}

/** What the "listening" line says: where, and every setting in force. */
export function listeningFields(
  running: Listening,
  invocation: Invocation & { action: "serve" },
  metrics: Deno.HttpServer<Deno.NetAddr> | undefined,
): LogFields {
  const settings = resolveServerOptions(invocation.options);
  return {
    address: running.address,
    port: running.port,
    version: VERSION,
    pid: Deno.pid,
    workers: invocation.workers,
    tz: invocation.options.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone,
    maxLine: settings.maxLine,
    idleTimeout: settings.idleTimeout,
    maxConnections: settings.maxConnections,
    evictAfter: settings.evictAfter,
    maxConnectionsPerIp: settings.maxConnectionsPerIp,
    proxyProtocol: settings.proxyProtocol,
    tcpEngine: settings.tcpEngine,
    shutdownTimeout: settings.shutdownTimeout,
    metrics: metrics ? `http://${formatAddress(metrics.addr)}/metrics` : undefined,
    daytimePort: running.ports.daytime ?? undefined,
    timePort: running.ports.time ?? undefined,
    ntpPort: running.ports.ntp ?? undefined,
    ntpStratum: running.ports.ntp === null ? undefined : settings.ntpStratum,
    ntpClock: running.ports.ntp === null ? undefined : settings.ntpClock,
    ntsKePort: running.ports.ntsKe ?? undefined,
    roughtimePort: running.ports.roughtime ?? undefined,
    udpEngine: Object.values(running.ports).some((port) => port !== null)
      ? running.udpEngine
      : undefined,
    allow: settings.allow.length > 0 ? settings.allow.join(",") : undefined,
    deny: settings.deny.length > 0 ? settings.deny.join(",") : undefined,
    rateLimit: settings.rateLimit
      ? `${settings.rateLimit.interval}s burst ${settings.rateLimit.burst} leak ${settings.rateLeak}` +
        (settings.kissOfDeath ? " kod" : "")
      : running.ports.daytime !== null || running.ports.time !== null
      ? `daytime and time ${ONE_ANSWER_RATE_LIMIT.interval}s burst ${ONE_ANSWER_RATE_LIMIT.burst}`
      : undefined,
  };
}
