// Two of the server's own listeners on one port, refused before anything binds.

import { DEFAULTS, type ServerOptions } from "../server/server.ts";
import type { NtsFlags } from "../nts/setup.ts";
import { UsageError } from "../lib/usage.ts";

/** Whether two listening addresses can collide on one port: equal, or one of them a wildcard. */
function hostsOverlap(a: string, b: string): boolean {
  const wildcard = (host: string) => host === "::" || host === "0.0.0.0";
  return a === b || wildcard(a) || wildcard(b);
}

/**
 * Rejects two of the server's own listeners on one port and transport: the second bind
 * would fail only after the first had started. Port 0 picks a free port for each.
 */
export function checkPortClashes(
  options: ServerOptions,
  portFlag: string,
  metrics: { hostname: string; port: number } | null,
  nts: NtsFlags | null,
): void {
  const host = options.hostname ?? DEFAULTS.hostname;
  const uses = [
    {
      flag: options.port === undefined ? `the default port (${DEFAULTS.port})` : portFlag,
      port: options.port ?? DEFAULTS.port,
      tcp: true,
      udp: false,
    },
    { flag: "--daytime-port", port: options.daytimePort, tcp: true, udp: true },
    { flag: "--time-port", port: options.timePort, tcp: true, udp: true },
    { flag: "--ntp-port", port: options.ntpPort, tcp: false, udp: true },
    { flag: "--nts-ke-port", port: nts?.kePort, tcp: true, udp: false },
  ];
  if (metrics !== null && hostsOverlap(host, metrics.hostname)) {
    uses.push({ flag: "--metrics", port: metrics.port, tcp: true, udp: false });
  }
  for (let i = 0; i < uses.length; i++) {
    for (const other of uses.slice(i + 1)) {
      const use = uses[i];
      if (!use.port || use.port !== other.port) continue;
      if ((use.tcp && other.tcp) || (use.udp && other.udp)) {
        const transport = use.tcp && other.tcp ? "TCP" : "UDP";
        throw new UsageError(
          `${use.flag} and ${other.flag} both ask for ${transport} port ${use.port}: give each its own`,
        );
      }
    }
  }
}
