/**
 * Benchmark of the leased write path (qbun/lease).
 *
 *   bun scripts/bench-lease.ts [--rounds N] [--writes N] [--readers 1,8,32]
 *
 * 1. Write latency through the owner: a writer process holding the
 *    memory-write lease sends 64 B and 4 KiB writes over the unix socket and
 *    waits for each acknowledgement (median per round); the same through the
 *    in-process transport; reference: a plain local write (`Uint8Array.set`)
 *    into the writer's own shared mapping, timed over a batch (per write).
 * 2. Visibility: the writer stamps each write with CLOCK_MONOTONIC
 *    (libc `clock_gettime`, one clock for all processes); N reader processes
 *    wait for the owner's write notification (event-driven, no spinning),
 *    read the bytes with the sequence-checked read, and note the time.
 *    Reported: the median over writes of the time until the write was
 *    visible to every reader, and to the median reader.
 * Rounds are interleaved (variants rotate each round); medians of round
 * medians are printed. Machine condition: whatever else runs (not controlled).
 * @module
 */
import { dlopen, FFIType } from "bun:ffi";
import { CapabilityPolicy, LeaseClient, LeaseOwner } from "../src/lease/index.ts";
import { SharedMemory } from "../src/shm/index.ts";
import { armWatchdog, Child, children, median, onStopSignals, rotate, runMain, us, x2 } from "./bench-lib.ts";

// CLOCK_MONOTONIC from libc: one clock for every process (process.hrtime counts from each process's start).
const libc = dlopen("libc.so.6", { clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
const timespec = new BigInt64Array(2);
const now = () => {
  libc.symbols.clock_gettime(1 /* CLOCK_MONOTONIC */, timespec);
  return Number(timespec[0]!) * 1e9 + Number(timespec[1]!);
};

// ------------------------------------------------------------------ children

async function writerChild(address: string): Promise<void> {
  const client = await LeaseClient.connect(address);
  const lease = await client.acquire("memory-write", { ttlMs: 3_600_000 });
  using mem = SharedMemory.memfd({ size: 1 << 20, name: "bench-local" });
  using map = mem.map();
  console.log("READY");
  for await (const line of console) {
    const [cmd, a, b, c] = line.trim().split(" ");
    if (cmd === "lat") {
      const size = Number(a), n = Number(b);
      const data = new Uint8Array(size).fill(1);
      const times: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = now();
        await client.write("bench", 0, data, lease.token);
        times.push(now() - t);
      }
      console.log(`LAT ${median(times)}`);
    } else if (cmd === "local") {
      const size = Number(a), n = Number(b);
      const data = new Uint8Array(size).fill(2);
      const bytes = map.bytes;
      const t = now();
      for (let i = 0; i < n; i++) bytes.set(data, (i * 64) & 0xffff);
      console.log(`LOCAL ${(now() - t) / n}`);
    } else if (cmd === "vis") {
      const n = Number(a), gapMs = Number(b), readers = Number(c);
      const stamp = new Uint8Array(16);
      const dv = new DataView(stamp.buffer);
      for (let i = 0; i < n; i++) {
        dv.setUint32(8, i, true);
        dv.setFloat64(0, now(), true);
        await client.write("bench", 0, stamp, lease.token);
        await Bun.sleep(gapMs + readers / 8); // let every reader finish before the next write
      }
      console.log("VIS done");
    } else if (cmd === "exit") break;
  }
  client.close();
  process.exit(0);
}

async function readerChild(address: string): Promise<void> {
  const client = await LeaseClient.connect(address);
  const seen = new Map<number, number>();
  const into = new Uint8Array(16);
  const dv = new DataView(into.buffer);
  let sub: Awaited<ReturnType<LeaseClient["subscribe"]>> | undefined;
  console.log("READY");
  for await (const line of console) {
    const cmd = line.trim();
    if (cmd === "sub") {
      sub = await client.subscribe("bench");
      const current = sub;
      const record = (bytes: Uint8Array): void => {
        const t = now();
        const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
        seen.set(view.getUint32(8, true), t - view.getFloat64(0, true));
      };
      current.onWrite(() => {
        try {
          record(current.readConsistent(0, 16, { into }).bytes);
        } catch {
          // contended or between epochs: the async read waits for the next notification instead of spinning
          current.read(0, 16).then((r) => record(r.bytes), (error) => console.error(`reader: ${error}`));
        }
      });
      console.log("SUB");
    } else if (cmd === "unsub") {
      sub?.close();
      sub = undefined;
      console.log("UNSUB");
    } else if (cmd === "report") {
      console.log(`SEEN ${JSON.stringify({ closed: client.closed ? String(client.closeReason) : null, seen: [...seen] })}`);
      seen.clear();
    } else if (cmd === "exit") break;
  }
  client.close();
  process.exit(0);
}

// ------------------------------------------------------------------ parent

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1]! : dflt;
  };
  const rounds = Number(opt("--rounds", "5"));
  const writes = Number(opt("--writes", "2000"));
  const readerCounts = opt("--readers", "1,8,32").split(",").map(Number);
  const visWrites = Number(opt("--vis-writes", "40"));
  armWatchdog("bench-lease", 15 * 60_000, () => {});
  onStopSignals(() => {});

  const name = `qbun-bench-lease-${process.pid}`; // abstract socket: argv cannot carry the leading NUL, children add it
  const address = `\0${name}`;
  await using owner = new LeaseOwner({ policy: CapabilityPolicy.sameUser(), maxTtlMs: 3_600_000 });
  owner.createRegion("bench", { size: 64 * 1024 });
  owner.listen(address);
  const self = [process.execPath, import.meta.path];
  const writer = new Child("writer", [...self, "--child", "writer", name], "pipe");
  await writer.expect("READY");
  const maxReaders = Math.max(...readerCounts);
  const readers: Child[] = [];
  for (let i = 0; i < maxReaders; i++) {
    readers.push(new Child(`reader ${i}`, [...self, "--child", "reader", name], "pipe"));
    await readers[i]!.expect("READY"); // one at a time: each compiles the C helper once
  }

  // 1. latency. The in-process variant needs a write lease the writer process is not holding:
  // it gets an owner of its own in this process, configured the same way.
  await using solo = new LeaseOwner({ policy: CapabilityPolicy.sameUser() });
  solo.createRegion("bench", { size: 64 * 1024 });
  await using inproc = solo.connect();
  const inprocLease = await inproc.acquire("memory-write", { ttlMs: 60_000 });
  const lat: Record<string, number[]> = {};
  const variants = ["owner-socket", "owner-inproc", "local"] as const;
  for (let r = 0; r < rounds; r++) {
    for (const size of [64, 4096]) {
      for (const v of rotate([...variants], r)) {
        let ns: number;
        if (v === "owner-socket") {
          writer.send(`lat ${size} ${writes}\n`);
          ns = Number((await writer.expect("LAT")).split(" ")[1]);
        } else if (v === "local") {
          writer.send(`local ${size} ${writes * 50}\n`);
          ns = Number((await writer.expect("LOCAL")).split(" ")[1]);
        } else {
          await inprocLease.renew();
          ns = await inProcessLatency(inproc, inprocLease.token, size, writes);
        }
        (lat[`${v} ${size}`] ??= []).push(ns);
      }
    }
  }

  // 2. visibility
  const vis: Record<number, { all: number[]; med: number[] }> = {};
  let subscribed = 0;
  for (let r = 0; r < rounds; r++) {
    for (const count of rotate([...readerCounts], r)) {
      while (subscribed < count) {
        readers[subscribed]!.send("sub\n");
        await readers[subscribed++]!.expect("SUB");
      }
      while (subscribed > count) {
        readers[--subscribed]!.send("unsub\n");
        await readers[subscribed]!.expect("UNSUB");
      }
      writer.send(`vis ${visWrites} 2 ${count}\n`);
      await writer.expect("VIS");
      await Bun.sleep(50);
      const perWrite = new Map<number, number[]>();
      for (const reader of readers.slice(0, count)) {
        reader.send("report\n");
        const report = JSON.parse((await reader.expect("SEEN")).slice(5)) as { closed: string | null; seen: Array<[number, number]> };
        if (report.closed) throw new Error(`${reader.name} lost its connection to the owner: ${report.closed}`);
        for (const [i, ns] of report.seen) (perWrite.get(i) ?? perWrite.set(i, []).get(i)!).push(ns);
      }
      const complete = [...perWrite.values()].filter((l) => l.length === count);
      if (complete.length === 0) throw new Error(`no write was seen by all ${count} readers in round ${r + 1}: a reader is not receiving notifications`);
      (vis[count] ??= { all: [], med: [] }).all.push(median(complete.map((l) => Math.max(...l))));
      vis[count]!.med.push(median(complete.map((l) => median(l))));
    }
  }

  for (const c of [writer, ...readers]) c.send("exit\n");
  await Promise.all([...children].map((c) => c.stop()));

  console.log(`qbun/lease benchmark: ${rounds} rounds, ${writes} writes per latency sample, ${visWrites} writes per visibility sample (machine shared; not controlled)`);
  console.log("\nwrite latency (median of round medians, µs)");
  console.log("size   | owner over socket | owner in-process | plain local write (mean of a batch) | socket/local");
  for (const size of [64, 4096]) {
    const s = median(lat[`owner-socket ${size}`]!), p = median(lat[`owner-inproc ${size}`]!), l = median(lat[`local ${size}`]!);
    console.log(`${String(size).padEnd(6)} | ${us(s).padStart(17)} | ${us(p).padStart(16)} | ${us(l).padStart(34)} | ${x2(s / l)}`);
  }
  console.log("\ntime for a write to become visible (write call → reader has read it; median over writes, median of rounds, µs)");
  console.log("readers | to every reader | to the median reader");
  for (const count of readerCounts) {
    console.log(`${String(count).padEnd(7)} | ${us(median(vis[count]!.all)).padStart(15)} | ${us(median(vis[count]!.med)).padStart(20)}`);
  }
  return 0;
}

async function inProcessLatency(client: LeaseClient, token: number, size: number, n: number): Promise<number> {
  const data = new Uint8Array(size).fill(3);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = now();
    await client.write("bench", 0, data, token);
    times.push(now() - t);
  }
  return median(times);
}

if (process.argv[2] === "--child") {
  const [, role, address] = process.argv.slice(2);
  await (role === "writer" ? writerChild(`\0${address}`) : readerChild(`\0${address}`));
} else {
  await runMain(main);
}
