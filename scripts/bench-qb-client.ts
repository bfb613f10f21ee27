#!/usr/bin/env bun
/**
 * libqb IPC client benchmark: qbun's `QbClient` against libqb's own C client
 * (`qb_ipcc_*`), both talking to the same server — the libqb C reference
 * server (scripts/peers/qb-ref-server.c, the interop service, ECHO = id 1).
 *
 *   bun scripts/bench-qb-client.ts [--idle | --busy] [--rounds N]
 *                                  [--no-socket] [--no-diag] [--no-big]
 *
 * One reference server per transport (shm, and socket as a second table),
 * started once, named after this process, stopped at the end.
 *
 * Clients:
 *   - libqb: scripts/peers/qb-load.c (gcc -O2), one process per measurement;
 *   - qbun: a child Bun process (this script with `--driver`), started once
 *     and fed one command per measurement on stdin. A separate process, like
 *     qb-load, so the client shares nothing with the benchmark's own event
 *     loop, timers and /proc sampling; long-lived, as a real client (a
 *     daemon) would be, so its JIT is warm after the discarded warm-up round.
 *     Each measurement opens a fresh connection (untimed), as qb-load does.
 *
 * Loads (each side times itself: CLOCK_MONOTONIC in C, Bun.nanoseconds() in
 * the driver; connection setup and warm-up requests are not timed):
 *   1. latency: ECHO 64 B, sequential, one request at a time; per-round p50
 *      and p99. libqb: qb_ipcc_sendv_recv (10 s timeout); qbun:
 *      `await client.request(1, payload)`. Target: qbun p50 ≤ 1.2× libqb.
 *   2. throughput: ECHO 1 MiB, sequential, on a connection sized for it;
 *      payload bytes/s. Same calls as 1. No target; ratio reported.
 *   3. pipeline: ECHO 64 B with 16 in flight for 250 ms, then drained;
 *      responses/s. libqb's client cannot have more than one
 *      qb_ipcc_sendv_recv outstanding, so its row uses what libqb offers:
 *      `qb-load pipeline NAME 64 1 16 MS` — one client process that calls
 *      qb_ipcc_send until 16 are outstanding (or -EAGAIN), then qb_ipcc_recv
 *      one response (10 s timeout), and refills. qbun: 16 concurrent loops of
 *      `await client.request(1, payload)` on one connection (at most 16
 *      outstanding; responses matched in order). Target: qbun ≥ 1.0× libqb.
 *      A second row compares the same qbun rate with the reference the issue
 *      names, libqb's client with one qb_ipcc_sendv_recv outstanding: its
 *      sequential rate, 1 / mean round trip of load 1 in the same round.
 *   4. big pipeline (optional, shm only): as 3 with 1 MiB messages, both
 *      connections asking for 17 × (1 MiB + 64) so that 16 fit in the rings.
 *   diag (qbun only, reported next to libqb's row for the same load):
 *      - pipeline with qbun's send() ×16 / receive(), the exact shape of
 *        libqb's row;
 *      - 1 MiB sequential with the response received into one buffer
 *        reused for every request (`request`'s `into` option), as libqb's
 *        client receives into the caller's buffer;
 *      - shm 64 B latency without QbClient, on qbun's own ring code
 *        (src/qb/ring.ts) and a hand-made connection: "sync" = the JS thread
 *        blocks in sem_clockwait (Semaphore.waitSync: one wake-up per
 *        response, like libqb's client); "async" = Ring.waitForChunk (a
 *        helper thread waits on the semaphore, then rings the reactor's
 *        doorbell to wake the JS thread: the path QbClient takes);
 *      - shm, 16 in flight on such a hand-made connection, batched: fill the
 *        window with ring writes, one notification send for the batch, take
 *        every response already there synchronously, wait only when none is
 *        (what a leaner client could reach; compared with libqb's pipeline);
 *      - idle condition, shm: the 64 B latency of libqb, QbClient and both
 *        ring-code variants with the placement forced (taskset): the server
 *        on CPU 0 and the whole client process (every thread) on CPU 0 too,
 *        or on the last CPU — so that neither of the two placements the
 *        scheduler picks between on an idle machine is left to chance.
 * Every round runs every (load, client) pair once, in an order that rotates
 * from round to round; one warm-up round is discarded. Recorded per
 * measurement too: the server's CPU time and sleeps (voluntary context
 * switches of its thread), and the client's CPU time and sleeps — for the
 * qbun driver by thread (JS main thread, qbun's helper threads, Bun's own) —
 * and, for qbun, the JS heap the connection kept per request (a full
 * collection after the connect and after the timed part; should be 0).
 * Other activity on the machine is watched (other Bun, test and benchmark
 * processes every 500 ms; the CPU time of everything that is not this
 * benchmark, per round) and reported.
 *
 * Conditions, as scripts/bench-qb.ts: "idle" (nothing else running) and
 * "busy" (a busy loop pinned to the last CPU). Default: both, idle first.
 *
 * Everything this script starts is stopped, its temporary directory removed
 * and any /dev/shm directory left behind reported and removed, also on error
 * or Ctrl-C.
 */
import { spawnSync } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
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
  fmtInt,
  foreignCpuProbe,
  gbs,
  gitState,
  median,
  onStopSignals,
  otherActivity,
  parseArgs,
  parseKv,
  positiveIntOption,
  removeTmp,
  rotate,
  runMain,
  sightingsBetween,
  startActivitySampler,
  shmEntries,
  startBusyLoop,
  threadStats,
  totalCpu,
  us,
  x2,
} from "./bench-lib.ts";
// Types only: the benchmark process itself never loads qbun (the driver does, at run time).
import type { QbClient as Client, QbMessage as Message } from "../src/qb/client.ts";
import type { Ring } from "../src/qb/ring.ts";

const MIB = 1024 * 1024;
const REQ_HDR = 16;
const RES_HDR = 24;
const ID_ECHO = 1;
const DEPTH = 16;
/** Max message size for DEPTH messages of `size` in flight (both clients ask for the same). */
const bigMax = (size: number) => (DEPTH + 1) * (size + 64);

// ====================================================================== driver
// `bun scripts/bench-qb-client.ts --driver`: the qbun client process. Reads
// one command per line, prints one result line per command in qb-load's
// format (plus per-thread counts), exits at EOF or "quit".

interface ThreadSnap {
  /** tid → [cpu ns, voluntary switches, name] */
  threads: Map<string, [number, number, string]>;
}

function snapSelf(): ThreadSnap {
  const threads = new Map<string, [number, number, string]>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const cpu = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      const status = readFileSync(`/proc/self/task/${tid}/status`, "utf8");
      const vcsw = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
      const name = readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
      threads.set(tid, [cpu, vcsw, name]);
    } catch {
      // thread gone
    }
  }
  return { threads };
}

/**
 * CPU and sleeps between two snapshots, split: the JS main thread; qbun's
 * helper threads (pthread_create'd by qbun's C code, so they keep the
 * process name, "bun"); and Bun's own named threads (JIT, GC, pools).
 */
function usageBetween(a: ThreadSnap, b: ThreadSnap): string {
  const main = String(process.pid);
  const mainName = b.threads.get(main)?.[2];
  const sum = { cpu: 0, vcsw: 0, mainCpu: 0, mainVcsw: 0, helperCpu: 0, helperVcsw: 0 };
  for (const [tid, [cpu, vcsw, name]] of b.threads) {
    const [cpu0, vcsw0] = a.threads.get(tid) ?? [0, 0];
    const dc = cpu - cpu0, dv = vcsw - vcsw0;
    sum.cpu += dc;
    sum.vcsw += dv;
    if (tid === main) {
      sum.mainCpu += dc;
      sum.mainVcsw += dv;
    } else if (name === mainName) {
      sum.helperCpu += dc;
      sum.helperVcsw += dv;
    }
  }
  return (
    `client_cpu=${sum.cpu} client_vcsw=${sum.vcsw} main_cpu=${sum.mainCpu} main_vcsw=${sum.mainVcsw} ` +
    `helper_cpu=${sum.helperCpu} helper_vcsw=${sum.helperVcsw}`
  );
}

function fillPattern(size: number, seed: number): Uint8Array {
  const p = new Uint8Array(size);
  for (let i = 0; i < size; i++) p[i] = (i * 7 + seed) & 0xff;
  return p;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Nearest-rank percentile of sorted samples (as qb-load's pct). */
function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  const k = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length - 1e-6)));
  return sorted[k - 1]!;
}

/** JS heap in use after a full collection (bytes). */
function heapAfterGc(): number {
  Bun.gc(true);
  return process.memoryUsage().heapUsed;
}

/**
 * JS heap the connection kept per request: measured from just after the
 * connect (before the warm-up) to the end of the timed part, each after a
 * full collection; the requests are the warm-up and the timed ones.
 */
const retained = (before: number, requests: number) => `retained=${((heapAfterGc() - before) / requests).toFixed(0)}`;

async function driverMain(): Promise<void> {
  const { QbClient } = await import("../src/qb/client.ts");

  const check = (m: Message, size: number, payload: Uint8Array | undefined) => {
    if (m.id !== ID_ECHO || m.error !== 0 || m.data.byteLength !== size) {
      throw new Error(`bad echo: id ${m.id} error ${m.error} ${m.data.byteLength} bytes (expected ${size})`);
    }
    if (payload && !sameBytes(m.data, payload)) throw new Error("echo payload differs");
  };

  /** Sequential ECHOs: latency (p50/p99) or throughput (bytes/s). */
  async function sequential(name: string, size: number, warmup: number, iters: number, throughput: boolean, into = false): Promise<string> {
    const client: Client = await QbClient.connect(name, throughput ? { maxMessageSize: REQ_HDR + RES_HDR + size + 64 } : {});
    try {
      const payload = fillPattern(size, 1);
      const options = into ? { into: new Uint8Array(size) } : {};
      const heap0 = heapAfterGc();
      for (let i = 0; i < warmup; i++) check(await client.request(ID_ECHO, payload, options), size, payload);
      const t = new Float64Array(iters);
      const u0 = snapSelf();
      const start = Bun.nanoseconds();
      for (let i = 0; i < iters; i++) {
        const t0 = Bun.nanoseconds();
        const m = await client.request(ID_ECHO, payload, options);
        t[i] = Bun.nanoseconds() - t0;
        check(m, size, i === iters - 1 ? payload : undefined);
      }
      const total = Bun.nanoseconds() - start;
      const usage = `${usageBetween(u0, snapSelf())} ${retained(heap0, warmup + iters)}`;
      t.sort();
      if (throughput) {
        const seconds = total / 1e9;
        return `TPUT n=${iters} seconds=${seconds.toFixed(6)} bytes_per_s=${((size * iters) / seconds).toFixed(0)} p50=${pct(t, 0.5)} ${usage}`;
      }
      return `LAT n=${iters} p50=${pct(t, 0.5)} p90=${pct(t, 0.9)} p99=${pct(t, 0.99)} min=${t[0]} max=${t[iters - 1]} ${usage}`;
    } finally {
      await client.close();
    }
  }

  /** DEPTH in flight until the deadline, then drained: request() lanes, or send()/receive() as libqb's row. */
  async function pipeline(name: string, size: number, depth: number, ms: number, maxmsg: number, how: "request" | "send"): Promise<string> {
    const client: Client = await QbClient.connect(name, maxmsg > 0 ? { maxMessageSize: maxmsg } : {});
    try {
      const payload = fillPattern(size, 3);
      const heap0 = heapAfterGc();
      // Warm-up: one full window, untimed.
      await Promise.all(Array.from({ length: depth }, () => client.request(ID_ECHO, payload).then((m: Message) => check(m, size, payload))));
      let got = 0;
      const u0 = snapSelf();
      const start = Bun.nanoseconds();
      const deadline = start + ms * 1e6;
      if (how === "request") {
        const lane = async () => {
          while (Bun.nanoseconds() < deadline) {
            check(await client.request(ID_ECHO, payload), size, undefined);
            got++;
          }
        };
        await Promise.all(Array.from({ length: depth }, lane));
      } else {
        let sent = 0;
        let failure: unknown;
        let sending = true;
        while (sending || got < sent) {
          while (sending && sent - got < depth) {
            client.send(ID_ECHO, payload).catch((error: unknown) => (failure ??= error));
            sent++;
          }
          check(await client.receive(), size, undefined);
          got++;
          if (failure) throw failure;
          if (sending && (got & 15) === 0 && Bun.nanoseconds() >= deadline) sending = false;
        }
      }
      const end = Bun.nanoseconds();
      const usage = `${usageBetween(u0, snapSelf())} ${retained(heap0, depth + got)}`;
      const seconds = (end - start) / 1e9;
      return `PIPE messages=${got} seconds=${seconds.toFixed(6)} rate=${(got / seconds).toFixed(0)} ${usage}`;
    } finally {
      await client.close();
    }
  }

  /**
   * A connection made by hand on qbun's ring code, without QbClient: the
   * libqb handshake, the three rings attached (as libqb's client does), and
   * a second mapping of the response ring's header for a blocking wait on
   * its semaphore from the JS thread.
   */
  async function rawConnect(name: string) {
    const { UnixStream } = await import("../src/unix/index.ts");
    const { SharedMemory, Semaphore } = await import("../src/shm/index.ts");
    const { Ring, RingHeader, ringFiles } = await import("../src/qb/ring.ts");
    const { libqbAbstract } = await import("../src/qb/socket-names.ts");
    const wire = await import("../src/qb/wire.ts");
    const setup = await UnixStream.connect(libqbAbstract(name));
    const rings: Ring[] = [];
    let semMap: { close(): void } | undefined;
    const close = () => {
      semMap?.close();
      for (const ring of rings) ring.close(false);
      setup.close();
    };
    try {
      await setup.write(wire.encodeConnectionRequest(wire.MIN_MAX_MSG_SIZE));
      const r = wire.parseConnectionResponse(await setup.readExactly(wire.CONNECTION_RESPONSE_SIZE));
      if (!r || r.error !== 0 || r.connectionType !== wire.ConnectionType.SHM) throw new Error(`raw connect: ${JSON.stringify(r?.error)}`);
      for (const prefix of [r.request, r.response, r.event]) rings.push(Ring.open(ringFiles(prefix), r.maxMessageSize));
      const file = SharedMemory.openFile({ path: ringFiles(r.response).headerPath });
      const map = file.map({ guard: true });
      file.close();
      semMap = map;
      const header = (size: number) => {
        const h = new Uint8Array(REQ_HDR);
        wire.putRequestHeader(new DataView(h.buffer), 0, ID_ECHO, REQ_HDR + size);
        return h;
      };
      return { setup, request: rings[0]!, response: rings[1]!, sem: Semaphore.open(map, RingHeader.SEM), header, close };
    } catch (error) {
      close();
      throw error;
    }
  }

  /** Check one echo response (header + payload, copied out of the ring). */
  const verifyRaw = (bytes: Uint8Array, size: number, payload: Uint8Array | undefined) => {
    if (bytes.byteLength !== RES_HDR + size) throw new Error("bad raw echo length");
    const id = bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24);
    const error = bytes[16]! | (bytes[17]! << 8) | (bytes[18]! << 16) | (bytes[19]! << 24);
    if (id !== ID_ECHO || error !== 0) throw new Error(`bad raw echo: id ${id} error ${error}`);
    if (payload && !sameBytes(bytes.subarray(RES_HDR), payload)) throw new Error("raw echo payload differs");
  };

  /**
   * 64 B ECHO latency on the hand-made connection: each request written to
   * the request ring plus one notification byte on the setup socket, as
   * QbClient does; the response waited for either on the JS thread (sync:
   * Semaphore.waitSync, sem_clockwait) or by a helper thread + doorbell
   * (async: Ring.waitForChunk, QbClient's path).
   */
  async function raw(name: string, size: number, warmup: number, iters: number, mode: "sync" | "async"): Promise<string> {
    const c = await rawConnect(name);
    try {
      const payload = fillPattern(size, 1);
      const parts = [c.header(size), payload];
      const notify = new Uint8Array([0]);
      const once = async (): Promise<Uint8Array> => {
        if (!c.request.write(parts)) throw new Error("request ring full");
        await c.setup.write(notify);
        if (mode === "sync") {
          if (!c.sem.waitSync(10_000)) throw new Error("no response in 10 s");
        } else if (!(await c.response.waitForChunk({ timeout: 10_000 }))) throw new Error("no response in 10 s");
        const chunk = c.response.takeAcquired();
        const copy = chunk.slice();
        c.response.reclaim(chunk.byteLength);
        return copy;
      };
      const heap0 = heapAfterGc();
      for (let i = 0; i < warmup; i++) verifyRaw(await once(), size, payload);
      const t = new Float64Array(iters);
      const u0 = snapSelf();
      for (let i = 0; i < iters; i++) {
        const t0 = Bun.nanoseconds();
        const bytes = await once();
        t[i] = Bun.nanoseconds() - t0;
        verifyRaw(bytes, size, i === iters - 1 ? payload : undefined);
      }
      const usage = `${usageBetween(u0, snapSelf())} ${retained(heap0, warmup + iters)}`;
      t.sort();
      return `LAT n=${iters} p50=${pct(t, 0.5)} p90=${pct(t, 0.9)} p99=${pct(t, 0.99)} min=${t[0]} max=${t[iters - 1]} ${usage}`;
    } finally {
      c.close();
    }
  }

  /**
   * DEPTH ECHOs in flight on the hand-made connection, batched the way a
   * client could batch them in JS: fill the window (ring writes), one
   * notification write of as many bytes as requests written, then take every
   * response already there synchronously (sem_trywait) and wait (helper
   * thread + doorbell) only when none is. Responses are copied out, as
   * QbClient does. What a leaner QbClient could reach; not a QbClient API.
   */
  async function rawPipeline(name: string, size: number, depth: number, ms: number): Promise<string> {
    const c = await rawConnect(name);
    try {
      const payload = fillPattern(size, 3);
      const parts = [c.header(size), payload];
      const notify = new Uint8Array(depth);
      const heap0 = heapAfterGc();
      let sent = 0, got = 0;
      const run = async (until: number, total: number) => {
        let sending = true;
        while (sending || got < sent) {
          let batch = 0;
          while (sending && sent - got < depth && c.request.write(parts)) {
            sent++;
            batch++;
          }
          if (batch > 0) await c.setup.write(notify.subarray(0, batch));
          let chunk = c.response.take();
          if (!chunk) {
            if (!(await c.response.waitForChunk({ timeout: 10_000 }))) throw new Error("no response in 10 s");
            chunk = c.response.takeAcquired();
          }
          for (; chunk; chunk = c.response.take()) {
            const copy = chunk.slice();
            c.response.reclaim(chunk.byteLength);
            verifyRaw(copy, size, got === 0 ? payload : undefined);
            got++;
          }
          if (sending && (got >= total || Bun.nanoseconds() >= until)) sending = false;
        }
      };
      await run(Infinity, depth); // warm-up: one window
      const warm = got;
      got = sent = 0;
      const u0 = snapSelf();
      const start = Bun.nanoseconds();
      await run(start + ms * 1e6, Infinity);
      const end = Bun.nanoseconds();
      const usage = `${usageBetween(u0, snapSelf())} ${retained(heap0, warm + got)}`;
      const seconds = (end - start) / 1e9;
      return `PIPE messages=${got} seconds=${seconds.toFixed(6)} rate=${(got / seconds).toFixed(0)} ${usage}`;
    } finally {
      c.close();
    }
  }

  const num = (s: string | undefined) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < 0) throw new Error(`bad number ${s}`);
    return v;
  };
  console.log("READY");
  for await (const line of console) {
    const [cmd, name = "", ...a] = line.trim().split(" ");
    if (!cmd) continue;
    if (cmd === "quit") break;
    try {
      let out: string;
      switch (cmd) {
        case "latency":
          out = await sequential(name, num(a[0]), num(a[1]), num(a[2]), false);
          break;
        case "throughput":
        case "throughput-into":
          out = await sequential(name, num(a[0]), num(a[1]), num(a[2]), true, cmd === "throughput-into");
          break;
        case "pipeline":
        case "pipeline-send":
          out = await pipeline(name, num(a[0]), num(a[1]), num(a[2]), num(a[3]), cmd === "pipeline" ? "request" : "send");
          break;
        case "raw-sync":
        case "raw-async":
          out = await raw(name, num(a[0]), num(a[1]), num(a[2]), cmd === "raw-sync" ? "sync" : "async");
          break;
        case "raw-pipeline":
          out = await rawPipeline(name, num(a[0]), num(a[1]), num(a[2]));
          break;
        default:
          throw new Error(`unknown command ${cmd}`);
      }
      console.log(out);
    } catch (error) {
      console.log(`ERROR what=${cmd} ${String(error).replaceAll("\n", " ").slice(0, 300)}`);
    }
  }
  process.exit(0);
}

// =================================================================== options

type Transport = "shm" | "socket";
type ClientKind = "libqb" | "qbun";

interface Options {
  conditions: Condition[];
  transports: Transport[];
  rounds: number;
  diag: boolean;
  big: boolean;
  latencyIters: number;
  throughputIters: number;
  loadMs: number;
}

function usage(): never {
  console.log(`usage: bun scripts/bench-qb-client.ts [options]
  --idle          only the idle condition
  --busy          only the busy condition (a busy loop pinned to the last CPU)
                  (default: both, idle first)
  --rounds N      interleaved rounds per condition (default 10)
  --no-socket     only the shm transport (default: shm and socket)
  --no-diag       skip the diagnostic qbun-only loads
  --no-big        skip 1 MiB with 16 in flight
  --help`);
  process.exit(0);
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    conditions: ["idle", "busy"],
    transports: ["shm", "socket"],
    rounds: 10,
    diag: true,
    big: true,
    latencyIters: 2000,
    throughputIters: 100,
    loadMs: 250,
  };
  const conditions = parseArgs(argv, usage, (a, next) => {
    if (a === "--rounds") o.rounds = positiveIntOption(next(), a, 100);
    else if (a === "--no-socket") o.transports = ["shm"];
    else if (a === "--no-diag") o.diag = false;
    else if (a === "--no-big") o.big = false;
    else return false;
    return true;
  });
  if (conditions) o.conditions = conditions;
  return o;
}

// ================================================================= processes

let tmp = "";
const bin = (name: string) => join(tmp, name);
const marker = `bench-qb-client-${process.pid}-`;
const serverPids = new Set<number>();

interface Server {
  readonly transport: Transport;
  readonly name: string;
  readonly child: Child;
}

async function startServer(transport: Transport): Promise<Server> {
  const name = `${marker}${transport}`;
  const child = new Child(`libqb reference server (${transport})`, [bin("qb-ref-server"), name, transport]);
  serverPids.add(child.pid);
  await child.expect("READY", 20_000);
  return { transport, name, child };
}

async function stopServer(s: Server): Promise<void> {
  const code = await s.child.stop(5000);
  if (code !== 0) process.stderr.write(`warning: the ${s.transport} server exited with ${code === null ? "a signal (killed)" : `code ${code}`}\n`);
}

/** The qbun client process: this script with --driver. */
let driver: Child | undefined;

async function startDriver(): Promise<Child> {
  const d = new Child("qbun client driver", [process.execPath, import.meta.path, "--driver"], "pipe");
  await d.expect("READY", 30_000);
  return d;
}

// ===================================================================== loads

type LoadKind = "latency" | "throughput" | "pipeline" | "big" | "throughput-into" | "pipeline-send" | "raw-pipeline" | "raw-sync" | "raw-async";
const MAIN_LOADS: LoadKind[] = ["latency", "throughput", "pipeline", "big"];
/** qbun-only diagnostics, compared with libqb's row of `base`. */
const DIAG: Partial<Record<LoadKind, { base: LoadKind; title: string }>> = {
  "throughput-into": { base: "throughput", title: "*diag:* 1 MiB sequential, responses received into one reused buffer (`request`'s `into`)" },
  "pipeline-send": { base: "pipeline", title: "*diag:* 16 in flight, qbun send() ×16 / receive() (libqb's shape)" },
  "raw-pipeline": { base: "pipeline", title: "*diag:* 16 in flight, qbun ring code, batched notification, synchronous drain, no QbClient" },
  "raw-sync": { base: "latency", title: "*diag:* 64 B p50, qbun ring code, JS thread blocks in sem_clockwait (1 wake-up)" },
  "raw-async": { base: "latency", title: "*diag:* 64 B p50, qbun ring code, helper thread + doorbell, no QbClient (2 wake-ups)" },
};

/**
 * Placement forced for a diagnostic latency run (idle condition, shm): the
 * server pinned to CPU 0 and the whole client process (every thread) to
 * CPU 0 too ("same": each wake-up is a context switch on a running CPU) or
 * to the last CPU ("cross": each wake-up that crosses lands on a halted vCPU).
 */
type Pin = "same" | "cross";

const PIN_TEXT: Record<Pin, string> = { same: "server and client pinned to one CPU", cross: "server and client pinned to different CPUs" };
const PINNED_VARIANTS: Array<[LoadKind, string]> = [
  ["latency", "QbClient"],
  ["raw-sync", "qbun ring code, sync wait"],
  ["raw-async", "qbun ring code, helper + doorbell"],
];

/** Every cell that may have samples, in report order: [label, load, client, pin]. */
function cellOrder(): Array<[string, LoadKind, ClientKind, Pin | undefined]> {
  const cells: Array<[string, LoadKind, ClientKind, Pin | undefined]> = [];
  for (const load of MAIN_LOADS) for (const client of ["libqb", "qbun"] as const) cells.push([load, load, client, undefined]);
  for (const load of Object.keys(DIAG) as LoadKind[]) cells.push([load, load, "qbun", undefined]);
  for (const pin of ["same", "cross"] as const) {
    cells.push([`latency ${pin}-cpu`, "latency", "libqb", pin]);
    for (const [load] of PINNED_VARIANTS) cells.push([`${load} ${pin}-cpu`, load, "qbun", pin]);
  }
  return cells;
}

interface Job {
  load: LoadKind;
  client: ClientKind;
  server: Server;
  pin?: Pin;
}

function commandFor(job: Job, o: Options): string[] {
  const n = job.server.name;
  switch (job.load) {
    case "latency":
    case "raw-sync":
    case "raw-async":
      return [job.load === "latency" ? "latency" : job.load, n, "64", "200", String(o.latencyIters)];
    case "throughput":
    case "throughput-into":
      return [job.load, n, String(MIB), "5", String(o.throughputIters)];
    case "pipeline":
    case "pipeline-send":
      return job.client === "libqb"
        ? ["pipeline", n, "64", "1", String(DEPTH), String(o.loadMs)]
        : [job.load, n, "64", String(DEPTH), String(o.loadMs), "0"];
    case "raw-pipeline":
      return ["raw-pipeline", n, "64", String(DEPTH), String(o.loadMs)];
    case "big":
      return job.client === "libqb"
        ? ["pipeline", n, String(MIB), "1", String(DEPTH), String(o.loadMs), String(bigMax(MIB))]
        : ["pipeline", n, String(MIB), String(DEPTH), String(o.loadMs), String(bigMax(MIB))];
  }
}

interface Sample {
  /** latency: p50 ns; throughput: bytes/s; pipeline: messages/s; big: bytes/s. */
  value: number;
  p99?: number;
  /** latency: the mean round trip (ns), so 1e9 / mean is the sequential rate. */
  mean?: number;
  /** Messages in the timed part. */
  ops: number;
  serverCpu: number;
  serverBlocks: number;
  clientCpu: number;
  clientBlocks: number;
  mainCpu?: number;
  mainBlocks?: number;
  helperCpu?: number;
  helperBlocks?: number;
  /** qbun: JS heap kept per request (bytes). */
  retained?: number;
}

/** Set the CPU affinity of `pid` (with `allThreads`, of every thread); returns the old mask (hex). */
function setAffinity(pid: number, cpus: string, allThreads: boolean): string {
  const get = spawnSync(["taskset", "-p", String(pid)], { stderr: "pipe" });
  const mask = /mask:\s*([0-9a-f]+)/.exec(get.stdout.toString())?.[1];
  const set = spawnSync(["taskset", ...(allThreads ? ["-a"] : []), "-p", "-c", cpus, String(pid)], { stdout: "ignore", stderr: "pipe" });
  if (!mask || !set.success) throw new Error(`taskset failed for ${pid}: ${get.stderr.toString()}${set.stderr.toString()}`);
  return mask;
}

function restoreAffinity(pid: number, mask: string, allThreads: boolean): void {
  spawnSync(["taskset", ...(allThreads ? ["-a"] : []), "-p", mask, String(pid)], { stdout: "ignore", stderr: "ignore" });
}

async function runJob(job: Job, o: Options): Promise<Sample> {
  const clientCpu = job.pin === "same" ? "0" : String(os.availableParallelism() - 1);
  const serverMask = job.pin ? setAffinity(job.server.child.pid, "0", false) : undefined;
  const before = threadStats(job.server.child.pid);
  const args = commandFor(job, o);
  let line: string;
  try {
    if (job.client === "libqb") {
      const env = job.pin ? { ...process.env, QB_LOAD_CPU: clientCpu } : undefined;
      const child = new Child(`qb-load ${job.load} (${job.server.transport})`, [bin("qb-load"), ...args], "ignore", env);
      try {
        line = await child.nextLine(60_000);
      } finally {
        await child.stop(2000);
      }
    } else {
      // The driver's threads, and those it creates meanwhile (qbun's helpers), all on one CPU.
      const driverMask = job.pin ? setAffinity(driver!.pid, clientCpu, true) : undefined;
      try {
        driver!.send(args.join(" ") + "\n");
        line = await driver!.nextLine(60_000);
      } finally {
        if (driverMask) restoreAffinity(driver!.pid, driverMask, true);
      }
    }
  } finally {
    if (serverMask) restoreAffinity(job.server.child.pid, serverMask, false);
  }
  const after = threadStats(job.server.child.pid);
  if (line.startsWith("ERROR")) throw new Error(`${job.client} ${job.load} (${job.server.transport}): ${line}`);
  const kv = parseKv(line);
  const base = {
    serverCpu: totalCpu(after.cpu) - totalCpu(before.cpu),
    serverBlocks: after.mainBlocks - before.mainBlocks,
    clientCpu: kv.client_cpu ?? NaN,
    clientBlocks: kv.client_vcsw ?? NaN,
    mainCpu: kv.main_cpu,
    mainBlocks: kv.main_vcsw,
    helperCpu: kv.helper_cpu,
    helperBlocks: kv.helper_vcsw,
    retained: kv.retained,
  };
  switch (job.load) {
    case "latency":
    case "raw-sync":
    case "raw-async":
      return { value: kv.p50!, p99: kv.p99!, mean: kv.mean, ops: kv.n!, ...base };
    case "throughput":
    case "throughput-into":
      return { value: kv.bytes_per_s!, ops: kv.n!, ...base };
    case "pipeline":
    case "pipeline-send":
    case "raw-pipeline":
      return { value: kv.rate!, ops: kv.messages!, ...base };
    case "big":
      return { value: kv.rate! * MIB, ops: kv.messages!, ...base };
  }
}

// =================================================================== running

interface ConditionResult {
  condition: Condition;
  note: string;
  cells: Map<string, Sample[]>;
  overlaps: string[];
  foreign: Array<{ ns: number; seconds: number }>;
  seconds: number;
}

const cellKey = (load: LoadKind, client: ClientKind, t: Transport, pin?: Pin) => `${load}/${client}/${t}/${pin ?? ""}`;
const jobKey = (j: Job) => cellKey(j.load, j.client, j.server.transport, j.pin);

function jobsFor(servers: Server[], o: Options, condition: Condition): Job[] {
  const jobs: Job[] = [];
  for (const server of servers) {
    for (const load of MAIN_LOADS) {
      if (load === "big" && (!o.big || server.transport !== "shm")) continue;
      for (const client of ["libqb", "qbun"] as const) jobs.push({ load, client, server });
    }
    if (o.diag) {
      jobs.push({ load: "pipeline-send", client: "qbun", server });
      jobs.push({ load: "throughput-into", client: "qbun", server });
      if (server.transport === "shm") {
        jobs.push({ load: "raw-pipeline", client: "qbun", server });
        jobs.push({ load: "raw-sync", client: "qbun", server }, { load: "raw-async", client: "qbun", server });
        if (condition === "idle" && os.availableParallelism() > 1) {
          for (const pin of ["same", "cross"] as const) {
            jobs.push(
              { load: "latency", client: "libqb", server, pin },
              { load: "latency", client: "qbun", server, pin },
              { load: "raw-sync", client: "qbun", server, pin },
              { load: "raw-async", client: "qbun", server, pin },
            );
          }
        }
      }
    }
  }
  return jobs;
}

async function runCondition(condition: Condition, servers: Server[], o: Options): Promise<ConditionResult> {
  const started = performance.now();
  let busy: Child | undefined;
  let note = "nothing else running (machine idle)";
  const cells = new Map<string, Sample[]>();
  const overlaps: string[] = [];
  const foreign: Array<{ ns: number; seconds: number }> = [];
  try {
    if (condition === "busy") ({ child: busy, note } = await startBusyLoop(bin("busy-loop"), 150));
    const jobs = jobsFor(servers, o, condition);
    for (const j of jobs) cells.set(jobKey(j), []);
    for (const j of jobs) await runJob(j, o); // warm-up round, discarded
    for (let r = 0; r < o.rounds; r++) {
      const roundStart = performance.now();
      const foreignCpu = foreignCpuProbe(() => [...servers.map((s) => s.child.pid), driver!.pid, ...(busy ? [busy.pid] : [])]);
      // Rotate by a prime so that each pair meets different neighbours.
      for (const j of rotate(jobs, r * 5)) cells.get(jobKey(j))!.push(await runJob(j, o));
      foreign.push({ ns: foreignCpu(), seconds: (performance.now() - roundStart) / 1000 });
      const others = [...new Set([...sightingsBetween(roundStart, performance.now()), ...otherActivity(marker)])];
      if (others.length > 0) overlaps.push(`round ${r + 1}: ${others.join("; ")}`);
      process.stderr.write(`  ${condition}: round ${r + 1}/${o.rounds} done (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
    }
    if (busy && !busy.alive) note += " — WARNING: the busy loop ended before the measurements did";
  } finally {
    await busy?.stop();
  }
  return { condition, note, cells, overlaps, foreign, seconds: (performance.now() - started) / 1000 };
}

// ==================================================================== report

interface Row {
  load: LoadKind;
  title: string;
  metric: "p50" | "p99" | "value";
  /** Target on qbun / libqb, if any. */
  target?: { higherIsBetter: boolean; bound: number };
}

const ROWS: Row[] = [
  { load: "latency", title: "ECHO 64 B, sequential: round trip p50", metric: "p50", target: { higherIsBetter: false, bound: 1.2 } },
  { load: "latency", title: "ECHO 64 B, sequential: round trip p99", metric: "p99" },
  { load: "throughput", title: "ECHO 1 MiB, sequential: throughput", metric: "value" },
  { load: "pipeline", title: "ECHO 64 B, 16 in flight: messages/s", metric: "value", target: { higherIsBetter: true, bound: 1.0 } },
  { load: "big", title: "ECHO 1 MiB, 16 in flight: throughput", metric: "value" },
];

/** Loads whose value is a round-trip time (the others: bytes/s or messages/s). */
const isLatency = (load: LoadKind) => load === "latency" || load === "raw-sync" || load === "raw-async";

function fmt(load: LoadKind, metric: Row["metric"], v: number): string {
  if (metric !== "value" || isLatency(load)) return `${us(v)} µs`;
  if (load === "throughput" || load === "throughput-into" || load === "big") return gbs(v);
  return `${fmtInt(v)}/s`;
}

function report(res: ConditionResult, o: Options): string {
  const out: string[] = [];
  const get = (load: LoadKind, client: ClientKind, t: Transport, pin?: Pin) => res.cells.get(cellKey(load, client, t, pin));
  const pick = (s: Sample, metric: Row["metric"]) => (metric === "p99" ? s.p99! : s.value);
  out.push(`#### Condition: ${res.condition} — ${res.note}`, "");
  out.push(
    `Median over ${o.rounds} rounds. Ratio: qbun's median / libqb's median; paired: the median of the per-round ` +
      `ratios (both measured in the same round). Diagnostic rows compare a qbun-only variant with libqb's row for the same load.`,
    "",
    "| transport | load | libqb C client | qbun QbClient | qbun / libqb | paired | target | |",
    "|---|---|---:|---:|---:|---:|---:|:-:|",
  );
  for (const t of o.transports) {
    for (const row of ROWS) {
      const l = get(row.load, "libqb", t), q = get(row.load, "qbun", t);
      if (!l || !q || l.length === 0) continue;
      const lv = l.map((s) => pick(s, row.metric)), qv = q.map((s) => pick(s, row.metric));
      const r = median(qv) / median(lv);
      const paired = median(qv.map((v, i) => v / lv[i]!));
      let targetText = "—", verdict = "";
      if (row.target) {
        const ok = row.target.higherIsBetter ? r >= row.target.bound : r <= row.target.bound;
        targetText = `${row.target.higherIsBetter ? "≥" : "≤"} ${row.target.bound.toFixed(1)}×`;
        verdict = ok ? "✅" : "❌";
      }
      out.push(`| ${t} | ${row.title} | ${fmt(row.load, row.metric, median(lv))} | ${fmt(row.load, row.metric, median(qv))} | ${x2(r)} | ${x2(paired)} | ${targetText} | ${verdict} |`);
    }
    // The issue states the pipelined target against libqb's client as it
    // states that client's limit: one qb_ipcc_sendv_recv outstanding. That
    // reference is libqb's sequential rate (1 / mean round trip, same round);
    // the pipeline row above holds qbun to the stronger qb_ipcc_send ×16 /
    // qb_ipcc_recv, which libqb 2.0.6 allows.
    const seq = get("latency", "libqb", t), pipe = get("pipeline", "qbun", t);
    if (seq && pipe && seq.length > 0 && pipe.length > 0 && seq.every((x) => x.mean)) {
      const lv = seq.map((x) => 1e9 / x.mean!), qv = pipe.map((x) => x.value);
      const r = median(qv) / median(lv);
      out.push(
        `| ${t} | ECHO 64 B, 16 in flight ÷ libqb one qb_ipcc_sendv_recv at a time (the issue's stated reference): messages/s | ` +
          `${fmtInt(median(lv))}/s | ${fmtInt(median(qv))}/s | ${x2(r)} | ${x2(median(qv.map((v, i) => v / lv[i]!)))} | ≥ 1.0× | ${r >= 1 ? "✅" : "❌"} |`,
      );
    }
    for (const [load, d] of Object.entries(DIAG) as Array<[LoadKind, { base: LoadKind; title: string }]>) {
      const l = get(d.base, "libqb", t), q = get(load, "qbun", t);
      if (!l || !q || q.length === 0 || l.length === 0) continue;
      const lv = l.map((s) => s.value), qv = q.map((s) => s.value);
      out.push(
        `| ${t} | ${d.title} | ${fmt(d.base, "value", median(lv))} | ${fmt(load, "value", median(qv))} | ${x2(median(qv) / median(lv))} | ` +
          `${x2(median(qv.map((v, i) => v / lv[i]!)))} | — | |`,
      );
    }
    for (const pin of ["same", "cross"] as const) {
      const l = get("latency", "libqb", t, pin);
      if (!l || l.length === 0) continue;
      const lv = l.map((s) => s.value);
      for (const [load, what] of PINNED_VARIANTS) {
        const q = get(load, "qbun", t, pin);
        if (!q || q.length === 0) continue;
        const qv = q.map((s) => s.value);
        out.push(
          `| ${t} | *diag:* 64 B p50, ${PIN_TEXT[pin]}: ${what} | ${fmt(load, "value", median(lv))} | ${fmt(load, "value", median(qv))} | ` +
            `${x2(median(qv) / median(lv))} | ${x2(median(qv.map((v, i) => v / lv[i]!)))} | — | |`,
        );
      }
    }
  }
  out.push("");

  out.push(
    "Detail, medians over rounds, per message: client CPU = the client process, all threads, during the timed part; " +
      "client sleeps = its voluntary context switches (1 per message: it blocked once for every response). For qbun " +
      "also split by thread: JS = the JS main thread, helper = qbun's helper threads (the semaphore waiters). Server " +
      "CPU and sleeps: the reference server (one thread) during the measurement, connection setup included. JS heap " +
      "kept: qbun's JS heap growth per request over the warm-up and timed requests, after full collections (should be 0).",
    "",
    "| transport | load | client | median | min–max | client CPU / msg | client sleeps / msg | JS thread CPU, sleeps | helper CPU, sleeps | JS heap kept / msg | server CPU / msg | server sleeps / msg |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const t of o.transports) {
    for (const [label, load, client, pin] of cellOrder()) {
      const c = get(load, client, t, pin);
      if (!c || c.length === 0) continue;
      const v = c.map((s) => s.value);
      const per = (f: (s: Sample) => number | undefined) => median(c.map((s) => (f(s) ?? NaN) / s.ops));
      const split = (cpu: (s: Sample) => number | undefined, blocks: (s: Sample) => number | undefined) =>
        client === "qbun" ? `${us(per(cpu))} µs, ${per(blocks).toFixed(2)}` : "";
      out.push(
        `| ${t} | ${label} | ${client} | ${fmt(load, "value", median(v))} | ${fmt(load, "value", Math.min(...v))} – ${fmt(load, "value", Math.max(...v))} | ` +
          `${us(per((s) => s.clientCpu))} µs | ${per((s) => s.clientBlocks).toFixed(2)} | ${split((s) => s.mainCpu, (s) => s.mainBlocks)} | ` +
          `${split((s) => s.helperCpu, (s) => s.helperBlocks)} | ${client === "qbun" ? `${fmtInt(median(c.map((s) => s.retained ?? NaN)))} B` : ""} | ` +
          `${us(per((s) => s.serverCpu))} µs | ${per((s) => s.serverBlocks).toFixed(2)} |`,
      );
    }
  }
  out.push("");

  out.push("Per-round values, in round order (latency: p50 µs; throughput: GB/s; pipeline: k messages/s):", "", "```");
  const rows: Array<[string, string]> = [];
  for (const t of o.transports) {
    for (const [label, load, client, pin] of cellOrder()) {
      const c = get(load, client, t, pin);
      if (!c || c.length === 0) continue;
      const f = (v: number) =>
        isLatency(load) ? us(v) : load === "throughput" || load === "throughput-into" || load === "big" ? (v / 1e9).toFixed(2) : (v / 1000).toFixed(0);
      rows.push([`${t} ${label} ${client}`, c.map((s) => f(s.value)).join(" ")]);
    }
  }
  const width = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) out.push(`${k.padEnd(width)}  ${v}`);
  out.push("```", "");
  const share = res.foreign.map((f) => f.ns / 1e9 / f.seconds);
  const pctCpu = (x: number) => `${(100 * x).toFixed(0)}%`;
  out.push(
    `CPU used by other processes during a round (the machine's busy time minus this benchmark's processes, in % of one CPU; ` +
      `±30 ms of CPU per round of ~${median(res.foreign.map((f) => f.seconds)).toFixed(1)} s): median ${pctCpu(median(share))}, max ${pctCpu(Math.max(...share))}.`,
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

// ====================================================================== main

async function benchMain(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const runStart = performance.now();
  const loadAtStart = os.loadavg();
  const shmAtStart = shmEntries();
  const othersAtStart = otherActivity(marker);
  const sampler = startActivitySampler(marker);
  tmp = mkdtempSync(join(os.tmpdir(), "qbun-bench-qb-client-"));
  const servers: Server[] = [];
  try {
    compilePeer(tmp, "qb-ref-server", ["-lqb"]);
    compilePeer(tmp, "qb-load", ["-lqb"]);
    compilePeer(tmp, "busy-loop");
    for (const t of o.transports) servers.push(await startServer(t));
    driver = await startDriver();
    const { commit, dirty } = gitState(join(import.meta.dir, ".."));
    const libqb = spawnSync(["pkg-config", "--modversion", "libqb"], { stderr: "ignore" }).stdout.toString().trim() || "unknown";
    const header = [
      `### Run: ${new Date().toISOString().slice(0, 10)}`,
      "",
      `- command: \`${commandLine("bench-qb-client.ts")}\``,
      `- machine: ${os.availableParallelism()} vCPUs (${os.cpus()[0]?.model ?? "unknown CPU"}), Linux ${os.release()}, Bun ${Bun.version}, libqb ${libqb}`,
      `- load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}`,
      `- qbun: commit ${commit}${dirty ? " plus uncommitted changes in src/, ffi/ or cli/" : ""}`,
      `- rounds: ${o.rounds} per condition, interleaved (order rotates each round), after one discarded warm-up round; ` +
        `per round: ${o.latencyIters} round trips (latency), ${o.throughputIters} × 1 MiB (throughput), ${o.loadMs} ms (pipelines)`,
      ...(othersAtStart.length > 0 ? [`- **other test/benchmark processes at start:** ${othersAtStart.join("; ")}`] : []),
      "",
    ].join("\n");
    const sections: string[] = [];
    for (const condition of o.conditions) {
      process.stderr.write(`condition ${condition}…\n`);
      sections.push(report(await runCondition(condition, servers, o), o));
    }
    driver.send("quit\n");
    const quitting = driver.proc.exited;
    await Promise.race([quitting, Bun.sleep(5000)]);
    const driverCode = await driver.stop(2000);
    if (driverCode !== 0) process.stderr.write(`warning: the qbun driver exited with ${driverCode}\n`);
    driver = undefined;
    for (const s of servers.splice(0)) await stopServer(s);
    console.log(header);
    console.log(sections.join("\n"));
    const leftovers = cleanShmOf(serverPids, shmAtStart);
    console.log(
      leftovers.length === 0
        ? "/dev/shm: every directory the server created was removed by the server itself."
        : `/dev/shm: ${leftovers.length} director${leftovers.length === 1 ? "y was" : "ies were"} left behind and removed by this script: ${leftovers.join(", ")}`,
    );
    console.log(`total time: ${((performance.now() - runStart) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    clearInterval(sampler);
    for (const c of [...children]) await c.stop().catch(() => {});
    cleanShmOf(serverPids, shmAtStart);
    removeTmp(tmp);
  }
}

if (process.argv[2] === "--driver") {
  await driverMain();
} else {
  // Hard stop: the script must end by itself even if a peer hangs.
  const cleanUp = () => {
    cleanShmOf(serverPids, new Set());
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  };
  armWatchdog("bench-qb-client", 360_000, cleanUp);
  onStopSignals(cleanUp, 1500);
  await runMain(benchMain);
}
