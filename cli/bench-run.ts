/**
 * The request loop behind `qbun bench` (and the interactive session's
 * quick benchmark): N requests against one service, a window of them in
 * flight, each timed from send to response.
 * @module
 */
import { connectService } from "./connect.ts";

/** What to run. */
export interface BenchPlan {
  /** The service name. */
  readonly service: string;
  /** Request id. */
  readonly id: number;
  /** The payload sent with every request. */
  readonly payload: Uint8Array;
  /** Timed requests. */
  readonly count: number;
  /** Untimed requests first (connection and JIT warm-up). */
  readonly warmup: number;
  /** Requests in flight at once. */
  readonly inflight: number;
  /** Per-request timeout, ms. */
  readonly timeout: number;
  /** Max message size to negotiate. */
  readonly maxMessageSize?: number;
  /** Told how many timed requests are done, now and then. */
  readonly onProgress?: (done: number) => void;
  /** Stops early: requests in flight are abandoned, and the result covers the ones that completed (`interrupted` is set). */
  readonly signal?: AbortSignal;
}

/** What `qbun bench --json` prints. */
export interface BenchResult {
  /** The service name. */
  readonly service: string;
  /** The transport the server chose. */
  readonly transport: "shm" | "socket";
  /** Request id sent. */
  readonly id: number;
  /** Request payload bytes. */
  readonly size: number;
  /** Timed requests completed. */
  readonly count: number;
  /** Requests in flight at once. */
  readonly inflight: number;
  /** True when the plan's signal stopped the run before `count` reached the plan's count. */
  readonly interrupted: boolean;
  /** Responses whose error was not 0. */
  readonly errors: number;
  /** Wall time of the timed part, seconds. */
  readonly seconds: number;
  /** Completed requests per second. */
  readonly requestsPerSecond: number;
  /** Payload bytes moved per second, both directions, in MB/s (10^6). */
  readonly megabytesPerSecond: number;
  /** Round-trip times in microseconds. */
  readonly latencyMicros: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number; readonly mean: number };
}

/** Runs the plan; rejects when the service cannot be reached or a request fails outright (timeout, disconnect). */
export async function runBench(plan: BenchPlan): Promise<BenchResult> {
  await using client = await connectService(plan.service, { maxMessageSize: plan.maxMessageSize, timeout: plan.timeout, signal: plan.signal });
  const options = { timeout: plan.timeout, signal: plan.signal };
  const stopped = () => plan.signal?.aborted === true;
  // An abort while a request is in flight rejects it: that request is not counted, and the run ends.
  const request = async () => {
    try {
      return await client.request(plan.id, plan.payload, options);
    } catch (error) {
      if (stopped()) return undefined;
      throw error;
    }
  };
  for (let i = 0; i < plan.warmup && !stopped(); i++) await request();

  const latencies = new Float64Array(plan.count);
  let issued = 0;
  let done = 0;
  let errors = 0;
  let bytes = 0;
  let lastReport = 0;
  const started = performance.now();
  const worker = async () => {
    while (issued < plan.count && !stopped()) {
      issued++;
      const t0 = performance.now();
      const response = await request();
      if (!response) return;
      latencies[done++] = (performance.now() - t0) * 1000;
      if (response.error !== 0) errors++;
      bytes += plan.payload.byteLength + response.data.byteLength;
      if (plan.onProgress && (done === plan.count || done - lastReport >= Math.max(1, plan.count / 100))) {
        lastReport = done;
        plan.onProgress(done);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, plan.inflight) }, worker));
  const seconds = (performance.now() - started) / 1000;
  const sorted = latencies.subarray(0, done).sort();
  const at = (q: number) => (done === 0 ? 0 : round(sorted[Math.min(done - 1, Math.floor(q * done))]!));
  return {
    service: plan.service,
    transport: client.transport,
    id: plan.id,
    size: plan.payload.byteLength,
    count: done,
    inflight: plan.inflight,
    interrupted: done < plan.count,
    errors,
    seconds: round(seconds, 3),
    requestsPerSecond: seconds > 0 ? round(done / seconds) : 0,
    megabytesPerSecond: seconds > 0 ? round(bytes / seconds / 1e6) : 0,
    latencyMicros: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), mean: done === 0 ? 0 : round(sorted.reduce((a, b) => a + b, 0) / done) },
  };
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
