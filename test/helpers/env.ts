/**
 * Test environment helpers: unique names, temporary directories, and the
 * process's resource counts (open fds, /dev/shm entries) for leak tests.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

let counter = 0;

/** A name no other test (or concurrent test run) uses: includes the pid. */
export function uniqueName(tag: string): string {
  return `qbun-test-${process.pid}-${tag}-${++counter}`;
}

/** A fresh temporary directory, removed on dispose (`using dir = tempDir("x")`). */
export function tempDir(tag: string): Disposable & { readonly path: string; file(name: string): string } {
  const path = mkdtempSync(join(os.tmpdir(), `qbun-${process.pid}-${tag}-`));
  return {
    path,
    file: (name: string) => join(path, name),
    [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** The open fds of this process, as numbers. */
export function openFds(): number[] {
  return readdirSync("/proc/self/fd").map(Number);
}

/** How many fds this process has open. */
export function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

/** The entries of /dev/shm, sorted. */
export function shmListing(): string[] {
  return readdirSync("/dev/shm").sort();
}

/**
 * The fd count once dropped handles have been collected: runs a full GC,
 * lets FinalizationRegistry callbacks run, and repeats until the count stops
 * falling (or reaches `target`).
 */
export async function settledFdCount(target?: number): Promise<number> {
  let last = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 20; round++) {
    Bun.gc(true);
    await Bun.sleep(round < 5 ? 1 : 20);
    const now = openFdCount();
    if (target !== undefined && now <= target) return now;
    if (now >= last && round >= 3) return now;
    last = Math.min(last, now);
  }
  return openFdCount();
}

/** Resolves after `ms`, with "timeout", unless `promise` settles first (its value). */
export async function settlesWithin<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: Timer | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `promise` is still pending after `ms` (it is observed, never left unhandled). */
export async function isPendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol("pending");
  let timer: Timer | undefined;
  const timeout = new Promise<typeof marker>((resolve) => {
    timer = setTimeout(() => resolve(marker), ms);
  });
  try {
    return (await Promise.race([promise.then(() => null, () => null), timeout])) === marker;
  } finally {
    clearTimeout(timer);
  }
}

/** Text to bytes. */
export const bytes = (s: string) => new TextEncoder().encode(s);
/** Bytes to text. */
export const text = (b: Uint8Array | null | undefined) => (b == null ? null : new TextDecoder().decode(b));

/** The error `fn` (or the promise) fails with; fails the test if it succeeds. */
export async function caught(fn: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof fn === "function" ? fn() : fn);
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure, but it succeeded");
}

/** libqb's switch to filesystem sockets (`/tmp/NAME` instead of the abstract name). */
export const FORCE_FILESYSTEM_SOCKETS = "/etc/libqb/force-filesystem-sockets";

/** Whether a test may create {@link FORCE_FILESYSTEM_SOCKETS}: root, and the file is not there already. */
export const canForceFilesystemSockets = process.getuid?.() === 0 && !existsSync(FORCE_FILESYSTEM_SOCKETS);

/** Run `body` with {@link FORCE_FILESYSTEM_SOCKETS} present; afterwards remove it (and /etc/libqb if it was made here). */
export async function withFilesystemSockets(body: () => Promise<void>): Promise<void> {
  const hadDir = existsSync("/etc/libqb");
  mkdirSync("/etc/libqb", { recursive: true });
  writeFileSync(FORCE_FILESYSTEM_SOCKETS, "");
  try {
    await body();
  } finally {
    rmSync(FORCE_FILESYSTEM_SOCKETS, { force: true });
    if (!hadDir) rmSync("/etc/libqb", { recursive: true, force: true });
  }
}
