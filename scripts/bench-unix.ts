#!/usr/bin/env bun
/**
 * AF_UNIX socket benchmark: qbun (on both reactor backends) vs Bun's own
 * unix sockets vs C.
 *
 *   bun scripts/bench-unix.ts [--idle | --busy] [--rounds N] [--iters N]
 *                             [--iters-large N] [--fds N]
 *
 * Measures, in one run, with all variants interleaved round by round (the
 * order rotates every round):
 *   1. stream round trip (64 B and 64 KiB) against a C echo peer, client =
 *      qbun UnixStream / Bun.connect({ unix }) / a C client;
 *   2. datagram round trip (64 B): qbun UnixDatagram vs the C client (Bun has
 *      no unix datagram API);
 *   3. fd passing throughput (SCM_RIGHTS, 1 and 8 fds per message) over
 *      seqpacket and stream sockets, qbun → qbun over a socketpair in one
 *      process and qbun → a C receiver in another process.
 * plus diagnostic variants ("diag") that show where qbun's time goes: reads
 * without allocation, read() with its default 64 KiB buffer, a peek that
 * splits round trips into "echo already there" and "had to wait", and JS +
 * FFI with a blocking recv (no event loop).
 *
 * qbun's reactor backend is per process, chosen at first use. So this
 * process only orchestrates: every JS client runs in one of two Bun child
 * processes (scripts/bench-unix-child.ts, driven over stdin/stdout), A with
 * qbun's default backend (io_uring where the kernel allows it) and B with
 * QBUN_REACTOR=epoll (the helper-thread fallback). A also runs Bun's client
 * and the diagnostics, B one Bun control row. Every qbun row names its
 * backend. The C clients are processes of their own, as before.
 *
 * Conditions: "idle" (nothing else running: whether a wake-up lands on a
 * halted vCPU decides between ~5 and ~60 µs) and "busy" (a busy loop pinned
 * to the last CPU for the duration; the measured threads then share the other
 * CPU and no wake-up waits for a halted vCPU). Default: both, one after the
 * other; --idle / --busy: only that one.
 *
 * Each latency figure is the median over rounds of the per-round p50 (or
 * p99) of the per-iteration round-trip times. Ratios are meaningful; absolute
 * microseconds on a 2-vCPU VM are not (see BENCHMARKS.md).
 *
 * The C helpers in scripts/peers/ are compiled with gcc -O2 into a temporary
 * directory; every process, socket and file is removed at the end.
 */
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import {
  armWatchdog,
  Child,
  children,
  commandLine,
  compilePeer,
  type Condition,
  gitState,
  median,
  onStopSignals,
  parseArgs,
  positiveIntOption,
  removeTmp,
  rotate,
  runMain,
  startBusyLoop,
  us,
  x2,
} from "./bench-lib.ts";
import type { FdResult, FdRunner, FdSpec, Kind, LatencyRunner, LatencySpec } from "./bench-unix-child.ts";

// ------------------------------------------------------------------ options

interface Options {
  conditions: Condition[];
  rounds: number;
  iters: number;
  itersLarge: number;
  fds: number;
  warmup: number;
}

function usage(): never {
  console.log(`usage: bun scripts/bench-unix.ts [options]
  --idle            only the idle condition
  --busy            only the busy condition (a busy loop pinned to the last CPU)
                    (default: both, idle first)
  --rounds N        interleaved rounds (default 40)
  --iters N         round trips per variant per round at 64 B (default 1000)
  --iters-large N   round trips per variant per round at 64 KiB (default 300)
  --fds N           fds passed per fd variant per round (default 10000)
  --help`);
  process.exit(0);
}

function parseOptions(argv: string[]): Options {
  const o: Options = { conditions: ["idle", "busy"], rounds: 40, iters: 1000, itersLarge: 300, fds: 10000, warmup: 300 };
  const int = (v: string | undefined, name: string) => positiveIntOption(v, name, 1_000_000, `${name} needs a positive integer`);
  const conditions = parseArgs(argv, usage, (a, next) => {
    if (a === "--rounds") o.rounds = int(next(), a);
    else if (a === "--iters") o.iters = int(next(), a);
    else if (a === "--iters-large") o.itersLarge = int(next(), a);
    else if (a === "--fds") o.fds = int(next(), a);
    else return false;
    return true;
  });
  if (conditions) o.conditions = conditions;
  return o;
}

// ---------------------------------------------------------------- processes

/** How long to wait for a line from a child before giving up. */
const LINE_TIMEOUT_MS = 60_000;

/**
 * A Bun child running scripts/bench-unix-child.ts on qbun's default reactor
 * backend or a forced one: JS clients set up, run and torn down there on
 * request.
 */
class QbunHost {
  readonly child: Child;
  readonly backend: string;
  #nextId = 1;

  private constructor(child: Child, backend: string) {
    this.child = child;
    this.backend = backend;
  }

  /** Start one ("default": QBUN_REACTOR unset); a string (the reason) if it cannot start. */
  static async start(backend: "default" | "epoll" | "io_uring"): Promise<QbunHost | string> {
    const env: Record<string, string | undefined> = { ...process.env };
    delete env.QBUN_REACTOR;
    if (backend !== "default") env.QBUN_REACTOR = backend;
    const child = new Child(`JS child (${backend})`, [process.execPath, join(import.meta.dir, "bench-unix-child.ts")], "pipe", env, LINE_TIMEOUT_MS);
    const line = await child.nextLine();
    if (!line.startsWith("READY ")) {
      await child.stop();
      return line.startsWith("ERROR ") ? line.slice(6) : `unexpected "${line.slice(0, 80)}"`;
    }
    const got = line.slice(6);
    if (backend !== "default" && got !== backend) {
      await child.stop();
      return `asked for ${backend}, got ${got}`;
    }
    return new QbunHost(child, got);
  }

  newId(): number {
    return this.#nextId++;
  }

  async request<T = Record<string, unknown>>(cmd: Record<string, unknown>): Promise<T> {
    this.child.send(JSON.stringify(cmd) + "\n");
    const reply = JSON.parse(await this.child.nextLine()) as { ok: boolean; error?: string };
    if (!reply.ok) throw new Error(`${this.child.name}: ${reply.error}`);
    return reply as T;
  }

  async stop(): Promise<void> {
    if (this.child.alive) this.child.send(`{"op":"quit"}\n`);
    await Promise.race([this.child.proc.exited, Bun.sleep(2000)]);
    await this.child.stop();
  }
}

/** A runner for `spec` in the child `host` (the code is in scripts/bench-unix-child.ts). */
function remoteLatency(host: QbunHost, spec: LatencySpec): LatencyRunner {
  const id = host.newId();
  return {
    async setup() {
      await host.request({ op: "setup", id, spec });
    },
    async run(n) {
      const r = await host.request<{ t: number[]; waited?: string }>({ op: "run", id, n });
      return { t: Float64Array.from(r.t), waited: r.waited === undefined ? undefined : Uint8Array.from(r.waited, Number) };
    },
    async teardown() {
      if (host.child.alive) await host.request({ op: "teardown", id });
    },
  };
}

function remoteFd(host: QbunHost, spec: FdSpec): FdRunner {
  const id = host.newId();
  return {
    async setup() {
      await host.request({ op: "setup", id, spec });
    },
    run: (n) => host.request<FdResult>({ op: "run", id, n }),
    async teardown() {
      if (host.child.alive) await host.request({ op: "teardown", id });
    },
  };
}

// -------------------------------------------------------------- statistics

/** Nearest-rank percentile of sorted values. */
function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const ratio = (a: number, b: number) => x2(a / b);

// ----------------------------------------------------------- latency variants

type Group = "stream-64" | "stream-64k" | "dgram-64";

interface LatencyVariant extends LatencyRunner {
  /** Lookup key for the ratio rows. */
  readonly key: string;
  /** Row label (client). */
  readonly label: string;
  /** Name in the ratio table. */
  readonly short: string;
  /** qbun: its reactor backend and where it runs; others "—". */
  readonly reactor: string;
  readonly group: Group;
  readonly diagnostic?: boolean;
  readonly iters: number;
}

/**
 * A JS client in the child `host`. qbun rows show the host's reactor backend;
 * others show "—" (with the host in parentheses where there is more than one).
 */
function js(
  key: string,
  label: string,
  group: Group,
  host: QbunHost,
  spec: LatencySpec,
  iters: number,
  o: { diagnostic?: boolean; short?: string; reactor?: string } = {},
): LatencyVariant {
  const runner = remoteLatency(host, spec);
  const reactor = o.reactor ?? host.backend;
  const short = o.short ?? (o.diagnostic ? `${label} (${reactor})` : `qbun (${reactor})`);
  return { key, label, short, group, iters, diagnostic: o.diagnostic, reactor, ...pick(runner) };
}

const pick = <R extends { setup: unknown; run: unknown; teardown: unknown }>(r: R) => ({ setup: r.setup, run: r.run, teardown: r.teardown }) as Pick<R, "setup" | "run" | "teardown">;

/** The gcc-built ping-client, driven over stdin/stdout, timing itself. */
function cClient(key: string, label: string, group: Group, args: string[], iters: number): LatencyVariant {
  let child: Child | undefined;
  return {
    key, label, short: "C", reactor: "—", group, iters,
    async setup() {
      child = new Child(label, [bin("ping-client"), ...args], "pipe", undefined, LINE_TIMEOUT_MS);
      await child.expect("READY");
    },
    async run(n) {
      child!.send(`${n}\n`);
      const line = await child!.expect("T ");
      const parts = line.slice(2).split(" ");
      if (parts.length !== n) throw new Error(`${label}: ${parts.length} timings for ${n} iterations`);
      return { t: Float64Array.from(parts, Number) };
    },
    async teardown() {
      if (child?.alive) child.send("q\n");
      await child?.stop();
    },
  };
}

// ------------------------------------------------------------- fd variants

interface FdVariant {
  readonly label: string;
  readonly receiver: string;
  readonly reactor: string;
  readonly diagnostic?: boolean;
  setup(): Promise<void>;
  /** leaked: open-fd growth of the qbun process, plus the C receiver's. */
  run(total: number): Promise<FdResult>;
  teardown(): Promise<void>;
}

const fdLabel = (kind: Kind, batch: number) => `${kind}, ${batch} fd${batch > 1 ? "s" : ""}/msg`;

/** qbun → qbun over a socketpair, both ends in the child `host`. */
function fdPair(host: QbunHost, kind: Kind, batch: number, maxBytes: number | undefined): FdVariant {
  const runner = remoteFd(host, { kind: "fd-pair", socket: kind, batch, maxBytes });
  return {
    label: fdLabel(kind, batch) + (maxBytes === undefined ? ", receive with default maxBytes (65536)" : ""),
    receiver: "qbun, same process (socketpair)",
    reactor: host.backend,
    diagnostic: maxBytes === undefined,
    ...pick(runner),
  };
}

/** qbun in the child `host` → a C fd-sink process of its own (connects once per round). */
function fdToC(host: QbunHost, kind: Kind, batch: number, address: string): FdVariant {
  const runner = remoteFd(host, { kind: "fd-to-c", socket: kind, batch, address });
  let sink: Child | undefined;
  let sinkOpenBefore = -1; // the sink's open-fd count after the previous round
  const label = fdLabel(kind, batch);
  return {
    label,
    receiver: "C fd-sink, other process",
    reactor: host.backend,
    async setup() {
      sink = new Child(`fd-sink ${kind}`, [bin("fd-sink"), kind, address], "ignore", undefined, LINE_TIMEOUT_MS);
      await sink.expect("READY");
      await runner.setup();
    },
    async run(total) {
      const out = await runner.run(total);
      const line = await sink!.expect("DONE ");
      const msgs = Math.ceil(total / batch);
      const [m, got, closeFailures, ctrunc, open] = line.slice(5).split(" ").map(Number) as number[];
      if (m !== msgs || got !== msgs * batch || got !== out.fds || closeFailures !== 0 || ctrunc !== 0) {
        throw new Error(`${label} → C: sink reported "${line}" for ${msgs} messages × ${batch} fds`);
      }
      const sinkGrowth = sinkOpenBefore < 0 ? 0 : open! - sinkOpenBefore;
      sinkOpenBefore = open!;
      return { ...out, leaked: out.leaked + sinkGrowth };
    },
    async teardown() {
      await runner.teardown().catch(() => {});
      await sink?.stop();
    },
  };
}

/** fd number → what it refers to ("socket:[123]", "pipe:[…]", "anon_inode:[eventpoll]"…). */
function openFdTable(): Map<string, string> {
  const table = new Map<string, string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      table.set(fd, readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the directory's own fd, already closed
    }
  }
  return table;
}

// ----------------------------------------------------------------- running

interface LatencyResult {
  variant: LatencyVariant;
  p50: number[]; // per round, ns
  p99: number[];
  /** For variants that report `waited`: all rounds' times, by path. */
  direct: number[];
  viaWait: number[];
}

interface FdRoundResult {
  variant: FdVariant;
  rates: number[];
  fds: number;
  leaked: number;
}

interface ConditionResult {
  condition: Condition;
  latency: LatencyResult[];
  fd: FdRoundResult[];
  busyNote: string;
  seconds: number;
}

let tmp = "";
const bin = (name: string) => join(tmp, name);

function compilePeers(): void {
  for (const name of ["echo-peer", "ping-client", "fd-sink", "busy-loop"]) compilePeer(tmp, name);
}

async function runCondition(condition: Condition, opts: Options, lat: LatencyVariant[], fdv: FdVariant[]): Promise<ConditionResult> {
  const started = performance.now();
  let busy: Child | undefined;
  let busyNote = "nothing else running (machine idle)";
  if (condition === "busy") {
    // Normal priority, pinned: the scheduler then keeps the measured threads
    // on the other CPU(s), where every wake-up is a switch on a running CPU.
    // Bounded by time (170 s) as well as stopped explicitly below.
    ({ child: busy, note: busyNote } = await startBusyLoop(bin("busy-loop"), 170));
  }
  try {
    for (const v of lat) await v.setup();
    for (const v of fdv) await v.setup();
    // Warm-up (discarded): JIT, page faults, first connections.
    for (const v of lat) await v.run(Math.min(opts.warmup, v.iters));
    for (const v of fdv) await v.run(Math.min(2000, opts.fds));

    const latency: LatencyResult[] = lat.map((variant) => ({ variant, p50: [], p99: [], direct: [], viaWait: [] }));
    const fd: FdRoundResult[] = fdv.map((variant) => ({ variant, rates: [], fds: 0, leaked: 0 }));
    for (let r = 0; r < opts.rounds; r++) {
      for (const res of rotate(latency, r)) {
        const { t, waited } = await res.variant.run(res.variant.iters);
        if (t.length !== res.variant.iters) throw new Error(`${res.variant.label}: ${t.length} timings`);
        if (waited) for (let i = 0; i < t.length; i++) (waited[i] ? res.viaWait : res.direct).push(t[i]!);
        t.sort();
        res.p50.push(pct(t, 0.5));
        res.p99.push(pct(t, 0.99));
      }
      for (const res of rotate(fd, r)) {
        const out = await res.variant.run(opts.fds);
        res.rates.push(out.fdsPerSec);
        res.fds += out.fds;
        res.leaked += out.leaked;
      }
      process.stderr.write(`  ${condition}: round ${r + 1}/${opts.rounds} done (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
    }
    if (busy && !busy.alive) busyNote += " — WARNING: the busy loop ended before the measurements did";
    return { condition, latency, fd, busyNote, seconds: (performance.now() - started) / 1000 };
  } finally {
    for (const v of lat) await v.teardown().catch(() => {});
    for (const v of fdv) await v.teardown().catch(() => {});
    await busy?.stop();
  }
}

// ----------------------------------------------------------------- report

/** Rounds whose p50 is more than twice the variant's best round: the "slow placement" mode. */
const SLOW_FACTOR = 2;
const slowRounds = (p50: number[]) => p50.filter((x) => x > SLOW_FACTOR * Math.min(...p50)).length;

function report(res: ConditionResult, opts: Options): string {
  const out: string[] = [];
  const find = (key: string) => res.latency.find((l) => l.variant.key === key);
  const get = (key: string) => {
    const found = find(key);
    if (!found) throw new Error(`no latency variant "${key}"`);
    return found;
  };
  out.push(`### Condition: ${res.condition} — ${res.busyNote}`, "");
  out.push(
    `Round-trip latency in µs. p50 / p99: median over ${opts.rounds} rounds of each round's p50 / p99 ` +
      `(${opts.iters} round trips per round at 64 B, ${opts.itersLarge} at 64 KiB). ` +
      `best: the lowest per-round p50. slow: rounds whose p50 is over ${SLOW_FACTOR}× the best. ` +
      `reactor: the qbun reactor backend of the child process the client ran in ("—": not a qbun client).`,
    "",
    "| test | client | reactor | p50 | p99 | best | slow |",
    "|---|---|---|---:|---:|---:|---:|",
  );
  const groupName = { "stream-64": "stream 64 B", "stream-64k": "stream 64 KiB", "dgram-64": "datagram 64 B" };
  for (const l of res.latency) {
    out.push(
      `| ${groupName[l.variant.group]} | ${l.variant.diagnostic ? "*diag:* " : ""}${l.variant.label} | ${l.variant.reactor} | ` +
        `${us(median(l.p50))} | ${us(median(l.p99))} | ${us(Math.min(...l.p50))} | ${slowRounds(l.p50)}/${l.p50.length} |`,
    );
  }
  out.push(`| datagram 64 B | Bun | — | — | — | — | — |`, "", "(Bun has no AF_UNIX datagram API: no Bun row for datagrams.)", "");

  const ratioRow = (a: string, b: string, target?: number) => {
    const A = find(a), B = find(b);
    if (!A || !B) return undefined;
    const r50 = median(A.p50) / median(B.p50);
    const verdict = target === undefined ? "" : r50 <= target ? ` ✅ (target ≤ ${target}×)` : ` ❌ (target ≤ ${target}×)`;
    return (
      `| ${groupName[A.variant.group]}: ${A.variant.diagnostic ? "*diag:* " : ""}${A.variant.short} / ${B.variant.short} | ` +
      `${ratio(median(A.p50), median(B.p50))}${verdict} | ${ratio(Math.min(...A.p50), Math.min(...B.p50))} | ` +
      `${ratio(median(A.p99), median(B.p99))} |`
    );
  };
  out.push("| ratio | p50 | best | p99 |", "|---|---:|---:|---:|");
  const rows: Array<[string, string, number?]> = [
    ["qbun-64", "bun-64", 1.25],
    ["qbun-64-epoll", "bun-64", 1.25],
    ["qbun-64", "c-64"],
    ["qbun-64-epoll", "c-64"],
    ["bun-64", "c-64"],
    ["qbun-64-epoll", "qbun-64"],
    ["bun-64-b", "bun-64"],
    ["qbun-64k", "bun-64k"],
    ["qbun-64k-epoll", "bun-64k"],
    ["qbun-64k", "c-64k"],
    ["qbun-64k-epoll", "c-64k"],
    ["dgram", "c-dgram"],
    ["dgram-epoll", "c-dgram"],
    ...res.latency
      .filter((l) => l.variant.diagnostic && l.variant.key !== "bun-64-b")
      .map((l) => [l.variant.key, l.variant.group === "stream-64k" ? "bun-64k" : "bun-64"] as [string, string]),
  ];
  for (const [a, b, target] of rows) {
    const row = ratioRow(a, b, target);
    if (row) out.push(row);
  }
  out.push("");

  const split = res.latency.filter((l) => l.direct.length + l.viaWait.length > 0);
  if (split.length > 0) {
    const allBun = median(get("bun-64").p50);
    out.push(
      `Two paths, stream 64 B, all rounds pooled: a round trip either finds the echo already there when it looks ` +
        `(no wait) or has to wait for readiness through the reactor. Bun always goes through its event loop ` +
        `(p50 ${us(allBun)} µs, median of rounds).`,
      "",
      "| client | reactor | waited | p50 no wait | p50 waited | p90 waited | waited p50 / Bun p50 |",
      "|---|---|---:|---:|---:|---:|---:|",
    );
    for (const l of split) {
      const direct = Float64Array.from(l.direct).sort();
      const viaWait = Float64Array.from(l.viaWait).sort();
      const total = direct.length + viaWait.length;
      out.push(
        `| ${l.variant.label} | ${l.variant.reactor} | ${((100 * viaWait.length) / total).toFixed(0)}% | ${us(pct(direct, 0.5))} | ` +
          `${us(pct(viaWait, 0.5))} | ${us(pct(viaWait, 0.9))} | ${ratio(pct(viaWait, 0.5), allBun)} |`,
      );
    }
    out.push("");
  }

  out.push(
    `fd passing (SCM_RIGHTS), sender: qbun, 16-byte messages (qbun receivers use maxBytes: 16 unless noted). ` +
      `${opts.fds} fds per variant per round, every received fd closed; to the C receiver, the time runs until ` +
      `the receiver acknowledges that it has read and closed everything. fds/s: median over rounds (min–max). ` +
      `Target ≥ 100,000 fds/s. "fds leaked": growth of the open-fd count (the qbun process, plus the C ` +
      `receiver's own count) summed over all rounds.`,
    "",
    "| socket, batch | receiver | reactor | fds/s | min–max | fds leaked |",
    "|---|---|---|---:|---:|---:|",
  );
  const n = (x: number) => Math.round(x).toLocaleString("en-US");
  for (const f of res.fd) {
    const m = median(f.rates);
    const mark = f.variant.diagnostic ? "" : m >= 100_000 ? " ✅" : " ❌";
    out.push(
      `| ${f.variant.diagnostic ? "*diag:* " : ""}${f.variant.label} | ${f.variant.receiver} | ${f.variant.reactor} | ${n(m)}${mark} | ` +
        `${n(Math.min(...f.rates))}–${n(Math.max(...f.rates))} | ${f.leaked} |`,
    );
  }
  out.push("", `Per-round p50 (µs), in round order:`, "", "```");
  const rowName = (l: LatencyResult) => (l.variant.reactor.startsWith("—") ? l.variant.label : `${l.variant.label} [${l.variant.reactor}]`);
  const width = Math.max(...res.latency.map((l) => rowName(l).length));
  for (const l of res.latency) out.push(`${rowName(l).padEnd(width)}  ${l.p50.map(us).join(" ")}`);
  out.push("```", "", `(${res.seconds.toFixed(1)} s for this condition)`, "");
  return out.join("\n");
}

// -------------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const runStart = performance.now();
  const loadAtStart = os.loadavg();
  const fdsAtStart = openFdTable();
  tmp = mkdtempSync(join(os.tmpdir(), "qbun-bench-"));
  const started: Child[] = [];
  const hosts: QbunHost[] = [];
  try {
    compilePeers();
    const echoStream = join(tmp, "echo-stream.sock");
    const echoDgram = join(tmp, "echo-dgram.sock");
    for (const [name, kind, addr] of [["echo-peer stream", "stream", echoStream], ["echo-peer dgram", "dgram", echoDgram]] as const) {
      const c = new Child(name, [bin("echo-peer"), kind, addr], "ignore", undefined, LINE_TIMEOUT_MS);
      started.push(c);
      await c.expect("READY");
    }
    const notes: string[] = [];
    if (process.env.QBUN_REACTOR) notes.push(`QBUN_REACTOR=${process.env.QBUN_REACTOR} was set; the script ignores it`);
    // A: qbun's default (best available backend), with Bun's client and the
    // diagnostics. B: the epoll fallback.
    const a = await QbunHost.start("default");
    if (typeof a === "string") throw new Error(`the JS child did not start: ${a}`);
    hosts.push(a);
    const b = await QbunHost.start("epoll");
    if (typeof b === "string") throw new Error(`the epoll child did not start: ${b}`);
    hosts.push(b);
    if (a.backend !== "io_uring") notes.push(`io_uring is not available: both children run on ${a.backend}`);
    const small = 64, large = 64 * 1024;
    const stream = (size: number): LatencySpec => ({ kind: "stream", address: echoStream, size });
    const bun = (size: number): LatencySpec => ({ kind: "bun-stream", address: echoStream, size });
    const diag = { diagnostic: true };

    const latency = (): LatencyVariant[] => [
      js("qbun-64", "qbun UnixStream", "stream-64", a, stream(small), opts.iters),
      js("qbun-64-epoll", "qbun UnixStream", "stream-64", b, stream(small), opts.iters),
      js("bun-64", "Bun.connect({unix})", "stream-64", a, bun(small), opts.iters, { short: "Bun", reactor: "—" }),
      cClient("c-64", "C client", "stream-64", ["stream", echoStream, String(small)], opts.iters),
      js("bun-64-b", "Bun.connect({unix}) in the epoll child (control)", "stream-64", b, bun(small), opts.iters, {
        diagnostic: true,
        short: "Bun in the epoll child",
        reactor: `— (${b.backend} child)`,
      }),
      js("into-64", "qbun readInto, preallocated buffer", "stream-64", a, { kind: "stream-into", address: echoStream, size: small }, opts.iters, diag),
      js("split-64", "qbun UnixStream + peek after write (path split)", "stream-64", a, { kind: "stream-split", address: echoStream, size: small }, opts.iters, diag),
      js("split-64-epoll", "qbun UnixStream + peek after write (path split)", "stream-64", b, { kind: "stream-split", address: echoStream, size: small }, opts.iters, diag),
      js("read-64", "qbun read(), default maxBytes (65536)", "stream-64", a, { kind: "stream-read", address: echoStream, size: small }, opts.iters, diag),
      js("ffi-64", "JS + FFI, blocking recv (no event loop)", "stream-64", a, { kind: "ffi-blocking", address: echoStream, size: small }, opts.iters, {
        diagnostic: true,
        short: "JS + FFI, blocking recv (no event loop)",
        reactor: "— (no event loop)",
      }),
      js("qbun-64k", "qbun UnixStream", "stream-64k", a, stream(large), opts.itersLarge),
      js("qbun-64k-epoll", "qbun UnixStream", "stream-64k", b, stream(large), opts.itersLarge),
      js("into-64k", "qbun readInto, preallocated buffer", "stream-64k", a, { kind: "stream-into", address: echoStream, size: large }, opts.itersLarge, diag),
      js("bun-64k", "Bun.connect({unix})", "stream-64k", a, bun(large), opts.itersLarge, { short: "Bun", reactor: "—" }),
      cClient("c-64k", "C client", "stream-64k", ["stream", echoStream, String(large)], opts.itersLarge),
      js("dgram", "qbun UnixDatagram", "dgram-64", a, { kind: "dgram", peer: echoDgram, self: join(tmp, "dgram-a.sock"), size: small }, opts.iters),
      js("dgram-epoll", "qbun UnixDatagram", "dgram-64", b, { kind: "dgram", peer: echoDgram, self: join(tmp, "dgram-b.sock"), size: small }, opts.iters),
      cClient("c-dgram", "C client (datagram)", "dgram-64", ["dgram", echoDgram, String(small), join(tmp, "c-dgram.sock")], opts.iters),
    ];
    const fdVariants = (): FdVariant[] => {
      const v: FdVariant[] = [];
      for (const h of [a, b]) {
        for (const kind of ["seqpacket", "stream"] as const) for (const batch of [1, 8]) v.push(fdPair(h, kind, batch, 16));
      }
      for (const [h, tag] of [[a, "a"], [b, "b"]] as const) {
        for (const kind of ["seqpacket", "stream"] as const) {
          for (const batch of [1, 8]) v.push(fdToC(h, kind, batch, join(tmp, `sink-${tag}-${kind}${batch}.sock`)));
        }
      }
      v.push(fdPair(a, "stream", 1, undefined), fdPair(b, "stream", 1, undefined));
      return v;
    };

    const cpuModel = os.cpus()[0]?.model ?? "unknown CPU";
    const { commit, dirty } = gitState(join(import.meta.dir, ".."), ["src", "ffi"]);
    const header = [
      `## bench-unix — ${new Date().toISOString().slice(0, 10)}`,
      "",
      `- command: \`${commandLine("bench-unix.ts")}\``,
      `- machine: ${os.availableParallelism()} vCPUs (${cpuModel}), Linux ${os.release()}, Bun ${Bun.version}`,
      `- load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}`,
      `- qbun: commit ${commit}${dirty ? " plus uncommitted changes in src/ or ffi/" : ""}`,
      `- JS clients run in two Bun child processes (scripts/bench-unix-child.ts): A, qbun's default backend ` +
        `(${a.backend}), runs the qbun rows marked ${a.backend}, Bun's rows and the diagnostics; B ` +
        `(QBUN_REACTOR=epoll, backend ${b.backend}) runs the rows marked epoll and one Bun control row`,
      `- rounds: ${opts.rounds}, interleaved (variant order rotates each round); warm-up round discarded`,
      ...notes.map((n) => `- note: ${n}`),
      "",
    ].join("\n");
    const sections: string[] = [];
    for (const condition of opts.conditions) {
      process.stderr.write(`condition ${condition}…\n`);
      const res = await runCondition(condition, opts, latency(), fdVariants());
      sections.push(report(res, opts));
    }
    for (const h of hosts.splice(0)) await h.stop();
    for (const c of started) await c.stop();
    started.length = 0;
    // qbun closes synchronously, so what is left now is all that will be left.
    const fdsAtEnd = openFdTable();
    const added = [...fdsAtEnd].filter(([fd, what]) => fdsAtStart.get(fd) !== what);

    console.log(header);
    console.log(sections.join("\n"));
    console.log(
      `open fds in this process: ${fdsAtStart.size} at start, ${fdsAtEnd.size} at end; ` +
        `opened meanwhile and still open: ` +
        (added.length ? added.map(([fd, what]) => `${fd}→${what.replace(/:\[\d+\]$/, "")}`).join(", ") : "none") +
        ` (expected: Bun's own — spawnSync's epoll fd and eventfd, a copy of stderr for spawned children; ` +
        `a leak would show up as many more sockets, or as nonzero "fds leaked" above)`,
    );
    console.log(`total time: ${((performance.now() - runStart) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    for (const h of hosts) await h.stop().catch(() => {});
    for (const c of [...started, ...children]) await c.stop().catch(() => {});
    removeTmp(tmp);
  }
}

// Hard stop: the script must end by itself even if a peer hangs.
armWatchdog("bench-unix", 300_000, () => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});
onStopSignals(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

await runMain(main);
