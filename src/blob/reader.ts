/**
 * The consumer's side of a blob: a read-only mapping of a descriptor that
 * was checked against what its sender announced.
 * @module
 */
import { fstatSync, type Stats } from "node:fs";
import { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import type { FdLike } from "../../ffi/fd.ts";
import { DeferredMapping, type ReadonlyBytes } from "../shm/mapping.ts";
import { SharedMemory, type Seal } from "../shm/shared-memory.ts";
import { BlobDescriptorError } from "./errors.ts";

/** What "sealed" promises a reader: the file can neither shrink, grow nor be written. */
const IMMUTABLE_SEALS: readonly Seal[] = ["shrink", "grow", "write"];
/** Default ceiling on the size a reader accepts (1 TiB). */
export const DEFAULT_MAX_READ_SIZE = 2 ** 40;

// A reader dropped without close() is unmapped by the collector (Mapping's
// deallocator); this makes sure its sender still hears that it was released.
const droppedReaders = new FinalizationRegistry<() => void>((onClose) => onClose());
// A view keeps its reader reachable (an ephemeron: the entry lives while the
// view does), so a reader dropped while its view is still read is not
// reported released, nor unmapped, under the reader of the view.
const readerOfView = new WeakMap<ReadonlyBytes, BlobReader>();

/** What a reader is told to expect about a descriptor (checked before mapping). */
export interface BlobExpectation {
  /** The announced size in bytes: the file must have exactly this size. */
  size?: number;
  /** Announced as sealed: the file must carry the shrink, grow and write seals. */
  sealed?: boolean;
  /**
   * Refuse anything not sealed, whatever was announced. Default false here;
   * a {@link BlobChannel} passes its own `requireSealed` (default true).
   */
  requireSealed?: boolean;
  /** Refuse larger blobs (default 1 TiB). */
  maxSize?: number;
  /** The id it was announced under (reported back by {@link BlobReader.id}). */
  id?: string;
  /** Metadata it was announced with. */
  metadata?: Readonly<Record<string, unknown>>;
}

/**
 * A blob mapped read-only. Opening checks the fd against its announcement
 * (regular file, size, seals), maps it `PROT_READ` and closes the fd, so a
 * reader holds one mapping and no fd. The view refuses writes in JS (it has
 * no setters and is frozen), and this process cannot map the blob writable.
 *
 * What the reader can rely on depends on the blob ({@link BlobReader.immutable}):
 * a sealed memfd can never change, whoever holds it. An unsealed one
 * (POSIX or temp-file backend) can still be changed or shrunk by a process
 * running as the file's owner or as root (it can chmod the file back and
 * reopen it read-write through /proc); only other users are kept out.
 *
 * The JS view is made on first read: the `mmap` costs the same for 4 KiB
 * and 1 GiB, but a view of n bytes makes the engine account n bytes of
 * external memory, which past a few MiB starts a garbage collection on the
 * spot. Deferring the view keeps the hand-over flat, and a consumer that
 * only passes a blob on never pays it.
 *
 * A sealed blob cannot change under the reader. An unsealed one (POSIX or
 * temp-file backend) is mapped with the SIGBUS guard, so if its producer
 * shrank it anyway, reads past the new end give zeros and
 * {@link BlobReader.faulted} turns true instead of the process dying.
 *
 * ```ts
 * using reader = BlobReader.open(fd, { size: 4096, sealed: true });
 * const head = reader.view.slice(0, 16);
 * ```
 */
export class BlobReader implements Disposable {
  /** The id it was announced under, if any. */
  readonly id: string | undefined;
  /** Size in bytes. */
  readonly size: number;
  /** Whether the file is sealed against shrink, grow and write. */
  readonly sealed: boolean;
  /**
   * Whether the bytes can never change while mapped here: true exactly for
   * a sealed blob. False means the producer's user (or root) can still write
   * or shrink it; reads stay safe (guarded) but may see changes.
   */
  readonly immutable: boolean;
  /** Metadata sent with the blob (empty when none). */
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly #mapping: DeferredMapping;
  #view: ReadonlyBytes | undefined;
  #closed = false;
  #onClose: (() => void) | undefined;

  private constructor(mapping: DeferredMapping, size: number, sealed: boolean, expected: BlobExpectation, onClose?: () => void) {
    this.#mapping = mapping;
    this.size = size;
    this.sealed = sealed;
    this.immutable = sealed;
    this.id = expected.id;
    this.metadata = Object.freeze({ ...expected.metadata });
    this.#onClose = onClose;
    if (onClose) droppedReaders.register(this, onClose, this);
  }

  /**
   * Check `fd` against `expected` and map it read-only. An {@link OwnedFd}
   * is consumed (closed whether this succeeds or not); a raw number is left
   * open for the caller.
   *
   * @throws BlobDescriptorError (`not-a-file`, `size-mismatch`, `not-sealed`, `too-large`, `map-failed`)
   */
  static open(fd: FdLike, expected: BlobExpectation = {}): BlobReader {
    return BlobReader.openWith(fd, expected);
  }

  /** @internal open with a hook that runs once when the reader is closed. */
  static openWith(fd: FdLike, expected: BlobExpectation, onClose?: () => void): BlobReader {
    let memory: SharedMemory;
    try {
      memory = SharedMemory.fromFd(fd); // takes an OwnedFd over, duplicates a number
    } catch (error) {
      if (typeof fd !== "number") fd.close();
      throw new BlobDescriptorError("not-a-file", `the fd cannot be used (${error instanceof QbunSystemError ? error.code : String(error)})`);
    }
    using owned = memory;
    let stats: Stats;
    try {
      stats = fstatSync(owned.fd);
    } catch (error) {
      throw new BlobDescriptorError("not-a-file", `fstat failed (${(error as NodeJS.ErrnoException).code})`);
    }
    if (!stats.isFile()) throw new BlobDescriptorError("not-a-file", "the fd is not a regular file (memfd, shm object or file)");
    const size = stats.size;
    const max = expected.maxSize ?? DEFAULT_MAX_READ_SIZE;
    if (size > max) throw new BlobDescriptorError("too-large", `${size} bytes exceeds this reader's limit of ${max}`);
    if (expected.size !== undefined && size !== expected.size) {
      throw new BlobDescriptorError("size-mismatch", `announced ${expected.size} bytes, the file has ${size}`);
    }
    if (size === 0) throw new BlobDescriptorError("size-mismatch", "the file is empty");
    const seals = owned.seals;
    const sealed = IMMUTABLE_SEALS.every((seal) => seals.includes(seal));
    if ((expected.sealed || expected.requireSealed) && !sealed) {
      throw new BlobDescriptorError(
        "not-sealed",
        expected.sealed
          ? "announced as sealed, but the file can still be written or resized"
          : "only sealed (memfd) blobs are immutable and this reader requires them; have the producer use the memfd backend, " +
              "or pass requireSealed: false to accept blobs its user can still change",
      );
    }
    let mapping: DeferredMapping;
    try {
      mapping = DeferredMapping.map(owned.fd, size, 0, "read-only", !sealed);
    } catch (error) {
      throw new BlobDescriptorError("map-failed", error instanceof Error ? error.message : String(error));
    }
    return new BlobReader(mapping, size, sealed, expected, onClose);
  }

  /**
   * Bounds-checked read access to the bytes (zero-copy; frozen, no setters).
   * The first access makes the JS view. The view keeps the reader alive: a
   * reader is reported released only after it is closed, or after both it
   * and its view were dropped.
   *
   * @throws ClosedError once closed
   */
  get view(): ReadonlyBytes {
    if (this.#closed) throw new ClosedError(`blob reader${this.id ? ` ${this.id}` : ""}`);
    if (!this.#view) {
      this.#view = Object.freeze(this.#mapping.mapping.view) as ReadonlyBytes;
      readerOfView.set(this.#view, this);
    }
    return this.#view;
  }

  /**
   * Copy bytes from `start` into `target` (as many as fit, up to the end of
   * the blob); returns the count copied.
   *
   * @throws QbunArgumentError for a `start` outside 0..size; ClosedError once closed
   */
  copyTo(target: Uint8Array, start = 0): number {
    if (!Number.isSafeInteger(start) || start < 0 || start > this.size) {
      throw new QbunArgumentError(`copyTo start must be an integer from 0 to ${this.size}, got ${start}`);
    }
    return this.view.copyTo(target, start);
  }

  /** Whether the blob shrank under an unsealed mapping (reads past the new end gave zeros). */
  get faulted(): boolean {
    return this.#mapping.viewed && !this.#closed && this.#mapping.mapping.faulted;
  }

  /** Whether {@link BlobReader.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Unmap, and tell the sender (when it came over a {@link BlobChannel}) that
   * the blob was released. Views taken earlier read as empty. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mapping.close();
    const hook = this.#onClose;
    this.#onClose = undefined;
    if (hook) {
      droppedReaders.unregister(this);
      hook();
    }
  }

  /** Same as {@link BlobReader.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
