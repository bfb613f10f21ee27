/**
 * Leftovers of dead processes that `doctor` reports and `clean` removes:
 * libqb connection files in /dev/shm no live process uses, and (in
 * filesystem-socket mode) service socket files nobody listens on.
 * @module
 */
import { existsSync, lstatSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { QbunSystemError } from "../../ffi/errors.ts";
import { UnixStream } from "../../src/unix/index.ts";
import { ringSets, type RingSet } from "./rings.ts";
import { FORCE_FILESYSTEM_SOCKETS } from "./services.ts";

/** One thing that can go. */
export interface StaleItem {
  /** What to remove: a directory, a flat ring file, or a socket file. */
  readonly path: string;
  /** `ring-dir` (libqb 2.x connection directory), `ring-file` (libqb ≤ 1.0.3 flat file) or `socket`. */
  readonly kind: "ring-dir" | "ring-file" | "socket";
  /** The service it belonged to, when its name says. */
  readonly service: string | undefined;
  /** Memory it takes in /dev/shm (0 for sockets). */
  readonly bytes: number;
  /** Why it is judged stale. */
  readonly why: string;
}

/** Where and what to look for. */
export interface StaleOptions {
  /** Directory of connection files (default /dev/shm). */
  shmDir?: string;
  /**
   * Directory of filesystem-mode service sockets. Scanned when given, or
   * (as /tmp) when /etc/libqb/force-filesystem-sockets exists; otherwise
   * libqb makes no socket files and none are looked at.
   */
  socketDir?: string;
  /** Only this service's leftovers. */
  service?: string;
}

/** Finds what dead processes left behind. */
export async function findStale(options: StaleOptions = {}): Promise<StaleItem[]> {
  const items: StaleItem[] = [];
  for (const set of ringSets(options.shmDir)) {
    if (!set.stale || (options.service !== undefined && set.service !== options.service)) continue;
    items.push(...ringItems(set));
  }
  const socketDir = options.socketDir ?? (existsSync(FORCE_FILESYSTEM_SOCKETS) ? "/tmp" : undefined);
  if (socketDir !== undefined) items.push(...(await deadSockets(socketDir, options.service)));
  return items;
}

function ringItems(set: RingSet): StaleItem[] {
  const why = `no live process uses it (${set.why})`;
  if (set.layout === "dir") return [{ path: set.path, kind: "ring-dir", service: set.service, bytes: set.allocated, why }];
  return set.files.map((f) => ({ path: f.path, kind: "ring-file" as const, service: set.service, bytes: f.allocated, why }));
}

/** Socket files in `dir` that refuse connections: their listener is gone. */
async function deadSockets(dir: string, service: string | undefined): Promise<StaleItem[]> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const items: StaleItem[] = [];
  for (const name of names) {
    if (service !== undefined && name !== service) continue;
    const path = join(dir, name);
    try {
      if (!lstatSync(path).isSocket()) continue;
    } catch {
      continue;
    }
    try {
      const stream = await UnixStream.connect(path, { signal: AbortSignal.timeout(1_000) });
      stream.close(); // someone listens: alive
    } catch (error) {
      if (error instanceof QbunSystemError && error.code === "ECONNREFUSED") {
        items.push({ path, kind: "socket", service: name, bytes: 0, why: "connecting is refused: nothing listens on it" });
      }
    }
  }
  return items;
}

/** What removing gave, per item. */
export interface RemoveResult {
  readonly removed: string[];
  readonly failed: { path: string; error: string }[];
}

/** Removes `items` (directories with their files). */
export function removeStale(items: readonly StaleItem[]): RemoveResult {
  const result: RemoveResult = { removed: [], failed: [] };
  for (const item of items) {
    try {
      rmSync(item.path, { recursive: item.kind === "ring-dir", force: true });
      result.removed.push(item.path);
    } catch (error) {
      result.failed.push({ path: item.path, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return result;
}
