/**
 * Helpers shared by the benchmark scripts (scripts/bench-unix.ts,
 * scripts/bench-qb.ts, scripts/bench-qb-client.ts): option parsing, child
 * processes read line by line, gcc-built peers, the busy condition, the
 * watchdog and signal cleanup, per-thread CPU time and sleeps from /proc,
 * watching the machine for other activity, and the statistics and number
 * formats of the reports.
 * @module
 */
import { spawnSync, type Subprocess } from "bun";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

// ------------------------------------------------------------------ options

/** The two machine conditions every benchmark measures under. */
export type Condition = "idle" | "busy";

/**
 * A positive integer option value no larger than `max`; otherwise prints
 * `message` and exits with code 2.
 */
export function positiveIntOption(value: string | undefined, name: string, max: number, message = `${name} needs a positive integer ≤ ${max}`): number {
  const v = Number(value);
  if (!Number.isInteger(v) || v <= 0 || v > max) {
    console.error(message);
    process.exit(2);
  }
  return v;
}

/**
 * The option loop the benchmarks share: `--idle` / `--busy` (collected),
 * `--help` / `-h` (calls `usage`), and an unknown option (exits with code 2).
 * Every other argument goes to `handle` first, with `next()` taking the
 * following argument as its value; `handle` returns false for an option it
 * does not know. Returns the conditions asked for, in the order idle, busy,
 * or undefined if neither flag was given.
 */
export function parseArgs(argv: string[], usage: () => never, handle: (arg: string, next: () => string | undefined) => boolean): Condition[] | undefined {
  const only: Condition[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--idle") only.push("idle");
    else if (a === "--busy") only.push("busy");
    else if (handle(a, () => argv[++i])) continue;
    else if (a === "--help" || a === "-h") usage();
    else {
      console.error(`unknown option ${a} (try --help)`);
      process.exit(2);
    }
  }
  return only.length > 0 ? (["idle", "busy"] as const).filter((c) => only.includes(c)) : undefined;
}

/** The command line as run, for report headers: `bun scripts/<script> <args…>`. */
export function commandLine(script: string): string {
  return `bun scripts/${script}${process.argv.length > 2 ? " " + process.argv.slice(2).join(" ") : ""}`;
}

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
  readonly #lineTimeoutMs: number;

  /**
   * Spawn `cmd` (stderr inherited). `lineTimeoutMs` is how long
   * {@link nextLine} and {@link expect} wait for a line unless told otherwise.
   */
  constructor(name: string, cmd: string[], stdin: "pipe" | "ignore" = "ignore", env?: Record<string, string | undefined>, lineTimeoutMs = 30_000) {
    this.name = name;
    this.#lineTimeoutMs = lineTimeoutMs;
    this.proc = Bun.spawn(cmd, { stdin, stdout: "pipe", stderr: "inherit", env });
    children.add(this);
    void this.#pump();
  }

  /** The child's process id. */
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
  nextLine(timeoutMs = this.#lineTimeoutMs): Promise<string> {
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

  /** The next stdout line, which must start with `prefix` (else rejects). */
  async expect(prefix: string, timeoutMs?: number): Promise<string> {
    const line = await this.nextLine(timeoutMs);
    if (!line.startsWith(prefix)) throw new Error(`${this.name}: expected "${prefix}", got "${line.slice(0, 120)}"`);
    return line;
  }

  /** Write `text` to the child's stdin (it must have been started with a stdin pipe). */
  send(text: string): void {
    const stdin = this.proc.stdin;
    if (!stdin || typeof stdin === "number") throw new Error(`${this.name} has no stdin pipe`);
    stdin.write(text);
    stdin.flush();
  }

  /** Whether the child has neither exited nor been killed. */
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
    // Close our end of its stdin now rather than whenever the GC gets to it.
    const stdin = this.proc.stdin;
    if (stdin && typeof stdin !== "number") {
      try {
        await stdin.end();
      } catch {
        // already closed
      }
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

/** The short commit of HEAD and whether `paths` (default src/, ffi/, cli/) have local changes. */
export function gitState(root: string, paths: string[] = ["src", "ffi", "cli"]): { commit: string; dirty: boolean } {
  const git = (args: string[]) => {
    const r = spawnSync(["git", ...args], { cwd: root, stderr: "ignore" });
    return r.success ? r.stdout.toString().trim() : "";
  };
  return { commit: git(["rev-parse", "--short", "HEAD"]) || "unknown", dirty: git(["status", "--porcelain", "--", ...paths]) !== "" };
}

/**
 * Hard stop: after `ms`, print "`name`: watchdog: still running after
 * `minutes` minutes, giving up", SIGKILL every {@link children} entry, run
 * `cleanup` and exit with code 3. The timer does not keep the process alive.
 */
export function armWatchdog(name: string, ms: number, cleanup: () => void): void {
  const watchdog = setTimeout(() => {
    console.error(`${name}: watchdog: still running after ${ms / 60_000} minutes, giving up`);
    for (const c of children) c.proc.kill("SIGKILL");
    cleanup();
    process.exit(3);
  }, ms);
  watchdog.unref();
}

/**
 * On SIGINT or SIGTERM: SIGTERM every {@link children} entry, then run
 * `cleanup` and exit with code 130. With `graceMs`, the children first get
 * that long to finish (e.g. servers removing their files), then SIGKILL and
 * 200 ms more before the cleanup.
 */
export function onStopSignals(cleanup: () => void, graceMs?: number): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      for (const c of children) c.proc.kill("SIGTERM");
      if (graceMs === undefined) {
        cleanup();
        process.exit(130);
      }
      setTimeout(() => {
        for (const c of children) c.proc.kill("SIGKILL");
        setTimeout(() => {
          cleanup();
          process.exit(130);
        }, 200);
      }, graceMs);
    });
  }
}

/** Run `main`, print what it throws (exit code 1), and exit with its code. */
export async function runMain(main: () => Promise<number>): Promise<never> {
  const code = await main().catch((error) => {
    console.error(error);
    return 1;
  });
  process.exit(code);
}

/** Remove the temporary directory `dir` and everything in it, if there is one. */
export function removeTmp(dir: string): void {
  if (dir && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
}

// ------------------------------------------------------------ /proc probes

/** The key under which {@link threadStats} files the main thread's CPU time. */
export const MAIN_THREAD = "main thread";

/** Per-thread CPU time of a process and how often its main thread blocked. */
export interface ThreadStats {
  /** CPU time by thread name (the main thread as MAIN_THREAD), ns, from schedstat. */
  cpu: Map<string, number>;
  /** Voluntary context switches of the main thread: how often it blocked waiting for work. */
  mainBlocks: number;
}

/** CPU time by thread and main-thread blocks of process `pid`, from /proc (empty if it is gone). */
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

/** Sum of the per-thread CPU times in `m` (ns). */
export const totalCpu = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** Per-thread CPU time spent between two {@link threadStats} snapshots (ns). */
export function cpuDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const d = new Map<string, number>();
  for (const [k, v] of after) d.set(k, v - (before.get(k) ?? 0));
  return d;
}

/** The entries of /dev/shm now (empty if there is no /dev/shm). */
export function shmEntries(): Set<string> {
  return new Set(existsSync("/dev/shm") ? readdirSync("/dev/shm") : []);
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

/** Sample {@link otherActivity} every 500 ms (unref'd timer; clear it to stop). */
export function startActivitySampler(ownMarker: string): Timer {
  const timer = setInterval(() => {
    const what = otherActivity(ownMarker);
    if (what.length > 0) sightings.push({ at: performance.now(), what });
  }, 500);
  timer.unref();
  return timer;
}

/** Other activity the sampler saw between the `performance.now()` times `from` and `to`. */
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

/** Median of `values` (mean of the middle two for an even count); NaN if empty. */
export function median(values: number[]): number {
  const s = Float64Array.from(values).sort();
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `items` rotated left by `by` places (the interleaving order of round `by`). */
export function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Nanoseconds as microseconds: 2 decimals below 10 µs, 1 above; "—" for NaN. */
export const us = (ns: number) => (Number.isNaN(ns) ? "—" : (ns / 1000).toFixed(ns < 10_000 ? 2 : 1));
/** A rounded integer with thousands separators; "—" for NaN. */
export const fmtInt = (x: number) => (Number.isNaN(x) ? "—" : Math.round(x).toLocaleString("en-US"));
/** Bytes per second as "N.NN GB/s". */
export const gbs = (x: number) => (x / 1e9).toFixed(2) + " GB/s";
/** KiB as MiB with one decimal. */
export const mb = (kb: number) => (kb / 1024).toFixed(1);
/** A ratio as "N.NN×"; "—" for NaN. */
export const x2 = (r: number) => (Number.isNaN(r) ? "—" : r.toFixed(2) + "×");
