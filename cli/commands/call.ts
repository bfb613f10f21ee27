/**
 * `qbun call SERVICE ID [PAYLOAD]`: one request to any libqb service with
 * qbun's client; prints the response and how long the round trip took.
 * @module
 */
import * as v from "valibot";
import { jsonFlag, milliseconds, requestId, serviceName, wholeNumber } from "../args.ts";
import { callData, callSummary, failureReport, runCall, type CallOutcome } from "../call-run.ts";
import { buildPayload, payloadEntries, payloadFlags } from "../payload.ts";
import { defineCommand } from "./command.ts";

/** What `qbun call --json` prints (defined with the call logic in cli/call-run.ts). */
export type { CallReport } from "../call-run.ts";

/** The `call` command. */
export const call = defineCommand({
  name: "call",
  summary: "Send one request to a libqb service and print the response, with timing",
  description:
    "Connects to SERVICE with qbun's libqb-compatible client, sends one request with id ID and\n" +
    "the payload built from PAYLOAD (UTF-8 text) and the --hex/--u32/--i32 parts, all joined in\n" +
    "the order given, and prints the response's error, size, data and round-trip time.\n" +
    "Data is shown as text when it is valid UTF-8 without control characters, as hex otherwise.\n" +
    "With --json, a call that gets no response (refused, timed out) still prints one object:\n" +
    '{"error": -errno, "size": 0, "data": "", "encoding": "utf8", "micros": <time until the failure>,\n' +
    '"failure": "CODE: message"}. --timeout covers connecting and the response together.\n' +
    "Exit code 0 when the response's error is 0, 1 when it is an errno (or no response came).",
  positionals: [
    { name: "service", label: "SERVICE", help: "libqb service name (see qbun ls)" },
    { name: "id", label: "ID", help: "Request id, a 32-bit signed integer (the interop service: 1 echo ... 6 whoami)" },
    { name: "payload", label: "PAYLOAD", help: "Payload text (UTF-8)", optional: true },
  ],
  flags: {
    ...payloadFlags,
    timeout: { type: "string", value: "MS", help: "Give up after MS milliseconds in all, connecting included (default 5000)" },
    "max-msg": { type: "string", value: "BYTES", help: "Max message size to negotiate (default: libqb's minimum)" },
    json: { type: "boolean", help: 'Print {"error","size","data","encoding","micros"}; with "failure" added when no response came' },
  },
  schema: v.strictObject({
    service: serviceName,
    id: requestId,
    ...payloadEntries,
    timeout: v.optional(milliseconds, "5000"),
    "max-msg": v.optional(wholeNumber("a byte count", 1, 1 << 30)),
    json: jsonFlag,
  }),
  async run(options, io, { tokens }) {
    const payload = buildPayload({ text: options.payload, hex: options.hex, u32: options.u32, i32: options.i32 }, tokens);
    const started = performance.now();
    let outcome: CallOutcome;
    try {
      outcome = await runCall({ service: options.service, id: options.id, payload, timeout: options.timeout, maxMessageSize: options["max-msg"] });
    } catch (error) {
      if (!options.json) throw error;
      // Scripts read stdout: one JSON object even when no response came; the message also goes to stderr.
      const report = failureReport(error, performance.now() - started);
      io.out(JSON.stringify(report));
      io.err(`qbun call: ${report.failure}`);
      return 1;
    }
    const { report } = outcome;
    if (options.json) {
      io.out(JSON.stringify(report));
    } else {
      io.out(`response id ${outcome.id}, ${callSummary(report)} (${outcome.transport} transport)`);
      if (report.size > 0) io.out(callData(outcome));
    }
    return report.error === 0 ? 0 : 1;
  },
});
