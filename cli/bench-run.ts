/**
 * The request loop behind `qbun bench` (and the interactive session's
 * quick benchmark): N requests against one service, a window of them in
 * flight, each timed from send to response.
 * @module
 */
import { QbClient } from "../src/qb/index.ts";
import { connectHint } from "./host/services.ts";

/** What to run. */
export interface BenchPlan {
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
  /** Stops early (the result covers what was done). */
  readonly signal?: AbortSignal;
}

/** What `qbun bench --json` prints. */
export interface BenchResult {
  readonly service: string;
  readonly transport: "shm" | "socket";
  readonly id: number;
  /** Request payload bytes. */
  readonly size: number;
  /** Timed requests completed. */
  readonly count: number;
  readonly inflight: number;
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
  let client: QbClient;
  try {
    client = await QbClient.connect(plan.service, { maxMessageSize: plan.maxMessageSize, timeout: plan.timeout });
  } catch (error) {
    throw connectHint(plan.service, error);
  }
  await using _client = client;
  const options = { timeout: plan.timeout };
  for (let i = 0; i < plan.warmup; i++) await client.request(plan.id, plan.payload, options);

  const latencies = new Float64Array(plan.count);
  let issued = 0;
  let done = 0;
  let errors = 0;
  let bytes = 0;
  let lastReport = 0;
  const started = performance.now();
  const worker = async () => {
    while (issued < plan.count && !plan.signal?.aborted) {
      issued++;
      const t0 = performance.now();
      const response = await client.request(plan.id, plan.payload, options);
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
    errors,
    seconds: round(seconds, 3),
    requestsPerSecond: round(done / seconds),
    megabytesPerSecond: round(bytes / seconds / 1e6),
    latencyMicros: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), mean: done === 0 ? 0 : round(sorted.reduce((a, b) => a + b, 0) / done) },
  };
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
