// Run inside a throwaway network namespace (`unshare -n`): serves SNTP on port 123, which
// sntp, ntpdate and ntpdig insist on, asks it with each, and prints what they said as JSON.
// Usage: unshare -n deno run --unstable-net --allow-net --allow-run --allow-read=. \
//          --allow-ffi=… testing/namespace_clients.ts deno|mmsg

import { createLogger } from "../lib/log.ts";
import { serve } from "../server/server.ts";
import { runTool } from "./time_clients.ts";

const engine = Deno.args[0] === "mmsg" ? "mmsg" : "deno";
const up = await new Deno.Command("ip", { args: ["link", "set", "lo", "up"] }).output();
if (!up.success) {
  throw new Error(`ip link set lo up failed: ${new TextDecoder().decode(up.stderr)}`);
}
const server = serve({
  hostname: "127.0.0.1",
  port: 0,
  ntpPort: 123,
  udpEngine: engine,
  logger: createLogger({ level: "error" }),
});
try {
  const results = {
    sntp: await runTool("sntp", ["127.0.0.1"]),
    ntpdate: await runTool("ntpdate", ["-q", "127.0.0.1"]),
    ntpdig: await runTool("ntpdig", ["-j", "127.0.0.1"]),
    answered: 0,
  };
  results.answered = server.stats.requestsNtp;
  console.log(JSON.stringify(results));
} finally {
  await server.shutdown();
}
