/**
 * Memory mappings exposed as zero-copy views whose lifetime cannot crash the
 * process: the JS ArrayBuffer over a mapping is created with a C deallocator,
 * and `close()` detaches it (`ArrayBuffer.prototype.transfer(0)`), which
 * unmaps at once and turns every view over it into a zero-length one. A
 * forgotten mapping is unmapped when its buffer is garbage-collected.
 * @module
 */
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";

/** View of the helper's count of SIGBUS repairs (static memory: never unmapped). */
let guardTrips: Int32Array | undefined;

/** Access requested for a mapping. */
export type MapAccess = "read-write" | "read-only";

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;

/** Something that must be stopped before its memory is unmapped. */
export interface MappingDependent {
  /** Stop using the mapping now (called synchronously by close). */
  detachFromMapping(): void;
}

/**
 * Read access to bytes that must not be written from JS (a `PROT_READ`
 * mapping: a store would be a SIGSEGV, not an exception). Every accessor is
 * bounds-checked; `slice` and `copyTo` copy out.
 */
export class ReadonlyBytes {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;

  /** @internal wrap a view nobody else can write through */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Length in bytes (0 once the mapping is closed). */
  get length(): number {
    return this.#bytes.length;
  }

  /** The live bytes; ClosedError once the mapping was closed. */
  #live(): Uint8Array {
    if ((this.#bytes.buffer as ArrayBuffer).detached) throw new ClosedError("mapping");
    return this.#bytes;
  }

  /** Byte at `index` (negative counts from the end); undefined out of range. */
  at(index: number): number | undefined {
    return this.#live().at(index);
  }

  /** Little-endian u32 at `offset`. RangeError out of bounds. */
  readUint32(offset: number): number {
    this.#live();
    return this.#view.getUint32(offset, true);
  }

  /** Little-endian i32 at `offset`. */
  readInt32(offset: number): number {
    this.#live();
    return this.#view.getInt32(offset, true);
  }

  /** Little-endian u64 at `offset`. */
  readBigUint64(offset: number): bigint {
    this.#live();
    return this.#view.getBigUint64(offset, true);
  }

  /** A copy of bytes [start, end). */
  slice(start?: number, end?: number): Uint8Array {
    return this.#live().slice(start, end);
  }

  /** Copy bytes from `start` into `target`; returns the count copied. */
  copyTo(target: Uint8Array, start = 0): number {
    const bytes = this.#live();
    const n = Math.max(0, Math.min(target.length, bytes.length - start));
    target.set(bytes.subarray(start, start + n));
    return n;
  }

  /** Decode bytes [start, end) as UTF-8. */
  text(start?: number, end?: number): string {
    return new TextDecoder().decode(this.#live().subarray(start, end));
  }
}

/**
 * mmap(MAP_SHARED) `length` bytes of `fd` (twice back to back when
 * `circular`), or throw a QbunSystemError saying why the kernel refused.
 * Returns the address.
 */
function mmapChecked(fd: number, length: number, offset: number, access: MapAccess, circular: boolean): number {
  if (!Number.isSafeInteger(length) || length <= 0) throw new QbunArgumentError(`mapping length must be a positive integer, got ${length}`);
  const native = loadNative();
  const err = new Int32Array(1);
  const prot = access === "read-write" ? PROT_READ | PROT_WRITE : PROT_READ;
  const ptr = circular ? native.qbn_mmap_circular(fd, length, prot, err) : native.qbn_mmap(length, prot, MAP_SHARED, fd, offset, err);
  if (!ptr) {
    throw new QbunSystemError(-err[0]!, "mmap", {
      hint: err[0] === -13
        ? "the fd does not allow this access (a read-only fd cannot be mapped read-write)"
        : err[0] === -1
          ? "the file is sealed against writing (F_SEAL_WRITE / F_SEAL_FUTURE_WRITE): map it read-only"
          : undefined,
    });
  }
  return Number(ptr);
}

/**
 * A mapped region of a shared-memory file. Read-write mappings expose
 * {@link Mapping.bytes}; read-only ones only {@link Mapping.view}.
 */
export class Mapping implements Disposable {
  /** `read-write` or `read-only`. */
  readonly access: MapAccess;
  /** Mapped length in bytes (for a circular mapping, twice the file size). */
  readonly length: number;
  readonly #address: number;
  readonly #buffer: ArrayBuffer;
  readonly #bytes: Uint8Array;
  readonly #dependents = new Set<MappingDependent>();
  #closed = false;

  /** Guard slot (SIGBUS repair) or -1. */
  readonly #guard: number;

  /** @internal use SharedMemory.map / mapCircular */
  constructor(address: number, length: number, access: MapAccess, guard = false) {
    const native = loadNative();
    this.access = access;
    this.length = length;
    this.#address = address;
    this.#guard = guard ? native.qbn_guard_add(address as Pointer, length) : -1;
    if (this.#guard < -1) {
      native.qbn_munmap(address as Pointer, length);
      throw new QbunSystemError(-this.#guard, "sigaction(SIGBUS)");
    }
    // The 5-argument form (context, deallocator) is missing from @types/bun.
    const withDeallocator = toArrayBuffer as unknown as (
      ptr: Pointer, offset: number, length: number, context: number, deallocator: Pointer,
    ) => ArrayBuffer;
    const deallocator = this.#guard >= 0 ? native.qbn_unmap_guarded_deallocator : native.qbn_unmap_deallocator;
    this.#buffer = withDeallocator(
      address as Pointer,
      0,
      length,
      this.#guard >= 0 ? this.#guard + 1 : length, // context for the deallocator: guard slot + 1, or the length to unmap
      (deallocator as unknown as { ptr: Pointer }).ptr,
    );
    this.#bytes = new Uint8Array(this.#buffer);
  }

  /**
   * Map `length` bytes of `fd` at `offset` with MAP_SHARED.
   * @internal
   */
  static map(fd: number, length: number, offset: number, access: MapAccess, circular: boolean, guard = false): Mapping {
    const address = mmapChecked(fd, length, offset, access, circular);
    return new Mapping(address, circular ? length * 2 : length, access, guard);
  }

  /**
   * For a guarded mapping: whether the file shrank under it and an access
   * beyond the new end was repaired (see {@link MapOptions.guard}). The
   * contents are no longer shared from the first repaired page on.
   */
  get faulted(): boolean {
    if (this.#guard < 0 || this.#closed) return false;
    // A shared counter of repairs makes the common answer (none, ever) one memory read.
    guardTrips ??= new Int32Array(toArrayBuffer(loadNative().qbn_guard_trips_address()!, 0, 4));
    return guardTrips[0] !== 0 && loadNative().qbn_guard_tripped(this.#guard) === 1;
  }

  /** Whether the mapping was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The writable zero-copy view of the whole mapping. Throws for read-only
   * mappings (a JS store into read-only memory would crash the process).
   */
  get bytes(): Uint8Array {
    if (this.#closed) throw new ClosedError("mapping");
    if (this.access !== "read-write") throw new QbunArgumentError("this mapping is read-only: use .view to read it");
    return this.#bytes;
  }

  /** Bounds-checked read access, for any mapping. */
  get view(): ReadonlyBytes {
    if (this.#closed) throw new ClosedError("mapping");
    return new ReadonlyBytes(this.#bytes);
  }

  /** @internal the address of byte `offset`, for semaphores placed in the mapping. */
  pointerAt(offset: number, size: number): number {
    if (this.#closed) throw new ClosedError("mapping");
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.length) {
      throw new QbunArgumentError(`offset ${offset} (+${size}) is outside the ${this.length}-byte mapping`);
    }
    return this.#address + offset;
  }

  /** @internal register something to stop before unmapping. */
  addDependent(dependent: MappingDependent): void {
    this.#dependents.add(dependent);
  }

  /** @internal */
  removeDependent(dependent: MappingDependent): void {
    this.#dependents.delete(dependent);
  }

  /**
   * Unmap now. Views obtained earlier become zero-length (reads give
   * undefined) instead of touching freed memory. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const dependent of [...this.#dependents]) dependent.detachFromMapping();
    this.#dependents.clear();
    // Detaching runs the C deallocator (munmap) right away.
    this.#buffer.transfer(0);
  }

  /** Same as {@link Mapping.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// Backstop for deferred mappings dropped before their view was made.
const unviewedMappings = new FinalizationRegistry<{ address: number; length: number }>((m) => {
  loadNative().qbn_munmap(m.address as Pointer, m.length);
});

/**
 * A MAP_SHARED mapping made now whose JS view ({@link Mapping}) is made on
 * first use. The mmap costs the same for 4 KiB and 1 GiB, but a JS view of
 * n bytes makes the engine account n bytes of external memory, which past a
 * few MiB starts a garbage collection on the spot. Code that maps on a
 * latency path and reads later (a blob hand-over) maps here and takes the
 * view when it reads. Closing unmaps, viewed or not; a dropped one is
 * unmapped when collected.
 */
export class DeferredMapping implements Disposable {
  /** `read-write` or `read-only`. */
  readonly access: MapAccess;
  /** Mapped length in bytes. */
  readonly length: number;
  readonly #address: number;
  readonly #guard: boolean;
  #mapping: Mapping | undefined;
  #closed = false;

  private constructor(address: number, length: number, access: MapAccess, guard: boolean) {
    this.#address = address;
    this.length = length;
    this.access = access;
    this.#guard = guard;
    unviewedMappings.register(this, { address, length }, this);
  }

  /** Map `length` bytes of `fd` at `offset` (see {@link MapOptions}; `guard` as there). */
  static map(fd: number, length: number, offset: number, access: MapAccess, guard = false): DeferredMapping {
    return new DeferredMapping(mmapChecked(fd, length, offset, access, false), length, access, guard);
  }

  /** The mapping with its JS view, made on the first call. ClosedError once closed. */
  get mapping(): Mapping {
    if (this.#closed) throw new ClosedError("mapping");
    if (!this.#mapping) {
      unviewedMappings.unregister(this);
      try {
        this.#mapping = new Mapping(this.#address, this.length, this.access, this.#guard);
      } catch (error) {
        this.#closed = true; // the Mapping constructor unmapped it
        throw error;
      }
    }
    return this.#mapping;
  }

  /** Whether the JS view has been made. */
  get viewed(): boolean {
    return this.#mapping !== undefined;
  }

  /** Whether {@link DeferredMapping.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Unmap (views taken from {@link DeferredMapping.mapping} turn zero-length). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#mapping) {
      this.#mapping.close();
    } else {
      unviewedMappings.unregister(this);
      loadNative().qbn_munmap(this.#address as Pointer, this.length);
    }
  }

  /** Same as {@link DeferredMapping.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
