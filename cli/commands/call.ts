/**
 * `qbun call SERVICE ID [PAYLOAD]`: one request to any libqb service with
 * qbun's client; prints the response and how long the round trip took.
 * @module
 */
import * as v from "valibot";
import { errnoName } from "../../ffi/errors.ts";
import { QbClient } from "../../src/qb/index.ts";
import { jsonFlag, milliseconds, serviceName, wholeNumber } from "../args.ts";
import { buildPayload, hexPart, i32Part, showBytes, u32Part } from "../payload.ts";
import { connectHint } from "../host/services.ts";
import { defineCommand } from "./command.ts";

/** What `qbun call --json` prints: exactly these keys. */
export interface CallReport {
  /** The response header's error: 0, or a negative errno. */
  readonly error: number;
  /** Payload bytes in the response (header excluded). */
  readonly size: number;
  /** The payload: text when `encoding` is `utf8`, lowercase hex otherwise. */
  readonly data: string;
  /** `utf8` for valid UTF-8 without control characters (tab, LF, CR allowed); `hex` otherwise. */
  readonly encoding: "utf8" | "hex";
  /** Request-to-response time in microseconds (connecting not included). */
  readonly micros: number;
}

/** The `call` command. */
export const call = defineCommand({
  name: "call",
  summary: "Send one request to a libqb service and print the response, with timing",
  description:
    "Connects to SERVICE with qbun's libqb-compatible client, sends one request with id ID and\n" +
    "the payload built from PAYLOAD (UTF-8 text) and the --hex/--u32/--i32 parts, all joined in\n" +
    "the order given, and prints the response's error, size, data and round-trip time.\n" +
    "Data is shown as text when it is valid UTF-8 without control characters, as hex otherwise.\n" +
    "Exit code 0 when the response's error is 0, 1 when it is an errno (or no response came).",
  positionals: [
    { name: "service", label: "SERVICE", help: "libqb service name (see qbun ls)" },
    { name: "id", label: "ID", help: "Request id, a 32-bit signed integer (the interop service: 1 echo ... 6 whoami)" },
    { name: "payload", label: "PAYLOAD", help: "Payload text (UTF-8)", optional: true },
  ],
  flags: {
    hex: { type: "string", value: "HEX", multiple: true, help: "Append bytes given in hex, e.g. 0a1bff" },
    u32: { type: "string", value: "N", multiple: true, help: "Append N as 4 bytes, unsigned little-endian" },
    i32: { type: "string", value: "N", multiple: true, help: "Append N as 4 bytes, signed little-endian" },
    timeout: { type: "string", value: "MS", help: "Give up after MS milliseconds (default 5000)" },
    "max-msg": { type: "string", value: "BYTES", help: "Max message size to negotiate (default: libqb's minimum)" },
    json: { type: "boolean", help: 'Print {"error","size","data","encoding","micros"}' },
  },
  schema: v.strictObject({
    service: serviceName,
    id: wholeNumber("a request id", -0x8000_0000, 0x7fff_ffff),
    payload: v.optional(v.string()),
    hex: v.optional(v.array(hexPart)),
    u32: v.optional(v.array(u32Part)),
    i32: v.optional(v.array(i32Part)),
    timeout: v.optional(milliseconds, "5000"),
    "max-msg": v.optional(wholeNumber("a byte count", 1, 1 << 30)),
    json: jsonFlag,
  }),
  async run(options, io, { tokens }) {
    const payload = buildPayload({ text: options.payload, hex: options.hex, u32: options.u32, i32: options.i32 }, tokens);
    const signal = AbortSignal.timeout(options.timeout);
    let client: QbClient;
    try {
      client = await QbClient.connect(options.service, { maxMessageSize: options["max-msg"], signal, timeout: options.timeout });
    } catch (error) {
      throw connectHint(options.service, error);
    }
    await using _client = client;
    const started = performance.now();
    const response = await client.request(options.id, payload, { timeout: options.timeout });
    const micros = Math.round((performance.now() - started) * 1000 * 10) / 10;
    const shown = showBytes(response.data);
    const report: CallReport = { error: response.error, size: response.data.byteLength, data: shown.text, encoding: shown.encoding, micros };
    if (options.json) {
      io.out(JSON.stringify(report));
    } else {
      const error = report.error === 0 ? "0 (ok)" : `${report.error} (${errnoName(-report.error)})`;
      io.out(`response id ${response.id}, error ${error}, ${report.size} bytes in ${report.micros} µs (${client.transport} transport)`);
      if (report.size > 0) io.out(report.encoding === "utf8" ? report.data : hexDump(response.data));
    }
    return report.error === 0 ? 0 : 1;
  },
});

/** Sixteen bytes a line: offset, hex, printable ASCII. */
function hexDump(data: Uint8Array): string {
  const lines: string[] = [];
  for (let at = 0; at < data.byteLength; at += 16) {
    const row = data.subarray(at, at + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${at.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}
