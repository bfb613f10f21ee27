/**
 * Helpers shared by the blob tests: the backends, and counts of what the
 * blob backends leave behind (names in /dev/shm, mappings in this process).
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import type { BlobBackend } from "../../src/blob/index.ts";
import { shmListing } from "./env.ts";

/** Every blob backend. */
export const BACKENDS: BlobBackend[] = ["memfd", "posix", "tempfile"];

/** The blob backends' names in /dev/shm ("qbun-blob-*"); other test runs on the machine add their own files. */
export const blobShmNames = (): string[] => shmListing().filter((name) => name.startsWith("qbun-blob-"));

/**
 * Lines of /proc/self/maps that map blob memory: memfds labelled
 * "qbun-blob", unlinked POSIX objects "/dev/shm/qbun-blob-*", and unnamed
 * temp files in the temp dir (O_TMPFILE shows as "#<inode>", the fallback
 * as "qbun-XXXXXX"; both "(deleted)").
 */
export function blobMappingCount(): number {
  const tmp = os.tmpdir().replace(/\/$/, "");
  const tempFile = new RegExp(`${tmp.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/(#\\d+|qbun-[A-Za-z0-9]{6}) \\(deleted\\)$`);
  return readFileSync("/proc/self/maps", "utf8")
    .split("\n")
    .filter((line) => line.includes("/memfd:qbun-blob") || line.includes("/dev/shm/qbun-blob-") || tempFile.test(line)).length;
}

/** Resolves once `condition()` holds; fails after `ms` (polls every few ms: for tests only). */
export async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}
