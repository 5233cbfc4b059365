// Tests of the command line, in-process: every flag, the checks across flags, and the messages.

import assert from "node:assert/strict";
import { gatherFlags, parseCommandLine } from "./command_line.ts";
import { loadTomlParser } from "../config/file.ts";
import { describeConfiguration } from "./check.ts";
import { HELP, VERSION } from "./help.ts";
import { UsageError } from "../lib/usage.ts";

Deno.test("command line defaults to serving with info logs in text", () => {
  assert.deepEqual(parseCommandLine([]), {
    action: "serve",
    options: {},
    logLevel: "info",
    logFormat: "text",
    workers: 1,
    metrics: null,
    nts: null,
  });
});

Deno.test("command line reads every flag", () => {
  const invocation = parseCommandLine(
    [
      "--host=127.0.0.1",
      "-p",
      "4000",
      "--tz",
      "Asia/Jakarta",
      "--max-line",
      "64",
      "--idle-timeout",
      "0.5",
      "--max-connections",
      "20",
      "--evict-after",
      "2.5",
      "--shutdown-timeout",
      "0",
      "--log-level",
      "debug",
      "--log-format",
      "json",
      "--max-connections-per-ip",
      "3",
      "--proxy-protocol",
      "--no-fairness",
      "--tcp-engine",
      "epoll",
      "--workers",
      "2",
      "--metrics",
      "[::1]:9464",
    ],
    {},
    { os: "linux", cpus: 2, libcMissing: null },
  );
  assert.deepEqual(invocation, {
    action: "serve",
    options: {
      hostname: "127.0.0.1",
      port: 4000,
      timeZone: "Asia/Jakarta",
      maxLine: 64,
      idleTimeout: 0.5,
      maxConnections: 20,
      evictAfter: 2.5,
      shutdownTimeout: 0,
      maxConnectionsPerIp: 3,
      proxyProtocol: true,
      fairness: false,
      tcpEngine: "epoll",
    },
    logLevel: "debug",
    logFormat: "json",
    workers: 2,
    metrics: { hostname: "::1", port: 9464 },
    nts: null,
  });
});

Deno.test("command line reads the time protocols' flags", () => {
  const invocation = parseCommandLine([
    "--daytime-port",
    "13",
    "--time-port",
    "0",
    "--ntp-port",
    "123",
    "--ntp-stratum",
    "2",
    "--ntp-clock",
    "local",
    "--udp-engine",
    "deno",
    "--allow",
    "10.0.0.0/8,192.0.2.1",
    "--allow",
    "2001:db8::/32",
    "--deny",
    "10.1.0.0/16",
    "--rate-limit",
    "0.5",
    "--rate-burst",
    "4",
    "--rate-leak",
    "0",
    "--kod",
    "--max-clients",
    "1000",
    "--nts-ke-port",
    "4460",
    "--nts-cert",
    "/etc/time-server/cert.pem",
    "--nts-key",
    "/etc/time-server/key.pem",
    "--nts-keys-file",
    "/var/lib/time-server/nts.keys",
    "--nts-ke-rate",
    "0",
    "--nts-ntp-server",
    "ntp1.example.com",
  ]);
  assert.equal(invocation.action, "serve");
  if (invocation.action !== "serve") return;
  assert.deepEqual(invocation.nts, {
    kePort: 4460,
    certFile: "/etc/time-server/cert.pem",
    keyFile: "/etc/time-server/key.pem",
    keysFile: "/var/lib/time-server/nts.keys",
    keRate: 0,
    ntpServer: "ntp1.example.com",
  });
  assert.deepEqual(invocation.options, {
    daytimePort: 13,
    timePort: 0,
    ntpPort: 123,
    ntpStratum: 2,
    ntpClock: "local",
    udpEngine: "deno",
    allow: ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"],
    deny: ["10.1.0.0/16"],
    rateLimit: { interval: 0.5, burst: 4 },
    rateLeak: 0,
    kissOfDeath: true,
    maxClients: 1000,
  });
});

Deno.test("command line refuses the batched engine and the kernel's clock without libc, naming the grant", () => {
  const lacking = "FFI permission for libc: run with --allow-ffi=/lib/libc.so.6";
  const noFfi = { os: "linux", cpus: 2, libcMissing: lacking };
  const ntp = ["--ntp-port", "123"];
  assert.throws(
    () => parseCommandLine([...ntp, "--udp-engine", "mmsg"], {}, noFfi),
    new UsageError(`--udp-engine mmsg needs ${lacking}`),
  );
  assert.throws(
    () => parseCommandLine([...ntp, "--ntp-clock", "kernel"], {}, noFfi),
    new UsageError(`--ntp-clock kernel calls adjtimex in libc, so it needs ${lacking}`),
  );
  assert.throws(
    () => parseCommandLine(["--tcp-engine", "epoll"], {}, noFfi),
    new UsageError(`--tcp-engine epoll needs ${lacking}`),
  );
  // The portable engines need none of it.
  const portable = parseCommandLine([...ntp, "--udp-engine", "deno"], {}, noFfi);
  assert.equal(portable.action === "serve" && portable.options.udpEngine, "deno");
  const deno = parseCommandLine(["--tcp-engine", "deno"], {}, noFfi);
  assert.equal(deno.action === "serve" && deno.options.tcpEngine, "deno");
});

Deno.test("command line takes PORT from the environment unless --port is given", () => {
  assert.deepEqual(parseCommandLine([], { PORT: "4100" }), {
    action: "serve",
    options: { port: 4100 },
    logLevel: "info",
    logFormat: "text",
    workers: 1,
    metrics: null,
    nts: null,
  });
  const invocation = parseCommandLine(["--port", "4200"], { PORT: "4100" });
  assert.equal(invocation.action === "serve" && invocation.options.port, 4200);
  assert.throws(() => parseCommandLine([], { PORT: "http" }), /PORT \(environment\)/);
});

Deno.test("command line caps --workers at two per CPU, and at least 2", () => {
  const workers = (n: string, cpus: number) =>
    (parseCommandLine(["--workers", n], {}, { os: "linux", cpus }) as { workers: number }).workers;
  assert.equal(workers("8", 4), 8);
  assert.equal(workers("2", 1), 2);
  assert.throws(
    () => workers("1000", 2),
    new UsageError(
      "--workers must be auto or a whole number from 1 to 4 (2 per CPU, 2 here: more event loops " +
        'than CPUs only add memory), got "1000"',
    ),
  );
  assert.throws(() => workers("9", 4), /from 1 to 8/);
  assert.throws(() => workers("3", 1), /from 1 to 2/);
});

Deno.test("command line rejects two of its own listeners on one port and transport, naming both flags", () => {
  const cases: [string[], RegExp][] = [
    [
      ["--port", "20052", "--daytime-port", "20052"],
      /^--port and --daytime-port both ask for TCP port 20052: give each its own$/,
    ],
    [["--daytime-port", "1300", "--time-port", "1300"], /^--daytime-port and --time-port both/],
    [
      ["--time-port", "1300", "--ntp-port", "1300"],
      /^--time-port and --ntp-port both ask for UDP port 1300/,
    ],
    [
      ["--daytime-port", "45000"],
      /^the default port \(45000\) and --daytime-port both ask for TCP port 45000/,
    ],
    [
      ["--port", "9464", "--metrics", "127.0.0.1:9464"],
      /^--port and --metrics both ask for TCP port 9464/,
    ],
    [["--host", "::1", "--port", "9464", "--metrics", "[::1]:9464"], /^--port and --metrics/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCommandLine(args), (error: unknown) => {
      assert.ok(error instanceof UsageError, `${args.join(" ")}: ${error}`);
      assert.match(error.message, message, args.join(" "));
      return true;
    });
  }
  assert.throws(
    () => parseCommandLine(["--daytime-port", "1300"], { PORT: "1300" }),
    /^UsageError: PORT \(environment\) and --daytime-port both ask for TCP port 1300/,
  );
  // TCP and UDP are separate ports, port 0 picks a free one for each, and other hosts do not clash.
  for (
    const args of [
      ["--port", "12300", "--ntp-port", "12300"],
      ["--port", "0", "--daytime-port", "0", "--time-port", "0", "--ntp-port", "0"],
      ["--host", "127.0.0.1", "--port", "9464", "--metrics", "127.0.0.2:9464"],
    ]
  ) {
    assert.equal(parseCommandLine(args).action, "serve", args.join(" "));
  }
});

Deno.test("command line takes --workers auto as the number of CPUs, and more than 1 only on Linux", () => {
  const on = (os: string) => parseCommandLine(["--workers", "auto"], {}, { os, cpus: 4 });
  assert.equal((on("linux") as { workers: number }).workers, 4);
  assert.throws(() => on("darwin"), /^UsageError: --workers above 1 needs Linux/);
  assert.throws(
    () => parseCommandLine(["--workers", "2"], {}, { os: "windows", cpus: 8 }),
    UsageError,
  );
  const one = parseCommandLine(["--workers", "1"], {}, { os: "windows", cpus: 8 });
  assert.equal((one as { workers: number }).workers, 1);
});

Deno.test("command line answers --help and --version", () => {
  assert.deepEqual(parseCommandLine(["--help"]), { action: "help" });
  assert.deepEqual(parseCommandLine(["-h"]), { action: "help" });
  assert.deepEqual(parseCommandLine(["-V"]), { action: "version" });
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
  for (
    const flag of ["--host", "--port", "--tz", "--max-line", "--idle-timeout", "--max-connections"]
  ) {
    assert.ok(HELP.includes(flag), flag);
  }
});

Deno.test("command line rejects bad input with a one-line message naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^unknown option --bogus$/],
    [["-x"], /^unknown option -x$/],
    [["serve"], /^unexpected argument serve$/],
    [["--port"], /^--port needs a value$/],
    [["--port", "abc"], /^--port must be a whole number from 0 to 65535, got "abc"$/],
    [["--port", "65536"], /--port must be/],
    [["--port", "-1"], /^--port must be a whole number from 0 to 65535, got "-1"$/],
    [["-p", "-1"], /^--port must be a whole number from 0 to 65535, got "-1"$/],
    [["--port=-1"], /^--port must be a whole number from 0 to 65535, got "-1"$/],
    [["--port", "1.5"], /--port must be/],
    [["--tz", "Mars/Base"], /^--tz must be an IANA time zone/],
    [["--tcp-engine", "uring"], /^--tcp-engine must be one of deno, epoll, got "uring"$/],
    [
      ["--tcp-engine", "epoll", "--host", "localhost"],
      /^--tcp-engine epoll needs --host as an IP address such as 127\.0\.0\.1 or ::, got "localhost"$/,
    ],
    [["--max-line", "0"], /^--max-line must be/],
    [
      ["--idle-timeout", "-1"],
      /^--idle-timeout must be a number of seconds from 0 to 86400, got "-1"$/,
    ],
    [["--idle-timeout", "-0.5"], /^--idle-timeout must be a number of seconds .* got "-0.5"$/],
    [
      ["--max-connections", "-5"],
      /^--max-connections must be a whole number from 1 to .* got "-5"$/,
    ],
    [["--idle-timeout", "soon"], /^--idle-timeout must be a number of seconds/],
    [["--shutdown-timeout", "Infinity"], /^--shutdown-timeout must be/],
    [["--max-connections", "0"], /^--max-connections must be/],
    [["--log-level", "loud"], /^--log-level must be one of error, warn, info, debug, got "loud"$/],
    [["--log-format", "xml"], /^--log-format must be one of text, json/],
    [["--host", ""], /^--host must not be empty$/],
    [["--workers", "0"], /^--workers must be/],
    [["--workers", "many"], /^--workers must be/],
    [["--metrics", "9464"], /^--metrics must be HOST:PORT/],
    [["--evict-after", "soon"], /^--evict-after must be a number of seconds/],
    [
      ["--max-connections-per-ip", "-1"],
      /^--max-connections-per-ip must be a whole number .*"-1"$/,
    ],
    [["--proxy-protocol=yes"], /^--proxy-protocol takes no value: give it alone to turn it on$/],
    [["--kod=1"], /^--kod takes no value/],
    [["--ntp-port", "65536"], /^--ntp-port must be a whole number from 0 to 65535/],
    [["--daytime-port", "x"], /^--daytime-port must be/],
    [["--time-port", "-3"], /^--time-port must be a whole number from 0 to 65535, got "-3"$/],
    [["--ntp-stratum", "0"], /^--ntp-stratum must be a whole number from 1 to 15/],
    [["--ntp-stratum", "16"], /^--ntp-stratum must be/],
    [["--ntp-clock", "gps"], /^--ntp-clock must be one of local, kernel/],
    [["--udp-engine", "io_uring"], /^--udp-engine must be one of auto, mmsg, deno/],
    [["--allow", "10.0.0.0/33"], /^--allow takes addresses or CIDR ranges .* got "10.0.0.0\/33"$/],
    [["--deny", "10.0.0.1,example.com"], /^--deny takes .* got "example.com"$/],
    [
      ["--ntp-port", "123", "--rate-limit", "0"],
      /^--rate-limit must be a number of seconds above 0 and at most 86400, got "0"$/,
    ],
    [
      ["--ntp-port", "123", "--rate-limit", "-1"],
      /^--rate-limit must be a number of seconds above 0 and at most 86400, got "-1"$/,
    ],
    [
      ["--ntp-port", "123", "--rate-limit", "1e-9"],
      /^--rate-limit must be written in plain digits and a point, such as 0\.5, got "1e-9"$/,
    ],
    [
      ["--shutdown-timeout", "1e3"],
      /^--shutdown-timeout must be written in plain digits and a point, .* got "1e3"$/,
    ],
    [["--port", "0x10"], /^--port must be written in plain digits, such as 65535, got "0x10"$/],
    [
      ["--port", "20108", "--port", "20109"],
      /^--port is given twice \("20108", then "20109"\): give it once$/,
    ],
    [["--kod", "--kod"], /^--kod is given twice: give it once$/],
    [["--ntp-port", "123", "--rate-limit", "fast"], /^--rate-limit must be a number of seconds/],
    [["--ntp-port", "123", "--rate-limit", "1", "--rate-burst", "0"], /^--rate-burst must be/],
    [["--ntp-port", "123", "--rate-limit", "1", "--rate-leak", "17"], /^--rate-leak must be/],
    [
      ["--ntp-port", "123", "--rate-limit", "1", "--rate-leak", "-1"],
      /^--rate-leak must be a whole number from 0 to 16, got "-1"$/,
    ],
    [["--ntp-stratum", "5"], /^--ntp-stratum needs --ntp-port/],
    [["--ntp-clock", "kernel"], /^--ntp-clock needs --ntp-port/],
    [
      ["--udp-engine", "deno"],
      /^--udp-engine needs a UDP service: --daytime-port, --time-port, --ntp-port or --roughtime-port$/,
    ],
    [["--rate-limit", "1"], /^--rate-limit needs a UDP service/],
    [["--daytime-port", "1300", "--rate-limit", "1", "--kod"], /^--kod needs --ntp-port/],
    [["--rate-burst", "4"], /^--rate-burst needs --rate-limit$/],
    [["--kod"], /^--kod needs --rate-limit$/],
    [["--max-clients", "10"], /^--max-clients needs --rate-limit$/],
    [["--nts-cert", "c.pem"], /^--nts-cert needs --nts-ke-port$/],
    [["--nts-keys-file", "k"], /^--nts-keys-file needs --nts-ke-port$/],
    [
      ["--nts-ke-port", "4460", "--nts-cert", "c.pem", "--nts-key", "k.pem"],
      /^--nts-ke-port needs --ntp-port: NTS protects the SNTP service's replies$/,
    ],
    [["--ntp-port", "123", "--nts-ke-port", "4460", "--nts-key", "k.pem"], /needs --nts-cert FILE/],
    [["--ntp-port", "123", "--nts-ke-port", "4460", "--nts-cert", "c.pem"], /needs --nts-key FILE/],
    [["--ntp-port", "123", "--nts-ke-port", "x"], /^--nts-ke-port must be a whole number/],
    [["--nts-ntp-server", "a"], /^--nts-ntp-server needs --nts-ke-port$/],
    [
      [
        "--ntp-port",
        "1",
        "--nts-ke-port",
        "2",
        "--nts-cert",
        "c",
        "--nts-key",
        "k",
        "--nts-ntp-server",
        "a b",
      ],
      /^--nts-ntp-server must be a host name or IP address/,
    ],
    [
      ["--ntp-port", "123", "--nts-ke-port", "45000", "--nts-cert", "c", "--nts-key", "k"],
      /^the default port \(45000\) and --nts-ke-port both ask for TCP port 45000/,
    ],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCommandLine(args), (error: unknown) => {
      assert.ok(error instanceof UsageError, `${args.join(" ")}: ${error}`);
      assert.match(error.message, message, args.join(" "));
      assert.ok(!error.message.includes("\n"));
      return true;
    });
  }
});

const parseToml = await loadTomlParser();
/** A reader that serves one config file's text, as if from disk. */
const fileReader = (text: string) => ({
  parseToml,
  readText: (path: string) => {
    if (path !== "/etc/time-server/time-server.toml") throw new Deno.errors.NotFound(path);
    return text;
  },
});
const CONFIG = ["--config", "/etc/time-server/time-server.toml"];

Deno.test("a config file gives every flag's value, and flags given override it", () => {
  const reader = fileReader(`
[line]
host = "127.0.0.1"
port = 4000
[limits]
max-connections = 50
fairness = false
allow = ["127.0.0.0/8"]
[time]
ntp-port = 1123
ntp-stratum = 3
[log]
level = "debug"
format = "json"
[metrics]
listen = "127.0.0.1:9464"
`);
  const invocation = parseCommandLine([...CONFIG, "--port", "4001"], {}, undefined, reader);
  assert.deepEqual(invocation, {
    action: "serve",
    options: {
      hostname: "127.0.0.1",
      port: 4001,
      maxConnections: 50,
      fairness: false,
      allow: ["127.0.0.0/8"],
      ntpPort: 1123,
      ntpStratum: 3,
    },
    logLevel: "debug",
    logFormat: "json",
    workers: 1,
    metrics: { hostname: "127.0.0.1", port: 9464 },
    nts: null,
    config: "/etc/time-server/time-server.toml",
  });
});

Deno.test("PORT from the environment overrides the config file's port, and --port overrides both", () => {
  const reader = fileReader("[line]\nport = 4000\n");
  const port = (args: string[]) => {
    const invocation = parseCommandLine([...CONFIG, ...args], { PORT: "5000" }, undefined, reader);
    return invocation.action === "serve" ? invocation.options.port : null;
  };
  assert.equal(port([]), 5000);
  assert.equal(port(["--port", "6000"]), 6000);
  const sources = gatherFlags(CONFIG, { PORT: "5000" }, reader).sources;
  assert.equal(sources.get("port"), "environment");
});

Deno.test("a config file's bad value is reported at its line, by its key, in one line", () => {
  const cases: [string, string][] = [
    [
      '[line]\nhost = "127.0.0.1"\nport = 70000\n',
      ':3: [line] port must be a whole number from 0 to 65535, got "70000"',
    ],
    ["[time]\nkod = true\n", ":2: [time] kod needs [time] rate-limit"],
    [
      '[log]\nlevel = "loud"\n',
      ':2: [log] level must be one of error, warn, info, debug, got "loud"',
    ],
    [
      "[limits]\nshutdown-timeout = -1\n",
      ':2: [limits] shutdown-timeout must be a number of seconds from 0 to 86400, got "-1"',
    ],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseCommandLine(CONFIG, {}, undefined, fileReader(text)),
      (error: unknown) => {
        assert.ok(error instanceof UsageError);
        assert.equal(error.message, `/etc/time-server/time-server.toml${message}`);
        return true;
      },
    );
  }
  // The same mistake given as a flag is the flag's.
  assert.throws(
    () => parseCommandLine([...CONFIG, "--port", "70000"], {}, undefined, fileReader("")),
    /^UsageError: --port must be a whole number/,
  );
});

Deno.test("--config names a file that must be there", () => {
  assert.throws(
    () => parseCommandLine(["--config", "/nowhere.toml"], {}, undefined, fileReader("")),
    /--config \/nowhere.toml: no such file/,
  );
  assert.throws(
    () => parseCommandLine(["--config", "a", "--config", "b"], {}, undefined, fileReader("")),
    /--config is given twice/,
  );
});

Deno.test("time-server check says where each value came from", () => {
  const reader = fileReader('[line]\ntz = "UTC"\n\n[limits]\nmax-connections = 50\n');
  const text = describeConfiguration(
    gatherFlags([...CONFIG, "--max-connections-per-ip", "4"], { PORT: "5000" }, reader),
  );
  assert.match(text, /^# read from \/etc\/time-server\/time-server.toml$/m);
  assert.match(text, /^port = 5000 +# environment$/m);
  assert.match(text, /^tz = "UTC" +# file, line 2$/m);
  assert.match(text, /^max-connections = 50 +# file, line 5$/m);
  assert.match(text, /^max-connections-per-ip = 4 +# flag$/m);
  assert.match(text, /^fairness = true +# default$/m);
  assert.match(text, /^# ntp-port = \(off\) +# default$/m);
  // What it prints is a config file that reads back to the same values.
  const values =
    gatherFlags(["--config", "/etc/time-server/time-server.toml"], {}, fileReader(text))
      .values;
  assert.equal(values["max-connections"], "50");
  assert.equal(values["max-connections-per-ip"], "4");
  assert.equal(values.port, "5000");
});
