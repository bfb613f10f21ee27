/**
 * Locators: what a reader needs to map a region it was given an fd for —
 * size, segment table, flags, epoch — in a small binary form that every
 * reader parses with explicit bounds checks before trusting any number.
 *
 * Layout (little-endian):
 * ```
 *  0 u32 magic "QBLC"    4 u16 version (1)   6 u16 flags
 *  8 u32 epoch          12 u32 segment count
 * 16 f64 size (bytes a reader may read)      24 f64 file size (bytes to map)
 * 32 u16 endpoint name length  34 u16 zero   36 name (UTF-8)
 * then per segment: f64 offset, f64 length, f64 file offset (24 bytes)
 * ```
 * Numbers are f64 holding safe integers: JS reads them without BigInt.
 * @module
 */
import { QbunArgumentError } from "../../ffi/errors.ts";
import { LeaseError } from "./errors.ts";

/** One piece of the region: logical bytes [offset, offset + length) live at `fileOffset` in the file. */
export interface Segment {
  /** First logical byte of the region this segment holds. */
  readonly offset: number;
  /** Bytes in the segment (at least 1). */
  readonly length: number;
  /** Where those bytes start in the file. */
  readonly fileOffset: number;
}

/** Where a region lives in the file a reader was given, valid only within `epoch`. */
export interface Locator {
  /** The endpoint (region name). */
  readonly endpoint: string;
  /** Epoch this locator belongs to; the owner invalidates it when it replaces the region. */
  readonly epoch: number;
  /** Readable bytes of the region. */
  readonly size: number;
  /** Bytes of the file to map (header and segments included). */
  readonly fileSize: number;
  /** The file starts with the sequenced header (see region.ts); readers must check its sequence. */
  readonly sequenced: boolean;
  /** The file is sealed: nobody can resize it or map it writable again. */
  readonly sealed: boolean;
  /** The segment table, sorted, covering [0, size) without gaps or overlap. */
  readonly segments: readonly Segment[];
}

/** Magic of an encoded locator ("QBLC" little-endian). */
export const LOCATOR_MAGIC = 0x434c4251;
const VERSION = 1;
const FIXED = 36;
const SEGMENT_BYTES = 24;
const FLAG_SEQUENCED = 1;
const FLAG_SEALED = 2;
const KNOWN_FLAGS = FLAG_SEQUENCED | FLAG_SEALED;
/** Most segments a locator may carry (bounds the work of checking one). */
export const MAX_SEGMENTS = 1024;
/** Bytes of the sequenced header at the start of a region file. */
export const HEADER_SIZE = 64;
/** What endpoint and lease-class names look like. */
export const NAME_PATTERN = /^[A-Za-z0-9._:@/-]{1,128}$/;
/** The name rule in words, for error messages. */
export const NAME_RULE = "use 1-128 of A-Z a-z 0-9 . _ : @ / -";

/** Whether `name` is a valid endpoint or lease-class name (1-128 of `A-Z a-z 0-9 . _ : @ / -`). */
export function isValidName(name: unknown): name is string {
  return typeof name === "string" && NAME_PATTERN.test(name);
}

/** Throw a {@link QbunArgumentError} naming `what` unless `name` follows the name rule. */
export function checkName(name: unknown, what: string): asserts name is string {
  if (!isValidName(name)) throw new QbunArgumentError(`invalid ${what} ${JSON.stringify(name)}: ${NAME_RULE}`);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function bad(why: string): never {
  throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `invalid locator: ${why}`);
}

function safe(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) bad(`${what} must be a non-negative safe integer, got ${n}`);
  return n;
}

/**
 * Check a locator's internal consistency: names, flags, and a segment table
 * sorted by offset, covering [0, size) exactly, each inside the file and
 * clear of the header. Throws a protocol {@link LeaseError} otherwise.
 */
export function checkLocator(locator: Locator): Locator {
  if (!isValidName(locator.endpoint)) bad(`endpoint name ${JSON.stringify(locator.endpoint)}`);
  safe(locator.epoch, "epoch");
  if (locator.epoch > 0xffffffff) bad("epoch exceeds 32 bits");
  safe(locator.size, "size");
  safe(locator.fileSize, "file size");
  if (locator.segments.length > MAX_SEGMENTS) bad(`${locator.segments.length} segments (at most ${MAX_SEGMENTS})`);
  const floor = locator.sequenced ? HEADER_SIZE : 0;
  let next = 0;
  for (const [i, s] of locator.segments.entries()) {
    safe(s.offset, `segment ${i} offset`);
    safe(s.length, `segment ${i} length`);
    safe(s.fileOffset, `segment ${i} file offset`);
    if (s.length === 0) bad(`segment ${i} is empty`);
    if (s.offset !== next) bad(`segment ${i} starts at ${s.offset}, expected ${next} (segments must be sorted and contiguous)`);
    if (s.fileOffset < floor) bad(`segment ${i} overlaps the header`);
    if (s.fileOffset + s.length > locator.fileSize) bad(`segment ${i} ends at ${s.fileOffset + s.length}, beyond the ${locator.fileSize}-byte file`);
    next = s.offset + s.length;
  }
  if (next !== locator.size) bad(`segments cover ${next} of ${locator.size} bytes`);
  return locator;
}

/** Encode a locator (checked first). */
export function encodeLocator(locator: Locator): Uint8Array {
  checkLocator(locator);
  const name = encoder.encode(locator.endpoint);
  const out = new Uint8Array(FIXED + name.length + locator.segments.length * SEGMENT_BYTES);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, LOCATOR_MAGIC, true);
  dv.setUint16(4, VERSION, true);
  dv.setUint16(6, (locator.sequenced ? FLAG_SEQUENCED : 0) | (locator.sealed ? FLAG_SEALED : 0), true);
  dv.setUint32(8, locator.epoch, true);
  dv.setUint32(12, locator.segments.length, true);
  dv.setFloat64(16, locator.size, true);
  dv.setFloat64(24, locator.fileSize, true);
  dv.setUint16(32, name.length, true);
  out.set(name, FIXED);
  let at = FIXED + name.length;
  for (const s of locator.segments) {
    dv.setFloat64(at, s.offset, true);
    dv.setFloat64(at + 8, s.length, true);
    dv.setFloat64(at + 16, s.fileOffset, true);
    at += SEGMENT_BYTES;
  }
  return out;
}

/**
 * Decode a locator received from a peer. Every field is bounds-checked
 * before use; an empty segment table means one segment right after the
 * header. Throws a protocol {@link LeaseError} on any inconsistency.
 */
export function decodeLocator(bytes: Uint8Array): Locator {
  if (bytes.length < FIXED) bad(`${bytes.length} bytes, shorter than the ${FIXED}-byte fixed part`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== LOCATOR_MAGIC) bad("wrong magic");
  const version = dv.getUint16(4, true);
  if (version !== VERSION) bad(`version ${version}, this reader understands ${VERSION}`);
  const flags = dv.getUint16(6, true);
  if (flags & ~KNOWN_FLAGS) bad(`unknown flags 0x${flags.toString(16)}`);
  const epoch = dv.getUint32(8, true);
  const count = dv.getUint32(12, true);
  if (count > MAX_SEGMENTS) bad(`${count} segments (at most ${MAX_SEGMENTS})`);
  const size = safe(dv.getFloat64(16, true), "size");
  const fileSize = safe(dv.getFloat64(24, true), "file size");
  const nameLength = dv.getUint16(32, true);
  if (dv.getUint16(34, true) !== 0) bad("reserved field is not zero");
  const expected = FIXED + nameLength + count * SEGMENT_BYTES;
  if (bytes.length !== expected) bad(`${bytes.length} bytes, expected ${expected} for a ${nameLength}-byte name and ${count} segments`);
  let endpoint: string;
  try {
    endpoint = decoder.decode(bytes.subarray(FIXED, FIXED + nameLength));
  } catch {
    bad("endpoint name is not UTF-8");
  }
  const sequenced = (flags & FLAG_SEQUENCED) !== 0;
  const segments: Segment[] = [];
  let at = FIXED + nameLength;
  for (let i = 0; i < count; i++) {
    segments.push({
      offset: dv.getFloat64(at, true),
      length: dv.getFloat64(at + 8, true),
      fileOffset: dv.getFloat64(at + 16, true),
    });
    at += SEGMENT_BYTES;
  }
  if (count === 0 && size > 0) segments.push({ offset: 0, length: size, fileOffset: sequenced ? HEADER_SIZE : 0 });
  return checkLocator({ endpoint, epoch, size, fileSize, sequenced, sealed: (flags & FLAG_SEALED) !== 0, segments });
}
