// What every benchmark reports with: medians, numbers as people read them, the machine.

/** The median of `values`; NaN for none. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A number for a table: grouped thousands, `digits` decimals, "–" when it is not finite. */
export function format(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/** The machine a run is measured on, as the tables name it. */
export function machine(): Record<string, string | number> {
  let cpu = "unknown";
  try {
    // Deno reads /proc files of the system only with --allow-all; cat needs nothing more.
    const output = new Deno.Command("cat", { args: ["/proc/cpuinfo"] }).outputSync();
    cpu = new TextDecoder().decode(output.stdout).match(/model name\s*:\s*(.*)/)?.[1] ?? cpu;
  } catch {
    // Not Linux.
  }
  return {
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    arch: Deno.build.arch,
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    deno: Deno.version.deno,
  };
}
