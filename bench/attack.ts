// The attack harness: hostile traffic against the server, while a bystander keeps asking the time.

import { parseToolFlags } from "./common/flags.ts";
import { halfOpenHelper, type Scenario, SCENARIOS } from "./attack/attacks.ts";
import { ATTACKERS, BYSTANDER } from "./attack/clients.ts";
import { type Row, runOne } from "./attack/run.ts";
import { table } from "./attack/report.ts";
import { targetsToRun, VARIANTS } from "./attack/targets.ts";

const root = new URL("..", import.meta.url).pathname;

const HELP = `Usage: deno task attack [options]

Starts the server as a subprocess and runs each scenario against it, while a bystander
connects from 127.0.0.2 every 20 ms to ask TIME. Prints, per scenario, how often the
bystander was answered with the time, how often it heard ERR server busy, when in the
attack it last went unanswered, the p99 latency of its answered visits, and the server's
RSS and open descriptors before, during and after the attack (after: 6 s after the
attackers left); writes the table as JSON too.

Options:
  --scenario LIST         reset-storm, silent-hog, busy-hog, slow-reader, garbage,
                          half-open, churn, or all (default all); comma-separated
  --variant LIST          plain, workers (--workers 2), proxy (--proxy-protocol),
                          or all (default all)
  --tcp-engine LIST       TCP engines to run each variant on: deno, epoll (default both)
  --seconds N             attack length per scenario (default 5)
  --max-connections N     the server's --max-connections (default 1000)
  --reconnect-ms N        how long a hog the server closed waits before it connects
                          again (default 1000; 0 = at once)
  --server-args=ARGS      more flags for this project's server, e.g.
                          --server-args="--max-connections-per-ip 50"
  --reference LIST        reference servers for the plain variant: node, c, none
                          (default node,c where ../shared/bench has them and they build)
  --out FILE              where the JSON goes (default bench/runs/<date>-attack.json,
                          which git ignores)
  -h, --help              print this help`;

function list<T extends string>(text: string, all: readonly T[], name: string): T[] {
  if (text === "all") return [...all];
  const items = text.split(",").map((item) => item.trim());
  for (const item of items) {
    if (!(all as readonly string[]).includes(item)) {
      throw new Error(`--${name} takes ${all.join(", ")} or all, got "${item}"`);
    }
  }
  return items as T[];
}

const FLAGS = {
  scenario: { type: "string", default: "all" },
  variant: { type: "string", default: "all" },
  "tcp-engine": { type: "string", default: "deno,epoll" },
  seconds: { type: "string", default: "5" },
  "max-connections": { type: "string", default: "1000" },
  "reconnect-ms": { type: "string", default: "1000" },
  reference: { type: "string", default: "node,c" },
  "server-args": { type: "string", default: "" },
  out: { type: "string" },
  "half-open-helper": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

async function main(args: string[]): Promise<number> {
  const values = parseToolFlags("attack", args, FLAGS);
  if (values === null) return 2;
  if (values["half-open-helper"]) {
    await halfOpenHelper(values["half-open-helper"]);
    return 0;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let scenarios: Scenario[], variants: (typeof VARIANTS[number])[], engines: string[];
  try {
    scenarios = list(values.scenario, SCENARIOS, "scenario");
    variants = list(values.variant, VARIANTS, "variant");
    engines = list(values["tcp-engine"], ["deno", "epoll"] as const, "tcp-engine");
  } catch (error) {
    console.error(`attack: ${(error as Error).message}`);
    return 2;
  }
  const seconds = Number(values.seconds);
  const maxConnections = Number(values["max-connections"]);
  const reconnectMs = Number(values["reconnect-ms"]);
  const targets = targetsToRun(
    variants,
    engines,
    maxConnections,
    values["server-args"],
    values.reference,
  );
  console.log(
    `machine: ${navigator.hardwareConcurrency} CPUs, ${Deno.build.os}; ` +
      `${seconds} s per attack, --max-connections ${maxConnections}, ` +
      `hogs reconnect after ${reconnectMs} ms; ` +
      `bystander from ${BYSTANDER}, attackers from ${ATTACKERS[0]}–${ATTACKERS.at(-1)}`,
  );
  const rows: Row[] = [];
  for (const scenario of scenarios) {
    for (const target of targets) {
      const row = await runOne(target, scenario, seconds, maxConnections, reconnectMs);
      rows.push(row);
      console.log(
        `${scenario} / ${target.label}: served ${row.served}/${row.visits}, p99 ${
          row.p99Ms.toFixed(1)
        } ms`,
      );
    }
  }
  console.log();
  console.log(table(rows));
  const out = values.out ??
    `${root}bench/runs/${new Date().toISOString().slice(0, 10)}-attack.json`;
  Deno.mkdirSync(new URL(".", `file://${out}`).pathname, { recursive: true });
  Deno.writeTextFileSync(
    out,
    JSON.stringify({ seconds, maxConnections, reconnectMs, rows }, null, 2) + "\n",
  );
  console.log(`\nwritten to ${out}`);
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
