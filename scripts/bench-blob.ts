/**
 * Blob hand-over benchmark: one Bun process (the producer) hands payloads of
 * 4 KiB, 1 MiB, 64 MiB and 1 GiB to another (scripts/bench-blob-child.ts,
 * the consumer) three ways, interleaved round by round:
 *
 * - blob:   BlobChannel.send of a published memfd blob, until the consumer's
 *           MAPPED acknowledgement is back (the consumer has it mapped);
 * - stream: the same bytes written to a qbun UnixStream, until the consumer
 *           has read all of them into its buffer and answered one byte;
 * - qb:     the same bytes as requests to a qbun QbServer (shm rings, sink
 *           handler taking payloads in place), in requests of at most
 *           64 MiB (the server's largest message), until the last response.
 *
 * Placement: on a VM whose idle vCPUs halt, a wake-up that lands on a
 * halted vCPU costs tens of µs, and the scheduler keeps one placement for a
 * while then switches, whatever the blob size. Left to chance, a size
 * measured after a switch looks slower (the 1 GiB blob, prepared last with
 * the most CPU work, used to come out 3× the 4 KiB one). So the timed
 * rounds pin the producer's and the consumer's main threads to different
 * CPUs (one CPU when there is only one), and the blob hand-over alone is
 * measured back to back in each placement: both ends on different CPUs, on
 * one CPU, and left to the scheduler.
 *
 * Then consumer read bandwidth: a mapped blob copied out end to end (first
 * pass faults the pages in, second does not) against Uint8Array.set between
 * two ordinary buffers of the same size.
 *
 *   bun scripts/bench-blob.ts [--no-gib] [--rounds N] [--only METHOD[,METHOD]]
 *
 * --no-gib skips the 1 GiB size (about 15 s of the run); --only runs some
 * of blob, stream, qb (diagnostic).
 * @module
 */
import { spawnSync } from "bun";
import os from "node:os";
import { join } from "node:path";
import { BlobAllocator, BlobChannel, type ShmBlob } from "../src/blob/index.ts";
import { QbClient } from "../src/qb/index.ts";
import { UnixListener, UnixStream } from "../src/unix/index.ts";
import { armWatchdog, Child, commandLine, gitState, median, onStopSignals, parseArgs, positiveIntOption, rotate, runMain, x2 } from "./bench-lib.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const QB_CHUNK = 64 * MiB;
const QB_MAX = QB_CHUNK + 4096;
/** Pause before every timed hand-over, the same for every method. */
const SETTLE_MS = 5;

let withGib = true;
let roundsOverride: number | undefined;
let only: string | undefined;
parseArgs(process.argv.slice(2), usage, (arg, next) => {
  if (arg === "--no-gib") withGib = false;
  else if (arg === "--rounds") roundsOverride = positiveIntOption(next(), "--rounds", 10_000);
  else if (arg === "--only") only = next();
  else return false;
  return true;
});

function usage(): never {
  console.log("usage: bun scripts/bench-blob.ts [--no-gib] [--rounds N] [--only METHOD[,METHOD]]");
  process.exit(0);
}

const SIZES: Array<{ size: number; label: string; rounds: number }> = [
  { size: 4 * KiB, label: "4 KiB", rounds: 300 },
  { size: 1 * MiB, label: "1 MiB", rounds: 100 },
  { size: 64 * MiB, label: "64 MiB", rounds: 20 },
  ...(withGib ? [{ size: 1 * GiB, label: "1 GiB", rounds: 8 }] : []),
];

const ALL_METHODS = ["blob", "stream", "qb"] as const;
type Method = (typeof ALL_METHODS)[number];
const chosen = only?.split(",").filter(Boolean) ?? [...ALL_METHODS];
const unknown = chosen.filter((m) => !(ALL_METHODS as readonly string[]).includes(m));
if (unknown.length > 0 || chosen.length === 0) {
  console.error(`--only takes a comma-separated list of ${ALL_METHODS.join(", ")}${unknown.length > 0 ? `; unknown: ${unknown.join(", ")}` : ""}`);
  console.error("usage: bun scripts/bench-blob.ts [--no-gib] [--rounds N] [--only METHOD[,METHOD]]");
  process.exit(2);
}
const METHODS: Method[] = ALL_METHODS.filter((m) => chosen.includes(m));

// A method left out with --only has no figures (NaN): shown as a dash.
const fmtTime = (ns: number) => (Number.isNaN(ns) ? "—" : ns < 1e6 ? `${(ns / 1e3).toFixed(1)} µs` : `${(ns / 1e6).toFixed(1)} ms`);
const fmtRate = (bytes: number, ns: number) => (Number.isNaN(ns) ? "—" : `${(bytes / ns).toFixed(2)} GB/s`);
const withRate = (bytes: number, ns: number) => (Number.isNaN(ns) ? "—" : `${fmtTime(ns)} (${fmtRate(bytes, ns)})`);

/** The CPU mask (hex) of thread `tid`, for {@link setMask}. */
function maskOf(tid: number): string {
  const got = spawnSync(["taskset", "-p", String(tid)], { stderr: "pipe" });
  const mask = /mask:\s*([0-9a-f]+)/.exec(got.stdout.toString())?.[1];
  if (!got.success || !mask) throw new Error(`taskset -p ${tid} failed: ${got.stderr.toString()}`);
  return mask;
}

/** Set the CPUs of thread `tid`: a hex mask, or a CPU list with `list`. */
function setMask(tid: number, cpus: string, list = false): void {
  const set = spawnSync(["taskset", "-p", ...(list ? ["-c"] : []), cpus, String(tid)], { stdout: "ignore", stderr: "pipe" });
  if (!set.success) throw new Error(`taskset -p ${cpus} ${tid} failed: ${set.stderr.toString()}`);
}

const PLACEMENTS = ["two CPUs", "one CPU", "scheduler"] as const;
/**
 * Where the producer's and the consumer's main threads run: pinned to
 * different CPUs (every wake-up of the other side may land on a halted
 * vCPU), to one CPU (wake-ups are context switches), or wherever the
 * scheduler puts them.
 */
type Placement = (typeof PLACEMENTS)[number];

async function benchMain(): Promise<number> {
  const tag = `qbun-bench-blob-${process.pid}`;
  using allocator = new BlobAllocator({ defaultLeaseMs: Number.POSITIVE_INFINITY });
  using blobListener = UnixListener.listen(`\0${tag}-blob`, { type: "seqpacket" });
  using streamListener = UnixListener.listen(`\0${tag}-stream`);
  const child = new Child("consumer", ["bun", join(import.meta.dir, "bench-blob-child.ts"), `@${tag}-blob`, `@${tag}-stream`, `${tag}-qb`], "ignore", undefined, 120_000);
  const channel = new BlobChannel(await blobListener.accept({ signal: AbortSignal.timeout(30_000) }));
  const stream = await streamListener.accept({ signal: AbortSignal.timeout(30_000) });
  await child.expect("READY");
  const qb = await QbClient.connect(`${tag}-qb`, { maxMessageSize: QB_MAX });

  const lastCpu = os.availableParallelism() - 1;
  const freeMasks = { producer: maskOf(process.pid), consumer: maskOf(child.pid) };
  const place = (placement: Placement) => {
    if (placement === "scheduler") {
      setMask(process.pid, freeMasks.producer);
      setMask(child.pid, freeMasks.consumer);
    } else {
      setMask(process.pid, "0", true);
      setMask(child.pid, placement === "one CPU" ? "0" : String(lastCpu), true);
    }
  };
  const timedPlacement: Placement = lastCpu > 0 ? "two CPUs" : "one CPU";

  const header = new Uint8Array(8);
  const ack = new Uint8Array(1);
  const run: Record<Method, (blob: ShmBlob, payload: Uint8Array) => Promise<number>> = {
    async blob(blob) {
      const t = Bun.nanoseconds();
      const delivery = await channel.send(blob);
      await delivery.mapped;
      const ns = Bun.nanoseconds() - t;
      await delivery.released; // untimed: the consumer unmaps and says so
      return ns;
    },
    async stream(_blob, payload) {
      const t = Bun.nanoseconds();
      new DataView(header.buffer).setBigUint64(0, BigInt(payload.length), true);
      // Both writes are queued in order at once; awaiting both surfaces a failure of either.
      await Promise.all([stream.write(header), stream.write(payload)]);
      if ((await stream.readInto(ack)) !== 1) throw new Error("stream consumer went away");
      return Bun.nanoseconds() - t;
    },
    async qb(_blob, payload) {
      const t = Bun.nanoseconds();
      for (let offset = 0; offset < payload.length; offset += QB_CHUNK) {
        const { error } = await qb.request(1, payload.subarray(offset, Math.min(payload.length, offset + QB_CHUNK)));
        if (error !== 0) throw new Error(`qb request failed: ${error}`);
      }
      return Bun.nanoseconds() - t;
    },
  };

  const results: Array<{ label: string; size: number; rounds: number; ns: Record<Method, number>; blobMin: number; blobAlone: Record<Placement, number> }> = [];
  for (const { size, label, rounds: defaultRounds } of SIZES) {
    const rounds = roundsOverride ?? defaultRounds;
    const payload = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) payload[i] = i >>> 12; // touch every page
    const writer = allocator.create(size);
    writer.write(payload);
    const blob = writer.publish();
    const times: Record<Method, number[]> = { blob: [], stream: [], qb: [] };
    // Warm-up, untimed (the first size also warms the JIT of both processes).
    place(timedPlacement);
    for (let r = 0; r < (results.length === 0 ? 500 : 3); r++) for (const method of METHODS) await run[method](blob, payload);
    for (let r = 0; r < rounds; r++) {
      for (const method of rotate(METHODS, r)) {
        // Let the work a big transfer leaves behind (collections, freed pages) finish before the next one is timed.
        await Bun.sleep(SETTLE_MS);
        times[method].push(await run[method](blob, payload));
      }
    }
    // The blob hand-over alone, back to back (no other method's leftovers, no pauses), in each placement.
    const blobAlone = {} as Record<Placement, number>;
    for (const placement of PLACEMENTS) {
      if (placement === "two CPUs" && lastCpu === 0) {
        blobAlone[placement] = Number.NaN;
        continue;
      }
      place(placement);
      for (let r = 0; r < 20; r++) await run.blob(blob, payload); // settle into the placement
      const alone: number[] = [];
      for (let r = 0; r < rounds; r++) alone.push(await run.blob(blob, payload));
      blobAlone[placement] = median(alone);
    }
    blob.cleanup();
    const ns = { blob: median(times.blob), stream: median(times.stream), qb: median(times.qb) }; // NaN for a method left out
    results.push({ label, size, rounds, ns, blobMin: Math.min(...times.blob), blobAlone });
    const aloneText = PLACEMENTS.map((p) => `${p} ${fmtTime(blobAlone[p])}`).join(", ");
    console.error(`${label}: blob ${fmtTime(ns.blob)} (alone: ${aloneText}), stream ${fmtTime(ns.stream)}, qb ${fmtTime(ns.qb)} (${rounds} rounds)`);
  }

  // Diagnostic: both ends in this process (BlobChannel.pair), so no process wake-ups: what the
  // hand-over costs our code and the kernel at each size.
  const local: Array<{ label: string; p50: number; p90: number }> = [];
  {
    const [a, b] = BlobChannel.pair();
    for (const { size, label } of SIZES) {
      const writer = allocator.create(size);
      writer.bytes.fill(7);
      const blob = writer.publish();
      const ts: number[] = [];
      for (let i = 0; i < 600; i++) {
        const t = Bun.nanoseconds();
        const delivery = await a.send(blob);
        const reader = (await b.receive())!;
        await delivery.mapped;
        if (i >= 100) ts.push(Bun.nanoseconds() - t); // the first 100 warm up
        reader.close();
        await delivery.released;
      }
      blob.cleanup();
      ts.sort((x, y) => x - y);
      local.push({ label, p50: ts[ts.length >> 1]!, p90: ts[Math.floor(ts.length * 0.9)]! });
    }
    a.close();
    b.close();
  }

  // Consumer read bandwidth through the mapping.
  const reads: Array<{ size: number; first: number[]; second: number[]; memcpy: number[] }> = [];
  for (const size of [64 * MiB, ...(withGib ? [1 * GiB] : [])]) {
    const row = { size, first: [] as number[], second: [] as number[], memcpy: [] as number[] };
    const writer = allocator.create(size);
    writer.bytes.fill(0x5a);
    const blob = writer.publish();
    for (let r = 0; r < 3; r++) {
      const delivery = await channel.send(blob, { metadata: { measure: true } });
      const line = JSON.parse((await child.expect("READ")).slice(5));
      await delivery.released;
      row.first.push(line.first);
      row.second.push(line.second);
      row.memcpy.push(line.memcpy);
    }
    blob.cleanup();
    reads.push(row);
  }

  place("scheduler");
  await qb.close();
  channel.close();
  stream.close();
  await child.stop();

  const { commit, dirty } = gitState(join(import.meta.dir, ".."));
  const first = results[0]!;
  const last = results[results.length - 1]!;
  const out = [
    `## Blob hand-over (qbun/blob)`,
    ``,
    `- command: \`${commandLine("bench-blob.ts")}\``,
    `- commit ${commit}${dirty ? " (with local changes)" : ""}; Bun ${Bun.version}; producer and consumer are two Bun processes; machine shared with other work (medians, ratios measured in the same run)`,
    `- rounds interleave the methods (rotated each round), with a ${SETTLE_MS} ms pause before each timed hand-over so that one method's leftovers (collections, freed pages) do not land in the next one's time`,
    `- placement: in the interleaved rounds the producer's and the consumer's main threads are pinned to ${timedPlacement === "two CPUs" ? `different CPUs (0 and ${lastCpu})` : "CPU 0"}; "blob alone" is the hand-over back to back with them on different CPUs, on one CPU, and where the scheduler puts them (on a VM with halting vCPUs a wake-up on a halted one costs tens of µs, whatever the size: compare sizes within one placement)`,
    `- blob: BlobChannel.send of a sealed memfd blob until the consumer's MAPPED acknowledgement; stream: the same bytes over a qbun UnixStream into the consumer's buffer, until its 1-byte answer; qb: the same bytes as QbServer requests over shm rings (≤ 64 MiB per request, the server's largest message; 1 GiB = 16 requests), until the last response`,
    ``,
    `| size | rounds | blob hand-over + map (min) | unix stream | qb rings | stream ÷ blob | qb ÷ blob | blob alone: two CPUs / one CPU / scheduler's |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|`,
    ...results.map((r) =>
      `| ${r.label} | ${r.rounds} | ${fmtTime(r.ns.blob)} (${fmtTime(r.blobMin)}) | ${withRate(r.size, r.ns.stream)} | ${withRate(r.size, r.ns.qb)} | ${x2(r.ns.stream / r.ns.blob)} | ${x2(r.ns.qb / r.ns.blob)} | ${PLACEMENTS.map((p) => fmtTime(r.blobAlone[p])).join(" / ")} |`
    ),
    ``,
    `Flatness (target ≤ 2×): blob hand-over at ${last.label} ÷ at ${first.label} = ${x2(last.ns.blob / first.ns.blob)} interleaved (medians), ${x2(last.blobMin / first.blobMin)} (minimums); ` +
      `alone back to back (medians): ${PLACEMENTS.map((p) => `${p} ${x2(last.blobAlone[p] / first.blobAlone[p])}`).join(", ")}` +
      ` (the scheduler's placement may differ between sizes, so its ratio can show a placement switch rather than a size effect).`,
    ``,
    `Same hand-over with both ends in one process (BlobChannel.pair: send, receive, MAPPED acknowledgement; 500 cycles after 100 of warm-up): ` +
      local.map((l) => `${l.label} p50 ${fmtTime(l.p50)} / p90 ${fmtTime(l.p90)}`).join("; ") +
      `; p50 at ${local[local.length - 1]!.label} ÷ at ${local[0]!.label} = ${x2(local[local.length - 1]!.p50 / local[0]!.p50)}.`,
    ``,
    `Consumer read bandwidth (median of 3, GB/s):`,
    ``,
    `| size | mapping, first pass (page faults) | mapping, second pass | memcpy between ordinary buffers | second pass ÷ memcpy |`,
    `|---|---:|---:|---:|---:|`,
    ...reads.map((r) => `| ${r.size / MiB} MiB | ${median(r.first).toFixed(2)} | ${median(r.second).toFixed(2)} | ${median(r.memcpy).toFixed(2)} | ${x2(median(r.second) / median(r.memcpy))} |`),
  ];
  console.log(out.join("\n"));
  return 0;
}

armWatchdog("bench-blob", 600_000, () => {});
onStopSignals(() => {}, 1000);
await runMain(benchMain);
