/**
 * `qbun bench SERVICE [PAYLOAD]`: round-trip latency and throughput
 * against any libqb service, with a progress bar in a terminal. Ctrl-C
 * (SIGINT) stops the run and prints what was measured so far.
 * @module
 */
import * as v from "valibot";
import { jsonFlag, milliseconds, requestId, serviceName, wholeNumber } from "../args.ts";
import { interruptOnSigint, runBenchWithProgress } from "../bench-progress.ts";
import { runBench, type BenchPlan, type BenchResult } from "../bench-run.ts";
import { CliUsageError, type CliIo } from "../io.ts";
import { buildPayload, hasPayloadParts, payloadEntries, payloadFlags } from "../payload.ts";
import { defineCommand } from "./command.ts";

/** Exit code of a run stopped by SIGINT (128 + 2, as a shell reports it); the partial results are printed first. */
export const INTERRUPTED = 130;

/** The `bench` command. */
export const bench = defineCommand({
  name: "bench",
  summary: "Measure round-trip latency (p50/p99) and throughput against any libqb service",
  description:
    "Connects to SERVICE with qbun's client and sends COUNT requests with id --id and a payload,\n" +
    "--inflight at a time, after --warmup untimed ones. The payload is --size filler bytes\n" +
    "(default 64), or built as qbun call builds it: PAYLOAD text and --hex/--u32/--i32 parts in\n" +
    "the order given (not both). Prints p50/p90/p99/max round-trip times, requests per second and\n" +
    "MB/s (payload both ways). In a terminal a progress bar runs meanwhile. The default (id 1,\n" +
    "64 bytes) is the interop service's echo. Ctrl-C stops the run and prints the partial results\n" +
    `(exit code ${INTERRUPTED}). Exit code 1 when responses carried errors or a request failed.`,
  positionals: [
    { name: "service", label: "SERVICE", help: "libqb service name (see qbun ls)" },
    { name: "payload", label: "PAYLOAD", help: "Payload text (UTF-8), instead of --size filler", optional: true },
  ],
  flags: {
    id: { type: "string", value: "N", help: "Request id (default 1)" },
    size: { type: "string", value: "BYTES", help: "Payload of this many filler bytes (default 64); not with PAYLOAD/--hex/--u32/--i32" },
    ...payloadFlags,
    count: { type: "string", short: "n", value: "N", help: "Timed requests (default 10000)" },
    inflight: { type: "string", value: "N", help: "Requests in flight at once (default 1)" },
    warmup: { type: "string", value: "N", help: "Untimed requests first (default 200)" },
    timeout: { type: "string", value: "MS", help: "Per-request timeout (default 5000)" },
    "max-msg": { type: "string", value: "BYTES", help: "Max message size to negotiate (default: fits the payload)" },
    json: { type: "boolean", help: "Print one JSON object (latencyMicros, requestsPerSecond, megabytesPerSecond, interrupted, ...)" },
  },
  schema: v.strictObject({
    service: serviceName,
    id: v.optional(requestId, "1"),
    size: v.optional(wholeNumber("a payload size in bytes", 0, 64 << 20)),
    ...payloadEntries,
    count: v.optional(wholeNumber("a request count", 1, 100_000_000), "10000"),
    inflight: v.optional(wholeNumber("requests in flight", 1, 1024), "1"),
    warmup: v.optional(wholeNumber("a warm-up request count", 0, 1_000_000), "200"),
    timeout: v.optional(milliseconds, "5000"),
    "max-msg": v.optional(wholeNumber("a byte count", 1, 1 << 30)),
    json: jsonFlag,
  }),
  async run(options, io, { tokens }) {
    const parts = { text: options.payload, hex: options.hex, u32: options.u32, i32: options.i32 };
    if (hasPayloadParts(parts) && options.size !== undefined) {
      throw new CliUsageError(`--size ${options.size} and a built payload (PAYLOAD, --hex, --u32, --i32) both set the payload: give one of them`);
    }
    const payload = hasPayloadParts(parts) ? buildPayload(parts, tokens) : Uint8Array.from({ length: options.size ?? 64 }, (_, i) => i & 0xff);
    using interrupt = interruptOnSigint();
    const plan: BenchPlan = {
      service: options.service,
      id: options.id,
      payload,
      count: options.count,
      warmup: options.warmup,
      inflight: options.inflight,
      timeout: options.timeout,
      // Room for the payload and libqb's headers, whatever the server's default.
      maxMessageSize: options["max-msg"] ?? payload.byteLength + 4096,
      signal: interrupt.signal,
    };
    const result: BenchResult =
      io.tty && !options.json
        ? await runBenchWithProgress(plan, {
            title: `${plan.count} requests to ${plan.service} (id ${plan.id}, ${payload.byteLength} B, ${plan.inflight} in flight)`,
            summary: (r) => (r.interrupted ? `interrupted after ${r.count} of ${plan.count} in ${r.seconds} s` : `done in ${r.seconds} s`),
          })
        : await runBench(plan);
    if (options.json) io.out(JSON.stringify(result, null, 2));
    else printBench(result, io);
    if (result.interrupted) return INTERRUPTED;
    return result.errors === 0 ? 0 : 1;
  },
});

/** The result as text. */
export function printBench(r: BenchResult, io: CliIo): void {
  const l = r.latencyMicros;
  io.out(`${r.service} (${r.transport}): ${r.count} requests${r.interrupted ? " (interrupted)" : ""}, id ${r.id}, ${r.size} B, ${r.inflight} in flight, ${r.seconds} s`);
  io.out(`round trip µs: p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}  mean ${l.mean}`);
  io.out(`throughput: ${r.requestsPerSecond} requests/s, ${r.megabytesPerSecond} MB/s`);
  if (r.errors > 0) io.out(`${r.errors} response(s) carried an error`);
}
