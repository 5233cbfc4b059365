// The bystander and the attackers' sockets: visits timed, PROXY headers, the server's footprint.

import net from "node:net";

/** Ten attacker addresses; the bystander comes from 127.0.0.2. */
export const ATTACKERS = Array.from({ length: 10 }, (_, i) => `127.0.0.${10 + i}`);
export const BYSTANDER = "127.0.0.2";
export const JAM = /^JAM \d\d:\d\d:\d\d\r\n/;

export interface Sample {
  rssKiB: number;
  fds: number;
}

/** The server's RSS and open descriptors, read from /proc by a shell (Deno keeps /proc for --allow-all). */
export function sample(pid: number): Sample {
  const { stdout } = new Deno.Command("sh", {
    args: ["-c", `grep VmRSS /proc/${pid}/status; ls /proc/${pid}/fd | wc -l`],
    stderr: "null",
  }).outputSync();
  const text = new TextDecoder().decode(stdout);
  const rssKiB = Number(text.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
  const fds = Number(text.trim().split("\n").at(-1)) || 0;
  return { rssKiB, fds };
}

/** A PROXY v1 header for a client at `address`, as HAProxy would send it. */
export function proxyHeader(address: string, port: number): string {
  return `PROXY TCP4 ${address} 127.0.0.1 ${port} 45000\r\n`;
}

/** Opens a socket from `localAddress`; resolves once connected, rejects on error. */
export function connect(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** One bystander visit: connect, TIME, first line back. */
export async function visit(port: number, proxy: boolean): Promise<{ line: string; ms: number }> {
  const started = performance.now();
  let socket: net.Socket | undefined;
  try {
    socket = await connect(port, BYSTANDER);
    const line = await new Promise<string>((resolve) => {
      let text = "";
      const timer = setTimeout(() => resolve(text), 2000);
      socket!.setEncoding("utf8");
      socket!.on("data", (chunk: string) => {
        text += chunk;
        if (text.includes("\n")) {
          clearTimeout(timer);
          resolve(text);
        }
      });
      socket!.once("close", () => {
        clearTimeout(timer);
        resolve(text);
      });
      socket!.write((proxy ? proxyHeader(BYSTANDER, 40000) : "") + "TIME\r\nQUIT\r\n");
    });
    return { line, ms: performance.now() - started };
  } catch {
    return { line: "", ms: performance.now() - started };
  } finally {
    socket?.destroy();
  }
}
