/**
 * Helpers shared by the benchmark scripts (scripts/bench-qb.ts,
 * scripts/bench-qb-client.ts): child processes read line by line, gcc-built
 * peers, per-thread CPU time and sleeps from /proc, watching the machine for
 * other activity, and the statistics and number formats of the reports.
 * @module
 */
import { spawnSync, type Subprocess } from "bun";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

// ---------------------------------------------------------------- processes

/** Every child started with {@link Child} and not stopped yet. */
export const children = new Set<Child>();

/** A child process whose stdout is read line by line. */
export class Child {
  readonly name: string;
  readonly proc: Subprocess<"pipe" | "ignore", "pipe", "inherit">;
  #lines: string[] = [];
  #waiters: Array<(line: string | null) => void> = [];
  #ended = false;

  constructor(name: string, cmd: string[], stdin: "pipe" | "ignore" = "ignore", env?: Record<string, string | undefined>) {
    this.name = name;
    this.proc = Bun.spawn(cmd, { stdin, stdout: "pipe", stderr: "inherit", env });
    children.add(this);
    void this.#pump();
  }

  get pid(): number {
    return this.proc.pid;
  }

  async #pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of this.proc.stdout) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const w = this.#waiters.shift();
          if (w) w(line);
          else this.#lines.push(line);
        }
      }
    } catch {
      // torn down at kill
    }
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w(null);
  }

  /** The next stdout line; rejects if the child ends or stays silent for `timeoutMs`. */
  nextLine(timeoutMs = 30_000): Promise<string> {
    const ready = this.#lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#ended) return Promise.reject(new Error(`${this.name} exited (code ${this.proc.exitCode})`));
    const { promise, resolve, reject } = Promise.withResolvers<string>();
    const onLine = (line: string | null) => {
      clearTimeout(timer);
      if (line === null) reject(new Error(`${this.name} exited (code ${this.proc.exitCode})`));
      else resolve(line);
    };
    const timer = setTimeout(() => {
      const i = this.#waiters.indexOf(onLine);
      if (i >= 0) this.#waiters.splice(i, 1);
      reject(new Error(`${this.name}: no output for ${timeoutMs} ms`));
    }, timeoutMs);
    this.#waiters.push(onLine);
    return promise;
  }

  async expect(prefix: string, timeoutMs?: number): Promise<string> {
    const line = await this.nextLine(timeoutMs);
    if (!line.startsWith(prefix)) throw new Error(`${this.name}: expected "${prefix}", got "${line.slice(0, 120)}"`);
    return line;
  }

  send(text: string): void {
    const stdin = this.proc.stdin;
    if (!stdin || typeof stdin === "number") throw new Error(`${this.name} has no stdin pipe`);
    stdin.write(text);
    stdin.flush();
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves the exit code (null if killed). */
  async stop(graceMs = 2000): Promise<number | null> {
    children.delete(this);
    if (this.alive) this.proc.kill("SIGTERM");
    const exited = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
    if (!exited) {
      this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
    return this.proc.exitCode;
  }
}

/** Build scripts/peers/NAME.c with gcc -O2 into `outDir`; returns the binary's path. */
export function compilePeer(outDir: string, name: string, libs: string[] = []): string {
  const out = join(outDir, name);
  const r = spawnSync(["gcc", "-O2", "-Wall", "-pthread", "-o", out, join(import.meta.dir, "peers", `${name}.c`), ...libs], { stderr: "pipe" });
  if (!r.success) throw new Error(`gcc failed for ${name}.c:\n${r.stderr.toString()}`);
  return out;
}

/**
 * The "busy" condition: scripts/peers/busy-loop.c (built into `busyLoopBin`)
 * pinned to the last CPU, nice 0, bounded to `seconds`; started 1.5 s before
 * it returns so the scheduler's load tracking sees it.
 */
export async function startBusyLoop(busyLoopBin: string, seconds = 200): Promise<{ child: Child; note: string }> {
  const cpus = os.availableParallelism();
  const child = new Child("busy-loop", [busyLoopBin, String(cpus > 1 ? cpus - 1 : -1), String(seconds), "0"]);
  await child.expect("READY");
  await Bun.sleep(1500);
  const note = cpus > 1
    ? `a busy loop (nice 0) pinned to CPU ${cpus - 1} of ${cpus} for the whole condition`
    : "a busy loop (nice 0), but with only 1 CPU it competes with the benchmark";
  return { child, note };
}

/** The short commit of HEAD and whether src/, ffi/ or cli/ have local changes. */
export function gitState(root: string): { commit: string; dirty: boolean } {
  const git = (args: string[]) => {
    const r = spawnSync(["git", ...args], { cwd: root, stderr: "ignore" });
    return r.success ? r.stdout.toString().trim() : "";
  };
  return { commit: git(["rev-parse", "--short", "HEAD"]) || "unknown", dirty: git(["status", "--porcelain", "--", "src", "ffi", "cli"]) !== "" };
}

// ------------------------------------------------------------ /proc probes

export const MAIN_THREAD = "main thread";

export interface ThreadStats {
  /** CPU time by thread name (the main thread as MAIN_THREAD), ns, from schedstat. */
  cpu: Map<string, number>;
  /** Voluntary context switches of the main thread: how often it blocked waiting for work. */
  mainBlocks: number;
}

export function threadStats(pid: number): ThreadStats {
  const cpu = new Map<string, number>();
  let mainBlocks = 0;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { cpu, mainBlocks };
  }
  for (const tid of tids) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      const main = tid === String(pid);
      const comm = main ? MAIN_THREAD : readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      cpu.set(comm, (cpu.get(comm) ?? 0) + ns);
      if (main) {
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
        mainBlocks = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
      }
    } catch {
      // thread gone
    }
  }
  return { cpu, mainBlocks };
}

export const totalCpu = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

export function cpuDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const d = new Map<string, number>();
  for (const [k, v] of after) d.set(k, v - (before.get(k) ?? 0));
  return d;
}

/** Directories a libqb or qbun server made in /dev/shm (naming: qb-<server pid>-…). */
export function shmDirsOf(pid: number): string[] {
  try {
    return readdirSync("/dev/shm").filter((n) => n.startsWith(`qb-${pid}-`));
  } catch {
    return [];
  }
}

/** Remove what the servers `pids` left in /dev/shm (entries not there at start); returns the names removed. */
export function cleanShmOf(pids: Iterable<number>, atStart: Set<string>): string[] {
  const removed: string[] = [];
  for (const pid of pids) {
    for (const d of shmDirsOf(pid)) {
      if (atStart.has(d)) continue;
      rmSync(join("/dev/shm", d), { recursive: true, force: true });
      removed.push(d);
    }
  }
  return removed;
}

// --------------------------------------------------------- other activity

/**
 * Other Bun processes and test or benchmark runs on the machine (their
 * command lines), to flag overlapping rounds. Ours are left out: this
 * process, its {@link children}, and anything whose command line contains
 * `ownMarker` (e.g. the service names this run uses).
 */
export function otherActivity(ownMarker: string): string[] {
  const mine = new Set<number>([process.pid, ...[...children].map((c) => c.pid)]);
  const found: string[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || mine.has(Number(p))) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, "utf8").replaceAll("\0", " ").trim();
    } catch {
      continue;
    }
    if (/^(grep|pgrep|ps|rg) /.test(cmd)) continue;
    if (/(^|\/)bun(\.exe)?( |$)|bench-|test\.sh|\bbun test\b/.test(cmd) && !cmd.includes(ownMarker)) {
      found.push(cmd.length > 80 ? cmd.slice(0, 77) + "…" : cmd);
    }
  }
  return found;
}

/** Sightings of other activity, sampled every 500 ms while the sampler runs. */
const sightings: Array<{ at: number; what: string[] }> = [];

export function startActivitySampler(ownMarker: string): Timer {
  const timer = setInterval(() => {
    const what = otherActivity(ownMarker);
    if (what.length > 0) sightings.push({ at: performance.now(), what });
  }, 500);
  timer.unref();
  return timer;
}

export function sightingsBetween(from: number, to: number): string[] {
  const what = new Set<string>();
  for (const s of sightings) if (s.at >= from && s.at <= to) for (const w of s.what) what.add(w);
  return [...what];
}

const CLK_TCK = 100; // USER_HZ on Linux

/** Busy CPU time of the whole machine (ns): user, nice, system, irq, softirq of every CPU. */
export function machineBusyNs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = f;
  return ((user + nice + system + irq + softirq) * 1e9) / CLK_TCK;
}

/** CPU time (ns) of a process; with `reaped`, plus that of the children it has waited for. */
export function processCpuNs(pid: number, reaped = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    // After the command: state(0) … utime(11) stime(12) cutime(13) cstime(14)
    const ticks = f[11]! + f[12]! + (reaped ? f[13]! + f[14]! : 0);
    return (ticks * 1e9) / CLK_TCK;
  } catch {
    return 0;
  }
}

/**
 * CPU used by everything that is not this benchmark: the machine's busy time
 * minus this process and its reaped children, and the long-lived processes
 * `ours()` lists. Resolution: 10 ms per process.
 */
export function foreignCpuProbe(ours: () => number[]): () => number {
  const mineNow = () => processCpuNs(process.pid, true) + ours().reduce((a, pid) => a + processCpuNs(pid), 0);
  const busy0 = machineBusyNs(), mine0 = mineNow();
  return () => machineBusyNs() - busy0 - (mineNow() - mine0);
}

// ------------------------------------------------------------- statistics

/** Parse "TAG k=v k=v" into numbers (non-numeric values kept as NaN). */
export function parseKv(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of line.split(" ").slice(1)) {
    const eq = part.indexOf("=");
    if (eq > 0) out[part.slice(0, eq)] = Number(part.slice(eq + 1));
  }
  return out;
}

export function median(values: number[]): number {
  const s = Float64Array.from(values).sort();
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

export const us = (ns: number) => (Number.isNaN(ns) ? "—" : (ns / 1000).toFixed(ns < 10_000 ? 2 : 1));
export const fmtInt = (x: number) => (Number.isNaN(x) ? "—" : Math.round(x).toLocaleString("en-US"));
export const gbs = (x: number) => (x / 1e9).toFixed(2) + " GB/s";
export const mb = (kb: number) => (kb / 1024).toFixed(1);
export const x2 = (r: number) => (Number.isNaN(r) ? "—" : r.toFixed(2) + "×");
