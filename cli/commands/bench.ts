/**
 * `qbun bench SERVICE`: round-trip latency and throughput against any
 * libqb service, with a progress bar in a terminal.
 * @module
 */
import * as v from "valibot";
import { jsonFlag, milliseconds, serviceName, wholeNumber } from "../args.ts";
import { runBench, type BenchResult } from "../bench-run.ts";
import type { CliIo } from "../io.ts";
import { hexPart } from "../payload.ts";
import { defineCommand } from "./command.ts";

/** The `bench` command. */
export const bench = defineCommand({
  name: "bench",
  summary: "Measure round-trip latency (p50/p99) and throughput against any libqb service",
  description:
    "Connects to SERVICE with qbun's client and sends COUNT requests with id --id and a payload of\n" +
    "--size bytes (or exactly --hex), --inflight at a time, after --warmup untimed ones. Prints\n" +
    "p50/p90/p99/max round-trip times, requests per second and MB/s (payload both ways).\n" +
    "In a terminal a progress bar runs meanwhile. The default (id 1, 64 bytes) is the interop\n" +
    "service's echo. Exit code 1 when responses carried errors or a request failed.",
  positionals: [{ name: "service", label: "SERVICE", help: "libqb service name (see qbun ls)" }],
  flags: {
    id: { type: "string", value: "N", help: "Request id (default 1)" },
    size: { type: "string", value: "BYTES", help: "Payload bytes per request (default 64)" },
    hex: { type: "string", value: "HEX", help: "Send exactly these bytes instead of --size filler" },
    count: { type: "string", short: "n", value: "N", help: "Timed requests (default 10000)" },
    inflight: { type: "string", value: "N", help: "Requests in flight at once (default 1)" },
    warmup: { type: "string", value: "N", help: "Untimed requests first (default 200)" },
    timeout: { type: "string", value: "MS", help: "Per-request timeout (default 5000)" },
    "max-msg": { type: "string", value: "BYTES", help: "Max message size to negotiate (default: fits --size)" },
    json: { type: "boolean", help: "Print one JSON object (latencyMicros, requestsPerSecond, megabytesPerSecond, ...)" },
  },
  schema: v.strictObject({
    service: serviceName,
    id: v.optional(wholeNumber("a request id", -0x8000_0000, 0x7fff_ffff), "1"),
    size: v.optional(wholeNumber("a payload size in bytes", 0, 64 << 20), "64"),
    hex: v.optional(hexPart),
    count: v.optional(wholeNumber("a request count", 1, 100_000_000), "10000"),
    inflight: v.optional(wholeNumber("requests in flight", 1, 1024), "1"),
    warmup: v.optional(wholeNumber("a warm-up request count", 0, 1_000_000), "200"),
    timeout: v.optional(milliseconds, "5000"),
    "max-msg": v.optional(wholeNumber("a byte count", 1, 1 << 30)),
    json: jsonFlag,
  }),
  async run(options, io) {
    const payload = options.hex ?? Uint8Array.from({ length: options.size }, (_, i) => i & 0xff);
    const plan = {
      service: options.service,
      id: options.id,
      payload,
      count: options.count,
      warmup: options.warmup,
      inflight: options.inflight,
      timeout: options.timeout,
      // Room for the payload and libqb's headers, whatever the server's default.
      maxMessageSize: options["max-msg"] ?? payload.byteLength + 4096,
    };
    let result: BenchResult;
    if (io.tty && !options.json) {
      const prompts = await import("@clack/prompts");
      const bar = prompts.progress({ max: plan.count });
      bar.start(`${plan.count} requests to ${plan.service} (id ${plan.id}, ${payload.byteLength} B, ${plan.inflight} in flight)`);
      let shown = 0;
      try {
        result = await runBench({
          ...plan,
          onProgress: (done) => {
            bar.advance(done - shown, `${done} of ${plan.count}`);
            shown = done;
          },
        });
      } catch (error) {
        bar.error("failed");
        throw error;
      }
      bar.stop(`done in ${result.seconds} s`);
    } else {
      result = await runBench(plan);
    }
    if (options.json) io.out(JSON.stringify(result, null, 2));
    else printBench(result, io);
    return result.errors === 0 ? 0 : 1;
  },
});

/** The result as text. */
export function printBench(r: BenchResult, io: CliIo): void {
  const l = r.latencyMicros;
  io.out(`${r.service} (${r.transport}): ${r.count} requests, id ${r.id}, ${r.size} B, ${r.inflight} in flight, ${r.seconds} s`);
  io.out(`round trip µs: p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}  mean ${l.mean}`);
  io.out(`throughput: ${r.requestsPerSecond} requests/s, ${r.megabytesPerSecond} MB/s`);
  if (r.errors > 0) io.out(`${r.errors} response(s) carried an error`);
}

