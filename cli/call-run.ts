/**
 * One request to a libqb service and how its outcome is shown: the logic
 * behind `qbun call` and the interactive session's "call".
 * @module
 */
import { errnoName } from "../ffi/errors.ts";
import { connectService, Deadline, failureErrno } from "./connect.ts";
import { errorMessage } from "./io.ts";
import { showBytes } from "./payload.ts";

/**
 * What `qbun call --json` prints. The first five keys are always there, in
 * this order; `failure` is added only when no response came.
 */
export interface CallReport {
  /** The response header's error: 0, or a negative errno; when no response came, the failure's negative errno. */
  readonly error: number;
  /** Payload bytes in the response (header excluded); 0 when no response came. */
  readonly size: number;
  /** The payload: text when `encoding` is `utf8`, lowercase hex otherwise. */
  readonly data: string;
  /** `utf8` for valid UTF-8 without control characters (tab, LF, CR allowed); `hex` otherwise. */
  readonly encoding: "utf8" | "hex";
  /** Request-to-response time in microseconds (connecting not included); on a failure, the time until it. */
  readonly micros: number;
  /** Only when no response came (connect refused, timeout, disconnect): `CODE: message`. */
  readonly failure?: string;
}

/** What to send. */
export interface CallPlan {
  /** The service name. */
  readonly service: string;
  /** Request id. */
  readonly id: number;
  /** Request payload. */
  readonly payload: Uint8Array;
  /** One time budget for connecting and the response, ms. */
  readonly timeout: number;
  /** Max message size to negotiate. */
  readonly maxMessageSize?: number;
}

/** A response that came. */
export interface CallOutcome {
  /** The report (`failure` absent). */
  readonly report: CallReport;
  /** The response's id. */
  readonly id: number;
  /** The response's bytes. */
  readonly data: Uint8Array;
  /** The transport the server chose. */
  readonly transport: "shm" | "socket";
}

/**
 * Connects, sends one request, waits for its response, disconnects; connect
 * and response share the plan's one deadline.
 * @throws QbunSystemError when no response came (see {@link failureReport}).
 */
export async function runCall(plan: CallPlan): Promise<CallOutcome> {
  const deadline = new Deadline(plan.timeout);
  await using client = await connectService(plan.service, { maxMessageSize: plan.maxMessageSize, deadline });
  const started = performance.now();
  const response = await client.request(plan.id, plan.payload, { timeout: deadline.remaining() });
  const micros = roundMicros(performance.now() - started);
  const shown = showBytes(response.data);
  return {
    report: { error: response.error, size: response.data.byteLength, data: shown.text, encoding: shown.encoding, micros },
    id: response.id,
    data: response.data,
    transport: client.transport,
  };
}

/** The `--json` report for a call that got no response: the failure's errno, no data, and `failure` saying what happened. */
export function failureReport(error: unknown, millis: number): CallReport {
  const code = error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : errnoName(-failureErrno(error));
  return { error: failureErrno(error), size: 0, data: "", encoding: "utf8", micros: roundMicros(millis), failure: `${code}: ${errorMessage(error).split("\n")[0]}` };
}

/** The response's headline: `error 0 (ok), 5 bytes in 12.3 µs`. */
export function callSummary(report: CallReport): string {
  const error = report.error === 0 ? "0 (ok)" : `${report.error} (${errnoName(-report.error)})`;
  return `error ${error}, ${report.size} bytes in ${report.micros} µs`;
}

/** The response's data as shown to a person: the text, or a hex dump. */
export function callData(outcome: CallOutcome): string {
  return outcome.report.encoding === "utf8" ? outcome.report.data : hexDump(outcome.data);
}

/** Sixteen bytes a line: offset, hex, printable ASCII. */
export function hexDump(data: Uint8Array): string {
  const lines: string[] = [];
  for (let at = 0; at < data.byteLength; at += 16) {
    const row = data.subarray(at, at + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${at.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

function roundMicros(millis: number): number {
  return Math.round(millis * 10_000) / 10;
}
