/**
 * The lease protocol: one frame per seqpacket message (or per in-process
 * delivery). A 16-byte header, checked by hand, then a body: JSON validated
 * with valibot for control messages, hand-parsed binary for the hot path
 * (writes, acknowledgements, write notifications, locators).
 *
 * ```
 * header: 0 u32 magic "QBLS"  4 u8 version (1)  5 u8 type  6 u16 zero
 *         8 u32 request id (0 for events)       12 u32 body length
 * WRITE body:   f64 offset, f64 fencing token, u32 expected epoch (0: any),
 *               u16 name length, name, data
 * ACK body:     u32 epoch, u32 sequence
 * WRITTEN body: u32 epoch, u32 sequence, f64 offset, u32 length, u16 name length, name
 * LOCATOR body: an encoded locator (locator.ts); one fd rides along (SCM_RIGHTS)
 * ```
 * Client → owner: SUBSCRIBE, UNSUBSCRIBE, ACQUIRE, CANCEL, RENEW, RELEASE, WRITE.
 * Owner → client: REPLY, ERROR, ACK (to a request id); LOCATOR, EPOCH_INVALID,
 * LEASE_EVENT, WRITTEN (events, request id 0).
 * @module
 */
import * as v from "valibot";
import { LeaseError } from "./errors.ts";
import { isValidName, NAME_PATTERN, NAME_RULE } from "./locator.ts";

/** Magic of a frame ("QBLS" little-endian). */
export const FRAME_MAGIC = 0x534c4251;
const VERSION = 1;
/** Bytes of the frame header. */
export const FRAME_HEADER = 16;
/** Largest write payload one request may carry (a seqpacket message must fit the socket buffer). */
export const MAX_WRITE_BYTES = 64 * 1024;
/** Largest frame accepted from a peer. */
export const MAX_FRAME = FRAME_HEADER + 32 + 256 + MAX_WRITE_BYTES;

/** Frame types. */
export const FrameType = {
  SUBSCRIBE: 1,
  UNSUBSCRIBE: 2,
  ACQUIRE: 3,
  CANCEL: 4,
  RENEW: 5,
  RELEASE: 6,
  WRITE: 7,
  REPLY: 16,
  ERROR: 17,
  ACK: 18,
  LOCATOR: 32,
  EPOCH_INVALID: 33,
  LEASE_EVENT: 34,
  WRITTEN: 35,
} as const;
/** One of {@link FrameType}. */
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

const name = v.pipe(v.string(), v.regex(NAME_PATTERN, `a name: ${NAME_RULE}`));

/** The lease announcements, in the order a lease lives through them. */
export const LEASE_EVENTS = ["granted", "released", "expired", "revoked"] as const;
/** One of {@link LEASE_EVENTS}. */
export type LeaseEventKind = (typeof LEASE_EVENTS)[number];

/** The first valibot issue as "path: message" (`root` names the whole value). */
export function describeIssue(issues: readonly v.BaseIssue<unknown>[], root: string): string {
  const issue = issues[0]!;
  const path = issue.path?.map((p) => String(p.key)).join(".") ?? root;
  return `${path}: ${issue.message}`;
}
const count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const ttl = v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(86_400_000));

/** valibot schemas of the JSON bodies, by frame type. */
export const BodySchemas = {
  [FrameType.SUBSCRIBE]: v.strictObject({ endpoint: name, notifyWrites: v.boolean() }),
  [FrameType.UNSUBSCRIBE]: v.strictObject({ endpoint: name }),
  [FrameType.ACQUIRE]: v.strictObject({ leaseClass: name, ttlMs: ttl, wait: v.boolean() }),
  [FrameType.CANCEL]: v.strictObject({ requestId: count }),
  [FrameType.RENEW]: v.strictObject({ leaseClass: name, token: count, ttlMs: ttl }),
  [FrameType.RELEASE]: v.strictObject({ leaseClass: name, token: count }),
  [FrameType.REPLY]: v.strictObject({
    epoch: v.optional(count),
    token: v.optional(count),
    ttlMs: v.optional(ttl),
  }),
  [FrameType.ERROR]: v.strictObject({ code: v.pipe(v.string(), v.maxLength(64)), message: v.pipe(v.string(), v.maxLength(2048)) }),
  [FrameType.EPOCH_INVALID]: v.strictObject({ endpoint: name, epoch: count, next: count }),
  [FrameType.LEASE_EVENT]: v.strictObject({
    leaseClass: name,
    event: v.picklist(LEASE_EVENTS),
    token: count,
  }),
} as const;

type JsonType = keyof typeof BodySchemas;
/** The JSON body of a frame type. */
export type BodyOf<T extends JsonType> = v.InferOutput<(typeof BodySchemas)[T]>;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function protocol(why: string): never {
  throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", why);
}

/** A frame with a checked header. */
export interface Frame {
  readonly type: number;
  readonly requestId: number;
  readonly body: Uint8Array;
}

function header(out: Uint8Array, type: number, requestId: number, bodyLength: number): DataView {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, FRAME_MAGIC, true);
  out[4] = VERSION;
  out[5] = type;
  dv.setUint32(8, requestId, true);
  dv.setUint32(12, bodyLength, true);
  return dv;
}

/** Encode a JSON-bodied frame. */
export function encodeJson<T extends JsonType>(type: T, requestId: number, body: BodyOf<T>): Uint8Array {
  const json = encoder.encode(JSON.stringify(body));
  const out = new Uint8Array(FRAME_HEADER + json.length);
  header(out, type, requestId, json.length);
  out.set(json, FRAME_HEADER);
  return out;
}

/** Encode a frame whose body is given bytes (LOCATOR). */
export function encodeRaw(type: number, requestId: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER + body.length);
  header(out, type, requestId, body.length);
  out.set(body, FRAME_HEADER);
  return out;
}

/** Check a received frame's header; throws a protocol {@link LeaseError}. */
export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.length < FRAME_HEADER) protocol(`frame of ${bytes.length} bytes is shorter than its ${FRAME_HEADER}-byte header`);
  if (bytes.length > MAX_FRAME) protocol(`frame of ${bytes.length} bytes exceeds ${MAX_FRAME}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== FRAME_MAGIC) protocol("frame has the wrong magic");
  if (bytes[4] !== VERSION) protocol(`frame version ${bytes[4]}, expected ${VERSION}`);
  if (dv.getUint16(6, true) !== 0) protocol("frame reserved field is not zero");
  const bodyLength = dv.getUint32(12, true);
  if (bodyLength !== bytes.length - FRAME_HEADER) protocol(`frame says ${bodyLength} body bytes, carries ${bytes.length - FRAME_HEADER}`);
  return { type: bytes[5]!, requestId: dv.getUint32(8, true), body: bytes.subarray(FRAME_HEADER) };
}

/** Parse and validate a JSON body for `type`; throws a protocol {@link LeaseError} naming the bad field. */
export function parseJson<T extends JsonType>(type: T, body: Uint8Array): BodyOf<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(body));
  } catch {
    protocol(`frame type ${type}: body is not UTF-8 JSON`);
  }
  const parsed = v.safeParse(BodySchemas[type], raw);
  if (!parsed.success) protocol(`frame type ${type}: ${describeIssue(parsed.issues, "(body)")}`);
  return parsed.output as BodyOf<T>;
}

function readName(dv: DataView, body: Uint8Array, at: number): [string, number] {
  if (at + 2 > body.length) protocol("body too short for the name length");
  const length = dv.getUint16(at, true);
  if (at + 2 + length > body.length) protocol("name runs past the end of the body");
  let text: string;
  try {
    text = decoder.decode(body.subarray(at + 2, at + 2 + length));
  } catch {
    protocol("name is not UTF-8");
  }
  if (!isValidName(text)) protocol(`invalid name ${JSON.stringify(text)}`);
  return [text, at + 2 + length];
}

function safeAt(dv: DataView, at: number, what: string): number {
  const n = dv.getFloat64(at, true);
  if (!Number.isSafeInteger(n) || n < 0) protocol(`${what} must be a non-negative safe integer`);
  return n;
}

/** A decoded WRITE request. */
export interface WriteRequest {
  readonly endpoint: string;
  readonly offset: number;
  readonly token: number;
  /** The epoch the writer means (0: whichever is current). */
  readonly epoch: number;
  /** Points into the received frame (not copied). */
  readonly data: Uint8Array;
}

/** Encode a WRITE request. */
export function encodeWrite(requestId: number, endpointBytes: Uint8Array, offset: number, token: number, epoch: number, data: Uint8Array): Uint8Array {
  const bodyLength = WRITE_FIXED + endpointBytes.length + data.length;
  const out = new Uint8Array(FRAME_HEADER + bodyLength);
  const dv = header(out, FrameType.WRITE, requestId, bodyLength);
  dv.setFloat64(16, offset, true);
  dv.setFloat64(24, token, true);
  dv.setUint32(32, epoch, true);
  dv.setUint16(36, endpointBytes.length, true);
  out.set(endpointBytes, 38);
  out.set(data, 38 + endpointBytes.length);
  return out;
}

const WRITE_FIXED = 22;

/** Decode a WRITE body (bounds-checked). */
export function decodeWrite(body: Uint8Array): WriteRequest {
  if (body.length < WRITE_FIXED) protocol("WRITE body too short");
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const offset = safeAt(dv, 0, "write offset");
  const token = safeAt(dv, 8, "fencing token");
  const epoch = dv.getUint32(16, true);
  const [endpoint, at] = readName(dv, body, 20);
  return { endpoint, offset, token, epoch, data: body.subarray(at) };
}

/** Encode an ACK. */
export function encodeAck(requestId: number, epoch: number, sequence: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER + 8);
  const dv = header(out, FrameType.ACK, requestId, 8);
  dv.setUint32(16, epoch, true);
  dv.setUint32(20, sequence, true);
  return out;
}

/** Decode an ACK body. */
export function decodeAck(body: Uint8Array): { epoch: number; sequence: number } {
  if (body.length !== 8) protocol(`ACK body of ${body.length} bytes, expected 8`);
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  return { epoch: dv.getUint32(0, true), sequence: dv.getUint32(4, true) };
}

/** A write notification: a write was applied to `endpoint`. */
export interface WrittenEvent {
  /** The region written to. */
  readonly endpoint: string;
  /** The epoch the write went into. */
  readonly epoch: number;
  /** The region's sequence after the write. */
  readonly sequence: number;
  /** First byte written. */
  readonly offset: number;
  /** Bytes written. */
  readonly length: number;
}

/** Encode a WRITTEN event. */
export function encodeWritten(endpointBytes: Uint8Array, epoch: number, sequence: number, offset: number, length: number): Uint8Array {
  const bodyLength = 22 + endpointBytes.length;
  const out = new Uint8Array(FRAME_HEADER + bodyLength);
  const dv = header(out, FrameType.WRITTEN, 0, bodyLength);
  dv.setUint32(16, epoch, true);
  dv.setUint32(20, sequence, true);
  dv.setFloat64(24, offset, true);
  dv.setUint32(32, length, true);
  dv.setUint16(36, endpointBytes.length, true);
  out.set(endpointBytes, 38);
  return out;
}

/** Decode a WRITTEN body (bounds-checked). */
export function decodeWritten(body: Uint8Array): WrittenEvent {
  if (body.length < 22) protocol("WRITTEN body too short");
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const epoch = dv.getUint32(0, true);
  const sequence = dv.getUint32(4, true);
  const offset = safeAt(dv, 8, "written offset");
  const length = dv.getUint32(16, true);
  const [endpoint, at] = readName(dv, body, 20);
  if (at !== body.length) protocol("WRITTEN body has trailing bytes");
  return { endpoint, epoch, sequence, offset, length };
}

/** UTF-8 bytes of a name (for the binary frames). */
export function nameBytes(text: string): Uint8Array {
  return encoder.encode(text);
}
