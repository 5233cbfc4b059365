// Tests of the config file: every flag's key, the TOML read into flag values, and the messages.

import assert from "node:assert/strict";
import { type FlagName, FLAGS, SECTIONS, SETTINGS } from "./flags.ts";
import { loadTomlParser, readConfigFile } from "./file.ts";

const parse = await loadTomlParser();
const read = (text: string) => readConfigFile("server.toml", text, parse);
const fails = (text: string) => {
  try {
    read(text);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("no error");
};

Deno.test("every flag but --config, --help and --version is a key in one section", () => {
  const keyed = SETTINGS.map((setting) => setting.flag as FlagName);
  const rest = (Object.keys(FLAGS) as FlagName[]).filter((flag) => !keyed.includes(flag));
  assert.deepEqual(rest.sort(), ["config", "help", "version"]);
  for (const section of SECTIONS) {
    const keys = SETTINGS.filter((setting) => setting.section === section).map((s) => s.key);
    assert.ok(keys.length > 0, `[${section}] has keys`);
    assert.equal(new Set(keys).size, keys.length, `[${section}]'s keys are distinct`);
  }
});

Deno.test("config file keys are named after their flags, less the section in [nts] and [log]", () => {
  const keyOf = (flag: FlagName) => {
    const setting = SETTINGS.find((setting) => setting.flag === flag)!;
    return `[${setting.section}] ${setting.key}`;
  };
  assert.equal(keyOf("port"), "[line] port");
  assert.equal(keyOf("time-port"), "[time] time-port");
  assert.equal(keyOf("nts-ke-port"), "[nts] ke-port");
  assert.equal(keyOf("log-level"), "[log] level");
  assert.equal(keyOf("metrics"), "[metrics] listen");
  assert.equal(keyOf("no-fairness"), "[limits] fairness");
});

Deno.test("config file values become the text their flags would take", () => {
  const file = read(`
[line]
host = "127.0.0.1"
port = 4000
proxy-protocol = true

[limits]
allow = ["192.0.2.0/24", "2001:db8::/32"]
deny = "198.51.100.7"
fairness = false

[time]
rate-limit = 1e-3
kod = false

[nts]
ke-rate = 2.5
`);
  assert.deepEqual(file.values, {
    host: "127.0.0.1",
    port: "4000",
    "proxy-protocol": true,
    allow: ["192.0.2.0/24", "2001:db8::/32"],
    deny: ["198.51.100.7"],
    "no-fairness": true,
    "rate-limit": "0.001",
    "nts-ke-rate": "2.5",
  });
  assert.equal(file.lines.get("port"), 4);
  assert.equal(file.lines.get("nts-ke-rate"), 17);
  assert.deepEqual(read("[limits]\nfairness = true\n").values, {});
});

Deno.test("config file mistakes name the file, the line and the key", () => {
  assert.equal(
    fails("[line]\nport = 1\n\n[limits]\nmax-conections = 5\n"),
    "server.toml:5: unknown key max-conections in [limits]; its keys are max-connections, " +
      "max-connections-per-ip, evict-after, fairness, shutdown-timeout, allow, deny",
  );
  assert.equal(
    fails("[lines]\nport = 1\n"),
    "server.toml:1: unknown section [lines]; the sections are [line], [limits], [time], [nts], " +
      "[roughtime], [log], [metrics]",
  );
  assert.equal(fails("port = 45000\n"), "server.toml:1: port belongs in [line]");
  assert.equal(
    fails("[line]\n\nport = true\n"),
    "server.toml:3: [line] port must be a number or a string",
  );
  assert.equal(fails("[time]\nkod = 1\n"), "server.toml:2: [time] kod must be true or false");
  assert.match(
    fails("[limits]\nallow = [1]\n"),
    /^server.toml:2: \[limits\] allow must be a string or a list/,
  );
  assert.equal(
    fails("[line]\nport = 1\nport = 2\n"),
    "server.toml:3: not valid TOML: trying to redefine an already defined table or value",
  );
  assert.match(fails('[line]\nhost = "127.0.0.1\n'), /^server.toml:2: not valid TOML: /);
});
