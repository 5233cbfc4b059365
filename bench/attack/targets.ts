// The servers an attack run measures: this one in each variant, and the reference servers.

import { startCommand } from "../../tools/start_task.ts";

const shared = new URL("../../../shared/bench/", import.meta.url).pathname;
export const VARIANTS = ["plain", "workers", "proxy"] as const;

export interface Target {
  label: string;
  command: string[];
  proxy: boolean;
}

/**
 * The reference servers from `../shared/bench/` (the team's measuring tools, kept beside
 * this repository, not in it) that can run here. Each one left out is named, with why,
 * in one line on stderr.
 */
export function referenceTargets(wanted: string[]): Target[] {
  const targets: Target[] = [];
  const has = (path: string) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  };
  const runs = (command: string, args: string[]) => {
    try {
      return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync()
        .success;
    } catch {
      return false;
    }
  };
  const skip = (label: string, why: string) =>
    console.error(`attack: skipping the ${label} server: ${why}`);
  if (wanted.includes("node")) {
    if (!has(`${shared}node_server.mjs`)) skip("Node.js", `${shared}node_server.mjs not found`);
    else if (!runs("node", ["--version"])) skip("Node.js", "node is not installed");
    else {
      targets.push({
        label: "node net",
        command: ["node", `${shared}node_server.mjs`, "{port}"],
        proxy: false,
      });
    }
  }
  if (wanted.includes("c")) {
    const binary = `${Deno.makeTempDirSync()}/epoll_server`;
    if (!has(`${shared}epoll_server.c`)) skip("C epoll", `${shared}epoll_server.c not found`);
    else if (!runs("gcc", ["-O2", "-o", binary, `${shared}epoll_server.c`])) {
      skip("C epoll", `gcc could not build ${shared}epoll_server.c`);
    } else targets.push({ label: "C epoll", command: [binary, "{port}"], proxy: false });
  }
  return targets;
}

/** The servers to attack: ours in each variant, and for the plain one the references. */
export function targetsToRun(
  variants: string[],
  engines: string[],
  maxConnections: number,
  serverArgs: string,
  references: string,
): Target[] {
  return engines.flatMap((engine) =>
    ourTargets(variants, maxConnections, [
      ...(engine === "deno" ? [] : ["--tcp-engine", engine]),
      ...serverArgs.split(/\s+/).filter((arg) => arg !== ""),
    ]).map((target) =>
      engine === "deno" ? target : { ...target, label: `${target.label} (${engine})` }
    )
  ).concat(variants.includes("plain") ? referenceTargets(references.split(",")) : []);
}

/** This project's server in each variant, with `args`. */
export function ourTargets(variants: string[], maxConnections: number, args: string[]): Target[] {
  const ours = [
    ...startCommand(),
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--log-level",
    "warn",
  ];
  const limits = ["--max-connections", String(maxConnections), ...args];
  const targets: Target[] = [];
  if (variants.includes("plain")) {
    targets.push({ label: "time-server", command: [...ours, ...limits], proxy: false });
  }
  if (variants.includes("workers")) {
    targets.push({
      label: "time-server --workers 2",
      command: [...ours, ...limits, "--workers", "2"],
      proxy: false,
    });
  }
  if (variants.includes("proxy")) {
    targets.push({
      label: "time-server --proxy-protocol",
      command: [...ours, ...limits, "--proxy-protocol"],
      proxy: true,
    });
  }
  return targets;
}
