/**
 * Hiding libc6-dev from a command, for the tests of what runs without it
 * (the standalone executable, an installed package): a private mount
 * namespace with an empty tmpfs over /usr/include and an empty file over
 * every glibc `libc.so` link script.
 * @module
 */
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";

/**
 * Runs "$@" after hiding libc6-dev in the current (private) mount namespace:
 * an empty tmpfs over /usr/include, an empty file bind-mounted over every
 * glibc libc.so link script listed in $QBUN_HIDE. Reports the proof on stderr.
 */
export const HIDE_SCRIPT = `
set -eu
if [ -d /usr/include ]; then mount -t tmpfs -o size=64k,mode=0755 qbun-no-headers /usr/include; fi
if [ -e /usr/include/stdio.h ]; then echo "hiding failed: /usr/include/stdio.h is visible" >&2; exit 97; fi
old_ifs=$IFS; IFS=:
for f in $QBUN_HIDE; do
  mount --bind "$QBUN_EMPTY_FILE" "$f"
  if [ -s "$f" ]; then echo "hiding failed: $f still has content" >&2; exit 97; fi
done
IFS=$old_ifs
echo "hidden: /usr/include has no stdio.h; empty link script(s): $QBUN_HIDE" >&2
exec "$@"
`;

/** Why the no-libc6-dev tests cannot run here, or undefined when they can. */
export function namespaceUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "mounting in a namespace needs root";
  const probe = Bun.spawnSync(["unshare", "-m", "--propagation", "private", "true"], { stdout: "ignore", stderr: "ignore" });
  if (probe.exitCode !== 0) return "unshare -m is not available";
  return undefined;
}

/**
 * Every glibc `libc.so` linker script a compiler could use: found through
 * gcc when there is one and in the usual library directories (including
 * multiarch ones such as `x86_64-linux-gnu`), resolved to real paths. Only
 * text link scripts qualify, never a real shared library.
 */
export function libcLinkScripts(): string[] {
  const dirs = new Set(["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib"]);
  for (const base of ["/usr/lib", "/lib"]) {
    try {
      for (const name of readdirSync(base)) if (name.includes("-linux-")) dirs.add(join(base, name));
    } catch {}
  }
  const viaGcc = Bun.spawnSync(["gcc", "-print-file-name=libc.so"], { stdout: "pipe", stderr: "ignore" });
  const printed = viaGcc.success ? viaGcc.stdout.toString().trim() : "";
  if (isAbsolute(printed)) dirs.add(dirname(printed));
  const found = new Set<string>();
  for (const dir of dirs) {
    const path = join(dir, "libc.so");
    try {
      const real = realpathSync(path);
      const head = readFileSync(real).subarray(0, 512).toString("latin1");
      if (/GNU ld script|GROUP\s*\(/.test(head)) found.add(real);
    } catch {}
  }
  return [...found];
}
