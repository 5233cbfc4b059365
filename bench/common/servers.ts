// Servers the benchmarks measure, as subprocesses: started in the project's folder, waited
// for, stopped.

const root = new URL("../..", import.meta.url).pathname;

/** Starts `argv` in the project's folder (or `cwd`: another tree's) with its output discarded. */
export function spawnServer(argv: string[], cwd: string = root): Deno.ChildProcess {
  return new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** Resolves once something accepts connections on `port`; rejects if `child` exits first. */
export async function waitForPort(port: number, child: Deno.ChildProcess): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = performance.now() + 15000;
  while (performance.now() < deadline && !exited) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(exited ? "the server exited at start" : "the server did not start listening");
}

/**
 * Starts a server (`argv`, run in the project's folder, its output discarded) and
 * resolves once it accepts connections on `port`; kills it if it does not.
 */
export async function startServer(
  argv: string[],
  port: number,
  cwd?: string,
): Promise<Deno.ChildProcess> {
  const child = spawnServer(argv, cwd);
  try {
    await waitForPort(port, child);
    return child;
  } catch (error) {
    child.kill("SIGKILL");
    await child.status;
    throw error;
  }
}

/** Stops a server with SIGTERM (it drains) and waits for it to exit. */
export async function stopServer(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await child.status;
}
