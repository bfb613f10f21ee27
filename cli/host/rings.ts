/**
 * libqb's per-connection files in /dev/shm, found by name (libqb 2.x:
 * a directory `qb-<server pid>-<client pid>-<server fd>-<6 random>` holding
 * `qb-{request,response,event}-<service>-{header,data}` for the shm
 * transport or `qb-control-<service>` for the socket transport; libqb
 * ≤ 1.0.3: the same files flat in /dev/shm as
 * `qb-<spid>-<cpid>-<fd>-{request,response,event}-<service>-{header,data}`).
 * Each set is judged stale when no live process still uses it.
 * @module
 */
import { lstatSync, readdirSync, readFileSync, type Stats } from "node:fs";
import { join } from "node:path";
import { processAlive } from "./unix-sockets.ts";

/** One file of a connection. */
export interface RingFile {
  /** The file's path. */
  readonly path: string;
  /** Apparent size (st_size). */
  readonly size: number;
  /** Memory it takes in /dev/shm (allocated blocks). */
  readonly allocated: number;
  /** Owner uid. */
  readonly uid: number;
  /** Owner gid. */
  readonly gid: number;
  /** Permission bits, e.g. 0o600. */
  readonly mode: number;
}

/** One libqb connection's files in /dev/shm. */
export interface RingSet {
  /** The connection directory, or (libqb ≤ 1.0.3) the common prefix of its flat files. */
  readonly path: string;
  /** `dir` for libqb 2.x's directory, `flat` for old flat files. */
  readonly layout: "dir" | "flat";
  /** The server's pid, from the name. */
  readonly serverPid: number;
  /** The client's pid, from the name. */
  readonly clientPid: number;
  /** The service named in the file names; undefined for an empty directory. */
  readonly service: string | undefined;
  /** `shm` (ring files), `socket` (a control file) or `unknown` (no files). */
  readonly transport: "shm" | "socket" | "unknown";
  /** The files, sorted by name. */
  readonly files: readonly RingFile[];
  /** Memory all the files take (allocated blocks). */
  readonly allocated: number;
  /** Owner uid of the directory (or of the first flat file). */
  readonly uid: number;
  /** Owner gid of the directory (or of the first flat file). */
  readonly gid: number;
  /** Permission bits of the directory (or of the first flat file). */
  readonly mode: number;
  /** Last change, ms since the epoch. */
  readonly mtimeMs: number;
  /** True when neither the server nor the client process still uses the files. */
  readonly stale: boolean;
  /** Why it is (or is not) stale, in words. */
  readonly why: string;
}

const DIR_NAME = /^qb-(\d+)-(\d+)-(\d+)-[A-Za-z0-9]{6}$/;
const FLAT_NAME = /^qb-(\d+)-(\d+)-(\d+)-(?:(?:request|response|event)-(.+)-(?:header|data)|control-(.+))$/;
const RING_FILE = /^qb-(?:request|response|event)-(.+)-(?:header|data)$/;
const CONTROL_FILE = /^qb-control-(.+)$/;
/** A live process that maps nothing of a set may be creating it: give it this long. */
const GRACE_MS = 5_000;

/**
 * Every libqb connection's file set in `shmDir` (default /dev/shm); with
 * `only`, just the entries whose names it accepts (one set, re-judged).
 */
export function ringSets(shmDir = "/dev/shm", now = Date.now(), only?: (name: string) => boolean): RingSet[] {
  let names: string[];
  try {
    names = readdirSync(shmDir);
  } catch {
    return [];
  }
  if (only) names = names.filter(only);
  const maps = new MapsCache();
  const sets: RingSet[] = [];
  const flat = new Map<string, { spid: number; cpid: number; service: string; files: RingFile[]; stats: Stats }>();
  for (const name of names) {
    const path = join(shmDir, name);
    let stats: Stats;
    try {
      stats = lstatSync(path);
    } catch {
      continue; // removed meanwhile
    }
    const dir = DIR_NAME.exec(name);
    if (dir && stats.isDirectory()) {
      const files = listFiles(path);
      let service: string | undefined;
      let transport: RingSet["transport"] = "unknown";
      for (const file of files) {
        const base = file.path.slice(path.length + 1);
        const ring = RING_FILE.exec(base);
        const control = CONTROL_FILE.exec(base);
        if (ring) [service, transport] = [ring[1], "shm"];
        else if (control) [service, transport] = [control[1], "socket"];
      }
      sets.push(judge({ path, layout: "dir", serverPid: Number(dir[1]), clientPid: Number(dir[2]), service, transport, files, stats }, maps, now));
      continue;
    }
    const old = FLAT_NAME.exec(name);
    if (old && stats.isFile()) {
      const prefix = join(shmDir, `qb-${old[1]}-${old[2]}-${old[3]}`);
      const group = flat.get(prefix) ?? { spid: Number(old[1]), cpid: Number(old[2]), service: old[4] ?? old[5]!, files: [], stats };
      group.files.push(fileInfo(path, stats));
      flat.set(prefix, group);
    }
  }
  for (const [prefix, group] of flat) {
    const transport = group.files.some((f) => f.path.includes("-control-")) ? "socket" : "shm";
    sets.push(judge({ path: prefix, layout: "flat", serverPid: group.spid, clientPid: group.cpid, service: group.service, transport, files: group.files, stats: group.stats }, maps, now));
  }
  return sets.sort((a, b) => a.path.localeCompare(b.path));
}

/** For an old flat ring file's name, the name prefix its connection's files share (`qb-<spid>-<cpid>-<fd>`); undefined for other names. */
export function flatSetPrefix(name: string): string | undefined {
  const m = FLAT_NAME.exec(name);
  return m ? `qb-${m[1]}-${m[2]}-${m[3]}` : undefined;
}

interface Found {
  path: string;
  layout: RingSet["layout"];
  serverPid: number;
  clientPid: number;
  service: string | undefined;
  transport: RingSet["transport"];
  files: RingFile[];
  stats: Stats;
}

function judge(found: Found, maps: MapsCache, now: number): RingSet {
  const { stats, ...rest } = found;
  const mtimeMs = Math.max(stats.mtimeMs, ...found.files.map((f) => lstatSafe(f.path)?.mtimeMs ?? 0));
  const young = now - mtimeMs < GRACE_MS;
  const marker = found.layout === "dir" ? `${found.path}/` : `${found.path}-`;
  const use = (pid: number): "gone" | "uses" | "unknown" | "idle" => {
    if (!processAlive(pid)) return "gone";
    const mapped = maps.mentions(pid, marker);
    if (mapped === undefined) return "unknown";
    return mapped ? "uses" : "idle";
  };
  const server = use(found.serverPid);
  const client = use(found.clientPid);
  const inUse = (state: string) => state === "uses" || state === "unknown" || (state === "idle" && young);
  const stale = !inUse(server) && !inUse(client);
  const say = (who: string, pid: number, state: string) =>
    `${who} ${pid} ${state === "gone" ? "is gone" : state === "uses" ? "maps it" : state === "unknown" ? "is running (its mappings are unreadable)" : "is running but maps none of it"}`;
  const why = `${say("server", found.serverPid, server)}; ${say("client", found.clientPid, client)}`;
  return {
    ...rest,
    allocated: found.files.reduce((n, f) => n + f.allocated, 0),
    uid: stats.uid,
    gid: stats.gid,
    mode: stats.mode & 0o7777,
    mtimeMs,
    stale,
    why,
  };
}

function lstatSafe(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

function fileInfo(path: string, stats: Stats): RingFile {
  return { path, size: stats.size, allocated: stats.blocks * 512, uid: stats.uid, gid: stats.gid, mode: stats.mode & 0o7777 };
}

function listFiles(dir: string): RingFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const files: RingFile[] = [];
  for (const name of names.sort()) {
    const path = join(dir, name);
    const stats = lstatSafe(path);
    if (stats) files.push(fileInfo(path, stats));
  }
  return files;
}

/** /proc/PID/maps, read once per pid. */
class MapsCache {
  readonly #maps = new Map<number, string | undefined>();

  /** Whether the process maps a file whose path contains `marker`; undefined when its maps cannot be read. */
  mentions(pid: number, marker: string): boolean | undefined {
    if (!this.#maps.has(pid)) {
      let text: string | undefined;
      try {
        text = readFileSync(`/proc/${pid}/maps`, "latin1");
      } catch {}
      this.#maps.set(pid, text);
    }
    const text = this.#maps.get(pid);
    return text === undefined ? undefined : text.includes(marker);
  }
}
