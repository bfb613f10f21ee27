/**
 * Taking turns at compiling the helper. bun:ffi `cc` rewrites TinyCC's own
 * headers (stdarg.h, stddef.h, …) into one directory shared by every process
 * of the user (`$TMPDIR/bun-cc-<uid>`), truncating each file first, on every
 * call: a process compiling at that moment can read a half-written header
 * and fail (seen as "invalid type" in stdio.h when several qbun processes
 * started at once). qbun processes therefore compile one at a time, under a
 * lock directory (mkdir is atomic) that names its holder. A dead holder's
 * lock is taken over; after waiting seconds for a live one, qbun compiles
 * anyway (the lock is a courtesy between qbun processes, never a failure).
 * @module
 */
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Longer than any compile takes; past it, stop waiting. */
const STALE_MS = 10_000;

/** Run `compile` while holding the per-user compile lock (best effort: never fails for the lock's sake). */
export function withCompileLock<T>(compile: () => T): T {
  const lock = join(tmpdir(), `qbun-cc-${process.getuid?.() ?? 0}.lock`);
  const held = acquire(lock);
  try {
    return compile();
  } finally {
    // Only our own: a holder overtaken as stale must not remove its successor's lock.
    if (held && holder(lock) === process.pid) remove(lock);
  }
}

/** Remove a lock directory; a failure only means the next process waits for it to go stale. */
function remove(lock: string): void {
  try {
    rmSync(lock, { recursive: true, force: true });
  } catch {}
}

/** The pid named in the lock, if any. */
function holder(lock: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(lock, "pid"), "utf8"));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
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
    if (Date.now() > giveUpAt) return false; // compile unlocked rather than fail
    if (isStale(lock)) {
      // Rename first: of two processes that both found it stale, one removes it.
      const aside = `${lock}.stale-${process.pid}`;
      try {
        renameSync(lock, aside);
        remove(aside);
      } catch {}
      continue;
    }
    Bun.sleepSync(5); // a compile takes tens of milliseconds
  }
}

function isStale(lock: string): boolean {
  const pid = holder(lock);
  if (pid === process.pid) return true; // left by this very process (an exception between make and remove)
  if (pid !== undefined) {
    try {
      process.kill(pid, 0);
      return false;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH";
    }
  }
  // No pid yet: it was made a moment ago, or its maker died in between.
  try {
    return Date.now() - statSync(lock).mtimeMs > 2_000;
  } catch {
    return true; // gone meanwhile: try again
  }
}
