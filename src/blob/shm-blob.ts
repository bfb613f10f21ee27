/**
 * The producer's side of a blob: a writable blob ({@link ShmBlobWriter})
 * that becomes an immutable, sendable one ({@link ShmBlob}) when published.
 * @module
 */
import { ClosedError, QbunArgumentError } from "../../ffi/errors.ts";
import type { DeferredMapping, Mapping } from "../shm/mapping.ts";
import { SharedMemory } from "../shm/shared-memory.ts";
import type { BlobBackend } from "./backend.ts";
import { BlobStaleError } from "./errors.ts";
import { BlobReader } from "./reader.ts";

/** @internal what the allocator holds for one blob. */
export interface BlobHolding {
  readonly id: string;
  readonly token: string;
  readonly size: number;
  readonly backend: BlobBackend;
  /** Wall-clock creation time (ms since the epoch), for reports. */
  readonly createdAt: number;
  /** Monotonic creation time (performance.now()). */
  readonly createdMono: number;
  /** Wall-clock expiry, for reports (Infinity for none). */
  expiresAt: number;
  /** Monotonic expiry (performance.now() scale; Infinity for none): what leases are enforced by. */
  deadline: number;
  state: "writable" | "published" | "cleaned-up" | "expired";
  /** Read-write before publishing, read-only after; undefined once released. */
  memory: SharedMemory | undefined;
  /** The producer's writable mapping (before publishing only); its JS view is made on first write. */
  mapping: DeferredMapping | undefined;
  sealed: boolean;
}

/** @internal the allocator as the blob objects see it. */
export interface BlobHost {
  cleanup(token: string): boolean;
  renew(token: string, leaseMs: number): number;
}

/**
 * @internal the key that lets the allocator construct blob objects; it is
 * not exported from `qbun/blob`, so users cannot make a writer or blob
 * around a holding of their own.
 */
export const CONSTRUCT: unique symbol = Symbol("qbun.blob.construct");

function checkKey(key: unknown, what: string, how: string): void {
  if (key !== CONSTRUCT) throw new TypeError(`${what} cannot be constructed directly: ${how}`);
}

function live(holding: BlobHolding): BlobHolding {
  if (holding.state === "cleaned-up" || holding.state === "expired") throw new BlobStaleError(holding.id, holding.state);
  return holding;
}

/**
 * A blob being filled: a writable, zero-copy view of shared memory that no
 * other process can see yet. {@link ShmBlobWriter.publish} seals it and
 * turns it into a {@link ShmBlob}; disposing an unpublished writer cleans the
 * blob up.
 *
 * ```ts
 * using writer = allocator.create(1 << 20, { leaseMs: 30_000 });
 * writer.write(header);
 * writer.write(body, header.length);
 * const blob = writer.publish(); // sealed: nobody can change it any more
 * ```
 */
export class ShmBlobWriter implements Disposable {
  readonly #holding: BlobHolding;
  readonly #host: BlobHost;

  /** @internal made by BlobAllocator.create (throws TypeError otherwise) */
  constructor(key: typeof CONSTRUCT, holding: BlobHolding, host: BlobHost) {
    checkKey(key, "ShmBlobWriter", "call BlobAllocator.create()");
    this.#holding = holding;
    this.#host = host;
  }

  /** Unguessable id (128 random bits, hex). */
  get id(): string {
    return this.#holding.id;
  }

  /** Lifecycle token: pass to `allocator.cleanup()` / `renew()`, from anywhere in this process. */
  get token(): string {
    return this.#holding.token;
  }

  /** Size in bytes (fixed at creation). */
  get size(): number {
    return this.#holding.size;
  }

  /** The backend holding the memory. */
  get backend(): BlobBackend {
    return this.#holding.backend;
  }

  /** When the lease ends (ms since the epoch, for reports; the lease itself runs on a monotonic clock; Infinity for none). */
  get expiresAt(): number {
    return this.#holding.expiresAt;
  }

  /**
   * The writable view of the whole blob (zero-copy). It turns zero-length
   * when the blob is published, cleaned up or reclaimed.
   *
   * @throws BlobStaleError once cleaned up or expired; ClosedError once published
   */
  get bytes(): Uint8Array {
    return this.#mapping().bytes;
  }

  /**
   * Copy `data` into the blob at `offset` (default 0); returns the number
   * of bytes written (all of them: a write that does not fit is refused).
   *
   * @throws QbunArgumentError if it does not fit; BlobStaleError / ClosedError as for {@link ShmBlobWriter.bytes}
   */
  write(data: ArrayBufferView | ArrayBuffer, offset = 0): number {
    const bytes = this.#mapping().bytes;
    const source = data instanceof Uint8Array
      ? data
      : ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > bytes.length) {
      throw new QbunArgumentError(`offset must be an integer from 0 to ${bytes.length}, got ${offset}`);
    }
    if (source.length > bytes.length - offset) {
      throw new QbunArgumentError(`a ${source.length}-byte write at offset ${offset} does not fit in the ${bytes.length}-byte blob`);
    }
    bytes.set(source, offset);
    return source.length;
  }

  /**
   * Finish the blob and make it ready to send: the writable mapping is
   * unmapped, the file mode becomes 0400, and the producer keeps only a
   * read-only fd. The writer is finished afterwards.
   *
   * What this guarantees depends on the backend:
   * - `memfd`: sealed against shrink, grow and write. Immutable for every
   *   process that holds an fd, whatever its user (root included).
   * - `posix`, `tempfile`: cannot be sealed. A process of another user that
   *   receives the fd cannot write or resize it (the fd is read-only, the
   *   mode 0400 stops a read-write reopen through /proc, and it does not own
   *   the file so cannot chmod it back). A process running as the file's
   *   owner (the producer's user) or as root can: `fchmod` the fd back to
   *   0600 and reopen `/proc/self/fd/N` read-write. Consumers read such a
   *   blob through a SIGBUS-guarded mapping, so a shrink cannot crash them,
   *   but its bytes may change under them. Use memfd (the default) when the
   *   consumer must not trust the producer's user; {@link BlobChannel}
   *   refuses unsealed blobs unless told `requireSealed: false`.
   *
   * @throws BlobStaleError if the blob was cleaned up or expired; ClosedError if already published
   */
  publish(): ShmBlob {
    this.#mapping(); // throws unless writable
    const holding = this.#holding;
    try {
      holding.mapping!.close();
      holding.mapping = undefined;
      const mem = holding.memory!;
      if (holding.backend === "memfd") {
        mem.addSeals(["shrink", "grow", "write", "seal"]);
        holding.sealed = true;
      }
      // 0400 stops other users reopening it writable through /proc; the owner can chmod it back (only seals bind the owner).
      mem.chmod(0o400);
      holding.memory = SharedMemory.fromFd(mem.readOnlyFd());
      mem.close();
      holding.state = "published";
    } catch (error) {
      this.#host.cleanup(holding.token);
      throw error;
    }
    return new ShmBlob(CONSTRUCT, holding, this.#host);
  }

  /** Extend the lease to `leaseMs` from now; returns the new expiry. */
  renew(leaseMs: number): number {
    return this.#host.renew(this.#holding.token, leaseMs);
  }

  /** Release the memory now (same as `allocator.cleanup(token)`). Idempotent. */
  cleanup(): void {
    this.#host.cleanup(this.#holding.token);
  }

  /** Clean up unless published (a published blob lives on as its {@link ShmBlob}). */
  [Symbol.dispose](): void {
    if (this.#holding.state === "writable") this.cleanup();
  }

  #mapping(): Mapping {
    const holding = live(this.#holding);
    if (holding.state !== "writable" || !holding.mapping) throw new ClosedError(`blob writer ${holding.id} (published)`);
    return holding.mapping.mapping;
  }
}

/**
 * A published blob: shared memory held by its producer as a read-only fd,
 * ready to be sent over a {@link BlobChannel} or read here. Immutable when
 * {@link ShmBlob.sealed} (memfd); otherwise see {@link ShmBlobWriter.publish}.
 * Sending moves only the fd, so it costs the same for 4 KiB and 1 GiB.
 * Cleaning up releases the producer's fd; consumers that received it keep
 * their mappings until they close them.
 */
export class ShmBlob implements Disposable {
  readonly #holding: BlobHolding;
  readonly #host: BlobHost;

  /** @internal made by ShmBlobWriter.publish (throws TypeError otherwise) */
  constructor(key: typeof CONSTRUCT, holding: BlobHolding, host: BlobHost) {
    checkKey(key, "ShmBlob", "call publish() on a ShmBlobWriter");
    this.#holding = holding;
    this.#host = host;
  }

  /** Unguessable id (128 random bits, hex). */
  get id(): string {
    return this.#holding.id;
  }

  /** Lifecycle token (see {@link BlobAllocator.cleanup}). */
  get token(): string {
    return this.#holding.token;
  }

  /** Size in bytes. */
  get size(): number {
    return this.#holding.size;
  }

  /** The backend holding the memory. */
  get backend(): BlobBackend {
    return this.#holding.backend;
  }

  /**
   * Whether the file is sealed (memfd backend): it can never change again,
   * whoever holds an fd. False for posix and tempfile blobs, which the
   * producer's user (or root) can still change.
   */
  get sealed(): boolean {
    return this.#holding.sealed;
  }

  /** When the lease ends (ms since the epoch, for reports; the lease itself runs on a monotonic clock; Infinity for none). */
  get expiresAt(): number {
    return this.#holding.expiresAt;
  }

  /** Whether the blob is still held (not cleaned up, not expired). */
  get held(): boolean {
    return this.#holding.state === "published";
  }

  /**
   * The read-only fd (borrowed: it stays owned by the blob).
   * @throws BlobStaleError once cleaned up or expired
   */
  get fd(): number {
    return live(this.#holding).memory!.fd;
  }

  /** Map it read-only in this process. */
  openReader(): BlobReader {
    return BlobReader.open(this.fd, { size: this.size, sealed: this.sealed, id: this.id });
  }

  /** Extend the lease to `leaseMs` from now; returns the new expiry. */
  renew(leaseMs: number): number {
    return this.#host.renew(this.#holding.token, leaseMs);
  }

  /** Release the producer's fd now (same as `allocator.cleanup(token)`). Idempotent. */
  cleanup(): void {
    this.#host.cleanup(this.#holding.token);
  }

  /** Same as {@link ShmBlob.cleanup}. */
  [Symbol.dispose](): void {
    this.cleanup();
  }
}
