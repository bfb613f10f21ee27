/**
 * Leftovers of dead processes that `doctor` reports and `clean` removes:
 * libqb connection files in /dev/shm no live process uses, and (in
 * filesystem-socket mode) socket files no socket is bound to any more.
 *
 * Nothing here connects to anything: a socket file is judged by the
 * kernel's table of bound sockets (/proc/net/unix). Each item records what
 * it was when listed (device and inode; for rings, the pids and owner), and
 * {@link removeStale} checks all of it again right before removing, so a
 * file re-created or taken over meanwhile (say while `clean` waited for an
 * answer) is left alone.
 *
 * Limit: /proc/net/unix lists the sockets of this network namespace only. A
 * socket file in a directory shared with another namespace (a container's
 * bind-mounted /tmp) whose listener lives there looks dead from here: run
 * clean inside the namespace the services run in.
 * @module
 */
import { existsSync, lstatSync, readdirSync, realpathSync, rmSync, type BigIntStats } from "node:fs";
import { basename, dirname, join } from "node:path";
import { errorMessage } from "../io.ts";
import { flatSetPrefix, ringSets, type RingSet } from "./rings.ts";
import { FORCE_FILESYSTEM_SOCKETS } from "./services.ts";
import { unixSockets, type UnixSocketEntry } from "./unix-sockets.ts";

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
  /** Device of the file when listed: removal needs the path to still name the same file. */
  readonly dev: number;
  /** Inode of the file when listed (with `dev`, the file's identity). */
  readonly ino: number;
  /**
   * Status-change time when listed, in nanoseconds (as text): with dev and
   * ino it tells a re-created file apart even where the filesystem hands
   * the freed inode number straight out again (ext4 does).
   */
  readonly ctimeNs: string;
  /** Owner uid when listed. */
  readonly uid: number;
  /** Rings: the server pid in the name (its set must still be stale at removal). */
  readonly serverPid?: number;
  /** Rings: the client pid in the name. */
  readonly clientPid?: number;
}

/** Where and what to look for. */
export interface StaleOptions {
  /** Directory of connection files (default /dev/shm). */
  shmDir?: string;
  /**
   * Directory of filesystem-mode service sockets. When given, every socket
   * file in it is considered (the caller named the directory). Otherwise,
   * only when /etc/libqb/force-filesystem-sockets exists, /tmp is scanned
   * for files named the way libqb names its sockets (see
   * {@link looksLikeLibqbSocket}); without that mode libqb makes no socket
   * files and none are looked at.
   */
  socketDir?: string;
  /** Only this service's leftovers. */
  service?: string;
  /**
   * Consider only socket files named the way libqb names them. Default:
   * true for the implicit /tmp, false for a `socketDir` the caller gave.
   */
  onlyLibqbNames?: boolean;
}

/** libqb's datagram sockets of one socket-transport connection in filesystem mode: `qb-<service>-<spid>-<cpid>-<fd>-<channel>`. */
const CONNECTION_SOCKET = /^qb-(.+)-\d+-\d+-\d+-(?:request|response|event|event-tx)$/;

/**
 * Whether a file name in libqb's socket directory is one libqb makes: a
 * connection's datagram socket (`qb-<service>-<spid>-<cpid>-<fd>-request`,
 * `-response`, `-event`, `-event-tx`), or a service socket `<service>` for
 * a service known from elsewhere (`services`: named by connection files in
 * /dev/shm, by connection sockets, or by the user).
 */
export function looksLikeLibqbSocket(name: string, services: ReadonlySet<string>): boolean {
  return CONNECTION_SOCKET.test(name) || services.has(name);
}

/** Finds what dead processes left behind. */
export async function findStale(options: StaleOptions = {}): Promise<StaleItem[]> {
  const items: StaleItem[] = [];
  const sets = ringSets(options.shmDir);
  for (const set of sets) {
    if (!set.stale || (options.service !== undefined && set.service !== options.service)) continue;
    items.push(...ringItems(set));
  }
  const everySocketFile = !(options.onlyLibqbNames ?? options.socketDir === undefined);
  const socketDir = options.socketDir ?? (existsSync(FORCE_FILESYSTEM_SOCKETS) ? "/tmp" : undefined);
  if (socketDir !== undefined) {
    const known = new Set(sets.map((s) => s.service).filter((s): s is string => s !== undefined));
    if (options.service !== undefined) known.add(options.service);
    items.push(...deadSockets(socketDir, { everySocketFile, known, service: options.service }));
  }
  return items;
}

function ringItems(set: RingSet): StaleItem[] {
  const why = `no live process uses it (${set.why})`;
  const owner = { serverPid: set.serverPid, clientPid: set.clientPid };
  if (set.layout === "dir") {
    const st = lstatSafe(set.path);
    return st ? [{ path: set.path, kind: "ring-dir", service: set.service, bytes: set.allocated, why, ...identity(st), ...owner }] : [];
  }
  return set.files.flatMap((f) => {
    const st = lstatSafe(f.path);
    return st ? [{ path: f.path, kind: "ring-file" as const, service: set.service, bytes: f.allocated, why, ...identity(st), ...owner }] : [];
  });
}

/**
 * What live sockets are bound to, from /proc/net/unix: listening
 * stream/seqpacket sockets and bound datagram sockets. (Accepted stream
 * sockets show their listener's path too, but say nothing about whether
 * anyone still listens.) The kernel shows each path as it was given to
 * bind(), so a path is compared as given, with its directory resolved
 * (bound through a symlink), and a relative one by its last part.
 */
class BoundSockets {
  readonly #paths = new Set<string>();
  readonly #relativeNames = new Set<string>();

  constructor(sockets: readonly UnixSocketEntry[]) {
    for (const s of sockets) {
      if (!(s.listening || s.type === "dgram") || s.path === "" || s.path.startsWith("@")) continue;
      if (!s.path.startsWith("/")) {
        this.#relativeNames.add(basename(s.path));
        continue;
      }
      this.#paths.add(s.path);
      this.#paths.add(resolved(s.path));
    }
  }

  /** Whether a live socket may be bound to the file at `path` (when unsure: yes). */
  has(path: string): boolean {
    return this.#paths.has(path) || this.#paths.has(resolved(path)) || this.#relativeNames.has(basename(path));
  }
}

/** `path` with its directory's symlinks resolved (as given when the directory is gone). */
function resolved(path: string): string {
  try {
    return join(realpathSync(dirname(path)), basename(path));
  } catch {
    return path;
  }
}

/** Socket files in `dir` no live socket is bound to. */
function deadSockets(dir: string, filter: { everySocketFile: boolean; known: ReadonlySet<string>; service: string | undefined }): StaleItem[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const bound = new BoundSockets(unixSockets());
  const connectionServices = new Set(names.map((n) => CONNECTION_SOCKET.exec(n)?.[1]).filter((s): s is string => s !== undefined));
  const known = new Set([...filter.known, ...connectionServices]);
  const items: StaleItem[] = [];
  for (const name of names) {
    const service = CONNECTION_SOCKET.exec(name)?.[1] ?? name;
    if (filter.service !== undefined && service !== filter.service) continue;
    if (!filter.everySocketFile && !looksLikeLibqbSocket(name, known)) continue;
    const path = join(dir, name);
    const st = lstatSafe(path);
    if (!st?.isSocket() || bound.has(path)) continue;
    items.push({ path, kind: "socket", service, bytes: 0, why: "no socket is bound to it (/proc/net/unix): its owner is gone", ...identity(st) });
  }
  return items;
}

/** What removing gave, per item. */
export interface RemoveResult {
  /** Paths removed. */
  readonly removed: string[];
  /** Paths left in place because the re-check before removal found them changed or in use, with why. */
  readonly skipped: { path: string; why: string }[];
  /** Paths whose removal failed, with the error. */
  readonly failed: { path: string; error: string }[];
}

/**
 * Removes `items` (directories with their files), each only after checking
 * again, right before removing it, that it is the same file and still stale.
 */
export function removeStale(items: readonly StaleItem[]): RemoveResult {
  const result: RemoveResult = { removed: [], skipped: [], failed: [] };
  for (const item of items) {
    const changed = recheck(item);
    if (changed !== undefined) {
      result.skipped.push({ path: item.path, why: changed });
      continue;
    }
    try {
      rmSync(item.path, { recursive: item.kind === "ring-dir", force: true });
      result.removed.push(item.path);
    } catch (error) {
      result.failed.push({ path: item.path, error: errorMessage(error) });
    }
  }
  return result;
}

/** Why `item` must stay after all, or undefined when it is still the same stale file. */
export function recheck(item: StaleItem): string | undefined {
  const st = lstatSafe(item.path);
  if (!st) return "gone meanwhile";
  const now = identity(st);
  if (now.dev !== item.dev || now.ino !== item.ino || now.ctimeNs !== item.ctimeNs) return "replaced by another file (or changed) since it was listed";
  if (now.uid !== item.uid) return `its owner changed since it was listed (uid ${item.uid} -> ${now.uid})`;
  const type = item.kind === "ring-dir" ? st.isDirectory() : item.kind === "ring-file" ? st.isFile() : st.isSocket();
  if (!type) return "no longer the kind of file it was listed as";
  if (item.kind === "socket") {
    return new BoundSockets(unixSockets()).has(item.path) ? "a socket is bound to it now (someone listens)" : undefined;
  }
  const dir = dirname(item.path);
  const name = basename(item.path);
  const prefix = item.kind === "ring-file" ? flatSetPrefix(name) : undefined;
  const only = item.kind === "ring-dir" ? (n: string) => n === name : (n: string) => prefix !== undefined && n.startsWith(`${prefix}-`);
  const set = ringSets(dir, Date.now(), only).find((s) => (item.kind === "ring-dir" ? s.path === item.path : s.files.some((f) => f.path === item.path)));
  if (!set) return "no longer looks like a libqb connection's files";
  if (set.serverPid !== item.serverPid || set.clientPid !== item.clientPid) return "its server or client pid changed";
  if (!set.stale) return `in use now (${set.why})`;
  return undefined;
}

/** lstat with nanosecond times (as bigints); undefined when the path is gone. */
function lstatSafe(path: string): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true });
  } catch {
    return undefined;
  }
}

/** What identifies the file at a path, for the re-check. */
function identity(st: BigIntStats): { dev: number; ino: number; ctimeNs: string; uid: number } {
  return { dev: Number(st.dev), ino: Number(st.ino), ctimeNs: String(st.ctimeNs), uid: Number(st.uid) };
}
