// One attack run: a server, an attack, a bystander visiting throughout, and what it all cost.

import { freePort } from "../../lib/net.ts";
import { startServer } from "../common/servers.ts";
import { type Scenario, startAttack, waitUntil } from "./attacks.ts";
import { JAM, type Sample, sample, visit } from "./clients.ts";
import type { Target } from "./targets.ts";

export interface Row {
  server: string;
  scenario: Scenario;
  attacks: number;
  visits: number;
  served: number;
  busy: number;
  /** p99 latency of the visits that were answered with the time. */
  p99Ms: number;
  /** Seconds into the attack of the last visit that was not answered with the time, or null. */
  lastFailureS: number | null;
  before: Sample;
  during: Sample;
  after: Sample;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

export async function runOne(
  target: Target,
  scenario: Scenario,
  seconds: number,
  maxConnections: number,
  reconnectMs: number,
): Promise<Row> {
  const port = freePort();
  const command = target.command.map((part) => part.replaceAll("{port}", String(port)));
  const child = await startServer(command, port);
  try {
    await visit(port, target.proxy); // warm-up
    const before = sample(child.pid);
    const attack = await startAttack(scenario, port, target.proxy, maxConnections, reconnectMs);
    // The hogs take their places before the bystander starts, so it finds the server full.
    const holding = scenario === "silent-hog"
      ? Math.ceil(maxConnections * 1.1)
      : scenario === "busy-hog"
      ? maxConnections
      : 0;
    const established = performance.now() + 10000;
    await waitUntil(() => attack.count() >= holding || performance.now() > established);
    // Silent hogs make room once silent for --evict-after (1 s, the default): start the
    // bystander then, so that every server is measured from the same state. Sooner, what
    // it met would depend on how fast a server accepted the hogs: a slow accept overflows
    // the listen queue, and the hogs it drops connect 1 s later, when they are retried.
    if (scenario === "silent-hog") await new Promise((resolve) => setTimeout(resolve, 1000));
    const latencies: number[] = [];
    let visits = 0, served = 0, busy = 0;
    let lastFailureS: number | null = null;
    const attackStart = performance.now();
    const during: Sample = { rssKiB: 0, fds: 0 };
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      const { line, ms } = await visit(port, target.proxy);
      visits++;
      if (JAM.test(line)) {
        served++;
        latencies.push(ms);
      } else {
        if (line.startsWith("ERR server busy")) busy++;
        lastFailureS = (performance.now() - attackStart) / 1000;
      }
      const now = sample(child.pid);
      during.rssKiB = Math.max(during.rssKiB, now.rssKiB);
      during.fds = Math.max(during.fds, now.fds);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const attacks = attack.count();
    await attack.stop();
    // What the server holds once the attackers have left and its lingering sweep has run.
    await new Promise((resolve) => setTimeout(resolve, 6000));
    await visit(port, target.proxy);
    const after = sample(child.pid);
    return {
      server: target.label,
      scenario,
      attacks,
      visits,
      served,
      busy,
      p99Ms: percentile(latencies, 0.99),
      lastFailureS,
      before,
      during,
      after,
    };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }
}
