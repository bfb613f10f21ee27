#!/usr/bin/env bun
/**
 * libqb IPC server benchmark: qbun's server (`qbun serve`, the interop
 * service) against a libqb C reference server, both driven by the same real
 * libqb C client.
 *
 *   bun scripts/bench-qb.ts [--idle | --busy] [--rounds N] [--no-socket]
 *                           [--conns N] [--no-memory]
 *
 * Servers (all started once, named after this process, stopped at the end):
 *   - the reference: scripts/peers/qb-ref-server.c (qb_loop + qb_ipcs_*),
 *     on the shm transport and on the socket transport;
 *   - qbun: `bun cli/main.ts serve --service NAME --transport shm|socket`.
 * Both use the default rate limit (libqb's NORMAL: up to 5 requests per
 * connection per wake-up).
 *
 * Loads (scripts/peers/qb-load.c, one process per measurement, gcc -O2):
 *   1. latency: ECHO of 64 B, one client, sequential (qb_ipcc_sendv_recv);
 *      per-round p50/p99 of the round trips. Target: qbun p50 ≤ 1.2× ref.
 *   2. throughput: ECHO of 1 MiB, one client, sequential, a connection sized
 *      for it; payload bytes/s. Target: qbun ≥ 1.0× ref.
 *   3. pipeline: 4 client processes, 16 ECHOs of 64 B in flight each
 *      (qb_ipcc_send / qb_ipcc_recv); messages/s. Target: qbun ≥ 0.9× ref.
 *   4. connect: qb_ipcc_connect + one 64 B ECHO + qb_ipcc_disconnect in a
 *      loop; connections/s. Target: qbun ≥ 0.5× ref.
 *   diag (idle condition only): the latency load with the placement forced
 *      (server main thread and client pinned to one CPU, or to two).
 * Every round runs every (load, server) pair once, in an order that rotates
 * from round to round; one warm-up round is discarded, in which every
 * load runs long enough for the JIT to compile what it runs: the pipeline
 * and connect loads for --warmup-ms (default 2 s), the latency load 10×
 * and the throughput load 20× their per-round counts. A fresh qbun
 * server's connect rate rises about 20% over its first 2 s of connections
 * and its 1 MiB echo rate about 30% over its first 1,500 echoes, then both
 * stay flat; a long-running server is past that.
 * For each measurement
 * the server's CPU time (all its threads, from /proc/PID/task/TID/schedstat)
 * and main-thread sleeps, and the client's CPU time and sleeps, are recorded
 * too, per message. Other activity on the machine is watched (other Bun,
 * test and benchmark processes every 500 ms; the CPU time of everything that
 * is not this benchmark, per round) and reported with the results.
 *
 * Conditions, as scripts/bench-unix.ts: "idle" (nothing else running: a
 * wake-up that lands on a halted vCPU costs tens of µs) and "busy" (a busy
 * loop pinned to the last CPU; the measured processes share the other CPU(s)
 * and no wake-up waits for a halted vCPU). Default: both, idle first.
 *
 * Memory (after the conditions, idle, fresh servers): each server's VmRSS
 * with no connection (after a short warm-up), with N idle connections held
 * by `qb-load hold` (default 1000), and after they are released; plus what
 * those connections occupy in /dev/shm (the server's own qb-PID-* directories,
 * and the file system's used blocks before/after).
 *
 * Everything this script starts is stopped, its temporary directory removed
 * and any /dev/shm directory left by its servers reported and removed, also
 * on error or Ctrl-C.
 */
import { spawnSync } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, statSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import {
  armWatchdog,
  Child,
  children,
  cleanShmOf,
  commandLine,
  compilePeer,
  type Condition,
  cpuDelta,
  fmtInt,
  foreignCpuProbe,
  gbs,
  gitState,
  MAIN_THREAD,
  mb,
  median,
  onStopSignals,
  otherActivity as otherActivityOf,
  parseArgs,
  parseKv,
  positiveIntOption,
  removeTmp,
  rotate,
  runMain,
  sightingsBetween,
  startActivitySampler as startActivitySamplerOf,
  startBusyLoop,
  shmDirsOf,
  shmEntries,
  threadStats,
  totalCpu,
  us,
  x2,
} from "./bench-lib.ts";

// ------------------------------------------------------------------ options

type Transport = "shm" | "socket";

interface Options {
  conditions: Condition[];
  transports: Transport[];
  rounds: number;
  conns: number;
  memory: boolean;
  latencyIters: number;
  throughputIters: number;
  loadMs: number;
  /** How long the pipeline and connect loads run in the discarded warm-up round. */
  warmupMs: number;
}

function usage(): never {
  console.log(`usage: bun scripts/bench-qb.ts [options]
  --idle          only the idle condition
  --busy          only the busy condition (a busy loop pinned to the last CPU)
                  (default: both, idle first)
  --rounds N      interleaved rounds per condition (default 10)
  --no-socket     only the shm transport (default: shm and socket)
  --conns N       idle connections for the memory measurement (default 1000)
  --warmup-ms N   how long the pipeline and connect loads run in the
                  discarded warm-up round (default 2000; the latency and
                  throughput loads run 10x and 20x their counts in it)
  --no-memory     skip the memory measurement
  --help`);
  process.exit(0);
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    conditions: ["idle", "busy"],
    transports: ["shm", "socket"],
    rounds: 10,
    conns: 1000,
    memory: true,
    latencyIters: 2000,
    throughputIters: 100,
    loadMs: 250,
    warmupMs: 2000,
  };
  const conditions = parseArgs(argv, usage, (a, next) => {
    if (a === "--rounds") o.rounds = positiveIntOption(next(), a, 100);
    else if (a === "--conns") o.conns = positiveIntOption(next(), a, 5000);
    else if (a === "--warmup-ms") o.warmupMs = positiveIntOption(next(), a, 60_000);
    else if (a === "--no-socket") o.transports = ["shm"];
    else if (a === "--no-memory") o.memory = false;
    else return false;
    return true;
  });
  if (conditions) o.conditions = conditions;
  return o;
}

// ---------------------------------------------------------------- processes

let tmp = "";
const bin = (name: string) => join(tmp, name);
const root = join(import.meta.dir, "..");

function compilePeers(): void {
  for (const [name, libs] of [["qb-ref-server", ["-lqb"]], ["qb-load", ["-lqb"]], ["busy-loop", []]] as const) compilePeer(tmp, name, [...libs]);
}

// ------------------------------------------------------------------ servers

type ServerKind = "ref" | "qbun";

interface Server {
  readonly kind: ServerKind;
  readonly transport: Transport;
  readonly name: string;
  readonly child: Child;
  readonly label: string;
}

const serverLabel = (kind: ServerKind, transport: Transport) => (kind === "ref" ? `libqb C (${transport})` : `qbun (${transport})`);
const serverPids = new Set<number>();

async function startServer(kind: ServerKind, transport: Transport, tag: string): Promise<Server> {
  const name = `bench-qb-${process.pid}-${tag}-${kind}-${transport}`;
  const cmd =
    kind === "ref"
      ? [bin("qb-ref-server"), name, transport]
      : [process.execPath, join(root, "cli", "main.ts"), "serve", "--service", name, "--transport", transport];
  const child = new Child(`${kind} server (${transport})`, cmd);
  serverPids.add(child.pid);
  await child.expect(kind === "ref" ? "READY" : `READY ${name}`, 20_000);
  return { kind, transport, name, child, label: serverLabel(kind, transport) };
}

/** qbun answers what is in flight before it exits (up to 5 s): give it longer than that. */
async function stopServer(s: Server): Promise<void> {
  const code = await s.child.stop(8000);
  if (code !== 0) process.stderr.write(`warning: ${s.label} server exited with ${code === null ? "a signal (killed)" : `code ${code}`}\n`);
}

/** VmRSS and its parts (kB) from /proc/PID/status. */
function rss(pid: number): { rss: number; anon: number; file: number; shmem: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile"), shmem: kb("RssShmem") };
}

const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** Bytes allocated (blocks × 512) under the server's /dev/shm directories. */
function shmUsageOf(pid: number): { dirs: number; files: number; bytes: number; apparent: number } {
  let files = 0, bytes = 0, apparent = 0;
  const dirs = shmDirsOf(pid);
  for (const d of dirs) {
    try {
      for (const f of readdirSync(join("/dev/shm", d))) {
        const st = statSync(join("/dev/shm", d, f));
        files++;
        bytes += st.blocks * 512;
        apparent += st.size;
      }
    } catch {
      // removed meanwhile
    }
  }
  return { dirs: dirs.length, files, bytes, apparent };
}

function shmUsedBytes(): number {
  const s = statfsSync("/dev/shm");
  return (s.blocks - s.bfree) * s.bsize;
}

/** Other test or benchmark activity on the machine; ours (named bench-qb-<pid>-…) is left out. */
const otherActivity = () => otherActivityOf(`bench-qb-${process.pid}-`);
const startActivitySampler = () => startActivitySamplerOf(`bench-qb-${process.pid}-`);

// --------------------------------------------------------------------- loads

type LoadKind = "latency" | "throughput" | "pipeline" | "connect" | "latency-same" | "latency-cross";
const LOADS: LoadKind[] = ["latency", "throughput", "pipeline", "connect"];
/**
 * Diagnostics (idle condition only): the 64 B latency with the placement
 * forced, so that neither of the two modes the scheduler picks between in
 * the idle condition is left to chance: the server's main thread pinned to
 * CPU 0 and the client to CPU 0 too ("same": wake-ups are context switches
 * on a running CPU) or to the last CPU ("cross": every wake-up lands on a
 * halted vCPU).
 */
const PINNED: LoadKind[] = ["latency-same", "latency-cross"];

const MIB = 1024 * 1024;

function loadArgs(load: LoadKind, name: string, o: Options): string[] {
  switch (load) {
    case "latency":
    case "latency-same":
    case "latency-cross":
      return ["latency", name, "64", "200", String(o.latencyIters)];
    case "throughput":
      return ["throughput", name, String(MIB), "5", String(o.throughputIters)];
    case "pipeline":
      return ["pipeline", name, "64", "4", "16", String(o.loadMs)];
    case "connect":
      return ["connect", name, "64", String(o.loadMs)];
  }
}

interface Sample {
  /** latency: p50/p99 ns; throughput: bytes/s; pipeline: messages/s; connect: connections/s. */
  value: number;
  p99?: number;
  /** Messages (or connections) the server handled. */
  ops: number;
  /** Server CPU time during the measurement (ns), all threads, and by thread name. */
  cpu: number;
  cpuBy: Map<string, number>;
  /** Times the server's main thread blocked (went to sleep waiting for work). */
  serverBlocks: number;
  /** CPU time (ns) of the client process(es) during their timed part, and how often they blocked. */
  clientCpu: number;
  clientBlocks: number;
  retries: number;
}

/** Pin thread `tid` to `cpus` (taskset list syntax); returns its previous mask (hex) for restoring. */
function pinThread(tid: number, cpus: string): string {
  const get = spawnSync(["taskset", "-p", String(tid)], { stderr: "pipe" });
  const mask = /mask:\s*([0-9a-f]+)/.exec(get.stdout.toString())?.[1];
  const set = spawnSync(["taskset", "-p", "-c", cpus, String(tid)], { stdout: "ignore", stderr: "pipe" });
  if (!mask || !set.success) throw new Error(`taskset failed for ${tid}: ${get.stderr.toString()}${set.stderr.toString()}`);
  return mask;
}

function restoreThread(tid: number, mask: string): void {
  spawnSync(["taskset", "-p", mask, String(tid)], { stdout: "ignore", stderr: "ignore" });
}

async function runLoad(load: LoadKind, server: Server, o: Options): Promise<Sample> {
  const pinned = load === "latency-same" || load === "latency-cross";
  const lastCpu = os.availableParallelism() - 1;
  const mask = pinned ? pinThread(server.child.pid, "0") : undefined;
  const env = pinned ? { ...process.env, QB_LOAD_CPU: load === "latency-same" ? "0" : String(lastCpu) } : undefined;
  const before = threadStats(server.child.pid);
  const child = new Child(`qb-load ${load} → ${server.label}`, [bin("qb-load"), ...loadArgs(load, server.name, o)], "ignore", env);
  let line: string;
  try {
    line = await child.nextLine(60_000);
  } finally {
    await child.stop(2000);
    if (mask) restoreThread(server.child.pid, mask);
  }
  const after = threadStats(server.child.pid);
  if (line.startsWith("ERROR")) throw new Error(`qb-load ${load} against ${server.label}: ${line}`);
  const kv = parseKv(line);
  const cpuBy = cpuDelta(before.cpu, after.cpu);
  const base = {
    cpu: totalCpu(cpuBy),
    cpuBy,
    serverBlocks: after.mainBlocks - before.mainBlocks,
    clientCpu: kv.client_cpu ?? NaN,
    clientBlocks: kv.client_vcsw ?? NaN,
    retries: kv.retries ?? kv.eagain ?? 0,
  };
  switch (load) {
    case "latency":
    case "latency-same":
    case "latency-cross":
      return { value: kv.p50!, p99: kv.p99!, ops: kv.n!, ...base };
    case "throughput":
      return { value: kv.bytes_per_s!, ops: kv.n!, ...base };
    case "pipeline":
      return { value: kv.rate!, ops: kv.messages!, ...base };
    case "connect":
      return { value: kv.rate!, ops: kv.n!, ...base };
  }
}

// -------------------------------------------------------------- statistics

// ----------------------------------------------------------------- running

interface Cell {
  samples: Sample[];
}

interface ConditionResult {
  condition: Condition;
  note: string;
  /** results[load][serverIndex] */
  cells: Map<string, Cell>;
  overlaps: string[];
  /** CPU time (ns) used by other processes during each round, and the round's length (s). */
  foreign: Array<{ ns: number; seconds: number }>;
  seconds: number;
}

const cellKey = (load: LoadKind, s: Server) => `${load}/${s.kind}/${s.transport}`;

async function runCondition(condition: Condition, servers: Server[], o: Options): Promise<ConditionResult> {
  const started = performance.now();
  let busy: Child | undefined;
  let note = "nothing else running (machine idle)";
  const cells = new Map<string, Cell>();
  const overlaps: string[] = [];
  const foreign: Array<{ ns: number; seconds: number }> = [];
  try {
    if (condition === "busy") {
      // Pinned, nice 0, bounded by time (200 s) as well as stopped below.
      ({ child: busy, note } = await startBusyLoop(bin("busy-loop")));
    }
    const jobs: Array<[LoadKind, Server]> = [];
    const loads = condition === "idle" && os.availableParallelism() > 1 ? [...LOADS, ...PINNED] : LOADS;
    for (const load of loads) for (const s of servers) jobs.push([load, s]);
    for (const [load, s] of jobs) cells.set(cellKey(load, s), { samples: [] });
    // Warm-up round (discarded): JIT, page faults, first connections.
    const warm = { ...o, loadMs: o.warmupMs, latencyIters: o.latencyIters * 10, throughputIters: o.throughputIters * 20 };
    for (const [load, s] of jobs) await runLoad(load, s, warm);
    for (let r = 0; r < o.rounds; r++) {
      const roundStart = performance.now();
      const foreignCpu = foreignCpuProbe(() => [...servers.map((s) => s.child.pid), ...(busy ? [busy.pid] : [])]);
      for (const [load, s] of rotate(jobs, r * 3)) cells.get(cellKey(load, s))!.samples.push(await runLoad(load, s, o));
      foreign.push({ ns: foreignCpu(), seconds: (performance.now() - roundStart) / 1000 });
      const others = [...new Set([...sightingsBetween(roundStart, performance.now()), ...otherActivity()])];
      if (others.length > 0) overlaps.push(`round ${r + 1}: ${others.join("; ")}`);
      process.stderr.write(`  ${condition}: round ${r + 1}/${o.rounds} done (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
    }
    if (busy && !busy.alive) note += " — WARNING: the busy loop ended before the measurements did";
  } finally {
    await busy?.stop();
  }
  return { condition, note, cells, overlaps, foreign, seconds: (performance.now() - started) / 1000 };
}

interface MemoryResult {
  server: string;
  idle: ReturnType<typeof rss>;
  held: ReturnType<typeof rss>;
  released: ReturnType<typeof rss>;
  fdsIdle: number;
  fdsHeld: number;
  shm: ReturnType<typeof shmUsageOf>;
  shmFsDelta: number;
  clientFds: number;
  connectSeconds: number;
  cleanupSeconds: number;
  leftover: number;
}

async function measureMemory(kind: ServerKind, transport: Transport, o: Options): Promise<MemoryResult> {
  const s = await startServer(kind, transport, "mem");
  try {
    const pid = s.child.pid;
    // Warm-up: the code paths of connect, echo and disconnect have run once.
    const warm = new Child("qb-load warm-up", [bin("qb-load"), "latency", s.name, "64", "100", "500"]);
    await warm.expect("LAT");
    await warm.stop();
    const cw = new Child("qb-load warm-up", [bin("qb-load"), "connect", s.name, "64", "100"]);
    await cw.expect("CONN");
    await cw.stop();
    await Bun.sleep(1000);
    const idle = rss(pid);
    const fdsIdle = openFds(pid);
    const fsBefore = shmUsedBytes();
    const t0 = performance.now();
    const holder = new Child(`qb-load hold ${o.conns}`, [bin("qb-load"), "hold", s.name, String(o.conns)], "pipe");
    const held = parseKv(await holder.expect("HELD", 60_000));
    const connectSeconds = (performance.now() - t0) / 1000;
    await Bun.sleep(1000); // let the server settle (GC, deferred work)
    const heldRss = rss(pid);
    const fdsHeld = openFds(pid);
    const shm = shmUsageOf(pid);
    const shmFsDelta = shmUsedBytes() - fsBefore;
    holder.send("release\n");
    await holder.expect("RELEASED", 30_000);
    await holder.stop();
    const t1 = performance.now();
    while (shmDirsOf(pid).length > 0 && performance.now() - t1 < 10_000) await Bun.sleep(20);
    const cleanupSeconds = (performance.now() - t1) / 1000;
    const leftover = shmDirsOf(pid).length;
    await Bun.sleep(1000);
    const released = rss(pid);
    return {
      server: s.label,
      idle,
      held: heldRss,
      released,
      fdsIdle,
      fdsHeld,
      shm,
      shmFsDelta,
      clientFds: held.fds!,
      connectSeconds,
      cleanupSeconds,
      leftover,
    };
  } finally {
    await stopServer(s);
  }
}

// ------------------------------------------------------------------- report

interface Target {
  load: LoadKind;
  title: string;
  higherIsBetter: boolean;
  bound: number;
}

const TARGETS: Target[] = [
  { load: "latency", title: "ECHO 64 B, one client, sequential: round-trip p50", higherIsBetter: false, bound: 1.2 },
  { load: "throughput", title: "ECHO 1 MiB, one client: throughput", higherIsBetter: true, bound: 1.0 },
  { load: "pipeline", title: "4 clients × 16 in flight, ECHO 64 B: messages/s", higherIsBetter: true, bound: 0.9 },
  { load: "connect", title: "connect + ECHO 64 B + disconnect: connections/s", higherIsBetter: true, bound: 0.5 },
];

function fmtValue(load: LoadKind, v: number): string {
  switch (load) {
    case "latency":
    case "latency-same":
    case "latency-cross":
      return `${us(v)} µs`;
    case "throughput":
      return gbs(v);
    case "pipeline":
    case "connect":
      return `${fmtInt(v)}/s`;
  }
}

function report(res: ConditionResult, servers: Server[], o: Options): string {
  const out: string[] = [];
  const get = (load: LoadKind, kind: ServerKind, t: Transport) => {
    const s = servers.find((x) => x.kind === kind && x.transport === t);
    return s ? res.cells.get(cellKey(load, s)) : undefined;
  };
  out.push(`#### Condition: ${res.condition} — ${res.note}`, "");
  out.push(
    `Median over ${o.rounds} rounds (min–max of the per-round values in the detail table). Ratio: qbun's median / ` +
      `the reference's median; paired: the median of the per-round ratios (both measured in the same round).`,
    "",
    "| transport | load | libqb C | qbun | qbun / libqb | paired | target | |",
    "|---|---|---:|---:|---:|---:|---:|:-:|",
  );
  for (const t of o.transports) {
    for (const target of TARGETS) {
      const ref = get(target.load, "ref", t), q = get(target.load, "qbun", t);
      if (!ref || !q || ref.samples.length === 0) continue;
      const rv = ref.samples.map((s) => s.value), qv = q.samples.map((s) => s.value);
      const r = median(qv) / median(rv);
      const paired = median(qv.map((v, i) => v / rv[i]!));
      const ok = target.higherIsBetter ? r >= target.bound : r <= target.bound;
      const targetText = `${target.higherIsBetter ? "≥" : "≤"} ${target.bound.toFixed(1)}×`;
      const verdict = ok ? "✅" : "❌";
      out.push(
        `| ${t} | ${target.title} | ${fmtValue(target.load, median(rv))} | ${fmtValue(target.load, median(qv))} | ${x2(r)} | ${x2(paired)} | ${targetText} | ${verdict} |`,
      );
    }
  }
  for (const t of o.transports) {
    for (const load of PINNED) {
      const ref = get(load, "ref", t), q = get(load, "qbun", t);
      if (!ref || !q || ref.samples.length === 0) continue;
      const rv = ref.samples.map((s) => s.value), qv = q.samples.map((s) => s.value);
      const title = load === "latency-same" ? "*diag:* 64 B p50, server and client pinned to one CPU" : "*diag:* 64 B p50, server and client pinned to different CPUs";
      out.push(
        `| ${t} | ${title} | ${fmtValue(load, median(rv))} | ${fmtValue(load, median(qv))} | ${x2(median(qv) / median(rv))} | ` +
          `${x2(median(qv.map((v, i) => v / rv[i]!)))} | — | |`,
      );
    }
  }
  out.push("");

  out.push(
    "Detail. p99 (latency): median of the per-round p99. Per op (per message; connect: per connection), medians " +
      "over rounds: server CPU = the server process's CPU time, all threads (main: its main thread only); server " +
      "sleeps = how often the server's main thread blocked waiting for work (voluntary context switches: 1 per op " +
      "means a wake-up for every message); client CPU and client sleeps likewise for the load generator's " +
      "process(es) during the timed part. Retries: requests the client had to re-send because the request ring " +
      "was still full (all rounds).",
    "",
    "| transport | load | server | median | min–max | p99 | server CPU / op (main) | server sleeps / op | client CPU / op | client sleeps / op | retries |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const t of o.transports) {
    for (const load of LOADS) {
      for (const kind of ["ref", "qbun"] as const) {
        const c = get(load, kind, t);
        if (!c || c.samples.length === 0) continue;
        const v = c.samples.map((s) => s.value);
        const per = (f: (s: Sample) => number) => median(c.samples.map((s) => f(s) / s.ops));
        const p99 = c.samples[0]!.p99 !== undefined ? `${us(median(c.samples.map((s) => s.p99!)))} µs` : "";
        out.push(
          `| ${t} | ${load} | ${serverLabel(kind, t)} | ${fmtValue(load, median(v))} | ${fmtValue(load, Math.min(...v))} – ${fmtValue(load, Math.max(...v))} | ` +
            `${p99} | ${us(per((s) => s.cpu))} µs (${us(per((s) => s.cpuBy.get(MAIN_THREAD) ?? NaN))}) | ${per((s) => s.serverBlocks).toFixed(2)} | ` +
            `${us(per((s) => s.clientCpu))} µs | ${per((s) => s.clientBlocks).toFixed(2)} | ${c.samples.reduce((a, s) => a + s.retries, 0)} |`,
        );
      }
    }
  }
  out.push("");

  // qbun's threads, pooled over the pipeline load: where the CPU goes.
  for (const t of o.transports) {
    const c = get("pipeline", "qbun", t);
    if (!c || c.samples.length === 0) continue;
    const byThread = new Map<string, number>();
    let ops = 0;
    for (const s of c.samples) {
      ops += s.ops;
      for (const [k, v] of s.cpuBy) byThread.set(k, (byThread.get(k) ?? 0) + v);
    }
    const parts = [...byThread].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
    out.push(
      `qbun (${t}) server CPU per message by thread, pipeline load, all rounds: ` +
        parts.map(([k, v]) => `${k} ${us(v / ops)} µs`).join(", ") + ".",
      "",
    );
  }

  out.push("Per-round values, in round order (latency: p50 in µs; throughput: GB/s; pipeline: k messages/s; connect: connections/s):", "", "```");
  const rows: Array<[string, string]> = [];
  for (const t of o.transports) {
    for (const load of [...LOADS, ...PINNED]) {
      for (const kind of ["ref", "qbun"] as const) {
        const c = get(load, kind, t);
        if (!c || c.samples.length === 0) continue;
        const f = (v: number) =>
          load.startsWith("latency") ? us(v) : load === "throughput" ? (v / 1e9).toFixed(2) : load === "pipeline" ? (v / 1000).toFixed(0) : v.toFixed(0);
        rows.push([`${load} ${serverLabel(kind, t)}`, c.samples.map((s) => f(s.value)).join(" ")]);
      }
    }
  }
  const width = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) out.push(`${k.padEnd(width)}  ${v}`);
  out.push("```", "");
  const share = res.foreign.map((f) => f.ns / 1e9 / f.seconds);
  const pctCpu = (x: number) => `${(100 * x).toFixed(0)}%`;
  out.push(
    `CPU used by other processes during a round (the machine's busy time minus this benchmark's processes, ` +
      `in % of one CPU; ±30 ms of CPU per round of ~${median(res.foreign.map((f) => f.seconds)).toFixed(1)} s): ` +
      `median ${pctCpu(median(share))}, max ${pctCpu(Math.max(...share))}.`,
    "",
  );
  if (res.overlaps.length > 0) {
    out.push(`**Other test or benchmark runs were seen during ${res.overlaps.length} round(s)** (these numbers are suspect):`, "");
    for (const line of res.overlaps.slice(0, 5)) out.push(`- ${line}`);
    out.push("");
  } else {
    out.push("No other test or benchmark run was seen during the rounds.", "");
  }
  out.push(`(${res.seconds.toFixed(1)} s for this condition)`, "");
  return out.join("\n");
}

function memoryReport(results: MemoryResult[], o: Options): string {
  const out: string[] = [];
  out.push(
    `#### Memory: ${o.conns} idle connections (condition idle, fresh servers)`,
    "",
    `RSS: VmRSS of the server process in MiB; anon and shmem: the growth of its RssAnon (private memory) and RssShmem (mapped shared-memory pages) parts. Idle: after a warm-up ` +
      `(500 echoes, 100 ms of connect cycles) and 1 s of rest. Held: ${o.conns} connections open (each answered one ` +
      `64 B echo), 1 s after the last. Released: 1 s after they all disconnected and the server removed their files. ` +
      `/dev/shm: what the server's qb-PID-* directories occupy with the connections held (allocated blocks; the ` +
      `file system's used-space delta in parentheses). Connect: time for the client to open all of them.`,
    "",
    "| server | RSS idle | RSS held | held − idle | of which anon | of which shmem | per connection | RSS released | server fds idle → held | /dev/shm held | per connection | connect | cleanup |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const m of results) {
    const delta = m.held.rss - m.idle.rss;
    out.push(
      `| ${m.server} | ${mb(m.idle.rss)} | ${mb(m.held.rss)} | ${mb(delta)} | ${mb(m.held.anon - m.idle.anon)} | ${mb(m.held.shmem - m.idle.shmem)} | ` +
        `${(delta / o.conns).toFixed(1)} KiB | ${mb(m.released.rss)} | ${m.fdsIdle} → ${m.fdsHeld} | ` +
        `${(m.shm.bytes / MIB).toFixed(1)} MiB in ${m.shm.files} files (${(m.shmFsDelta / MIB).toFixed(1)}) | ` +
        `${(m.shm.bytes / 1024 / o.conns).toFixed(1)} KiB | ${m.connectSeconds.toFixed(2)} s | ${m.cleanupSeconds.toFixed(2)} s${m.leftover ? ` (${m.leftover} dirs left!)` : ""} |`,
    );
  }
  out.push("");
  return out.join("\n");
}

// -------------------------------------------------------------------- main

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const runStart = performance.now();
  const loadAtStart = os.loadavg();
  const shmAtStart = shmEntries();
  const othersAtStart = otherActivity();
  const sampler = startActivitySampler();
  tmp = mkdtempSync(join(os.tmpdir(), "qbun-bench-qb-"));
  const servers: Server[] = [];
  try {
    compilePeers();
    for (const t of o.transports) {
      servers.push(await startServer("ref", t, "run"), await startServer("qbun", t, "run"));
    }
    const { commit, dirty } = gitState(root);
    const libqb = spawnSync(["pkg-config", "--modversion", "libqb"], { stderr: "ignore" }).stdout.toString().trim() || "unknown";
    const header = [
      `### Run: ${new Date().toISOString().slice(0, 10)}`,
      "",
      `- command: \`${commandLine("bench-qb.ts")}\``,
      `- machine: ${os.availableParallelism()} vCPUs (${os.cpus()[0]?.model ?? "unknown CPU"}), Linux ${os.release()}, Bun ${Bun.version}, libqb ${libqb}`,
      `- load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}`,
      `- qbun: commit ${commit}${dirty ? " plus uncommitted changes in src/, ffi/ or cli/" : ""}`,
      `- rounds: ${o.rounds} per condition, interleaved (order rotates each round), after one discarded warm-up round (in it: pipeline and connect ${o.warmupMs} ms each, ` +
        `${o.latencyIters * 10} round trips, ${o.throughputIters * 20} × 1 MiB); ` +
        `per round: ${o.latencyIters} round trips (latency), ${o.throughputIters} × 1 MiB (throughput), ${o.loadMs} ms (pipeline, connect)`,
      ...(othersAtStart.length > 0 ? [`- **other test/benchmark processes at start:** ${othersAtStart.join("; ")}`] : []),
      "",
    ].join("\n");
    const sections: string[] = [];
    for (const condition of o.conditions) {
      process.stderr.write(`condition ${condition}…\n`);
      const res = await runCondition(condition, servers, o);
      sections.push(report(res, servers, o));
    }
    for (const s of servers.splice(0)) await stopServer(s);
    if (o.memory) {
      process.stderr.write(`memory: ${o.conns} connections…\n`);
      const memStart = performance.now();
      const mem: MemoryResult[] = [];
      for (const t of o.transports) for (const kind of ["ref", "qbun"] as const) mem.push(await measureMemory(kind, t, o));
      const others = sightingsBetween(memStart, performance.now());
      sections.push(
        memoryReport(mem, o) +
          (others.length > 0 ? `\n**Other activity during the memory measurement:** ${others.join("; ")}\n` : ""),
      );
    }
    console.log(header);
    console.log(sections.join("\n"));
    const leftovers = cleanShm(shmAtStart);
    console.log(
      leftovers.length === 0
        ? "/dev/shm: every directory the servers created was removed by the servers themselves."
        : `/dev/shm: ${leftovers.length} director${leftovers.length === 1 ? "y was" : "ies were"} left by the servers and removed by this script: ${leftovers.join(", ")}`,
    );
    console.log(`total time: ${((performance.now() - runStart) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    clearInterval(sampler);
    for (const s of servers) await stopServer(s).catch(() => {});
    for (const c of [...children]) await c.stop().catch(() => {});
    cleanShm(shmAtStart);
    removeTmp(tmp);
  }
}

/** Remove what our servers left in /dev/shm (only qb-<our server pid>-… entries that were not there at start). */
function cleanShm(atStart: Set<string>): string[] {
  return cleanShmOf(serverPids, atStart);
}

// Hard stop: the script must end by itself even if a peer hangs.
const cleanUp = () => {
  cleanShm(new Set());
  if (tmp) rmSync(tmp, { recursive: true, force: true });
};
armWatchdog("bench-qb", 480_000, cleanUp);
// Servers get a moment to remove their connections' files; then whatever is left goes.
onStopSignals(cleanUp, 1500);

await runMain(main);
