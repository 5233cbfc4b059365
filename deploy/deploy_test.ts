// Tests of the shipping files: one pinned Deno version, a valid systemd unit, a complete container build.

import assert from "node:assert/strict";
import { mainModule, runMain } from "../testing/test_util.ts";

/** The project's root; every path below is relative to it. */
const root = new URL("..", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));
const pinned = read("./.dvmrc").trim();

Deno.test("the Deno version is pinned once, in .dvmrc, and every other mention agrees", () => {
  assert.match(pinned, /^\d+\.\d+\.\d+$/);
  assert.equal(read("./Dockerfile").match(/^ARG DENO_VERSION=(\S+)$/m)?.[1], pinned);
  const readmeVersions = [...read("./README.md").matchAll(/deno@(\d+\.\d+\.\d+)/g)].map((m) =>
    m[1]
  );
  assert.ok(readmeVersions.length > 0);
  for (const version of readmeVersions) assert.equal(version, pinned);
  for (const workflow of ["./.github/workflows/ci.yml", "./.github/workflows/release.yml"]) {
    assert.match(read(workflow), /deno-version-file: \.dvmrc/, workflow);
  }
});

Deno.test("the container runs as non-root, exposes 45000 and checks health with a real TIME", () => {
  const dockerfile = read("./Dockerfile");
  assert.match(dockerfile, /^FROM denoland\/deno:\$\{DENO_VERSION\} AS build$/m);
  assert.match(dockerfile, /^USER nonroot$/m);
  assert.match(dockerfile, /^EXPOSE 45000$/m);
  assert.match(dockerfile, /^STOPSIGNAL SIGTERM$/m);
  assert.match(
    dockerfile,
    /HEALTHCHECK[^\n]*\\\n\s*CMD \["\/usr\/local\/bin\/time-server", "client"/,
  );
});

function hasSystemdAnalyze(): boolean {
  try {
    return new Deno.Command("systemd-analyze", { args: ["--version"] }).outputSync().success;
  } catch {
    return false;
  }
}

const systemd = Deno.build.os === "linux" && hasSystemdAnalyze();
if (!systemd) {
  console.log("deploy_test.ts: skipping the systemd unit check: systemd-analyze is not installed");
}

Deno.test({
  name: "the systemd unit passes systemd-analyze verify and carries the hardening",
  ignore: !systemd,
  fn() {
    const unit = read("./deploy/time-server.service");
    for (
      const setting of [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        // AF_UNIX for $NOTIFY_SOCKET alone: Type=notify.
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Type=notify",
        "ExecStart=/usr/local/bin/time-server --config /etc/time-server/time-server.toml",
        "ExecReload=/bin/kill -HUP \\$MAINPID",
        "Restart=on-failure",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectClock=yes",
      ]
    ) {
      assert.match(unit, new RegExp(`^${setting}$`, "m"), setting);
    }
    assert.match(unit, /^MemoryMax=\d+[KMG]$/m);
    // verify wants ExecStart to exist: deploy/README.md gives the commands that check a copy
    // running /bin/true instead, and this runs them as written there.
    const readme = read("./deploy/README.md");
    const script = readme.match(/```sh\n(d=\$\(mktemp -d\)\n[^`]*systemd-analyze verify[^`]*)```/)
      ?.[1];
    assert.ok(
      script,
      "deploy/README.md gives the commands that verify the unit without the binary",
    );
    const result = new Deno.Command("sh", {
      args: ["-c", script],
      cwd: new URL("..", import.meta.url).pathname,
    }).outputSync();
    const stderr = new TextDecoder().decode(result.stderr);
    assert.equal(new TextDecoder().decode(result.stdout), "the unit is valid\n", stderr);
    assert.equal(stderr.trim(), "", "no warnings");
  },
});

Deno.test("the container build copies every module the binary is made of", async () => {
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "main.ts"],
    cwd: root.pathname,
    stderr: "null",
  }).output();
  const graph = JSON.parse(new TextDecoder().decode(stdout)) as {
    modules: { specifier: string }[];
  };
  const modules = graph.modules.map((module) => module.specifier)
    .filter((specifier) => specifier.startsWith(root.href))
    .map((specifier) => specifier.slice(root.href.length));
  // Loaded with new Worker(…), and the tool that builds the binary: not reached by imports.
  modules.push("server/worker.ts", "tools/compile.ts");
  assert.ok(modules.includes("server/server.ts"), modules.join(", "));
  const copied = [...read("./Dockerfile").matchAll(/^COPY (?!--from)(.+) \S+$/gm)]
    .flatMap((match) => match[1].split(/\s+/));
  for (const module of modules) {
    assert.ok(
      copied.some((source) =>
        source === module || (source.endsWith("/") && module.startsWith(source))
      ),
      `the Dockerfile does not copy ${module}`,
    );
  }
});

Deno.test("FFI is granted for libc's, GnuTLS's and Nettle's paths only, the same in every task that runs the server", async () => {
  const { FFI_PATHS } = await import("../nts/setup.ts");
  const config = JSON.parse(read("./deno.json"));
  for (const task of ["start", "dev", "test"]) {
    const flags = (config.tasks[task] as string).split(/\s+/).filter((w) =>
      w.startsWith("--allow-ffi")
    );
    assert.deepEqual(flags, [`--allow-ffi=${FFI_PATHS.join(",")}`], `deno task ${task}`);
  }
});

Deno.test("the config file the unit reads is valid, as time-server check says", async () => {
  const { code, stdout, stderr } = await runMain(["check", "--config", "deploy/time-server.toml"], {
    command: [Deno.execPath(), "run", "--allow-read", "--allow-env=PORT", mainModule],
  });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^ntp-port = 123 +# file, line \d+$/m);
  assert.match(stdout, /^kod = true +# file, line \d+$/m);
});
