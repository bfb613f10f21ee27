/**
 * The blob channel's frames. Every frame is one seqpacket message:
 *
 * ```
 *  0      4    5    6      7       8               24        32        36       40
 *  +------+----+----+------+-------+---------------+---------+---------+--------+-----------+
 *  | QBLB | v1 |type| flags|backend|  id (16 bytes)| size u64| meta len| reason | metadata  |
 *  +------+----+----+------+-------+---------------+---------+---------+--------+-----------+
 * ```
 *
 * OFFER carries one fd (SCM_RIGHTS) and UTF-8 JSON metadata; MAPPED,
 * RELEASED and REFUSED are acknowledgements that carry only the id (and a
 * reason for REFUSED). Little-endian throughout. A frame is parsed with
 * explicit bounds checks: nothing a peer sends is trusted.
 * @module
 */
import * as v from "valibot";
import { BACKEND_ORDER, type BlobBackend } from "./backend.ts";
import { DESCRIPTOR_PROBLEMS, type BlobDescriptorProblem } from "./errors.ts";
import { ID_BYTES } from "./ids.ts";

/** "QBLB" read as a little-endian u32. */
export const MAGIC = 0x424c4251;
/** Protocol version in byte 4. */
export const VERSION = 1;
/** Bytes before the metadata. */
export const HEADER_SIZE = 40;
/** Largest metadata a channel sends or accepts by default. */
export const DEFAULT_MAX_METADATA = 16 * 1024;

/** Frame types. */
export const FrameType = { Offer: 1, Mapped: 2, Released: 3, Refused: 4 } as const;
/** One of {@link FrameType}'s values. */
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const FLAG_SEALED = 1;
/** Backend byte = index + 1 in this list; refusal reason = index + 1 in the problems list. */
const BACKENDS: readonly BlobBackend[] = BACKEND_ORDER;
const PROBLEMS: readonly BlobDescriptorProblem[] = DESCRIPTOR_PROBLEMS;

/** One decoded frame. */
export interface Frame {
  type: FrameType;
  id: string;
  size: number;
  sealed: boolean;
  backend: BlobBackend;
  problem: BlobDescriptorProblem | undefined;
  metadata: Record<string, unknown>;
  /**
   * An offer whose metadata is longer than this side accepts (its fd came
   * along all the same): to be refused on its own, not a protocol error;
   * `metadata` is then empty.
   */
  oversized: boolean;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

/** Metadata is a JSON object (arrays, numbers, strings… inside; not a bare value). */
const MetadataSchema = v.record(v.string(), v.unknown());

/** Encode a frame. `metadata` must already be JSON text (or empty). */
export function encodeFrame(
  type: FrameType,
  id: string,
  fields: { size?: number; sealed?: boolean; backend?: BlobBackend; problem?: BlobDescriptorProblem; metadata?: Uint8Array } = {},
): Uint8Array {
  const meta = fields.metadata ?? new Uint8Array(0);
  const frame = new Uint8Array(HEADER_SIZE + meta.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, MAGIC, true);
  frame[4] = VERSION;
  frame[5] = type;
  frame[6] = fields.sealed ? FLAG_SEALED : 0;
  frame[7] = fields.backend ? BACKENDS.indexOf(fields.backend) + 1 : 0;
  frame.set(Buffer.from(id, "hex"), 8);
  view.setBigUint64(24, BigInt(fields.size ?? 0), true);
  view.setUint32(32, meta.length, true);
  view.setUint32(36, fields.problem ? PROBLEMS.indexOf(fields.problem) + 1 : 0, true);
  frame.set(meta, HEADER_SIZE);
  return frame;
}

/**
 * Decode a frame, or return what is wrong with it. `truncated`: the socket
 * cut the frame at `frame.length` bytes (it was longer than this side reads).
 */
export function decodeFrame(frame: Uint8Array, maxMetadata: number, truncated = false): Frame | string {
  if (frame.length < HEADER_SIZE) return `a ${frame.length}-byte frame is shorter than the ${HEADER_SIZE}-byte header`;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint32(0, true) !== MAGIC) return "bad magic";
  if (frame[4] !== VERSION) return `unsupported version ${frame[4]}`;
  const type = frame[5]!;
  if (type < FrameType.Offer || type > FrameType.Refused) return `unknown frame type ${type}`;
  const flags = frame[6]!;
  if ((flags & ~FLAG_SEALED) !== 0) return `unknown flags 0x${flags.toString(16)}`;
  const backendCode = frame[7]!;
  const metaLength = view.getUint32(32, true);
  const reason = view.getUint32(36, true);
  const size64 = view.getBigUint64(24, true);
  if (size64 > BigInt(Number.MAX_SAFE_INTEGER)) return "size out of range";
  const following = frame.length - HEADER_SIZE;
  // A cut frame must announce more than arrived; a whole one exactly what arrived.
  if (truncated ? metaLength <= following : metaLength !== following) {
    return `metadata length ${metaLength} does not match the frame (${following}${truncated ? "+" : ""} bytes follow the header)`;
  }
  const oversized = metaLength > maxMetadata;
  if (oversized && type !== FrameType.Offer) return `${metaLength} bytes of metadata exceed the limit of ${maxMetadata}`;
  const id = hex(frame.subarray(8, 8 + ID_BYTES));
  let backend: BlobBackend = "memfd";
  let metadata: Record<string, unknown> = {};
  let problem: BlobDescriptorProblem | undefined;
  if (type === FrameType.Offer) {
    if (backendCode < 1 || backendCode > BACKENDS.length) return `unknown backend ${backendCode}`;
    backend = BACKENDS[backendCode - 1]!;
    if (size64 === 0n) return "an offer of 0 bytes";
    if (metaLength > 0 && !oversized) {
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame.subarray(HEADER_SIZE)));
      } catch {
        return "metadata is not UTF-8 JSON";
      }
      const result = v.safeParse(MetadataSchema, json);
      if (!result.success || Array.isArray(json)) return "metadata is not a JSON object";
      metadata = result.output;
    }
  } else {
    if (metaLength !== 0 || flags !== 0) return "an acknowledgement with a body";
    if (type === FrameType.Refused) {
      if (reason < 1 || reason > PROBLEMS.length) return `unknown refusal reason ${reason}`;
      problem = PROBLEMS[reason - 1];
    }
  }
  return { type: type as FrameType, id, size: Number(size64), sealed: (flags & FLAG_SEALED) !== 0, backend, problem, metadata, oversized };
}
