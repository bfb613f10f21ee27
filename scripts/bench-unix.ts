#!/usr/bin/env bun
/**
 * AF_UNIX socket benchmark: qbun vs Bun's own unix sockets vs C.
 *
 *   bun scripts/bench-unix.ts [--idle | --busy] [--rounds N] [--iters N]
 *                             [--iters-large N] [--fds N]
 *
 * Measures, in one process run, with all variants interleaved round by round
 * (the order rotates every round):
 *   1. stream round trip (64 B and 64 KiB) against a C echo peer, client =
 *      qbun UnixStream / Bun.connect({ unix }) / a C client;
 *   2. datagram round trip (64 B): qbun UnixDatagram vs the C client (Bun has
 *      no unix datagram API);
 *   3. fd passing throughput (SCM_RIGHTS, 1 and 8 fds per message) over
 *      seqpacket and stream sockets, received by qbun in this process
 *      (socketpair) and by a C receiver in another process.
 * plus diagnostic variants ("diag") that show where qbun's time goes: reads
 * without allocation, read() with its default 64 KiB buffer, JS + FFI with a
 * blocking recv (no event loop), and a prototype of readiness through
 * io_uring + an eventfd in Bun's own loop (scripts/peers/uring-poll.c; no
 * helper thread; skipped where io_uring is unavailable).
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
import { spawnSync, type Subprocess } from "bun";
import { dlopen, type Pointer } from "bun:ffi";
import { mkdtempSync, openSync, closeSync, readdirSync, readlinkSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { UnixDatagram, UnixSeqpacket, UnixStream } from "../src/unix/index.ts";
import { encodeAddress } from "../src/unix/address.ts";
import { loadNative } from "../ffi/native.ts";

// ------------------------------------------------------------------ options

interface Options {
  conditions: Condition[];
  rounds: number;
  iters: number;
  itersLarge: number;
  fds: number;
  warmup: number;
}

type Condition = "idle" | "busy";

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
  const only: Condition[] = [];
  const int = (i: number, name: string): number => {
    const v = Number(argv[i]);
    if (!Number.isInteger(v) || v <= 0 || v > 1_000_000) {
      console.error(`${name} needs a positive integer`);
      process.exit(2);
    }
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--idle") only.push("idle");
    else if (a === "--busy") only.push("busy");
    else if (a === "--rounds") o.rounds = int(++i, a);
    else if (a === "--iters") o.iters = int(++i, a);
    else if (a === "--iters-large") o.itersLarge = int(++i, a);
    else if (a === "--fds") o.fds = int(++i, a);
    else if (a === "--help" || a === "-h") usage();
    else {
      console.error(`unknown option ${a} (try --help)`);
      process.exit(2);
    }
  }
  if (only.length > 0) o.conditions = (["idle", "busy"] as const).filter((c) => only.includes(c));
  return o;
}

// ---------------------------------------------------------------- processes

/** A child process whose stdout is read line by line. */
class Child {
  readonly name: string;
  readonly proc: Subprocess<"pipe" | "ignore", "pipe", "inherit">;
  #lines: string[] = [];
  #waiters: Array<(line: string | null) => void> = [];
  #ended = false;

  constructor(name: string, cmd: string[], stdin: "pipe" | "ignore") {
    this.name = name;
    this.proc = Bun.spawn(cmd, { stdin, stdout: "pipe", stderr: "inherit" });
    children.add(this);
    void this.#pump();
  }

  async #pump(): Promise<void> {
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of this.proc.stdout) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          this.#deliver(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      }
    } catch {
      // stream torn down at kill: treat as end
    }
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w(null);
  }

  #deliver(line: string): void {
    const w = this.#waiters.shift();
    if (w) w(line);
    else this.#lines.push(line);
  }

  /** The next stdout line; rejects if the child ends or stays silent too long. */
  nextLine(timeoutMs = 60_000): Promise<string> {
    const ready = this.#lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#ended) return Promise.reject(new Error(`${this.name} exited (code ${this.proc.exitCode})`));
    const { promise, resolve, reject } = Promise.withResolvers<string>();
    const timer = setTimeout(() => {
      const i = this.#waiters.indexOf(onLine);
      if (i >= 0) this.#waiters.splice(i, 1);
      reject(new Error(`${this.name}: no output for ${timeoutMs} ms`));
    }, timeoutMs);
    const onLine = (line: string | null) => {
      clearTimeout(timer);
      if (line === null) reject(new Error(`${this.name} exited (code ${this.proc.exitCode})`));
      else resolve(line);
    };
    this.#waiters.push(onLine);
    return promise;
  }

  async expect(prefix: string): Promise<string> {
    const line = await this.nextLine();
    if (!line.startsWith(prefix)) throw new Error(`${this.name}: expected "${prefix}", got "${line.slice(0, 80)}"`);
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

  async stop(): Promise<void> {
    children.delete(this);
    if (this.alive) this.proc.kill("SIGTERM");
    const exited = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(2000).then(() => false)]);
    if (!exited) {
      this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
  }
}

const children = new Set<Child>();

// -------------------------------------------------------------- statistics

/** Nearest-rank percentile of sorted values. */
function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function median(values: number[]): number {
  const s = Float64Array.from(values).sort();
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const us = (ns: number) => (ns / 1000).toFixed(ns < 10_000 ? 2 : 1);
const ratio = (a: number, b: number) => (a / b).toFixed(2) + "×";

// ----------------------------------------------------------- latency variants

interface LatencyVariant {
  /** Row label. */
  readonly label: string;
  /** Group: which comparison it belongs to. */
  readonly group: "stream-64" | "stream-64k" | "dgram-64";
  readonly diagnostic?: boolean;
  readonly iters: number;
  setup(): Promise<void>;
  /** Run n round trips, return their times in ns. */
  run(n: number): Promise<Float64Array>;
  /**
   * Variants that can tell set this after each run: 1 where the round trip
   * had to wait for readiness (the echo was not there yet), 0 where it was.
   */
  readonly waited?: Uint8Array;
  teardown(): Promise<void>;
}

function pattern(size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + 1) & 255;
  return b;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function echoMismatch(label: string): never {
  throw new Error(`${label}: echo does not match what was sent`);
}

/** (a) qbun UnixStream: write() then readExactly() — the documented way. */
function qbunStream(label: string, group: LatencyVariant["group"], address: string, size: number, iters: number): LatencyVariant {
  let conn: UnixStream | undefined;
  const msg = pattern(size);
  return {
    label, group, iters,
    async setup() {
      conn = await UnixStream.connect(address);
    },
    async run(n) {
      const c = conn!;
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await c.write(msg);
        const echo = await c.readExactly(size);
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(echo, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      conn?.close();
    },
  };
}

/** Diagnostic: qbun UnixStream with readInto() into one preallocated buffer (no per-iteration allocation). */
function qbunStreamInto(label: string, address: string, size: number, iters: number): LatencyVariant {
  let conn: UnixStream | undefined;
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  return {
    label, group: "stream-64", diagnostic: true, iters,
    async setup() {
      conn = await UnixStream.connect(address);
    },
    async run(n) {
      const c = conn!;
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await c.write(msg);
        let got = await c.readInto(buf);
        while (got < size) {
          const r = await c.readInto(buf.subarray(got));
          if (r === 0) throw new Error(`${label}: stream ended`);
          got += r;
        }
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(buf, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      conn?.close();
    },
  };
}

/**
 * Diagnostic: qbun UnixStream as in (a), plus one non-blocking MSG_PEEK right
 * after write() that tells whether the echo is already there (then
 * readExactly() returns without waiting) or not (then it waits through the
 * reactor). Splits qbun's time into its two paths; the peek itself costs one
 * syscall per round trip.
 */
function qbunStreamSplit(label: string, address: string, size: number, iters: number): LatencyVariant {
  let conn: UnixStream | undefined;
  const native = loadNative();
  const msg = pattern(size);
  const probe = new Uint8Array(1);
  let waited = new Uint8Array(0);
  return {
    label, group: "stream-64", diagnostic: true, iters,
    get waited() {
      return waited;
    },
    async setup() {
      conn = await UnixStream.connect(address);
    },
    async run(n) {
      const c = conn!;
      const t = new Float64Array(n);
      waited = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await c.write(msg);
        waited[i] = native.qbn_recv(c.fd, probe, 1, 0x02 /* MSG_PEEK */ | 0x40 /* MSG_DONTWAIT */) === 1 ? 0 : 1;
        const echo = await c.readExactly(size);
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(echo, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      conn?.close();
    },
  };
}

/** Diagnostic: qbun UnixStream with read() and its default maxBytes (65536). */
function qbunStreamRead(label: string, address: string, size: number, iters: number): LatencyVariant {
  let conn: UnixStream | undefined;
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  return {
    label, group: "stream-64", diagnostic: true, iters,
    async setup() {
      conn = await UnixStream.connect(address);
    },
    async run(n) {
      const c = conn!;
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await c.write(msg);
        let got = 0;
        while (got < size) {
          const chunk = await c.read();
          if (chunk === null) throw new Error(`${label}: stream ended`);
          buf.set(chunk, got);
          got += chunk.byteLength;
        }
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(buf, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      conn?.close();
    },
  };
}

/**
 * Diagnostic: the qbun helper's send/recv called straight from JS on a
 * *blocking* socket: JS + FFI + syscalls, no event loop, no reactor. The JS
 * thread sleeps in recv() exactly like the C client does.
 */
function ffiBlocking(label: string, address: string, size: number, iters: number): LatencyVariant {
  const native = loadNative();
  let fd = -1;
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  return {
    label, group: "stream-64", diagnostic: true, iters,
    async setup() {
      const enc = encodeAddress(address);
      fd = native.qbn_socket(1);
      if (fd < 0) throw new Error(`socket: ${fd}`);
      const rc = native.qbn_connect(fd, enc.bytes, enc.length);
      if (rc < 0) throw new Error(`connect: ${rc}`);
      native.qbn_set_nonblocking(fd, 0);
    },
    async run(n) {
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        if (native.qbn_send(fd, msg, size, 0) !== size) throw new Error(`${label}: short send`);
        let got = 0;
        while (got < size) {
          const r = native.qbn_recv(fd, got === 0 ? buf : buf.subarray(got), size - got, 0);
          if (r <= 0) throw new Error(`${label}: recv ${r}`);
          got += r;
        }
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(buf, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      if (fd >= 0) native.qbn_close(fd);
      fd = -1;
    },
  };
}

const uringSymbols = {
  up_eventfd: { args: [], returns: "int" },
  up_create: { args: ["int", "int", "ptr"], returns: "ptr" },
  up_poll: { args: ["ptr", "int", "int", "int"], returns: "int" },
  up_reap: { args: ["ptr", "ptr", "int"], returns: "int" },
  up_destroy: { args: ["ptr"], returns: "void" },
} as const;

/** Whether io_uring can be set up here (it is often disabled by sysctl or seccomp). */
function uringAvailable(): string | undefined {
  if (!existsSync(bin("uring-poll.so"))) return "scripts/peers/uring-poll.c did not compile";
  const lib = dlopen(bin("uring-poll.so"), uringSymbols);
  try {
    const efd = lib.symbols.up_eventfd();
    if (efd < 0) return `eventfd failed (${efd})`;
    const err = new Int32Array(1);
    const ring = lib.symbols.up_create(efd, 8, err);
    closeSync(efd);
    if (!ring) return `io_uring_setup failed (errno ${-err[0]!})`;
    lib.symbols.up_destroy(ring);
    return undefined;
  } finally {
    lib.close();
  }
}

/**
 * Diagnostic prototype (scripts/peers/uring-poll.c), not qbun: wait with a
 * one-shot io_uring poll whose completion signals an eventfd that Bun's own
 * event loop watches — no helper thread between the peer and the JS thread.
 * Send/recv are qbun's helper calls on a non-blocking socket, as in qbun.
 */
function uringPoll(label: string, address: string, size: number, iters: number): LatencyVariant {
  const native = loadNative();
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  let lib: ReturnType<typeof dlopen<typeof uringSymbols>> | undefined;
  let ring: Pointer | null = null;
  let efd = -1;
  let fd = -1;
  let reader: { read(): Promise<{ done: boolean }>; cancel(): Promise<void> } | undefined;
  const waiters = new Map<number, (result: number) => void>();
  const completions = new Int32Array(128);
  let nextToken = 1;
  let waited = new Uint8Array(0);
  const drain = () => {
    let n: number;
    do {
      n = lib!.symbols.up_reap(ring, completions, 64);
      for (let i = 0; i < n; i++) {
        const token = completions[2 * i]!;
        const settle = waiters.get(token);
        waiters.delete(token);
        settle?.(completions[2 * i + 1]!);
      }
    } while (n === 64);
  };
  return {
    label, group: "stream-64", diagnostic: true, iters,
    get waited() {
      return waited;
    },
    async setup() {
      lib = dlopen(bin("uring-poll.so"), uringSymbols);
      efd = lib.symbols.up_eventfd();
      const err = new Int32Array(1);
      ring = lib.symbols.up_create(efd, 64, err) as Pointer | null;
      if (!ring) throw new Error(`${label}: io_uring_setup: ${err[0]}`);
      reader = Bun.file(efd).stream().getReader();
      void (async () => {
        for (;;) {
          const { done } = await reader!.read();
          if (done) return;
          drain();
        }
      })().catch(() => {});
      const enc = encodeAddress(address);
      fd = native.qbn_socket(1);
      if (fd < 0 || native.qbn_connect(fd, enc.bytes, enc.length) < 0) throw new Error(`${label}: connect failed`);
    },
    async run(n) {
      const t = new Float64Array(n);
      waited = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        if (native.qbn_send(fd, msg, size, 0) !== size) throw new Error(`${label}: short send`);
        let got = 0;
        while (got < size) {
          const r = native.qbn_recv(fd, got === 0 ? buf : buf.subarray(got), size - got, 0);
          if (r > 0) {
            got += r;
            continue;
          }
          if (r !== -11) throw new Error(`${label}: recv ${r}`);
          waited[i] = 1;
          const token = nextToken++;
          const ready = new Promise<number>((resolve) => waiters.set(token, resolve));
          const rc = lib!.symbols.up_poll(ring, fd, 1 /* POLLIN */, token);
          if (rc < 0) throw new Error(`${label}: io_uring_enter ${rc}`);
          await ready;
        }
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(buf, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      if (fd >= 0) native.qbn_close(fd); // a pending poll completes with POLLNVAL/ECANCELED
      fd = -1;
      await reader?.cancel().catch(() => {});
      if (ring) lib!.symbols.up_destroy(ring);
      ring = null;
      if (efd >= 0) {
        try {
          closeSync(efd);
        } catch {
          // already closed by Bun's stream
        }
      }
      efd = -1;
      lib?.close();
    },
  };
}

/** (b) Bun.connect({ unix }): write, collect in the data callback until the whole echo is in. */
function bunStream(label: string, group: LatencyVariant["group"], path: string, size: number, iters: number): LatencyVariant {
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  let got = 0;
  let done: (() => void) | undefined;
  let failed: ((e: Error) => void) | undefined;
  let pending: Uint8Array | undefined; // unwritten rest of msg, sent on drain
  let sock: Awaited<ReturnType<typeof Bun.connect>> | undefined;
  const writeSome = (s: NonNullable<typeof sock>, data: Uint8Array) => {
    const w = s.write(data);
    if (w < 0) failed?.(new Error(`${label}: write failed`));
    pending = w >= 0 && w < data.byteLength ? data.subarray(w) : undefined;
  };
  return {
    label, group, iters,
    async setup() {
      sock = await Bun.connect({
        unix: path,
        socket: {
          data(_s, data) {
            buf.set(data, got);
            got += data.byteLength;
            if (got >= size) done?.();
          },
          drain(s) {
            if (pending) writeSome(s, pending);
          },
          close() {
            failed?.(new Error(`${label}: connection closed`));
          },
          error(_s, e) {
            failed?.(e);
          },
        },
      });
    },
    async run(n) {
      const s = sock!;
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        got = 0;
        const { promise, resolve, reject } = Promise.withResolvers<void>();
        done = resolve;
        failed = reject;
        writeSome(s, msg);
        await promise;
        t[i] = Bun.nanoseconds() - t0;
        if (got !== size || !sameBytes(buf, msg)) echoMismatch(label);
      }
      done = failed = undefined;
      return t;
    },
    async teardown() {
      failed = undefined;
      sock?.end();
    },
  };
}

/** (c) the gcc-built ping-client, driven over stdin/stdout, timing itself. */
function cClient(label: string, group: LatencyVariant["group"], args: string[], iters: number): LatencyVariant {
  let child: Child | undefined;
  return {
    label, group, iters,
    async setup() {
      child = new Child(label, [bin("ping-client"), ...args], "pipe");
      await child.expect("READY");
    },
    async run(n) {
      child!.send(`${n}\n`);
      const line = await child!.expect("T ");
      const parts = line.slice(2).split(" ");
      if (parts.length !== n) throw new Error(`${label}: ${parts.length} timings for ${n} iterations`);
      return Float64Array.from(parts, Number);
    },
    async teardown() {
      if (child?.alive) child.send("q\n");
      await child?.stop();
    },
  };
}

/** qbun UnixDatagram: bound client, sendTo() the echo peer, receive(). */
function qbunDgram(label: string, peer: string, self: string, size: number, iters: number): LatencyVariant {
  let sock: UnixDatagram | undefined;
  const msg = pattern(size);
  return {
    label, group: "dgram-64", iters,
    async setup() {
      sock = UnixDatagram.bound(self);
    },
    async run(n) {
      const s = sock!;
      const t = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await s.sendTo(peer, msg);
        const m = await s.receive();
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(m.data, msg)) echoMismatch(label);
      }
      return t;
    },
    async teardown() {
      sock?.close();
    },
  };
}

// ------------------------------------------------------------- fd variants

interface FdResult {
  fdsPerSec: number;
  fds: number;
  leaked: number; // open-fd delta in this process (or the C receiver)
}

interface FdVariant {
  readonly label: string;
  readonly receiver: string;
  readonly diagnostic?: boolean;
  setup(): Promise<void>;
  run(total: number): Promise<FdResult>;
  teardown(): Promise<void>;
}

const countOpenFds = () => readdirSync("/proc/self/fd").length;

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

type Kind = "seqpacket" | "stream";

async function sendWithFds(sock: UnixSeqpacket | UnixStream, payload: Uint8Array, fds: number[]): Promise<void> {
  if (sock instanceof UnixSeqpacket) await sock.send(payload, { fds });
  else await sock.sendMessage(payload, { fds });
}

/** qbun → qbun in this process over a socketpair; the receiver closes every fd. */
function fdPair(kind: Kind, batch: number, devnull: () => number, maxBytes: number | undefined): FdVariant {
  const label = `${kind}, ${batch} fd${batch > 1 ? "s" : ""}/msg${maxBytes === undefined ? ", receive with default maxBytes (65536)" : ""}`;
  return {
    label,
    receiver: "qbun, same process (socketpair)",
    diagnostic: maxBytes === undefined,
    async setup() {},
    async run(total) {
      const msgs = Math.ceil(total / batch);
      const before = countOpenFds();
      const [a, b] = kind === "seqpacket" ? UnixSeqpacket.pair() : UnixStream.pair();
      const fds = new Array<number>(batch).fill(devnull());
      const payload = new Uint8Array(16);
      const options = maxBytes === undefined ? {} : { maxBytes };
      let received = 0;
      const t0 = Bun.nanoseconds();
      const sender = (async () => {
        for (let i = 0; i < msgs; i++) {
          payload[0] = i & 255;
          await sendWithFds(a, payload, fds);
        }
      })();
      const receiver = (async () => {
        while (received < msgs * batch) {
          const m = b instanceof UnixSeqpacket ? await b.receive(options) : await (b as UnixStream).receiveMessage(options);
          if (m === null) throw new Error(`${label}: unexpected end of stream`);
          if (m.controlTruncated) throw new Error(`${label}: control data truncated`);
          for (const fd of m.fds) fd.close();
          received += m.fds.length;
        }
      })();
      await Promise.all([sender, receiver]);
      const dt = Bun.nanoseconds() - t0;
      a.close();
      b.close();
      return { fdsPerSec: (received / dt) * 1e9, fds: received, leaked: countOpenFds() - before };
    },
    async teardown() {},
  };
}

/** qbun → the C fd-sink process (connects once per round, closes to end it). */
function fdToC(kind: Kind, batch: number, devnull: () => number, address: string): FdVariant {
  let sink: Child | undefined;
  let sinkOpenBefore = -1; // the sink's open-fd count after the previous round
  const label = `${kind}, ${batch} fd${batch > 1 ? "s" : ""}/msg`;
  return {
    label,
    receiver: "C fd-sink, other process",
    async setup() {
      sink = new Child(`fd-sink ${kind}`, [bin("fd-sink"), kind, address], "ignore");
      await sink.expect("READY");
    },
    async run(total) {
      const msgs = Math.ceil(total / batch);
      const before = countOpenFds();
      const conn = kind === "seqpacket" ? await UnixSeqpacket.connect(address) : await UnixStream.connect(address);
      const fds = new Array<number>(batch).fill(devnull());
      const payload = new Uint8Array(16);
      const t0 = Bun.nanoseconds();
      for (let i = 0; i < msgs; i++) {
        payload[0] = i & 255;
        await sendWithFds(conn, payload, fds);
      }
      conn.close(); // the sink drains what is queued, then sees end of stream
      const line = await sink!.expect("DONE ");
      const dt = Bun.nanoseconds() - t0;
      const [m, got, closeFailures, ctrunc, open] = line.slice(5).split(" ").map(Number) as number[];
      if (m !== msgs || got !== msgs * batch || closeFailures !== 0 || ctrunc !== 0) {
        throw new Error(`${label} → C: sink reported "${line}" for ${msgs} messages × ${batch} fds`);
      }
      const sinkGrowth = sinkOpenBefore < 0 ? 0 : open! - sinkOpenBefore;
      sinkOpenBefore = open!;
      return { fdsPerSec: (got! / dt) * 1e9, fds: got!, leaked: countOpenFds() - before + sinkGrowth };
    },
    async teardown() {
      await sink?.stop();
    },
  };
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
  const peers = join(import.meta.dir, "peers");
  for (const name of ["echo-peer", "ping-client", "fd-sink", "busy-loop"]) {
    const r = spawnSync(["gcc", "-O2", "-Wall", "-pthread", "-o", bin(name), join(peers, `${name}.c`)], { stderr: "pipe" });
    if (!r.success) throw new Error(`gcc failed for ${name}.c:\n${r.stderr.toString()}`);
  }
  // Optional diagnostic: without it, its row is left out.
  const r = spawnSync(["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", bin("uring-poll.so"), join(peers, "uring-poll.c")], { stderr: "pipe" });
  if (!r.success) process.stderr.write(`note: uring-poll.c did not compile; its diagnostic row is skipped\n${r.stderr.toString()}`);
}

function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

async function runCondition(condition: Condition, opts: Options, lat: LatencyVariant[], fdv: FdVariant[]): Promise<ConditionResult> {
  const started = performance.now();
  let busy: Child | undefined;
  let busyNote = "nothing else running (machine idle)";
  if (condition === "busy") {
    const cpus = os.availableParallelism();
    const cpu = cpus - 1;
    // Normal priority, pinned: the scheduler then keeps the measured threads
    // on the other CPU(s), where every wake-up is a switch on a running CPU.
    // Bounded by time (170 s) as well as stopped explicitly below.
    busy = new Child("busy-loop", [bin("busy-loop"), String(cpus > 1 ? cpu : -1), "170", "0"], "ignore");
    await busy.expect("READY");
    // Let the scheduler's load tracking see the loop (PELT ramps up over
    // ~100 ms) before measuring; otherwise the first rounds still place
    // threads on the busy CPU.
    await Bun.sleep(1500);
    busyNote = cpus > 1
      ? `a busy loop (nice 0) pinned to CPU ${cpu} of ${cpus} for the whole condition`
      : "a busy loop (nice 0), but with only 1 CPU it competes with the benchmark";
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
        const t = await res.variant.run(res.variant.iters);
        const waited = res.variant.waited;
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
  const get = (label: string) => {
    const found = res.latency.find((l) => l.variant.label === label);
    if (!found) throw new Error(`no latency variant "${label}"`);
    return found;
  };
  out.push(`### Condition: ${res.condition} — ${res.busyNote}`, "");
  out.push(
    `Round-trip latency in µs. p50 / p99: median over ${opts.rounds} rounds of each round's p50 / p99 ` +
      `(${opts.iters} round trips per round at 64 B, ${opts.itersLarge} at 64 KiB). ` +
      `best: the lowest per-round p50. slow: rounds whose p50 is over ${SLOW_FACTOR}× the best.`,
    "",
    "| test | client | p50 | p99 | best | slow |",
    "|---|---|---:|---:|---:|---:|",
  );
  const groupName = { "stream-64": "stream 64 B", "stream-64k": "stream 64 KiB", "dgram-64": "datagram 64 B" };
  for (const l of res.latency) {
    out.push(
      `| ${groupName[l.variant.group]} | ${l.variant.diagnostic ? "*diag:* " : ""}${l.variant.label} | ` +
        `${us(median(l.p50))} | ${us(median(l.p99))} | ${us(Math.min(...l.p50))} | ${slowRounds(l.p50)}/${l.p50.length} |`,
    );
  }
  out.push(`| datagram 64 B | Bun | — | — | — | — |`, "", "(Bun has no AF_UNIX datagram API: no Bun row for datagrams.)", "");

  const ratioRow = (name: string, a: LatencyResult, b: LatencyResult, target?: number) => {
    const r50 = median(a.p50) / median(b.p50);
    const verdict = target === undefined ? "" : r50 <= target ? ` ✅ (target ≤ ${target}×)` : ` ❌ (target ≤ ${target}×)`;
    return (
      `| ${name} | ${ratio(median(a.p50), median(b.p50))}${verdict} | ${ratio(Math.min(...a.p50), Math.min(...b.p50))} | ` +
      `${ratio(median(a.p99), median(b.p99))} |`
    );
  };
  out.push("| ratio | p50 | best | p99 |", "|---|---:|---:|---:|");
  out.push(ratioRow("stream 64 B: qbun / Bun", get("qbun UnixStream"), get("Bun.connect({unix})"), 1.25));
  out.push(ratioRow("stream 64 B: qbun / C", get("qbun UnixStream"), get("C client")));
  out.push(ratioRow("stream 64 B: Bun / C", get("Bun.connect({unix})"), get("C client")));
  out.push(ratioRow("stream 64 KiB: qbun / Bun", get("qbun UnixStream (64 KiB)"), get("Bun.connect({unix}) (64 KiB)")));
  out.push(ratioRow("stream 64 KiB: qbun / C", get("qbun UnixStream (64 KiB)"), get("C client (64 KiB)")));
  out.push(ratioRow("datagram 64 B: qbun / C", get("qbun UnixDatagram"), get("C client (datagram)")));
  for (const l of res.latency) {
    if (l.variant.diagnostic && l.variant.group === "stream-64") out.push(ratioRow(`*diag:* ${l.variant.label} / Bun`, l, get("Bun.connect({unix})")));
  }
  out.push("");

  const split = res.latency.filter((l) => l.variant.waited);
  if (split.length > 0) {
    const bun = get("Bun.connect({unix})");
    const allBun = median(bun.p50);
    out.push(
      `Two paths, stream 64 B, all rounds pooled: a round trip either finds the echo already there when it looks ` +
        `(no wait) or has to wait for readiness. Bun always goes through its event loop (p50 ${us(allBun)} µs, median of rounds).`,
      "",
      "| client | waited | p50 no wait | p50 waited | p90 waited | waited p50 / Bun p50 |",
      "|---|---:|---:|---:|---:|---:|",
    );
    for (const l of split) {
      const direct = Float64Array.from(l.direct).sort();
      const viaWait = Float64Array.from(l.viaWait).sort();
      const total = direct.length + viaWait.length;
      out.push(
        `| ${l.variant.label} | ${((100 * viaWait.length) / total).toFixed(0)}% | ${us(pct(direct, 0.5))} | ` +
          `${us(pct(viaWait, 0.5))} | ${us(pct(viaWait, 0.9))} | ${ratio(pct(viaWait, 0.5), allBun)} |`,
      );
    }
    out.push("");
  }

  out.push(
    `fd passing (SCM_RIGHTS), sender: qbun, 16-byte messages (qbun receivers use maxBytes: 16 unless noted). ` +
      `${opts.fds} fds per variant per round, every received fd closed; ` +
      `fds/s: median over rounds (min–max). Target ≥ 100,000 fds/s. "fds leaked": growth of the open-fd count ` +
      `(this process, plus the C receiver's own count) summed over all rounds.`,
    "",
    "| socket, batch | receiver | fds/s | min–max | fds leaked |",
    "|---|---|---:|---:|---:|",
  );
  const n = (x: number) => Math.round(x).toLocaleString("en-US");
  for (const f of res.fd) {
    const m = median(f.rates);
    const mark = f.variant.diagnostic ? "" : m >= 100_000 ? " ✅" : " ❌";
    out.push(
      `| ${f.variant.diagnostic ? "*diag:* " : ""}${f.variant.label} | ${f.variant.receiver} | ${n(m)}${mark} | ` +
        `${n(Math.min(...f.rates))}–${n(Math.max(...f.rates))} | ${f.leaked} |`,
    );
  }
  out.push("", `Per-round p50 (µs), in round order:`, "", "```");
  const width = Math.max(...res.latency.map((l) => l.variant.label.length));
  for (const l of res.latency) out.push(`${l.variant.label.padEnd(width)}  ${l.p50.map(us).join(" ")}`);
  out.push("```", "", `(${res.seconds.toFixed(1)} s for this condition)`, "");
  return out.join("\n");
}

// -------------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const runStart = performance.now();
  const fdsAtStart = openFdTable();
  tmp = mkdtempSync(join(os.tmpdir(), "qbun-bench-"));
  let devnullFd = -1;
  const started: Child[] = [];
  try {
    compilePeers();
    const echoStream = join(tmp, "echo-stream.sock");
    const echoDgram = join(tmp, "echo-dgram.sock");
    for (const [name, kind, addr] of [["echo-peer stream", "stream", echoStream], ["echo-peer dgram", "dgram", echoDgram]] as const) {
      const c = new Child(name, [bin("echo-peer"), kind, addr], "ignore");
      started.push(c);
      await c.expect("READY");
    }
    devnullFd = openSync("/dev/null", "r");
    const devnull = () => devnullFd;
    const small = 64, large = 64 * 1024;
    const noUring = uringAvailable();

    const latency = (): LatencyVariant[] => [
      qbunStream("qbun UnixStream", "stream-64", echoStream, small, opts.iters),
      bunStream("Bun.connect({unix})", "stream-64", echoStream, small, opts.iters),
      cClient("C client", "stream-64", ["stream", echoStream, String(small)], opts.iters),
      qbunStreamInto("qbun readInto, preallocated buffer", echoStream, small, opts.iters),
      qbunStreamSplit("qbun UnixStream + peek after write (path split)", echoStream, small, opts.iters),
      qbunStreamRead("qbun read(), default maxBytes (65536)", echoStream, small, opts.iters),
      ffiBlocking("JS + FFI, blocking recv (no event loop)", echoStream, small, opts.iters),
      ...(noUring ? [] : [uringPoll("io_uring poll + eventfd in Bun's loop (prototype, no helper thread)", echoStream, small, opts.iters)]),
      qbunStream("qbun UnixStream (64 KiB)", "stream-64k", echoStream, large, opts.itersLarge),
      bunStream("Bun.connect({unix}) (64 KiB)", "stream-64k", echoStream, large, opts.itersLarge),
      cClient("C client (64 KiB)", "stream-64k", ["stream", echoStream, String(large)], opts.itersLarge),
      qbunDgram("qbun UnixDatagram", echoDgram, join(tmp, "qbun-dgram.sock"), small, opts.iters),
      cClient("C client (datagram)", "dgram-64", ["dgram", echoDgram, String(small), join(tmp, "c-dgram.sock")], opts.iters),
    ];
    const fdVariants = (): FdVariant[] => [
      fdPair("seqpacket", 1, devnull, 16),
      fdPair("seqpacket", 8, devnull, 16),
      fdPair("stream", 1, devnull, 16),
      fdPair("stream", 8, devnull, 16),
      fdToC("seqpacket", 1, devnull, join(tmp, "sink-seq1.sock")),
      fdToC("seqpacket", 8, devnull, join(tmp, "sink-seq8.sock")),
      fdToC("stream", 1, devnull, join(tmp, "sink-str1.sock")),
      fdToC("stream", 8, devnull, join(tmp, "sink-str8.sock")),
      fdPair("stream", 1, devnull, undefined),
    ];

    const cpuModel = os.cpus()[0]?.model ?? "unknown CPU";
    const git = (args: string[]) => {
      const r = spawnSync(["git", ...args], { cwd: join(import.meta.dir, ".."), stderr: "ignore" });
      return r.success ? r.stdout.toString().trim() : "";
    };
    const commit = git(["rev-parse", "--short", "HEAD"]) || "unknown";
    const dirty = git(["status", "--porcelain", "--", "src", "ffi"]);
    const header = [
      `## bench-unix — ${new Date().toISOString().slice(0, 10)}`,
      "",
      `- command: \`bun scripts/bench-unix.ts${process.argv.length > 2 ? " " + process.argv.slice(2).join(" ") : ""}\``,
      `- machine: ${os.availableParallelism()} vCPUs (${cpuModel}), Linux ${os.release()}, Bun ${Bun.version}`,
      `- load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
      `- qbun: commit ${commit}${dirty ? " plus uncommitted changes in src/ or ffi/" : ""}`,
      `- rounds: ${opts.rounds}, interleaved (variant order rotates each round); warm-up round discarded`,
      ...(noUring ? [`- io_uring prototype row skipped: ${noUring}`] : []),
      "",
    ].join("\n");
    const sections: string[] = [];
    for (const condition of opts.conditions) {
      process.stderr.write(`condition ${condition}…\n`);
      const res = await runCondition(condition, opts, latency(), fdVariants());
      sections.push(report(res, opts));
    }
    closeSync(devnullFd);
    devnullFd = -1;
    for (const c of started) await c.stop();
    started.length = 0;
    // qbun closes synchronously, so what is left now is all that will be left.
    const fdsAtEnd = openFdTable();
    const added = [...fdsAtEnd].filter(([fd, what]) => fdsAtStart.get(fd) !== what);

    console.log(header);
    console.log(sections.join("\n"));
    console.log(
      `open fds in this process: ${fdsAtStart.size} at start, ${fdsAtEnd.size} at end; opened meanwhile and still open: ` +
        (added.length ? added.map(([fd, what]) => `${fd}→${what.replace(/:\[\d+\]$/, "")}`).join(", ") : "none") +
        ` (expected: qbun's reactor — epoll fd, doorbell socketpair, stop pipe — and Bun's own: spawnSync's epoll fd and ` +
        `eventfd, a copy of stderr for spawned children; a leak would show up as many more sockets, or as nonzero "fds leaked" above)`,
    );
    console.log(`total time: ${((performance.now() - runStart) / 1000).toFixed(1)} s`);
    return 0;
  } finally {
    if (devnullFd >= 0) closeSync(devnullFd);
    for (const c of [...started, ...children]) await c.stop().catch(() => {});
    if (tmp && existsSync(tmp)) rmSync(tmp, { recursive: true, force: true });
  }
}

// Hard stop: the script must end by itself even if a peer hangs.
const watchdog = setTimeout(() => {
  console.error("bench-unix: watchdog: still running after 5 minutes, giving up");
  for (const c of children) c.proc.kill("SIGKILL");
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  process.exit(3);
}, 300_000);
watchdog.unref();

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    for (const c of children) c.proc.kill("SIGTERM");
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
}

const code = await main().catch((error) => {
  console.error(error);
  return 1;
});
process.exit(code);
