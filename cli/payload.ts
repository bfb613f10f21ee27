/**
 * Request payloads built from the command line (`qbun call`, `qbun bench`):
 * text, `--hex`, `--u32` and `--i32` parts, each validated by valibot and
 * joined in the order they were given. And the reverse: how a response's
 * bytes are shown (text when they are plain text, hex otherwise).
 * @module
 */
import * as v from "valibot";
import { got, wholeNumber } from "./args.ts";
import type { ArgToken, Flag } from "./commands/command.ts";

/** `--hex`: pairs of hex digits (spaces, colons and a 0x prefix allowed). */
export const hexPart = v.pipe(
  v.string(),
  v.transform((text) => text.replace(/^0x/i, "").replace(/[\s:]/g, "")),
  v.regex(/^(?:[0-9a-fA-F]{2})*$/, (issue) => `pairs of hex digits, e.g. 0a1bff ${got(issue)}`),
  v.transform((hex) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))),
);

/** `--u32`: a number 0 … 2^32-1, four bytes little-endian. */
export const u32Part = v.pipe(
  wholeNumber("an unsigned 32-bit value", 0, 0xffff_ffff),
  v.transform((n) => le32((view) => view.setUint32(0, n, true))),
);

/** `--i32`: a number -2^31 … 2^31-1, four bytes little-endian. */
export const i32Part = v.pipe(
  wholeNumber("a signed 32-bit value", -0x8000_0000, 0x7fff_ffff),
  v.transform((n) => le32((view) => view.setInt32(0, n, true))),
);

function le32(write: (view: DataView) => void): Uint8Array {
  const bytes = new Uint8Array(4);
  write(new DataView(bytes.buffer));
  return bytes;
}

/** The flags that build a binary payload (`call`, `bench`), each repeatable and appended in command-line order. */
export const payloadFlags = {
  hex: { type: "string", value: "HEX", multiple: true, help: "Append bytes given in hex, e.g. 0a1bff" },
  u32: { type: "string", value: "N", multiple: true, help: "Append N as 4 bytes, unsigned little-endian" },
  i32: { type: "string", value: "N", multiple: true, help: "Append N as 4 bytes, signed little-endian" },
} as const satisfies Record<string, Flag>;

/** The schema entries for {@link payloadFlags} (and the PAYLOAD text positional). */
export const payloadEntries = {
  payload: v.optional(v.string()),
  hex: v.optional(v.array(hexPart)),
  u32: v.optional(v.array(u32Part)),
  i32: v.optional(v.array(i32Part)),
};

/** The validated parts, per flag, in the order each flag was given. */
export interface PayloadParts {
  /** The PAYLOAD positional, as UTF-8 text. */
  readonly text?: string;
  /** Each `--hex`'s bytes. */
  readonly hex?: readonly Uint8Array[];
  /** Each `--u32`'s four bytes. */
  readonly u32?: readonly Uint8Array[];
  /** Each `--i32`'s four bytes. */
  readonly i32?: readonly Uint8Array[];
}

/** Whether any part was given (an empty PAYLOAD text counts: it was asked for). */
export function hasPayloadParts(parts: PayloadParts): boolean {
  return parts.text !== undefined || Boolean(parts.hex?.length || parts.u32?.length || parts.i32?.length);
}

/**
 * Joins the parts in command-line order: `tokens` says in which order the
 * flags (and the `textKey` positional) appeared.
 */
export function buildPayload(parts: PayloadParts, tokens: readonly ArgToken[], textKey = "payload"): Uint8Array {
  const next = { hex: 0, u32: 0, i32: 0 };
  const chunks: Uint8Array[] = [];
  for (const token of tokens) {
    if (token.name === textKey && parts.text !== undefined) chunks.push(new TextEncoder().encode(parts.text));
    else if (token.name === "hex" || token.name === "u32" || token.name === "i32") {
      const chunk = parts[token.name]?.[next[token.name]++];
      if (chunk) chunks.push(chunk);
    }
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

/** Response bytes as shown: UTF-8 text when valid and free of control characters (tab, newline, CR allowed), else hex. */
export function showBytes(data: Uint8Array): { text: string; encoding: "utf8" | "hex" } {
  if (data.byteLength > 0) {
    let text: string | undefined;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(data);
    } catch {}
    if (text !== undefined && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(text)) return { text, encoding: "utf8" };
  } else {
    return { text: "", encoding: "utf8" };
  }
  return { text: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("hex"), encoding: "hex" };
}
