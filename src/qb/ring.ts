/**
 * libqb's shared-memory ring buffer: a header file (pointers, paths,
 * reference count, a process-shared semaphore, one user int) and a data file
 * mapped twice back to back, holding chunks `[len][magic][payload…]` at word
 * granularity.
 *
 * The peer writes into these files, so nothing read from them is trusted:
 * pointers are checked against this side's own copy of the ring size, every
 * length against the ring and the negotiated maximum, and every magic word.
 * A violation throws {@link RingCorruptError}; the caller drops the peer.
 * @module
 */
import { unlinkSync } from "node:fs";
import { QbunArgumentError } from "../../ffi/errors.ts";
import { Semaphore, SharedMemory, type Mapping } from "../shm/index.ts";

/** Offsets in the ring header (`struct qb_ringbuffer_shared_s`). */
export const RingHeader = {
  WRITE_PT: 0,
  READ_PT: 4,
  WORD_SIZE: 8,
  HDR_PATH: 12,
  DATA_PATH: 4108,
  REF_COUNT: 8204,
  SEM: 8208,
  USER: 8240,
  /** sizeof(struct qb_ringbuffer_shared_s). */
  SIZE: 8248,
} as const;

/** Chunk magic words. */
export const ChunkMagic = { COMMITTED: 0xa1a1a1a1, RECLAIMED: 0xd0d0d0d0, ALLOCATED: 0xa110ced0 } as const;

/** Bytes a chunk needs beyond its payload (header words and rounding). */
export const CHUNK_MARGIN = 12;

/** libqb's data size for a negotiated max message size: round_up(max + 13, page). */
export function ringDataSize(maxMessageSize: number, pageSize = 4096): number {
  return Math.ceil((maxMessageSize + CHUNK_MARGIN + 1) / pageSize) * pageSize;
}

/** A peer broke the ring's invariants; the connection must be dropped. */
export class RingCorruptError extends Error {
  /** Always `"ERR_QBUN_RING_CORRUPT"`. */
  readonly code = "ERR_QBUN_RING_CORRUPT";
  constructor(ring: string, what: string) {
    super(`ring ${ring}: ${what}`);
    this.name = "RingCorruptError";
  }
}

/** Where a ring lives: `<prefix>-header` and `<prefix>-data`. */
export interface RingFiles {
  readonly prefix: string;
  readonly headerPath: string;
  readonly dataPath: string;
}

/** The two file names of a ring with this prefix. */
export function ringFiles(prefix: string): RingFiles {
  return { prefix, headerPath: `${prefix}-header`, dataPath: `${prefix}-data` };
}

/** Options for creating a ring (the server side). */
export interface CreateRingOptions {
  readonly files: RingFiles;
  readonly maxMessageSize: number;
  /** Bytes after the header struct (libqb's server uses 4: the flow-control int). */
  readonly userSize?: number;
  /** Owner and mode for both files (chown failures from lack of privilege are ignored, as libqb does). */
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  readonly pageSize?: number;
}

const encoder = new TextEncoder();

/**
 * One ring, mapped. A side uses it either as the writer or as the reader.
 */
export class Ring implements Disposable {
  /** File names. */
  readonly files: RingFiles;
  /** Data area size in bytes (this side's own value, never re-read from shared memory). */
  readonly dataSize: number;
  /** Largest payload accepted from or written to this ring. */
  readonly maxMessageSize: number;
  readonly #wordSize: number;
  readonly #headerMap: Mapping;
  readonly #dataMap: Mapping;
  readonly #header: Uint32Array;
  readonly #headerI32: Int32Array;
  /** Words of the data area, mapped twice: index p and p + wordSize are the same word. */
  readonly #words: Uint32Array;
  /** Bytes of the data area, mapped twice. */
  readonly #bytes: Uint8Array;
  readonly #sem: Semaphore;
  /** This side's write pointer (the writer never trusts the shared copy). */
  #writePt = 0;
  #closed = false;

  private constructor(files: RingFiles, dataSize: number, maxMessageSize: number, headerMap: Mapping, dataMap: Mapping, sem: Semaphore) {
    this.files = files;
    this.dataSize = dataSize;
    this.maxMessageSize = maxMessageSize;
    this.#wordSize = dataSize / 4;
    this.#headerMap = headerMap;
    this.#dataMap = dataMap;
    const hb = headerMap.bytes;
    this.#header = new Uint32Array(hb.buffer, hb.byteOffset, RingHeader.SIZE / 4);
    this.#headerI32 = new Int32Array(hb.buffer, hb.byteOffset, RingHeader.SIZE / 4 + 1);
    this.#bytes = dataMap.bytes;
    this.#words = new Uint32Array(this.#bytes.buffer, this.#bytes.byteOffset, this.#bytes.byteLength / 4);
    this.#sem = sem;
  }

  /**
   * Create both files (O_EXCL), size and map them, and initialise the header
   * the way libqb's server does: pointers 0, ref_count 1, semaphore 0.
   */
  static create(options: CreateRingOptions): Ring {
    const dataSize = ringDataSize(options.maxMessageSize, options.pageSize);
    const headerSize = RingHeader.SIZE + (options.userSize ?? 4);
    const { files } = options;
    const opened: SharedMemory[] = [];
    const maps: Mapping[] = [];
    try {
      const header = SharedMemory.openFile({ path: files.headerPath, create: true, size: headerSize });
      opened.push(header);
      // Guarded: the client may truncate these files; that must not kill us (SIGBUS).
      const headerMap = header.map({ guard: true });
      maps.push(headerMap);
      const data = SharedMemory.openFile({ path: files.dataPath, create: true, size: dataSize });
      opened.push(data);
      const dataMap = data.mapCircular({ guard: true });
      maps.push(dataMap);
      const h = new DataView(headerMap.bytes.buffer, headerMap.bytes.byteOffset, headerSize);
      h.setUint32(RingHeader.WRITE_PT, 0, true);
      h.setUint32(RingHeader.READ_PT, 0, true);
      h.setUint32(RingHeader.WORD_SIZE, dataSize / 4, true);
      putPath(headerMap.bytes, RingHeader.HDR_PATH, files.headerPath);
      putPath(headerMap.bytes, RingHeader.DATA_PATH, files.dataPath);
      h.setInt32(RingHeader.REF_COUNT, 1, true);
      const sem = Semaphore.init(headerMap, RingHeader.SEM, { value: 0 });
      for (const file of [data, header]) {
        try {
          file.chown(options.uid, options.gid);
        } catch (error) {
          if ((error as { code?: string }).code !== "EPERM") throw error;
        }
      }
      data.chmod(options.mode);
      header.chmod(options.mode);
      return new Ring(files, dataSize, options.maxMessageSize, headerMap, dataMap, sem);
    } catch (error) {
      for (const map of maps) map.close();
      for (const file of opened) file.close();
      unlinkQuietly(files.dataPath);
      unlinkQuietly(files.headerPath);
      throw error;
    } finally {
      for (const file of opened) file.close(); // the mappings keep the memory
    }
  }

  /**
   * Attach to a ring another process created (the client side), as libqb's
   * client does, but trusting nothing: the header must name exactly the
   * expected data file and ring size, and the data file must have libqb's
   * size for `maxMessageSize` (it is never resized here). Adds 1 to the
   * header's ref_count.
   */
  static open(files: RingFiles, maxMessageSize: number, pageSize?: number): Ring {
    const dataSize = ringDataSize(maxMessageSize, pageSize);
    const opened: SharedMemory[] = [];
    const maps: Mapping[] = [];
    try {
      const header = SharedMemory.openFile({ path: files.headerPath });
      opened.push(header);
      const headerSize = header.size;
      // The header plus libqb's user int (the flow-control value) behind it.
      if (headerSize < RingHeader.SIZE + 4) throw new RingCorruptError(files.prefix, `header file is ${headerSize} bytes, not at least ${RingHeader.SIZE + 4}`);
      const headerMap = header.map({ guard: true });
      maps.push(headerMap);
      const view = headerMap.view;
      const wordSize = view.readUint32(RingHeader.WORD_SIZE);
      if (wordSize * 4 !== dataSize) {
        throw new RingCorruptError(files.prefix, `ring of ${wordSize * 4} bytes where ${dataSize} were expected for messages of ${maxMessageSize}`);
      }
      const dataPath = readPath(view.slice(RingHeader.DATA_PATH, RingHeader.DATA_PATH + 4096));
      if (dataPath !== files.dataPath) throw new RingCorruptError(files.prefix, `header names data file ${JSON.stringify(dataPath)}, not ${JSON.stringify(files.dataPath)}`);
      const data = SharedMemory.openFile({ path: files.dataPath });
      opened.push(data);
      if (data.size !== dataSize) throw new RingCorruptError(files.prefix, `data file is ${data.size} bytes, not ${dataSize}`);
      const dataMap = data.mapCircular({ guard: true });
      maps.push(dataMap);
      const sem = Semaphore.open(headerMap, RingHeader.SEM);
      const ring = new Ring(files, dataSize, maxMessageSize, headerMap, dataMap, sem);
      const writePt = Atomics.load(ring.#header, RingHeader.WRITE_PT / 4);
      if (writePt >= dataSize / 4) throw new RingCorruptError(files.prefix, `write pointer ${writePt} outside the ring`);
      ring.#writePt = writePt;
      Atomics.add(ring.#headerI32, RingHeader.REF_COUNT / 4, 1);
      return ring;
    } catch (error) {
      for (const map of maps) map.close();
      throw error;
    } finally {
      for (const file of opened) file.close(); // the mappings keep the memory
    }
  }

  /** The int in the header's user area (the request ring's flow-control value). */
  get userInt(): number {
    return Atomics.load(this.#headerI32, RingHeader.USER / 4);
  }
  set userInt(value: number) {
    Atomics.store(this.#headerI32, RingHeader.USER / 4, value);
  }

  /** The attach count (1 after creation, 2 once a libqb client attached). */
  get refCount(): number {
    return Atomics.load(this.#headerI32, RingHeader.REF_COUNT / 4);
  }

  /** Unread chunks, by the semaphore's count. */
  get pending(): number {
    return this.#sem.value;
  }

  // ---------------------------------------------------------------- reading

  /**
   * Take the next committed chunk if there is one (decrements the semaphore,
   * as libqb's reader does). Returns a view of the payload **in place** —
   * valid until {@link Ring.reclaim} — or null when the ring is empty. The
   * length is checked against the ring only: checking it against the
   * negotiated maximum is the caller's (a refusal, not a corruption).
   * Throws RingCorruptError if the peer broke the format.
   */
  take(): Uint8Array | null {
    if (this.#closed || !this.#sem.tryWait()) return null;
    return this.takeAcquired();
  }

  /**
   * Like {@link Ring.take}, for a reader that already took the semaphore's
   * count itself ({@link Ring.waitForChunk}).
   */
  takeAcquired(): Uint8Array {
    const start = this.#locate();
    return this.#bytes.subarray(start, start + this.#takenLength);
  }

  /**
   * {@link Ring.take} for a reader that parses the chunk where it lies: the
   * payload's offset in {@link Ring.data} ({@link Ring.takenLength} bytes),
   * or -1 when the ring is empty. Reclaim it once read.
   */
  takeOffset(): number {
    if (this.#closed || !this.#sem.tryWait()) return -1;
    return this.#locate();
  }

  /** {@link Ring.takeOffset} for a reader that already took the semaphore's count. */
  takeOffsetAcquired(): number {
    return this.#locate();
  }

  /** Length of the chunk last taken. */
  get takenLength(): number {
    return this.#takenLength;
  }

  /**
   * The whole ring's bytes (mapped twice in a row, so a chunk is contiguous
   * even where it wraps): read a chunk found by {@link Ring.takeOffset}.
   */
  get data(): Uint8Array {
    return this.#bytes;
  }

  /**
   * Check the committed chunk at the read pointer (its semaphore count is
   * taken) and remember it for reclaim(); returns its payload's byte offset.
   */
  #locate(): number {
    const p = Atomics.load(this.#header, RingHeader.READ_PT / 4);
    if (p >= this.#wordSize) throw new RingCorruptError(this.files.prefix, `read pointer ${p} outside the ${this.#wordSize}-word ring`);
    const magic = Atomics.load(this.#words, p + 1);
    if (magic !== ChunkMagic.COMMITTED) {
      throw new RingCorruptError(this.files.prefix, `chunk at word ${p} has magic 0x${magic.toString(16)}, not committed`);
    }
    const len = this.#words[p]!;
    if (len + CHUNK_MARGIN > this.dataSize) {
      throw new RingCorruptError(this.files.prefix, `chunk at word ${p} claims ${len} bytes in a ${this.dataSize}-byte ring`);
    }
    this.#checkFiles();
    this.#takenAt = p;
    this.#takenLength = len;
    return (p + 2) * 4; // start + len < 2 * dataSize: the mirror keeps it contiguous
  }

  #takenLength = 0;

  /**
   * Wait (without blocking the event loop) for the writer to commit a chunk;
   * true once one is there (its count taken: read it with takeAcquired),
   * false on timeout. Rejects when `signal` aborts.
   */
  waitForChunk(options: { timeout?: number; signal?: AbortSignal } = {}): Promise<boolean> {
    return this.#sem.wait(options);
  }

  /**
   * {@link Ring.waitForChunk} without a promise (see Semaphore.waitThen):
   * true when a chunk was acquired at once; else `done` is called once one
   * is (then {@link Ring.takeAcquired} it), or with the reason the wait
   * stopped ({@link Ring.cancelWait}, or close).
   */
  waitForChunkThen(done: (error?: unknown) => void): boolean {
    return this.#sem.waitThen(done);
  }

  /** End a {@link Ring.waitForChunkThen} in progress with `reason`. */
  cancelWait(reason: unknown): void {
    this.#sem.cancelWaits(reason);
  }

  /** A peer truncated a ring file under us (the guard repaired the access). */
  #checkFiles(): void {
    if (this.#dataMap.faulted || this.#headerMap.faulted) {
      throw new RingCorruptError(this.files.prefix, "a ring file was truncated by the peer");
    }
  }

  /** Word index of the chunk returned by the last take(). */
  #takenAt = -1;

  /** Release the chunk last returned by {@link Ring.take}: clear it, then move the read pointer. */
  reclaim(length: number): void {
    const p = this.#takenAt;
    if (p < 0 || this.#closed) return;
    this.#takenAt = -1;
    this.#words[p] = 0;
    Atomics.store(this.#words, p + 1, ChunkMagic.RECLAIMED);
    Atomics.store(this.#header, RingHeader.READ_PT / 4, this.#next(p, length));
    this.#checkFiles();
  }

  // ---------------------------------------------------------------- writing

  /** Whether a payload of `length` bytes fits right now. */
  fits(length: number): boolean {
    const r = Atomics.load(this.#header, RingHeader.READ_PT / 4);
    if (r >= this.#wordSize) throw new RingCorruptError(this.files.prefix, `read pointer ${r} outside the ${this.#wordSize}-word ring`);
    const w = this.#writePt;
    let freeWords: number;
    if (w > r) freeWords = r - w + this.#wordSize - 1;
    else if (w < r) freeWords = r - w - 1;
    else freeWords = this.#sem.value > 0 ? 0 : this.#wordSize;
    return freeWords * 4 >= length + CHUNK_MARGIN;
  }

  /**
   * Hold semaphore posts: chunks written meanwhile are committed but the
   * reader is not woken until {@link Ring.releasePosts}. The server uses this
   * to reclaim a request before its response becomes visible, so a client
   * that sends its next request at once finds the request ring's space.
   */
  holdPosts(): void {
    this.#holding = true;
  }

  /** Post the semaphore once per chunk written while held. */
  releasePosts(): void {
    this.#holding = false;
    const count = this.#unposted;
    this.#unposted = 0;
    if (count === 1) this.#sem.post();
    else if (count > 1) this.#sem.postMany(count);
  }

  #holding = false;
  #unposted = 0;

  /**
   * Write one chunk made of `parts` (concatenated) and post the semaphore.
   * Returns false, writing nothing, when the ring has no room now.
   */
  write(parts: readonly Uint8Array[]): boolean {
    let length = 0;
    for (const part of parts) length += part.byteLength;
    if (length > this.maxMessageSize) throw new QbunArgumentError(`a ${length}-byte message exceeds this ring's maximum of ${this.maxMessageSize}`);
    if (this.#closed || !this.fits(length)) return false;
    const p = this.#writePt;
    this.#words[p] = 0;
    Atomics.store(this.#words, p + 1, ChunkMagic.ALLOCATED);
    let at = (p + 2) * 4;
    for (const part of parts) {
      this.#bytes.set(part, at);
      at += part.byteLength;
    }
    this.#words[p] = length;
    this.#writePt = this.#next(p, length);
    Atomics.store(this.#header, RingHeader.WRITE_PT / 4, this.#writePt);
    Atomics.store(this.#words, p + 1, ChunkMagic.COMMITTED);
    this.#checkFiles();
    if (this.#holding) this.#unposted++;
    else this.#sem.post();
    return true;
  }

  #next(p: number, length: number): number {
    const n = p + 2 + Math.ceil(length / 4);
    return n >= this.#wordSize ? n - this.#wordSize : n;
  }

  /** Whether `view` points into this ring's data (to copy before reclaiming). */
  holds(view: Uint8Array): boolean {
    return view.buffer === this.#bytes.buffer;
  }

  // -------------------------------------------------------------- lifecycle

  /**
   * Detach as libqb's server does on close: ref_count to 1 then decremented,
   * unmap. With `unlink`, remove the data file, then the header file.
   */
  close(unlink: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    Atomics.store(this.#headerI32, RingHeader.REF_COUNT / 4, 1);
    Atomics.sub(this.#headerI32, RingHeader.REF_COUNT / 4, 1);
    this.#dataMap.close();
    this.#headerMap.close();
    if (unlink) {
      unlinkQuietly(this.files.dataPath);
      unlinkQuietly(this.files.headerPath);
    }
  }

  /** Same as `close(true)`. */
  [Symbol.dispose](): void {
    this.close(true);
  }
}

function readPath(field: Uint8Array): string {
  const end = field.indexOf(0);
  return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
}

function putPath(into: Uint8Array, offset: number, path: string): void {
  const raw = encoder.encode(path);
  if (raw.length >= 4096) throw new QbunArgumentError(`ring path of ${raw.length} bytes does not fit its 4096-byte field`);
  into.set(raw, offset);
  into[offset + raw.length] = 0;
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}
