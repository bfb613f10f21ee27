/**
 * Taking turns at compiling the helper. bun:ffi `cc` rewrites TinyCC's own
 * headers (stdarg.h, stddef.h, …) into one directory shared by every process
 * of the user (`$TMPDIR/bun-cc-<uid>`), truncating each file first, on every
 * call: a process compiling at that moment can read a half-written header
 * and fail (seen as "invalid type" in stdio.h when several qbun processes
 * started at once). qbun processes therefore compile one at a time, under a
 * lock directory (mkdir is atomic) that names its holder; a holder that died,
 * or held it for seconds, is overtaken.
 * @module
 */
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Longer than any compile takes; past it, a lock is someone's leftover. */
const STALE_MS = 10_000;

/** Run `compile` while holding the per-user compile lock (best effort: never fails for the lock's sake). */
export function withCompileLock<T>(compile: () => T): T {
  const lock = join(tmpdir(), `qbun-cc-${process.getuid?.() ?? 0}.lock`);
  const held = acquire(lock);
  try {
    return compile();
  } finally {
    if (held) rmSync(lock, { recursive: true, force: true });
  }
}

function acquire(lock: string): boolean {
  const giveUpAt = Date.now() + STALE_MS;
  for (;;) {
    try {
      mkdirSync(lock, { mode: 0o700 });
      writeFileSync(join(lock, "pid"), String(process.pid));
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") return false; // no lock possible here: compile anyway
    }
    if (isStale(lock) || Date.now() > giveUpAt) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    Bun.sleepSync(5); // a compile takes tens of milliseconds
  }
}

function isStale(lock: string): boolean {
  try {
    const pid = Number(readFileSync(join(lock, "pid"), "utf8"));
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
        return false;
      } catch (error) {
        return (error as NodeJS.ErrnoException).code === "ESRCH";
      }
    }
  } catch {
    // No pid yet: it was made a moment ago, or its maker died in between.
  }
  try {
    return Date.now() - statSync(lock).mtimeMs > 2_000;
  } catch {
    return true; // gone meanwhile: try again
  }
}
