/**
 * libqb 2.0.6 IPC wire layouts (x86_64/aarch64 LP64, little-endian): every
 * int32 header field sits in an 8-byte slot. Parsing is hand-written bounds
 * checks: these bytes come from another process.
 * @module
 */
import { RingCorruptError } from "./ring.ts";

/** Size of `struct qb_ipc_request_header`: id @0, size @8. */
export const REQUEST_HEADER_SIZE = 16;
/** Size of `struct qb_ipc_response_header`: id @0, size @8, error @16. */
export const RESPONSE_HEADER_SIZE = 24;
/** Size of the connection request: request header + max_msg_size @16. */
export const CONNECTION_REQUEST_SIZE = 24;
/** Size of the connection response: response header, type @24, max size @28, connection @32, three 4096-byte strings. */
export const CONNECTION_RESPONSE_SIZE = 12328;
/** The smallest max message size a libqb client asks for (the response's size). */
export const MIN_MAX_MSG_SIZE = 12328;

/** A response (or event): the header's id and error (0 or -errno), then the payload. */
export interface QbMessage {
  readonly id: number;
  readonly error: number;
  readonly data: Uint8Array;
}

/** Little-endian int32 at `offset` (the caller checked the length). */
export function int32At(bytes: Uint8Array, offset: number): number {
  return bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24);
}

/**
 * Check a response or event from the server (untrusted): the `length` bytes
 * at `start` of `bytes`, within the negotiated `maxMessageSize`. Returns its
 * header fields and its payload: copied into `into` when it fits there (the
 * payload is then a view of `into`), else copied out when `copy` (one copy,
 * no view of a view), else a view of `bytes`. Throws RingCorruptError
 * naming `source`.
 */
export function readMessage(
  bytes: Uint8Array,
  start: number,
  length: number,
  maxMessageSize: number,
  what: "response" | "event",
  source: string,
  copy: boolean,
  into?: Uint8Array,
): QbMessage {
  if (length < RESPONSE_HEADER_SIZE) throw new RingCorruptError(source, `a ${length}-byte ${what} has no room for its header`);
  if (length > maxMessageSize) throw new RingCorruptError(source, `a ${length}-byte ${what} exceeds the negotiated size`);
  const size = int32At(bytes, start + 8);
  if (size < RESPONSE_HEADER_SIZE || size > length) throw new RingCorruptError(source, `${what} header claims ${size} bytes of ${length}`);
  const from = start + RESPONSE_HEADER_SIZE;
  const to = start + size;
  let data: Uint8Array;
  if (into !== undefined && to - from <= into.byteLength) {
    into.set(bytes.subarray(from, to));
    data = into.subarray(0, to - from);
  } else data = copy ? bytes.slice(from, to) : bytes.subarray(from, to);
  return { id: int32At(bytes, start), error: int32At(bytes, start + 16), data };
}

/** Message ids libqb reserves. */
export const MessageId = {
  /** Connection request and response. */
  AUTHENTICATE: -1,
  /** A request with this id drops the connection. */
  DISCONNECT: -3,
} as const;

/** `connection_type` in the connection response. */
export const ConnectionType = { SOCKET: 0, SHM: 1 } as const;

const PATH_FIELD = 4096;
const encoder = new TextEncoder();

/** A parsed connection request. */
export interface ConnectionRequest {
  readonly id: number;
  readonly size: number;
  readonly maxMessageSize: number;
}

/** Parse the 24-byte connection request; null if it is not one. */
export function parseConnectionRequest(bytes: Uint8Array): ConnectionRequest | null {
  if (bytes.byteLength < CONNECTION_REQUEST_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const id = view.getInt32(0, true);
  if (id !== MessageId.AUTHENTICATE) return null;
  return { id, size: view.getInt32(8, true), maxMessageSize: view.getUint32(16, true) };
}

/** Encode a connection request (what a libqb client sends). */
export function encodeConnectionRequest(maxMessageSize: number): Uint8Array {
  const bytes = new Uint8Array(CONNECTION_REQUEST_SIZE);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, MessageId.AUTHENTICATE, true);
  view.setInt32(8, CONNECTION_REQUEST_SIZE, true);
  view.setUint32(16, maxMessageSize, true);
  return bytes;
}

/** What a connection response carries. */
export interface ConnectionResponse {
  /** 0, or -errno when the server refused the connection. */
  readonly error: number;
  readonly connectionType: number;
  readonly maxMessageSize: number;
  /** SHM: ring prefixes; socket: control file path / socket base name / "". */
  readonly request: string;
  readonly response: string;
  readonly event: string;
}

/**
 * Encode the 12328-byte connection response, into `into` (cleared first)
 * when given. Throws if a name does not fit.
 */
export function encodeConnectionResponse(r: ConnectionResponse, into?: Uint8Array): Uint8Array {
  const bytes = into ? into.fill(0, 0, CONNECTION_RESPONSE_SIZE).subarray(0, CONNECTION_RESPONSE_SIZE) : new Uint8Array(CONNECTION_RESPONSE_SIZE);
  if (bytes.byteLength < CONNECTION_RESPONSE_SIZE) throw new RangeError(`a connection response needs ${CONNECTION_RESPONSE_SIZE} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, CONNECTION_RESPONSE_SIZE);
  view.setInt32(0, MessageId.AUTHENTICATE, true);
  view.setInt32(8, CONNECTION_RESPONSE_SIZE, true);
  view.setInt32(16, r.error, true);
  view.setInt32(24, r.error === 0 ? r.connectionType : 0, true);
  view.setUint32(28, r.error === 0 ? r.maxMessageSize : 0, true);
  // connection (intptr_t) at 32 stays 0: an opaque value clients ignore.
  putString(bytes, 40, r.request);
  putString(bytes, 40 + PATH_FIELD, r.response);
  putString(bytes, 40 + 2 * PATH_FIELD, r.event);
  return bytes;
}

/** Parse a connection response; null if the bytes are not one. */
export function parseConnectionResponse(bytes: Uint8Array): ConnectionResponse | null {
  if (bytes.byteLength < CONNECTION_RESPONSE_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getInt32(0, true) !== MessageId.AUTHENTICATE) return null;
  return {
    error: view.getInt32(16, true),
    connectionType: view.getInt32(24, true),
    maxMessageSize: view.getUint32(28, true),
    request: getString(bytes, 40),
    response: getString(bytes, 40 + PATH_FIELD),
    event: getString(bytes, 40 + 2 * PATH_FIELD),
  };
}

function putString(into: Uint8Array, offset: number, text: string): void {
  const raw = encoder.encode(text);
  if (raw.length >= PATH_FIELD) throw new RangeError(`name of ${raw.length} bytes does not fit a ${PATH_FIELD}-byte field`);
  into.set(raw, offset);
}

function getString(bytes: Uint8Array, offset: number): string {
  const field = bytes.subarray(offset, offset + PATH_FIELD);
  const end = field.indexOf(0);
  return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
}

/** Write a request header (id, size) at `offset` of `into`. */
export function putRequestHeader(into: DataView, offset: number, id: number, size: number): void {
  into.setInt32(offset, id, true);
  into.setInt32(offset + 4, 0, true);
  into.setInt32(offset + 8, size, true);
  into.setInt32(offset + 12, 0, true);
}

/** Write a response header (id, size, error) at `offset` of `into`. */
export function putResponseHeader(into: DataView, offset: number, id: number, size: number, error: number): void {
  into.setInt32(offset, id, true);
  into.setInt32(offset + 4, 0, true);
  into.setInt32(offset + 8, size, true);
  into.setInt32(offset + 12, 0, true);
  into.setInt32(offset + 16, error, true);
  into.setInt32(offset + 20, 0, true);
}
