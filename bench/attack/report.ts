// The attack table: the bystander's share served, its latency, and the server's footprint.

import type { Row } from "./run.ts";

const mib = (kib: number) => (kib / 1024).toFixed(0);

export function table(rows: Row[]): string {
  const header = [
    "scenario",
    "server",
    "attack connections",
    "bystander served",
    "busy",
    "last miss at",
    "p99 ms",
    "RSS MiB before/during/after",
    "fds before/during/after",
  ];
  const lines = rows.map((row) => [
    row.scenario,
    row.server,
    String(row.attacks),
    `${row.served}/${row.visits} (${(100 * row.served / Math.max(1, row.visits)).toFixed(0)}%)`,
    String(row.busy),
    row.lastFailureS === null ? "-" : `${row.lastFailureS.toFixed(1)} s`,
    row.p99Ms.toFixed(1),
    `${mib(row.before.rssKiB)} / ${mib(row.during.rssKiB)} / ${mib(row.after.rssKiB)}`,
    `${row.before.fds} / ${row.during.fds} / ${row.after.fds}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((line) => line[i].length)));
  const format = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [
    format(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...lines.map(format),
  ].join("\n");
}
