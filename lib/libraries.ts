// Loading a system library (libc, GnuTLS, Nettle) through FFI from the first of its known
// paths that is granted.

/** Whether FFI is granted for one of `paths` (scoped grants match absolute paths only). */
export function libraryGranted(paths: readonly string[]): boolean {
  return paths.some((path) =>
    Deno.permissions.querySync({ name: "ffi", path }).state === "granted"
  );
}

/**
 * Opens the first of `paths` that FFI may load and that exists; throws
 * `Deno.errors.NotCapable` when none is granted, or what `Deno.dlopen` threw last.
 */
export function loadFirst<S extends Deno.ForeignLibraryInterface>(
  name: string,
  paths: readonly string[],
  symbols: S,
): Deno.DynamicLibrary<S>["symbols"] {
  let failure: unknown = new Deno.errors.NotCapable(
    `no FFI permission for ${name}: grant --allow-ffi=${paths.join(",")}`,
  );
  for (const path of paths) {
    if (Deno.permissions.querySync({ name: "ffi", path }).state !== "granted") continue;
    try {
      return Deno.dlopen(path, symbols).symbols;
    } catch (error) {
      failure = error; // not on this distribution: try the next
    }
  }
  throw failure;
}

/**
 * What a library lacks here, as a phrase that follows "needs", or null when it loads:
 * used to refuse NTS at start with one line that says why.
 */
export function libraryMissing(
  name: string,
  paths: readonly string[],
  load: () => unknown,
): string | null {
  if (!libraryGranted(paths)) return `FFI permission for ${name}: --allow-ffi=${paths.join(",")}`;
  try {
    load();
    return null;
  } catch (error) {
    return `${name}, which did not load: ${error instanceof Error ? error.message : error}`;
  }
}
