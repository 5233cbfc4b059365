// The "deadlines" scenario: how late the idle timeout closes silent connections while the server is saturated.

/** The idle timeout the server runs with in this scenario, in seconds. */
export const DEADLINE_IDLE_TIMEOUT = 1;

/**
 * Opens `waves` × `perWave` silent connections to `port`, a wave every `everyMs`, and
 * resolves with how late each was closed past the idle timeout, in µs (sorted), and how
 * many were not closed within 5 s past it. A sweep runs at most every quarter of the
 * timeout and allows one period of slack, so by design a close comes 0–0.5 s late at
 * a 1 s timeout; what a saturated loop adds to that is what this measures.
 */
export async function measureDeadlines(
  port: number,
  { waves = 5, perWave = 20, everyMs = 500 } = {},
): Promise<{ lateUs: number[]; missed: number }> {
  const lateUs: number[] = [];
  let missed = 0;
  const watch = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const opened = performance.now();
    const limit = DEADLINE_IDLE_TIMEOUT * 1000 + 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      conn.read(new Uint8Array(64)).then(() => true, () => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), limit)),
    ]);
    clearTimeout(timer);
    if (closed) lateUs.push((performance.now() - opened - DEADLINE_IDLE_TIMEOUT * 1000) * 1000);
    else missed++;
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  };
  const watching: Promise<void>[] = [];
  for (let wave = 0; wave < waves; wave++) {
    for (let i = 0; i < perWave; i++) watching.push(watch());
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  await Promise.all(watching);
  return { lateUs: lateUs.sort((a, b) => a - b), missed };
}
