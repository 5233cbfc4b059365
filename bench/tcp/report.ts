// The TCP scenarios' table: medians per server, ratios against the baseline, memory per connection.

import { format } from "../common/stats.ts";
import { DEADLINE_IDLE_TIMEOUT } from "./deadlines.ts";
import type { Row } from "./run.ts";

export function table(rows: Row[], baseline: string | undefined): string {
  const lines: string[][] = [[
    "scenario",
    "server",
    "rate",
    baseline ? "vs baseline" : "",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "memory, or CPU",
    "errors",
    "status",
  ]];
  for (const row of rows) {
    const m = row.median;
    const base = rows.find((r) => r.server === baseline && r.scenario === row.scenario);
    let rate = "", ratio = "", memory = "";
    if (row.scenario.startsWith("idle")) {
      const perConn = ((m.rssLoadedKiB! - m.rssBeforeKiB!) * 1024) / Math.max(1, m.held!);
      const perConnAfter = ((m.rssAfterKiB! - m.rssBeforeKiB!) * 1024) / Math.max(1, m.held!);
      rate = `${format(m.held!)} held, burst ${format(m.burstSeconds!, 2)} s`;
      memory =
        `RSS ${format(m.rssBeforeKiB! / 1024, 1)} → ${format(m.rssLoadedKiB! / 1024, 1)} → ` +
        `${format(m.rssAfterKiB! / 1024, 1)} MiB; ${format(perConn)} B/conn held, ${
          format(perConnAfter)
        } after burst`;
      if (base && base !== row) {
        ratio = `burst ×${format(m.burstSeconds! / base.median.burstSeconds!, 2)}`;
      }
    } else if (row.scenario === "deadlines") {
      rate = `${format(m.rate)} req/s of load`;
      memory = `${m.completed} closed after ${DEADLINE_IDLE_TIMEOUT} s + p50 ${
        format(m.p50 / 1000)
      } ms, p99 ${format(m.p99 / 1000)} ms, max ${format(m.p999 / 1000)} ms`;
    } else {
      rate = `${format(m.rate)} ${row.scenario === "churn" ? "conn/s" : "req/s"}`;
      if (base && base !== row) ratio = `×${format(m.rate / base.median.rate, 2)}`;
      const cpu = m.serverCpuUsPerRequest;
      if (cpu !== undefined) memory = `server CPU ${format(cpu, 2)} µs per request`;
    }
    lines.push([
      row.scenario,
      row.server,
      rate,
      ratio,
      format(m.p50, 0),
      format(m.p99, 0),
      format(m.p999, 0),
      memory,
      String(m.errors),
      row.failed ? "FAILED" : "ok",
    ]);
  }
  const keep = lines[0].map((_, column) => lines.some((line, i) => i > 0 && line[column] !== ""));
  const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
  return lines.map((line) =>
    line.filter((_, column) => keep[column]).map((cell, column) =>
      cell.padEnd(widths.filter((_, c) => keep[c])[column])
    ).join("  ").trimEnd()
  ).join("\n");
}

/**
 * Each server's RSS per idle connection between the smallest and the largest `idle`
 * size: what one more connection costs, without the code and buffers a server pages in
 * once (which a single size divides among its connections).
 */
export function marginalMemory(rows: Row[], sizes: string[]): string {
  const lines = [`idle: RSS per connection between ${sizes[0]} and ${sizes.at(-1)} held`];
  for (const server of new Set(rows.map((row) => row.server))) {
    const at = (size: string) =>
      rows.find((r) => r.server === server && r.scenario === `idle:${size}`);
    const small = at(sizes[0]), large = at(sizes.at(-1)!);
    if (!small || !large) continue;
    const bytes = (large.median.rssLoadedKiB! - small.median.rssLoadedKiB!) * 1024 /
      Math.max(1, large.median.held! - small.median.held!);
    lines.push(`  ${server.padEnd(48)} ${format(bytes)} B/conn`);
  }
  return lines.join("\n");
}
