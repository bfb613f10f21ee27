/**
 * What the kernel says about AF_UNIX sockets on this host: the table in
 * /proc/net/unix (this network namespace) and, for a socket inode, which
 * processes hold it (their /proc/PID/fd links read `socket:[INODE]`).
 * @module
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** One row of /proc/net/unix. */
export interface UnixSocketEntry {
  /** Socket inode: the key to the processes that hold it. */
  readonly inode: number;
  /** `stream`, `dgram` or `seqpacket`. */
  readonly type: "stream" | "dgram" | "seqpacket" | "other";
  /** True for a listening socket (SO_ACCEPTCON). */
  readonly listening: boolean;
  /** True for a connected socket (SS_CONNECTED). */
  readonly connected: boolean;
  /**
   * The bound address as the kernel prints it: a path, `@name…` for an
   * abstract name (each NUL byte shown as `@`), or "" when unbound.
   */
  readonly path: string;
}

/** Length of an abstract address bound with the whole sun_path (libqb's way): "@" + 107 bytes. */
const PADDED_ABSTRACT_LENGTH = 108;
const SO_ACCEPTCON = 0x10000;
const TYPES = { 1: "stream", 2: "dgram", 5: "seqpacket" } as const;
const ROW = /^\s*[0-9a-f]+: [0-9A-F]+ [0-9A-F]+ ([0-9A-F]+) ([0-9A-F]+) ([0-9A-F]+) +(\d+)(?: (.*))?$/i;

/** Every AF_UNIX socket in this network namespace (empty when /proc/net/unix cannot be read). */
export function unixSockets(table = "/proc/net/unix"): UnixSocketEntry[] {
  let text: string;
  try {
    text = readFileSync(table, "latin1");
  } catch {
    return [];
  }
  const entries: UnixSocketEntry[] = [];
  for (const line of text.split("\n").slice(1)) {
    const m = ROW.exec(line);
    if (!m) continue;
    const flags = Number.parseInt(m[1]!, 16);
    const type = Number.parseInt(m[2]!, 16);
    entries.push({
      inode: Number(m[4]),
      type: TYPES[type as keyof typeof TYPES] ?? "other",
      listening: (flags & SO_ACCEPTCON) !== 0,
      connected: Number.parseInt(m[3]!, 16) === 3,
      path: m[5] ?? "",
    });
  }
  return entries;
}

/**
 * The service name in a padded abstract address (`@name@@@…`, 108
 * characters), or undefined for any other address. A name that itself ends
 * in NUL-shown-as-`@` characters cannot be told apart; libqb names don't.
 */
export function paddedAbstractName(path: string): string | undefined {
  if (path.length !== PADDED_ABSTRACT_LENGTH || !path.startsWith("@") || !path.endsWith("@")) return undefined;
  const name = path.slice(1).replace(/@+$/, "");
  return name.length > 0 ? name : undefined;
}

/** A process holding a socket. */
export interface SocketOwner {
  /** The process id. */
  readonly pid: number;
  /** The process's name (/proc/PID/comm). */
  readonly comm: string;
  /** Its real uid. */
  readonly uid: number;
}

/**
 * Which processes hold each of `inodes` open: one pass over /proc/*\/fd
 * (processes whose fds cannot be read, other users' without root, are
 * skipped). Owners come in ascending pid order.
 */
export function socketOwners(inodes: Iterable<number>): Map<number, SocketOwner[]> {
  const wanted = new Set(inodes);
  const owners = new Map<number, SocketOwner[]>();
  if (wanted.size === 0) return owners;
  const pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).sort((a, b) => a - b);
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    const seen = new Set<number>();
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!target.startsWith("socket:[")) continue;
      const inode = Number(target.slice(8, -1));
      if (!wanted.has(inode) || seen.has(inode)) continue;
      seen.add(inode);
      const info = processInfo(pid);
      if (!info) continue;
      const list = owners.get(inode) ?? [];
      list.push(info);
      owners.set(inode, list);
    }
  }
  return owners;
}

/** pid, comm and real uid of a live process, or undefined when it is gone. */
export function processInfo(pid: number): SocketOwner | undefined {
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? Number.NaN);
    return { pid, comm, uid };
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists (a zombie counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
