// The server's flag table: each flag's shape for the command line, and its key in the config file.

import type { FlagShape } from "../lib/usage.ts";

/** The config file's sections, in the order `time-server check` prints them. */
export const SECTIONS = ["line", "limits", "time", "nts", "roughtime", "log", "metrics"] as const;
/** One of {@linkcode SECTIONS}. */
export type Section = typeof SECTIONS[number];

/**
 * A flag: its shape for `node:util` `parseArgs` (which ignores the other fields) and, for
 * a setting, its place in the config file: the section, and the key when it is not the
 * flag's name, less the section's name in `[nts]` and `[log]` (`--nts-cert` is `cert`). A switch
 * named `no-…` is the key without it, inverted: `--no-fairness` is `fairness = false`.
 */
export interface Flag extends FlagShape {
  readonly section?: Section;
  readonly key?: string;
}

/** Every flag of the server's command line; those with a section are settings. */
export const FLAGS = {
  config: { type: "string" },
  host: { type: "string", section: "line" },
  port: { type: "string", short: "p", section: "line" },
  tz: { type: "string", section: "line" },
  "max-line": { type: "string", section: "line" },
  "idle-timeout": { type: "string", section: "line" },
  "proxy-protocol": { type: "boolean", section: "line" },
  "tcp-engine": { type: "string", section: "line" },
  workers: { type: "string", section: "line" },
  "max-connections": { type: "string", section: "limits" },
  "max-connections-per-ip": { type: "string", section: "limits" },
  "evict-after": { type: "string", section: "limits" },
  "no-fairness": { type: "boolean", section: "limits", key: "fairness" },
  "shutdown-timeout": { type: "string", section: "limits" },
  allow: { type: "string", multiple: true, section: "limits" },
  deny: { type: "string", multiple: true, section: "limits" },
  "daytime-port": { type: "string", section: "time" },
  "time-port": { type: "string", section: "time" },
  "ntp-port": { type: "string", section: "time" },
  "ntp-stratum": { type: "string", section: "time" },
  "ntp-clock": { type: "string", section: "time" },
  "udp-engine": { type: "string", section: "time" },
  "rate-limit": { type: "string", section: "time" },
  "rate-burst": { type: "string", section: "time" },
  "rate-leak": { type: "string", section: "time" },
  kod: { type: "boolean", section: "time" },
  "max-clients": { type: "string", section: "time" },
  "nts-ke-port": { type: "string", section: "nts" },
  "nts-cert": { type: "string", section: "nts" },
  "nts-key": { type: "string", section: "nts" },
  "nts-keys-file": { type: "string", section: "nts" },
  "nts-ke-rate": { type: "string", section: "nts" },
  "nts-ntp-server": { type: "string", section: "nts" },
  "roughtime-port": { type: "string", section: "roughtime" },
  "roughtime-key": { type: "string", section: "roughtime" },
  "log-level": { type: "string", section: "log" },
  "log-format": { type: "string", section: "log" },
  metrics: { type: "string", section: "metrics", key: "listen" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const satisfies Record<string, Flag>;

/** A flag's name, without its dashes. */
export type FlagName = keyof typeof FLAGS;

/** The flags that are settings: those with a key in the config file. */
export type SettingFlag = {
  [K in FlagName]: (typeof FLAGS)[K] extends { section: Section } ? K : never;
}[FlagName];

/** The values of the flags as `parseArgs` returns them, or as a config file gives them. */
export type FlagValues = Partial<Record<FlagName, string | string[] | boolean>>;

/** Where a setting's value came from, as `time-server check` says. */
export type Source = "default" | "file" | "flag" | "environment";

/** A setting's place in the config file. */
export interface Setting {
  readonly flag: SettingFlag;
  readonly section: Section;
  readonly key: string;
  /** Whether the key is the switch's opposite: `fairness = false` is `--no-fairness`. */
  readonly inverted: boolean;
}

/** The sections whose flags are named after them, and whose keys are not: `[nts] cert`. */
const PREFIXED_SECTIONS: readonly Section[] = ["nts", "roughtime", "log"];

function settingOf(flag: SettingFlag): Setting {
  const { section, ...shape } = FLAGS[flag] as Flag & { section: Section };
  const inverted = shape.type === "boolean" && flag.startsWith("no-");
  const prefixed = PREFIXED_SECTIONS.includes(section) && flag.startsWith(`${section}-`);
  const key = shape.key ??
    (inverted ? flag.slice(3) : prefixed ? flag.slice(section.length + 1) : flag);
  return { flag, section, key, inverted };
}

/**
 * Every setting, in the table's order: the config file's keys are made from the flags,
 * so that the two cannot drift apart.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SETTINGS } from "./flags.ts";
 *
 * const cert = SETTINGS.find((setting) => setting.flag === "nts-cert");
 * assert.equal(`[${cert?.section}] ${cert?.key}`, "[nts] cert");
 * const fairness = SETTINGS.find((setting) => setting.flag === "no-fairness");
 * assert.deepEqual([fairness?.key, fairness?.inverted], ["fairness", true]);
 * ```
 */
export const SETTINGS: readonly Setting[] = (Object.keys(FLAGS) as FlagName[])
  .filter((flag): flag is SettingFlag => "section" in FLAGS[flag])
  .map(settingOf);
