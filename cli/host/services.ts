/**
 * The libqb services on this host: listening stream sockets bound the way
 * libqb binds them (a NUL-padded abstract name, or `<socketDir>/<name>` when
 * /etc/libqb/force-filesystem-sockets exists), who owns them, how many
 * clients are connected, and their connections' files in /dev/shm.
 * @module
 */
import { existsSync } from "node:fs";
import { ringSets, type RingSet } from "./rings.ts";
import { paddedAbstractName, socketOwners, unixSockets, type SocketOwner, type UnixSocketEntry } from "./unix-sockets.ts";

/** libqb's switch to filesystem sockets. */
export const FORCE_FILESYSTEM_SOCKETS = "/etc/libqb/force-filesystem-sockets";

/** One libqb service found on this host. */
export interface ServiceInfo {
  /** The service name clients connect to. */
  readonly name: string;
  /** `@name` (abstract, padded as libqb binds it) or the socket file's path. */
  readonly address: string;
  /** The listening socket's inode. */
  readonly inode: number;
  /** The processes holding the listening socket (usually one); empty when none could be read. */
  readonly owners: readonly SocketOwner[];
  /** Established connections (server ends of accepted setup sockets). */
  readonly connections: number;
  /** The service's connection files in /dev/shm (matched by service name and server pid). */
  readonly rings: readonly RingSet[];
}

/** Everything `ls` shows. */
export interface HostListing {
  /** The libqb services listening here, by name. */
  readonly services: readonly ServiceInfo[];
  /** Connection files that belong to no listed service (a stopped or crashed server's, for instance). */
  readonly orphanRings: readonly RingSet[];
  /** Whether libqb's filesystem-socket mode is on. */
  readonly filesystemSockets: boolean;
  /** The directory searched for connection files. */
  readonly shmDir: string;
  /** The directory searched for service sockets in filesystem-socket mode. */
  readonly socketDir: string;
}

/** Options for {@link listHost}. */
export interface ListOptions {
  /** Where the connection files live (default /dev/shm). */
  shmDir?: string;
  /** libqb's socket directory in filesystem-socket mode (default /tmp). */
  socketDir?: string;
}

/** Finds the libqb services on this host and their files. */
export function listHost(options: ListOptions = {}): HostListing {
  const filesystemSockets = existsSync(FORCE_FILESYSTEM_SOCKETS);
  const shmDir = options.shmDir ?? "/dev/shm";
  const socketDir = (options.socketDir ?? "/tmp").replace(/\/+$/, "");
  const sockets = unixSockets();
  const found = listeners(sockets, filesystemSockets, socketDir);
  const owners = socketOwners(found.map((f) => f.inode));
  const rings = ringSets(shmDir);
  const claimed = new Set<RingSet>();
  const services = found
    .map((f) => {
      const info = describeService(f, owners.get(f.inode) ?? [], sockets, rings);
      for (const r of info.rings) claimed.add(r);
      return info;
    })
    .sort((a, b) => a.name.localeCompare(b.name));
  return { services, orphanRings: rings.filter((r) => !claimed.has(r)), filesystemSockets, shmDir, socketDir };
}

/**
 * One service, refreshed cheaply: reads /proc/net/unix and `shmDir` but not
 * every process's fds (the owners are given, from an earlier {@link listHost}).
 * Undefined when nothing listens under the name any more.
 */
export function refreshService(name: string, owners: readonly SocketOwner[], options: ListOptions = {}): ServiceInfo | undefined {
  const sockets = unixSockets();
  const socketDir = (options.socketDir ?? "/tmp").replace(/\/+$/, "");
  const found = listeners(sockets, existsSync(FORCE_FILESYSTEM_SOCKETS), socketDir).find((f) => f.name === name);
  return found && describeService(found, owners, sockets, ringSets(options.shmDir ?? "/dev/shm"));
}

interface Listener {
  name: string;
  address: string;
  inode: number;
  path: string;
}

/** Listening stream sockets bound the way libqb binds a service. */
function listeners(sockets: readonly UnixSocketEntry[], filesystemSockets: boolean, socketDir: string): Listener[] {
  const found: Listener[] = [];
  for (const s of sockets) {
    if (s.type !== "stream" || !s.listening) continue;
    const abstract = paddedAbstractName(s.path);
    if (abstract !== undefined && !abstract.startsWith("/")) {
      found.push({ name: abstract, address: `@${abstract}`, inode: s.inode, path: s.path });
    } else if (filesystemSockets && s.path.startsWith(`${socketDir}/`) && !s.path.slice(socketDir.length + 1).includes("/")) {
      found.push({ name: s.path.slice(socketDir.length + 1), address: s.path, inode: s.inode, path: s.path });
    }
  }
  return found;
}

function describeService(f: Listener, owners: readonly SocketOwner[], sockets: readonly UnixSocketEntry[], rings: readonly RingSet[]): ServiceInfo {
  const pids = new Set(owners.map((o) => o.pid));
  return {
    name: f.name,
    address: f.address,
    inode: f.inode,
    owners,
    // Accepted sockets carry the listener's address: every connected one with the same path is a client's setup socket.
    connections: sockets.filter((s) => s.type === "stream" && !s.listening && s.path === f.path).length,
    rings: rings.filter((r) => r.service === f.name && pids.has(r.serverPid)),
  };
}

/** Bytes as text: 1.5 KiB, 3.0 MiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
