/**
 * Shared regions: the owner's writable copy and the readers' read-only
 * views, tied together by a header at the start of the file.
 *
 * Header (64 bytes, little-endian i32 words):
 * ```
 * word 0 magic "QBLR"   1 layout version (1)
 *      2 sequence       3 flags (bit 0: retired)
 *      4 epoch          5-6 data size (lo, hi)   7-15 zero
 * ```
 * Why readers never see half a write (a sequence lock): the owner makes the
 * sequence odd, copies the bytes, then makes it even again. A reader loads
 * the sequence, copies, and loads it again; the copy is whole only if both
 * loads are the same even number — otherwise a write overlapped and the
 * reader copies again. The owner stores with `Atomics.store` (sequentially
 * consistent: its copy cannot move across them). The reader loads the
 * sequence with aligned 32-bit reads through its read-only view: on x86-64
 * (TSO) loads are not reordered with loads, and the copy between them is a
 * native memcpy call the JIT does not move loads across. (Readers do not use
 * `Atomics` because that needs an Int32Array over the read-only mapping, and
 * bun:ffi's `toArrayBuffer` without a deallocator crashes the process when
 * such a buffer is collected after the memory was remapped.) Retiring a
 * region (a new epoch) sets the flag and bumps the sequence, so a reader in
 * the middle of a copy learns of it at its second load.
 *
 * The backing is a sealed memfd: after the owner's one writable mapping
 * exists, `future-write`, `grow` and `shrink` seals stop anyone (owner
 * included) from mapping it writable again or resizing it, so a reader can
 * neither write through its fd nor be killed by SIGBUS from a shrink. A
 * reader does not take the locator's word for it: it checks the seals on the
 * fd it was given, and maps a file that is not sealed with the SIGBUS guard.
 *
 * Readers do not spin for long: a copy that overlaps a write is retried for
 * a few microseconds (a write is one memcpy); after that the synchronous read
 * gives up with `ERR_QBUN_LEASE_CONTENDED` and the async `Subscription.read()`
 * waits for the owner's next write notification instead.
 * @module
 */
import { ClosedError, QbunArgumentError } from "../../ffi/errors.ts";
import type { OwnedFd } from "../../ffi/fd.ts";
import { Mapping, ReadonlyBytes, SharedMemory } from "../shm/index.ts";
import { LeaseError } from "./errors.ts";
import { HEADER_SIZE, type Locator } from "./locator.ts";

/** Magic of a region header ("QBLR" little-endian). */
export const REGION_MAGIC = 0x524c4251;
const LAYOUT_VERSION = 1;
const W_MAGIC = 0;
const W_VERSION = 1;
const W_SEQUENCE = 2;
const W_FLAGS = 3;
const W_EPOCH = 4;
const W_SIZE_LO = 5;
const W_SIZE_HI = 6;
const FLAG_RETIRED = 1;

/** Largest region the owner creates (a memfd can be larger; this keeps sizes well inside safe integers). */
export const MAX_REGION_SIZE = 2 ** 40;

/** A consistent copy of region bytes and the sequence it was taken at. */
export interface ConsistentRead {
  /** The bytes (a fresh copy, or the `into` buffer passed in). */
  readonly bytes: Uint8Array;
  /** The region's sequence number when copied: it changes (by 2) with every write. */
  readonly sequence: number;
  /** The epoch the bytes belong to. */
  readonly epoch: number;
}

/**
 * The owner's side of one region epoch: a sealed memfd, its only writable
 * mapping, and the header. Writes go through {@link OwnedRegion.write}.
 * @internal used by the owner service
 */
export class OwnedRegion implements Disposable {
  readonly endpoint: string;
  readonly epoch: number;
  readonly size: number;
  readonly #memory: SharedMemory;
  readonly #mapping: Mapping;
  readonly #header: Int32Array;
  readonly #data: Uint8Array;

  private constructor(endpoint: string, epoch: number, size: number, memory: SharedMemory, mapping: Mapping) {
    this.endpoint = endpoint;
    this.epoch = epoch;
    this.size = size;
    this.#memory = memory;
    this.#mapping = mapping;
    const bytes = mapping.bytes;
    this.#header = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_SIZE / 4);
    this.#data = bytes.subarray(HEADER_SIZE, HEADER_SIZE + size);
  }

  /**
   * Create a sealed region of `size` bytes for `epoch`, filled from
   * `initial` (zeros beyond it), or copied mapping to mapping from the
   * region it replaces.
   */
  static create(endpoint: string, epoch: number, size: number, initial?: Uint8Array | OwnedRegion): OwnedRegion {
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_REGION_SIZE) {
      throw new QbunArgumentError(`region size must be an integer from 1 to ${MAX_REGION_SIZE}, got ${size}`);
    }
    const memory = SharedMemory.memfd({ size: HEADER_SIZE + size, name: `qbun-lease:${endpoint}` });
    let mapping: Mapping | undefined;
    try {
      mapping = memory.map({ access: "read-write" });
      memory.addSeals(["future-write", "grow", "shrink", "seal"]);
      const region = new OwnedRegion(endpoint, epoch, size, memory, mapping);
      if (initial instanceof OwnedRegion) region.#data.set(initial.#data.subarray(0, size));
      else if (initial) region.#data.set(initial.subarray(0, size));
      const h = region.#header;
      h[W_MAGIC] = REGION_MAGIC;
      h[W_VERSION] = LAYOUT_VERSION;
      h[W_EPOCH] = epoch | 0;
      h[W_SIZE_LO] = size >>> 0;
      h[W_SIZE_HI] = Math.floor(size / 2 ** 32);
      Atomics.store(h, W_SEQUENCE, 0);
      return region;
    } catch (error) {
      mapping?.close();
      memory.close();
      throw error;
    }
  }

  /** The current sequence (even between writes). */
  get sequence(): number {
    return Atomics.load(this.#header, W_SEQUENCE) >>> 0;
  }

  /** The locator readers get for this epoch. */
  locator(): Locator {
    return {
      endpoint: this.endpoint,
      epoch: this.epoch,
      size: this.size,
      fileSize: HEADER_SIZE + this.size,
      sequenced: true,
      sealed: true,
      segments: [{ offset: 0, length: this.size, fileOffset: HEADER_SIZE }],
    };
  }

  /** A new read-only fd to hand to one reader (the caller closes it after sending). */
  readOnlyFd(): OwnedFd {
    return this.#memory.readOnlyFd();
  }

  /**
   * Apply a write under the sequence lock; returns the new (even) sequence.
   * The caller has checked authority; bounds are checked here as well.
   */
  write(offset: number, bytes: Uint8Array): number {
    if (this.#mapping.closed) throw new ClosedError("region");
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + bytes.length > this.size) {
      throw new LeaseError("ERR_QBUN_LEASE_OUT_OF_BOUNDS", `write of ${bytes.length} bytes at ${offset} is outside the ${this.size}-byte region ${this.endpoint}`);
    }
    const h = this.#header;
    const start = Atomics.load(h, W_SEQUENCE);
    Atomics.store(h, W_SEQUENCE, (start + 1) | 0);
    this.#data.set(bytes, offset);
    Atomics.store(h, W_SEQUENCE, (start + 2) | 0);
    return ((start + 2) | 0) >>> 0;
  }

  /** Mark the region retired (a new epoch replaced it): readers mid-copy see the sequence move and the flag. */
  retire(): void {
    if (this.#mapping.closed) return;
    const h = this.#header;
    const start = Atomics.load(h, W_SEQUENCE);
    Atomics.store(h, W_SEQUENCE, (start + 1) | 0);
    Atomics.or(h, W_FLAGS, FLAG_RETIRED);
    Atomics.store(h, W_SEQUENCE, (start + 2) | 0);
  }

  /** Unmap and close the owner's fd. Readers' own mappings stay valid. Idempotent. */
  close(): void {
    this.#mapping.close();
    this.#memory.close();
  }

  /** Same as {@link OwnedRegion.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Options for {@link RegionView.readConsistent}. */
export interface ReadConsistentOptions {
  /** Copy into this buffer (its length must be at least `length`) instead of a new one. */
  into?: Uint8Array;
  /**
   * Most copies to try while writes overlap (default 16). Whatever the
   * count, retrying stops after about {@link READ_SPIN_MICROS} µs; then the
   * read fails with `ERR_QBUN_LEASE_CONTENDED`. Use the async
   * `Subscription.read()` to wait for the next write notification instead.
   */
  attempts?: number;
}

/** How long a synchronous read retries a copy that overlapped a write (a write is one memcpy). */
export const READ_SPIN_MICROS = 50;
const READ_SPIN_MS = READ_SPIN_MICROS / 1000;
const REQUIRED_SEALS = ["shrink", "grow", "future-write"] as const;

/**
 * A reader's read-only mapping of one region epoch, made from a locator and
 * the read-only fd that came with it.
 *
 * ```ts
 * using view = RegionView.attach(locator, fd);
 * const { bytes, sequence } = view.readConsistent(0, 16);
 * ```
 */
export class RegionView implements Disposable {
  /** The locator this view was made from. */
  readonly locator: Locator;
  readonly #memory: SharedMemory;
  readonly #mapping: Mapping;
  readonly #bytes: ReadonlyBytes;
  readonly #guarded: boolean;

  private constructor(locator: Locator, memory: SharedMemory, mapping: Mapping, guarded: boolean) {
    this.locator = locator;
    this.#memory = memory;
    this.#mapping = mapping;
    this.#bytes = mapping.view; // bounds-checked, throws ClosedError once unmapped
    this.#guarded = guarded;
  }

  /** Header word `index` (a 32-bit aligned load). */
  #word(index: number): number {
    return this.#bytes.readInt32(index * 4);
  }

  /**
   * Map the region: checks that the fd is at least as large as the locator
   * says (else a read would fault), that a file the locator calls sealed
   * really carries the shrink, grow and future-write seals, maps it
   * read-only (with the SIGBUS guard when it is not sealed), and checks the
   * header against the locator. Takes ownership of `fd`, closing it on failure.
   */
  static attach(locator: Locator, fd: OwnedFd): RegionView {
    const memory = SharedMemory.fromFd(fd);
    let mapping: Mapping | undefined;
    try {
      if (!locator.sequenced) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "this reader needs a sequenced region (a header with a sequence counter)");
      if (locator.sealed) {
        const seals = memory.seals;
        const missing = REQUIRED_SEALS.filter((seal) => !seals.includes(seal));
        if (missing.length) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `the locator says the region is sealed, but its file lacks the ${missing.join(", ")} seal(s): refusing to map it`);
      }
      const actual = memory.size;
      if (actual < locator.fileSize || locator.fileSize < HEADER_SIZE) {
        throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `the region file has ${actual} bytes, the locator claims ${locator.fileSize}`);
      }
      // An unsealed file can shrink under us: the guard turns the SIGBUS that would kill us into zeros we detect.
      const guarded = !locator.sealed;
      mapping = memory.map({ access: "read-only", length: locator.fileSize, guard: guarded });
      const view = new RegionView(locator, memory, mapping, guarded);
      const size = (view.#word(W_SIZE_LO) >>> 0) + (view.#word(W_SIZE_HI) >>> 0) * 2 ** 32;
      if (view.#word(W_MAGIC) !== REGION_MAGIC || view.#word(W_VERSION) !== LAYOUT_VERSION) {
        throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "the region file has no valid header (wrong magic or version)");
      }
      if (view.#word(W_EPOCH) >>> 0 !== locator.epoch || size !== locator.size) {
        throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `the region header (epoch ${view.#word(W_EPOCH) >>> 0}, ${size} bytes) does not match the locator (epoch ${locator.epoch}, ${locator.size} bytes)`);
      }
      return view;
    } catch (error) {
      mapping?.close();
      memory.close();
      throw error;
    }
  }

  /** The epoch of this view. */
  get epoch(): number {
    return this.locator.epoch;
  }

  /** Readable bytes. */
  get size(): number {
    return this.locator.size;
  }

  /** The read-only fd behind the view (still owned by it). */
  get fd(): number {
    return this.#memory.fd;
  }

  /** The read-only mapping (escape hatch: reads through it are not sequence-checked). */
  get mapping(): Mapping {
    return this.#mapping;
  }

  /** Whether the view was closed. */
  get closed(): boolean {
    return this.#mapping.closed;
  }

  #live(): void {
    if (this.#mapping.closed) throw new ClosedError("region view");
  }

  /** The current sequence number (odd while a write is being applied). */
  get sequence(): number {
    this.#live();
    return this.#word(W_SEQUENCE) >>> 0;
  }

  /** Whether the owner replaced this epoch (the view still reads the old bytes). */
  get retired(): boolean {
    this.#live();
    return (this.#word(W_FLAGS) & FLAG_RETIRED) !== 0;
  }

  /**
   * Copy `length` bytes at `offset` such that no write was applied during
   * the copy (the sequence-lock read; see the module comment). Retries while
   * writes overlap, up to `attempts` times. Throws `ERR_QBUN_LEASE_STALE_EPOCH`
   * once the owner retired this epoch, `ERR_QBUN_LEASE_OUT_OF_BOUNDS` for a
   * range outside the region.
   */
  readConsistent(offset = 0, length = this.size - offset, options: ReadConsistentOptions = {}): ConsistentRead {
    this.#live();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new LeaseError("ERR_QBUN_LEASE_OUT_OF_BOUNDS", `read of ${length} bytes at ${offset} is outside the ${this.size}-byte region ${this.locator.endpoint}`);
    }
    const into = options.into ?? new Uint8Array(length);
    if (into.length < length) throw new QbunArgumentError(`'into' has ${into.length} bytes, the read needs ${length}`);
    const attempts = options.attempts ?? 16;
    let copies = 0;
    let deadline = 0;
    for (;;) {
      const before = this.#word(W_SEQUENCE);
      if ((before & 1) === 0) {
        this.#copy(offset, length, into);
        copies++;
        const after = this.#word(W_SEQUENCE);
        if (before === after) {
          if (this.#word(W_FLAGS) & FLAG_RETIRED) {
            throw new LeaseError("ERR_QBUN_LEASE_STALE_EPOCH", `epoch ${this.epoch} of ${this.locator.endpoint} was replaced: read from the new locator`);
          }
          if (this.#guarded && this.#mapping.faulted) {
            throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `the region file of ${this.locator.endpoint} shrank under the mapping (it is not sealed): the owner is misbehaving`);
          }
          return { bytes: into, sequence: after >>> 0, epoch: this.epoch };
        }
      }
      // A write overlapped (or is being copied in right now): retry for a few microseconds only.
      const now = performance.now();
      if (deadline === 0) deadline = now + READ_SPIN_MS;
      if (copies >= attempts || now > deadline) break;
    }
    throw new LeaseError("ERR_QBUN_LEASE_CONTENDED", `reads of ${this.locator.endpoint} kept overlapping writes (${copies} copies in ~${READ_SPIN_MICROS} µs): use the async read(), which waits for the next write notification`);
  }

  /** Copy logical bytes through the segment table. */
  #copy(offset: number, length: number, into: Uint8Array): void {
    let done = 0;
    for (const s of this.locator.segments) {
      if (done === length) return;
      const start = offset + done;
      if (start >= s.offset + s.length) continue;
      const n = Math.min(length - done, s.offset + s.length - start);
      this.#bytes.copyTo(into.subarray(done, done + n), s.fileOffset + (start - s.offset));
      done += n;
    }
  }

  /** Unmap and close the fd. Idempotent. */
  close(): void {
    this.#mapping.close();
    this.#memory.close();
  }

  /** Same as {@link RegionView.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
