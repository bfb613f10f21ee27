/**
 * BlobAllocator: creates blobs on a backend, keeps account of what it holds,
 * reclaims blobs whose lease expired, and releases a blob by its token.
 * @module
 */
import { tmpdir } from "node:os";
import * as v from "valibot";
import { ClosedError, QbunArgumentError } from "../../ffi/errors.ts";
import { DeferredMapping } from "../shm/mapping.ts";
import { BACKEND_ORDER, createMemory, resolveBackend, type BlobBackend, type BlobBackendChoice } from "./backend.ts";
import { BlobQuotaError, BlobStaleError, BlobTokenError } from "./errors.ts";
import { randomHex, TokenMinter, ID_BYTES } from "./ids.ts";
import { parsed } from "./options.ts";
import { CONSTRUCT, ShmBlobWriter, type BlobHolding, type BlobHost } from "./shm-blob.ts";

/** Options for a {@link BlobAllocator}. */
export interface BlobAllocatorOptions {
  /** Backend for new blobs (default `"auto"`: memfd, else POSIX shm, else a temp file). */
  backend?: BlobBackendChoice;
  /** Lease of a blob when `create` is given none (ms; default 60 000; `Infinity` for none). */
  defaultLeaseMs?: number;
  /** Largest single blob (default 16 GiB). */
  maxBlobSize?: number;
  /** Most bytes held at once (default unlimited). */
  maxTotalBytes?: number;
  /** Directory of the temp-file backend (default the OS temp dir). */
  tempDir?: string;
  /** Called after a blob was reclaimed because its lease expired. */
  onExpire?: (info: { id: string; size: number; backend: BlobBackend }) => void;
}

/** Options for {@link BlobAllocator.create}. */
export interface CreateBlobOptions {
  /** How long the blob may be held before it is reclaimed (ms; `Infinity` for no limit). */
  leaseMs?: number;
  /** Force a backend for this blob. */
  backend?: BlobBackendChoice;
}

/** What an allocator holds, from {@link BlobAllocator.stats}. */
export interface BlobHoldings {
  /** Blobs held (writable or published). */
  count: number;
  /** Their total size in bytes. */
  bytes: number;
  /** Per backend. */
  byBackend: Record<BlobBackend, { count: number; bytes: number }>;
  /** The blob held longest, if any. */
  oldest: { id: string; createdAt: number; ageMs: number; expiresAt: number } | undefined;
  /** The soonest lease expiry (ms since the epoch), if any lease is finite. */
  nextExpiry: number | undefined;
}

const LeaseSchema = v.union([
  v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER)),
  v.literal(Number.POSITIVE_INFINITY),
]);
const byteCount = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER));
const backendChoice = v.picklist(["auto", ...BACKEND_ORDER]);

const AllocatorOptionsSchema = v.strictObject({
  backend: v.optional(backendChoice),
  defaultLeaseMs: v.optional(LeaseSchema),
  maxBlobSize: v.optional(byteCount),
  maxTotalBytes: v.optional(byteCount),
  tempDir: v.optional(v.pipe(v.string(), v.startsWith("/", "must be an absolute path"))),
  onExpire: v.optional(v.function()),
});
const CreateOptionsSchema = v.strictObject({ leaseMs: v.optional(LeaseSchema), backend: v.optional(backendChoice) });

/** setTimeout cannot wait longer than this (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The monotonic clock leases run on: a wall-clock step (NTP, a suspend) neither expires nor extends them. */
const monotonic = () => performance.now();
/** Wall-clock time (ms since the epoch) of a monotonic instant, for reports. */
const wallClockOf = (mono: number) => (Number.isFinite(mono) ? Date.now() + (mono - monotonic()) : mono);

/**
 * Allocates shared-memory blobs and keeps track of them until each is
 * cleaned up (by its token) or its lease expires. Reclaiming runs on one
 * unref'd timer: a pending lease never keeps the process alive.
 *
 * Ownership: the allocator owns every blob's producer-side fd and mapping;
 * `close()` releases them all. Consumers that received a blob keep their own
 * mappings regardless.
 *
 * ```ts
 * using allocator = new BlobAllocator();
 * using writer = allocator.create(4096, { leaseMs: 10_000 });
 * writer.write(new TextEncoder().encode("hello"));
 * const blob = writer.publish();
 * allocator.cleanup(blob.token); // idempotent
 * ```
 */
export class BlobAllocator implements Disposable {
  static #default: BlobAllocator | undefined;

  /** The backend `create` uses unless told otherwise (resolved from `"auto"`). */
  readonly backend: BlobBackend;
  readonly #options: Omit<BlobAllocatorOptions, "backend"> & { defaultLeaseMs: number; maxBlobSize: number; tempDir: string };
  readonly #holdings = new Map<string, BlobHolding>();
  readonly #tokens = new TokenMinter();
  readonly #host: BlobHost;
  #bytes = 0;
  #timer: Timer | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #closed = false;

  /** @throws QbunArgumentError for bad options (unknown keys included) */
  constructor(options: BlobAllocatorOptions = {}) {
    const o = parsed(AllocatorOptionsSchema, options, "BlobAllocatorOptions");
    this.#options = {
      ...o,
      defaultLeaseMs: o.defaultLeaseMs ?? 60_000,
      maxBlobSize: o.maxBlobSize ?? 2 ** 34,
      tempDir: o.tempDir ?? tmpdir(),
      onExpire: options.onExpire,
    };
    this.backend = resolveBackend(o.backend ?? "auto", this.#options.tempDir);
    this.#host = { cleanup: (token) => this.cleanup(token), renew: (token, ms) => this.renew(token, ms) };
  }

  /** The process-wide allocator with default options, made on first use. */
  static get default(): BlobAllocator {
    if (!BlobAllocator.#default || BlobAllocator.#default.#closed) BlobAllocator.#default = new BlobAllocator();
    return BlobAllocator.#default;
  }

  /** Create a blob with the {@link BlobAllocator.default} allocator. */
  static create(size: number, options: CreateBlobOptions = {}): ShmBlobWriter {
    return BlobAllocator.default.create(size, options);
  }

  /**
   * A new zero-filled blob of `size` bytes, writable by this process only,
   * with an unguessable id and a lifecycle token.
   *
   * The memory is reserved at once (fallocate), so a blob that does not
   * fit fails here with ENOSPC rather than at its first write.
   *
   * @throws QbunArgumentError for a size outside 1..maxBlobSize or bad options;
   *   BlobQuotaError past maxTotalBytes; ClosedError once the allocator was closed;
   *   QbunSystemError when the backend fails (ENOSPC, ENOMEM, EMFILE…)
   */
  create(size: number, options: CreateBlobOptions = {}): ShmBlobWriter {
    if (this.#closed) throw new ClosedError("BlobAllocator (closed: create a new one)");
    const o = parsed(CreateOptionsSchema, options, "CreateBlobOptions");
    if (!Number.isSafeInteger(size) || size < 1 || size > this.#options.maxBlobSize) {
      throw new QbunArgumentError(`blob size must be an integer from 1 to ${this.#options.maxBlobSize} bytes, got ${size}`);
    }
    const max = this.#options.maxTotalBytes;
    if (max !== undefined && this.#bytes + size > max) throw new BlobQuotaError(size, this.#bytes, max);
    const backend = o.backend === undefined ? this.backend : resolveBackend(o.backend, this.#options.tempDir);
    const memory = createMemory(backend, size, this.#options.tempDir);
    let mapping: DeferredMapping;
    try {
      // The JS view waits for the first write: a view of a large blob costs a collection (see DeferredMapping).
      mapping = DeferredMapping.map(memory.fd, size, 0, "read-write");
    } catch (error) {
      memory.close();
      throw error;
    }
    const id = randomHex(ID_BYTES);
    const now = Date.now();
    const mono = monotonic();
    const leaseMs = o.leaseMs ?? this.#options.defaultLeaseMs;
    const holding: BlobHolding = {
      id,
      token: this.#tokens.mint(id),
      size,
      backend,
      createdAt: now,
      createdMono: mono,
      expiresAt: now + leaseMs,
      deadline: mono + leaseMs,
      state: "writable",
      memory,
      mapping,
      sealed: false,
    };
    this.#holdings.set(id, holding);
    this.#bytes += size;
    this.#schedule(holding.deadline);
    return new ShmBlobWriter(CONSTRUCT, holding, this.#host);
  }

  /**
   * Release the blob a token names: its producer-side mapping and fd are
   * closed. Idempotent: a genuine token whose blob is already gone returns
   * false.
   *
   * @throws BlobTokenError for a token this allocator never issued
   */
  cleanup(token: string): boolean {
    const holding = this.#holdings.get(this.#idOf(token));
    if (!holding) return false;
    this.#release(holding, "cleaned-up");
    return true;
  }

  /**
   * Extend a blob's lease to `leaseMs` from now; returns the new expiry
   * (ms since the epoch).
   *
   * @throws BlobTokenError for a forged token; BlobStaleError when the blob is no longer held
   */
  renew(token: string, leaseMs: number): number {
    const id = this.#idOf(token);
    const ms = parsed(LeaseSchema, leaseMs, "leaseMs");
    const holding = this.#holdings.get(id);
    if (!holding) throw new BlobStaleError(id, "unknown");
    holding.deadline = monotonic() + ms;
    holding.expiresAt = Date.now() + ms;
    this.#schedule(holding.deadline);
    return holding.expiresAt;
  }

  /** What the allocator holds now. */
  stats(): BlobHoldings {
    const byBackend = { memfd: { count: 0, bytes: 0 }, posix: { count: 0, bytes: 0 }, tempfile: { count: 0, bytes: 0 } };
    let next: number | undefined;
    for (const h of this.#holdings.values()) {
      byBackend[h.backend].count++;
      byBackend[h.backend].bytes += h.size;
      if (Number.isFinite(h.deadline) && (next === undefined || h.deadline < next)) next = h.deadline;
    }
    // Map order is creation order: the first entry has been held longest.
    const first = this.#holdings.values().next().value as BlobHolding | undefined;
    return {
      count: this.#holdings.size,
      bytes: this.#bytes,
      byBackend,
      oldest: first && { id: first.id, createdAt: first.createdAt, ageMs: monotonic() - first.createdMono, expiresAt: first.expiresAt },
      nextExpiry: next === undefined ? undefined : wallClockOf(next),
    };
  }

  /**
   * Reclaim every blob whose lease has ended by `now` (ms since the epoch;
   * default: now); returns how many. Runs by itself on a timer too.
   */
  reclaimExpired(now?: number): number {
    // Leases are kept on the monotonic clock: a wall-clock `now` is taken as an offset from the present.
    const limit = now === undefined ? monotonic() : monotonic() + (now - Date.now());
    let reclaimed = 0;
    for (const holding of [...this.#holdings.values()]) {
      if (holding.deadline > limit) continue;
      this.#release(holding, "expired");
      reclaimed++;
      try {
        this.#options.onExpire?.({ id: holding.id, size: holding.size, backend: holding.backend });
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    return reclaimed;
  }

  /** Whether {@link BlobAllocator.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Release every blob and stop the lease timer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const holding of [...this.#holdings.values()]) this.#release(holding, "cleaned-up");
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Same as {@link BlobAllocator.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #idOf(token: string): string {
    const verdict = this.#tokens.verify(token);
    if ("problem" in verdict) throw new BlobTokenError(verdict.problem);
    return verdict.id;
  }

  #release(holding: BlobHolding, why: "cleaned-up" | "expired"): void {
    this.#holdings.delete(holding.id);
    this.#bytes -= holding.size;
    holding.state = why;
    holding.mapping?.close();
    holding.mapping = undefined;
    holding.memory?.close();
    holding.memory = undefined;
  }

  /** Make sure the timer fires no later than `at` (monotonic). */
  #schedule(at: number): void {
    if (!Number.isFinite(at) || at >= this.#timerAt || this.#closed) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#onTimer(), Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - monotonic()))));
    this.#timer.unref();
  }

  #onTimer(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.reclaimExpired();
    let next = Number.POSITIVE_INFINITY;
    for (const h of this.#holdings.values()) if (h.deadline < next) next = h.deadline;
    this.#schedule(next);
  }
}

