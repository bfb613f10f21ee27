/**
 * What `qbun doctor` checks: each check gives a verdict (ok, warn, fail),
 * a one-line detail, and for anything not ok a fix to try.
 * @module
 */
import { accessSync, constants, existsSync, readdirSync, readFileSync, statfsSync, statSync } from "node:fs";
import { SharedMemory } from "../../src/shm/index.ts";
import { UnixListener, UnixStream, type AddressInput } from "../../src/unix/index.ts";
import { errorMessage } from "../io.ts";
import { ringSets } from "./rings.ts";
import { FORCE_FILESYSTEM_SOCKETS, formatBytes, listHost } from "./services.ts";
import { findStale } from "./stale.ts";

/** How a check came out. */
export type Verdict = "ok" | "warn" | "fail";

/** One check's outcome. */
export interface CheckOutcome {
  /** Stable id for scripts, e.g. `shm-space`. */
  readonly id: string;
  /** What was checked, in words. */
  readonly title: string;
  /** `ok`, `warn` (works, but look at it) or `fail` (something will not work; the exit code is 1). */
  readonly verdict: Verdict;
  /** What was found. */
  readonly detail: string;
  /** What to do about it (absent when ok). */
  readonly fix?: string;
  /** The paths or names the detail is about, in full (e.g. every stale file). */
  readonly items?: readonly string[];
}

/** Where the checks look (tests point them at their own directories). */
export interface DoctorOptions {
  /** Directory of libqb's connection files (default /dev/shm). */
  shmDir?: string;
  /** Directory of filesystem-mode sockets (default /tmp; scanned for dead ones only when given or in that mode). */
  socketDir?: string;
}

interface Check {
  readonly id: string;
  readonly title: string;
  /** The fix to show when the check itself throws. */
  readonly fixOnError: string;
  run(options: DoctorOptions): Promise<Omit<CheckOutcome, "id" | "title">> | Omit<CheckOutcome, "id" | "title">;
}

const TMPFS_MAGIC = 0x01021994;
/** A libqb connection at the smallest size: three rings, header + data files each (12328-byte messages). */
const SMALLEST_CONNECTION = 3 * (8248 + 2 * 12328 + 4096);

const checks: readonly Check[] = [
  {
    id: "memfd-seals",
    fixOnError: "qbun needs memfd_create with sealing (Linux 3.17+) and its C helper: run qbun selftest for details",
    title: "memfd and file seals",
    run() {
      using mem = SharedMemory.memfd({ size: 4096, name: "qbun-doctor" });
      {
        using map = mem.map();
        map.bytes[0] = 1;
      }
      mem.addSeals(["shrink", "grow", "write"]);
      const seals = mem.seals;
      if (!["shrink", "grow", "write"].every((s) => seals.includes(s as never))) {
        return { verdict: "fail", detail: `seals set but the file reports ${seals.join(", ") || "none"}`, fix: "use a kernel with memfd sealing (Linux 3.17+)" };
      }
      return { verdict: "ok", detail: "memfd_create works; shrink, grow and write seals hold" };
    },
  },
  {
    id: "abstract-sockets",
    fixOnError: "abstract AF_UNIX sockets are needed by libqb unless /etc/libqb/force-filesystem-sockets exists; run qbun selftest for details",
    title: "abstract unix sockets (libqb's padded names)",
    async run() {
      const name = `qbun-doctor-${process.pid}-${crypto.randomUUID().slice(0, 8)}`;
      // libqb's way: the name in sun_path + 1, NUL-padded to the full address length.
      const address: AddressInput = { abstract: new TextEncoder().encode(name), padded: true };
      using listener = UnixListener.listen(address);
      const [client, server] = await Promise.all([
        UnixStream.connect(address, { signal: AbortSignal.timeout(2_000) }),
        listener.accept({ signal: AbortSignal.timeout(2_000) }),
      ]);
      client.close();
      server.close();
      return { verdict: "ok", detail: "bound, connected and accepted on a 108-byte padded abstract address" };
    },
  },
  {
    id: "shm-space",
    fixOnError: "/dev/shm must exist as a tmpfs: mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
    title: "/dev/shm size and free space",
    run({ shmDir = "/dev/shm" }) {
      const fs = statfsSync(shmDir);
      const total = fs.blocks * fs.bsize;
      const free = fs.bavail * fs.bsize;
      const sets = ringSets(shmDir).filter((s) => !s.stale);
      const used = sets.reduce((n, s) => n + s.allocated, 0);
      const largest = Math.max(SMALLEST_CONNECTION, ...sets.map((s) => s.allocated));
      const detail = `${formatBytes(free)} free of ${formatBytes(total)}; ${sets.length} live libqb connection(s) use ${formatBytes(used)}, one new connection needs up to ${formatBytes(largest)}`;
      const fix = `free space (qbun clean --yes removes stale rings) or enlarge it: mount -o remount,size=1G ${shmDir} (in Docker: --shm-size=1g)`;
      if (free < largest) return { verdict: "fail", detail, fix };
      if (free < 16 * largest || free < total / 10) return { verdict: "warn", detail: `${detail}: little room left`, fix };
      return { verdict: "ok", detail };
    },
  },
  {
    id: "shm-permissions",
    fixOnError: "/dev/shm must exist as a tmpfs: mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
    title: "/dev/shm permissions",
    run({ shmDir = "/dev/shm" }) {
      const st = statSync(shmDir);
      const mode = st.mode & 0o7777;
      const type = statfsSync(shmDir).type;
      try {
        accessSync(shmDir, constants.W_OK | constants.X_OK);
      } catch {
        return { verdict: "fail", detail: `${shmDir} (mode ${mode.toString(8)}) is not writable by uid ${process.getuid?.()}`, fix: `chmod 1777 ${shmDir} (servers create a directory per connection there)` };
      }
      const problems: string[] = [];
      if ((mode & 0o1777) !== 0o1777) problems.push(`mode ${mode.toString(8)}, not 1777 (world-writable with the sticky bit)`);
      if (type !== TMPFS_MAGIC) problems.push(`not a tmpfs (filesystem type 0x${type.toString(16)}): rings would live on disk`);
      if (problems.length) return { verdict: "warn", detail: problems.join("; "), fix: `chmod 1777 ${shmDir}; mount it as tmpfs (mount -t tmpfs tmpfs ${shmDir})` };
      return { verdict: "ok", detail: `mode 1777, tmpfs` };
    },
  },
  {
    id: "fd-limits",
    fixOnError: "check ulimit -n by hand",
    title: "open file limits (RLIMIT_NOFILE)",
    run(options) {
      const own = nofile("self");
      if (!own) return { verdict: "warn", detail: "cannot read /proc/self/limits", fix: "check ulimit -n by hand" };
      const tight: string[] = [];
      for (const service of listHost({ shmDir: options.shmDir, socketDir: options.socketDir }).services) {
        for (const owner of service.owners) {
          const limit = nofile(String(owner.pid));
          const open = fdCount(owner.pid);
          if (limit && open !== undefined && open > 0.8 * limit.soft) tight.push(`${service.name} (pid ${owner.pid}) has ${open} of ${limit.soft} fds open`);
        }
      }
      const detail = `soft ${own.soft}, hard ${own.hard} here`;
      if (tight.length) return { verdict: "warn", detail: `${detail}; ${tight.join("; ")}`, fix: "raise the server's limit: LimitNOFILE= in its systemd unit, or ulimit -n before starting it" };
      if (own.soft < 1024) return { verdict: "warn", detail: `${detail}: each libqb connection takes a few fds`, fix: `ulimit -n ${Math.min(own.hard, 65536)}` };
      return { verdict: "ok", detail };
    },
  },
  {
    id: "stale-files",
    fixOnError: "look at /dev/shm by hand (ls -la /dev/shm/qb-*)",
    title: "stale ring files and sockets of dead processes",
    async run(options) {
      const stale = await findStale({ shmDir: options.shmDir, socketDir: options.socketDir });
      if (stale.length === 0) return { verdict: "ok", detail: "none" };
      const bytes = stale.reduce((n, s) => n + s.bytes, 0);
      const shown = stale.slice(0, 3).map((s) => s.path).join(", ");
      return {
        verdict: "warn",
        detail: `${stale.length} left behind (${formatBytes(bytes)}): ${shown}${stale.length > 3 ? ", ..." : ""}`,
        fix: "qbun clean lists them; qbun clean --yes removes them",
        items: stale.map((s) => s.path),
      };
    },
  },
  {
    id: "libqb",
    fixOnError: "look for libqb.so.100 by hand (ldconfig -p | grep libqb)",
    title: "libqb installed (libqb.so.100)",
    run() {
      const found = findLibqb();
      if (found) return { verdict: "ok", detail: found };
      return { verdict: "warn", detail: "libqb.so.100 not found (qbun does not need it; C programs using libqb do)", fix: "apt-get install libqb100 (Debian/Ubuntu) or dnf install libqb" };
    },
  },
  {
    id: "socket-mode",
    fixOnError: "check /etc/libqb/force-filesystem-sockets and /tmp by hand",
    title: "libqb socket mode (force-filesystem-sockets)",
    run({ socketDir = "/tmp" }) {
      if (!existsSync(FORCE_FILESYSTEM_SOCKETS)) {
        return { verdict: "ok", detail: `abstract sockets (${FORCE_FILESYSTEM_SOCKETS} absent): per network namespace, so client and server must share one` };
      }
      try {
        accessSync(socketDir, constants.W_OK | constants.X_OK);
      } catch {
        return { verdict: "fail", detail: `filesystem sockets forced, but ${socketDir} is not writable`, fix: `chmod 1777 ${socketDir}, or remove ${FORCE_FILESYSTEM_SOCKETS}` };
      }
      return { verdict: "ok", detail: `filesystem sockets in ${socketDir} (forced by ${FORCE_FILESYSTEM_SOCKETS}); every libqb program here must agree` };
    },
  },
];

/** Runs every check; a check that throws fails with its error as the detail. */
export async function runDoctor(options: DoctorOptions = {}): Promise<CheckOutcome[]> {
  const out: CheckOutcome[] = [];
  for (const check of checks) {
    try {
      out.push({ id: check.id, title: check.title, ...(await check.run(options)) });
    } catch (error) {
      out.push({
        id: check.id,
        title: check.title,
        verdict: "fail",
        detail: errorMessage(error).split("\n")[0]!,
        fix: check.fixOnError,
      });
    }
  }
  return out;
}

function nofile(pid: string): { soft: number; hard: number } | undefined {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    if (!m) return undefined;
    const n = (s: string) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s));
    return { soft: n(m[1]!), hard: n(m[2]!) };
  } catch {
    return undefined;
  }
}

function fdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

const LIBQB_PATHS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64", "/lib", "/usr/local/lib"];

/** Where libqb.so.100 is, via the loader cache (ldconfig -p) or the usual directories. */
function findLibqb(): string | undefined {
  for (const ldconfig of ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]) {
    try {
      const ran = Bun.spawnSync([ldconfig, "-p"], { stdout: "pipe", stderr: "ignore" });
      if (!ran.success) continue;
      const line = ran.stdout.toString().split("\n").find((l) => l.trim().startsWith("libqb.so.100 "));
      if (line) return `${line.split("=>")[1]?.trim() ?? "libqb.so.100"} (ldconfig -p)`;
      break;
    } catch {}
  }
  for (const dir of LIBQB_PATHS) if (existsSync(`${dir}/libqb.so.100`)) return `${dir}/libqb.so.100`;
  return undefined;
}
