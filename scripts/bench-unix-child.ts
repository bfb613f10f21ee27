#!/usr/bin/env bun
/**
 * The JavaScript clients of scripts/bench-unix.ts (qbun's, Bun's own, and JS
 * + FFI without an event loop), run in a child process of the benchmark.
 *
 * qbun's reactor backend is chosen once per process (io_uring if available,
 * else the epoll helper thread; `QBUN_REACTOR` forces one). So the benchmark
 * runs every JS client in child processes like this one, one per backend:
 *
 *   bun scripts/bench-unix-child.ts                      # default backend
 *   QBUN_REACTOR=epoll bun scripts/bench-unix-child.ts   # epoll fallback
 *
 * A child starts its reactor, prints "READY <backend>" (or "ERROR <reason>"),
 * then answers each JSON command line read from stdin with one JSON line:
 *
 *   {"op":"setup","id":N,"spec":{...}}   → {"ok":true}
 *   {"op":"run","id":N,"n":N}            → {"ok":true,"t":[ns…],"waited":"0110…"}
 *                                           (fd runners: {"ok":true,"fdsPerSec":…,"fds":…,"leaked":…})
 *   {"op":"teardown","id":N}             → {"ok":true}
 *   {"op":"quit"}                        → exits
 *
 * Failures answer {"ok":false,"error":"…"}. End of stdin (the benchmark
 * ended or was killed) makes the child exit at once, even mid-run. Timing is done here, with
 * Bun.nanoseconds() around the awaited calls; the parent only collects.
 */
import { closeSync, openSync, readdirSync } from "node:fs";
import { loadNative } from "../ffi/native.ts";
import { Reactor } from "../ffi/reactor.ts";
import { encodeAddress } from "../src/unix/address.ts";
import { UnixDatagram, UnixSeqpacket, UnixStream } from "../src/unix/index.ts";

// -------------------------------------------------------------- specs

export type Kind = "seqpacket" | "stream";

/** A latency client: what it does per round trip (all against a C echo peer). */
export type LatencySpec =
  /** Bun.connect({ unix }): write, collect in the data callback until the whole echo is in. */
  | { kind: "bun-stream"; address: string; size: number }
  /** qbun's helper send/recv from JS on a *blocking* socket: no event loop, no reactor. */
  | { kind: "ffi-blocking"; address: string; size: number }
  /** write() then readExactly(): the documented way. */
  | { kind: "stream"; address: string; size: number }
  /** readInto() one preallocated buffer (no allocation per round trip). */
  | { kind: "stream-into"; address: string; size: number }
  /** As "stream", plus a non-blocking MSG_PEEK after write() telling whether the echo was already there. */
  | { kind: "stream-split"; address: string; size: number }
  /** read() with its default maxBytes (65536). */
  | { kind: "stream-read"; address: string; size: number }
  /** UnixDatagram bound at `self`: sendTo(peer) then receive(). */
  | { kind: "dgram"; peer: string; self: string; size: number };

/** An fd-passing sender (and, for "fd-pair", receiver): 16-byte messages carrying `batch` fds of /dev/null. */
export type FdSpec =
  /** qbun → qbun over a socketpair in this process; receiver maxBytes (undefined: the default). */
  | { kind: "fd-pair"; socket: Kind; batch: number; maxBytes?: number }
  /** qbun → the C fd-sink at `address` (another process). */
  | { kind: "fd-to-c"; socket: Kind; batch: number; address: string };

export interface LatencyRun {
  /** Round-trip times, ns. */
  t: Float64Array;
  /** "stream-split" only: 1 where the round trip had to wait for readiness. */
  waited?: Uint8Array;
}

export interface LatencyRunner {
  setup(): Promise<void>;
  run(n: number): Promise<LatencyRun>;
  teardown(): Promise<void>;
}

export interface FdResult {
  fdsPerSec: number;
  /** fds this side counted as received (fd-pair) or sent (fd-to-c). */
  fds: number;
  /** Growth of this process's open-fd count over the round. */
  leaked: number;
}

export interface FdRunner {
  setup(): Promise<void>;
  run(total: number): Promise<FdResult>;
  teardown(): Promise<void>;
}

// ------------------------------------------------------------ helpers

export function pattern(size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + 1) & 255;
  return b;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export const countOpenFds = () => readdirSync("/proc/self/fd").length;

function mismatch(kind: string): never {
  throw new Error(`qbun ${kind}: echo does not match what was sent`);
}

// ------------------------------------------------------ latency clients

export function latencyRunner(spec: LatencySpec): LatencyRunner {
  if (spec.kind === "dgram") return dgramRunner(spec.peer, spec.self, spec.size);
  if (spec.kind === "bun-stream") return bunStreamRunner(spec.address, spec.size);
  if (spec.kind === "ffi-blocking") return ffiBlockingRunner(spec.address, spec.size);
  const { kind, address, size } = spec;
  const native = loadNative();
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  const probe = new Uint8Array(1);
  let conn: UnixStream | undefined;

  /** One round trip's read side; returns the echo. */
  const readEcho = async (c: UnixStream): Promise<Uint8Array> => {
    if (kind === "stream" || kind === "stream-split") return c.readExactly(size);
    let got = 0;
    while (got < size) {
      if (kind === "stream-into") {
        const r = await c.readInto(got === 0 ? buf : buf.subarray(got));
        if (r === 0) throw new Error("qbun stream-into: stream ended");
        got += r;
      } else {
        const chunk = await c.read();
        if (chunk === null) throw new Error("qbun stream-read: stream ended");
        buf.set(chunk, got);
        got += chunk.byteLength;
      }
    }
    return buf;
  };

  return {
    async setup() {
      conn = await UnixStream.connect(address);
    },
    async run(n) {
      const c = conn!;
      const t = new Float64Array(n);
      const waited = kind === "stream-split" ? new Uint8Array(n) : undefined;
      for (let i = 0; i < n; i++) {
        msg[0] = i & 255;
        const t0 = Bun.nanoseconds();
        await c.write(msg);
        if (waited) waited[i] = native.qbn_recv(c.fd, probe, 1, 0x02 /* MSG_PEEK */ | 0x40 /* MSG_DONTWAIT */) === 1 ? 0 : 1;
        const echo = await readEcho(c);
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(echo, msg)) mismatch(kind);
      }
      return { t, waited };
    },
    async teardown() {
      conn?.close();
      conn = undefined;
    },
  };
}

function dgramRunner(peer: string, self: string, size: number): LatencyRunner {
  let sock: UnixDatagram | undefined;
  const msg = pattern(size);
  return {
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
        if (!sameBytes(m.data, msg)) mismatch("dgram");
      }
      return { t };
    },
    async teardown() {
      sock?.close();
      sock = undefined;
    },
  };
}

function bunStreamRunner(path: string, size: number): LatencyRunner {
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  let got = 0;
  let done: (() => void) | undefined;
  let failed: ((e: Error) => void) | undefined;
  let pending: Uint8Array | undefined; // unwritten rest of msg, sent on drain
  let sock: Awaited<ReturnType<typeof Bun.connect>> | undefined;
  const writeSome = (s: NonNullable<typeof sock>, data: Uint8Array) => {
    const w = s.write(data);
    if (w < 0) failed?.(new Error("Bun.connect: write failed"));
    pending = w >= 0 && w < data.byteLength ? data.subarray(w) : undefined;
  };
  return {
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
            failed?.(new Error("Bun.connect: connection closed"));
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
        if (got !== size || !sameBytes(buf, msg)) throw new Error("Bun.connect: echo does not match what was sent");
      }
      done = failed = undefined;
      return { t };
    },
    async teardown() {
      failed = undefined;
      sock?.end();
      sock = undefined;
    },
  };
}

/** JS + FFI + syscalls: the JS thread sleeps in recv() exactly like the C client does. */
function ffiBlockingRunner(address: string, size: number): LatencyRunner {
  const native = loadNative();
  let fd = -1;
  const msg = pattern(size);
  const buf = new Uint8Array(size);
  return {
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
        if (native.qbn_send(fd, msg, size, 0) !== size) throw new Error("ffi-blocking: short send");
        let got = 0;
        while (got < size) {
          const r = native.qbn_recv(fd, got === 0 ? buf : buf.subarray(got), size - got, 0);
          if (r <= 0) throw new Error(`ffi-blocking: recv ${r}`);
          got += r;
        }
        t[i] = Bun.nanoseconds() - t0;
        if (!sameBytes(buf, msg)) mismatch("ffi-blocking");
      }
      return { t };
    },
    async teardown() {
      if (fd >= 0) native.qbn_close(fd);
      fd = -1;
    },
  };
}

// ----------------------------------------------------------- fd passing

async function sendWithFds(sock: UnixSeqpacket | UnixStream, payload: Uint8Array, fds: number[]): Promise<void> {
  if (sock instanceof UnixSeqpacket) await sock.send(payload, { fds });
  else await sock.sendMessage(payload, { fds });
}

export function fdRunner(spec: FdSpec): FdRunner {
  let devnull = -1;
  const payload = new Uint8Array(16);
  return {
    async setup() {
      devnull = openSync("/dev/null", "r");
    },
    async run(total) {
      const msgs = Math.ceil(total / spec.batch);
      const fds = new Array<number>(spec.batch).fill(devnull);
      const before = countOpenFds();
      if (spec.kind === "fd-pair") {
        const [a, b] = spec.socket === "seqpacket" ? UnixSeqpacket.pair() : UnixStream.pair();
        const options = spec.maxBytes === undefined ? {} : { maxBytes: spec.maxBytes };
        let received = 0;
        const t0 = Bun.nanoseconds();
        const sender = (async () => {
          for (let i = 0; i < msgs; i++) {
            payload[0] = i & 255;
            await sendWithFds(a, payload, fds);
          }
        })();
        const receiver = (async () => {
          while (received < msgs * spec.batch) {
            const m = b instanceof UnixSeqpacket ? await b.receive(options) : await (b as UnixStream).receiveMessage(options);
            if (m === null) throw new Error("fd-pair: unexpected end of stream");
            if (m.controlTruncated) throw new Error("fd-pair: control data truncated");
            for (const fd of m.fds) fd.close();
            received += m.fds.length;
          }
        })();
        await Promise.all([sender, receiver]);
        const dt = Bun.nanoseconds() - t0;
        a.close();
        b.close();
        return { fdsPerSec: (received / dt) * 1e9, fds: received, leaked: countOpenFds() - before };
      }
      // To the C sink: send everything, half-close, and wait for the sink's
      // one-byte answer, which it sends once it has read every message and
      // closed every fd.
      const conn = spec.socket === "seqpacket" ? await UnixSeqpacket.connect(spec.address) : await UnixStream.connect(spec.address);
      const t0 = Bun.nanoseconds();
      for (let i = 0; i < msgs; i++) {
        payload[0] = i & 255;
        await sendWithFds(conn, payload, fds);
      }
      if (loadNative().qbn_shutdown(conn.fd, 1 /* SHUT_WR */) < 0) throw new Error("fd-to-c: shutdown failed");
      const ack = conn instanceof UnixSeqpacket ? (await conn.receive())?.data : await conn.readExactly(1);
      const dt = Bun.nanoseconds() - t0;
      conn.close();
      if (ack?.[0] !== 0x41) throw new Error("fd-to-c: no acknowledgement from the sink");
      const sent = msgs * spec.batch;
      return { fdsPerSec: (sent / dt) * 1e9, fds: sent, leaked: countOpenFds() - before };
    },
    async teardown() {
      if (devnull >= 0) closeSync(devnull);
      devnull = -1;
    },
  };
}

// ------------------------------------------------------------- child

type Command =
  | { op: "setup"; id: number; spec: LatencySpec | FdSpec }
  | { op: "run"; id: number; n: number }
  | { op: "teardown"; id: number }
  | { op: "quit" };

async function serve(): Promise<number> {
  const reply = (obj: unknown) => process.stdout.write(JSON.stringify(obj) + "\n");
  let backend: string;
  try {
    backend = (await Reactor.get()).backend;
  } catch (error) {
    process.stdout.write(`ERROR ${String((error as Error)?.message ?? error).replace(/\n/g, " ")}\n`);
    return 1;
  }
  const latency = new Map<number, LatencyRunner>();
  const fd = new Map<number, FdRunner>();
  // stdin is read on its own, so that its end (the benchmark is gone) ends
  // this process even in the middle of a run that would wait forever, such
  // as a datagram whose echo peer died.
  const commands: Command[] = [];
  let wake: (() => void) | undefined;
  void (async () => {
    for await (const line of console) {
      if (line.trim() === "") continue;
      commands.push(JSON.parse(line) as Command);
      wake?.();
    }
    process.exit(0);
  })();
  process.stdout.write(`READY ${backend}\n`);
  for (;;) {
    if (commands.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    const cmd = commands.shift();
    if (!cmd) continue;
    if (cmd.op === "quit") break;
    try {
      if (cmd.op === "setup") {
        const spec = cmd.spec;
        const runner = spec.kind === "fd-pair" || spec.kind === "fd-to-c" ? fdRunner(spec) : latencyRunner(spec);
        if (spec.kind === "fd-pair" || spec.kind === "fd-to-c") fd.set(cmd.id, runner as FdRunner);
        else latency.set(cmd.id, runner as LatencyRunner);
        await runner.setup();
        reply({ ok: true });
      } else if (cmd.op === "run") {
        const l = latency.get(cmd.id);
        if (l) {
          const { t, waited } = await l.run(cmd.n);
          reply({ ok: true, t: Array.from(t), waited: waited?.join("") });
        } else {
          const f = fd.get(cmd.id);
          if (!f) throw new Error(`no runner ${cmd.id}`);
          reply({ ok: true, ...(await f.run(cmd.n)) });
        }
      } else if (cmd.op === "teardown") {
        await (latency.get(cmd.id) ?? fd.get(cmd.id))?.teardown();
        latency.delete(cmd.id);
        fd.delete(cmd.id);
        reply({ ok: true });
      }
    } catch (error) {
      reply({ ok: false, error: String((error as Error)?.stack ?? error) });
    }
  }
  for (const r of [...latency.values(), ...fd.values()]) await r.teardown().catch(() => {});
  return 0;
}

if (import.meta.main) process.exit(await serve());
