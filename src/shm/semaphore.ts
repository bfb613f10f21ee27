/**
 * Process-shared POSIX semaphores (glibc `sem_t`, 32 bytes) placed inside a
 * shared mapping — the wake-up mechanism libqb's rings use.
 * @module
 */
import type { Pointer } from "bun:ffi";
import { check, ClosedError, QbunArgumentError } from "../../ffi/errors.ts";
import { loadNative, type Native } from "../../ffi/native.ts";
import { type FutexWaiter, Reactor, type SemWaiter, type WaitDone } from "../../ffi/reactor.ts";
import type { Mapping, MappingDependent } from "./mapping.ts";

/** Bytes a semaphore occupies in a mapping (glibc x86_64/aarch64). */
export const SEMAPHORE_SIZE = 32;

/** Options for {@link Semaphore.wait}. */
export interface SemaphoreWaitOptions {
  /** Give up after this many milliseconds (resolves false). Default: no limit. */
  timeout?: number;
  /** Cancel the wait (rejects with the signal's reason; the count is unchanged). */
  signal?: AbortSignal;
}

/**
 * A semaphore at a fixed offset of a read-write {@link Mapping}. Closing the
 * mapping stops pending waits first (they reject with ClosedError), so no
 * helper thread ever touches unmapped memory.
 *
 * ```ts
 * const sem = Semaphore.init(map, 0);      // creator
 * const peerSem = Semaphore.open(map2, 0); // another mapping of the same file
 * peerSem.post();
 * await sem.wait({ timeout: 1000 });       // → true
 * ```
 */
export class Semaphore implements MappingDependent {
  readonly #mapping: Mapping;
  readonly #ptr: Pointer;
  readonly #native: Native;
  /** Helper threads, kept for the next wait; one per concurrent wait. */
  readonly #waiters: SemWaiter[] = [];
  /** Waiters that sleep in io_uring rather than on a helper thread, kept likewise. */
  readonly #futexWaiters: FutexWaiter[] = [];
  #detached = false;

  private constructor(mapping: Mapping, offset: number) {
    if (mapping.access !== "read-write") throw new QbunArgumentError("a semaphore needs a read-write mapping");
    if (offset % 8 !== 0) throw new QbunArgumentError(`a semaphore must be 8-byte aligned; offset ${offset} is not`);
    this.#native = loadNative();
    if (this.#native.qbn_sizeof_sem() !== SEMAPHORE_SIZE) {
      throw new Error(`qbun: this C library's sem_t is ${this.#native.qbn_sizeof_sem()} bytes, not ${SEMAPHORE_SIZE}: unsupported platform`);
    }
    this.#mapping = mapping;
    this.#ptr = mapping.pointerAt(offset, SEMAPHORE_SIZE) as Pointer;
    mapping.addDependent(this);
  }

  /** Initialise a new process-shared semaphore at `offset` (sem_init). */
  static init(mapping: Mapping, offset: number, options: { value?: number } = {}): Semaphore {
    const sem = new Semaphore(mapping, offset);
    check(sem.#native.qbn_sem_init(sem.#ptr, 1, options.value ?? 0), "sem_init");
    return sem;
  }

  /** Use a semaphore another party already initialised at `offset`. */
  static open(mapping: Mapping, offset: number): Semaphore {
    return new Semaphore(mapping, offset);
  }

  #checkOpen(): void {
    if (this.#detached) throw new ClosedError("semaphore (its mapping)");
  }

  /** Increment and wake one waiter (sem_post). */
  post(): void {
    this.#checkOpen();
    check(this.#native.qbn_sem_post(this.#ptr), "sem_post");
  }

  /** Post `count` times at once: one call, and at most one wake-up syscall for all of them. */
  postMany(count: number): void {
    this.#checkOpen();
    if (!Number.isInteger(count) || count < 0) throw new QbunArgumentError(`post count must be a non-negative integer, got ${count}`);
    check(this.#native.qbn_sem_post_many(this.#ptr, count), "sem_post");
  }

  /** Decrement if positive, without waiting. Returns whether it did. */
  tryWait(): boolean {
    this.#checkOpen();
    const rc = this.#native.qbn_sem_trywait(this.#ptr);
    if (rc === -11 /* EAGAIN */) return false;
    check(rc, "sem_trywait");
    return true;
  }

  /**
   * Wait for the count to be positive and decrement it, without blocking
   * the event loop (the wait sleeps in io_uring where the kernel allows,
   * else on a helper thread). Resolves true when acquired, false on timeout.
   */
  async wait(options: SemaphoreWaitOptions = {}): Promise<boolean> {
    this.#checkOpen();
    options.signal?.throwIfAborted();
    if (this.tryWait()) return true;
    if (options.timeout === 0) return false;
    const started = Reactor.get();
    const reactor = started instanceof Promise ? await started : started; // no extra tick once it runs
    this.#checkOpen();
    options.signal?.throwIfAborted(); // it may have fired while the reactor started
    if (options.timeout === undefined && reactor.futexWaits) {
      const waiter = this.#futexWaiter(reactor);
      const signal = options.signal;
      const { promise, resolve, reject } = Promise.withResolvers<boolean>();
      const onAbort = () => waiter.cancel(signal!.reason);
      const done: WaitDone = (error) => {
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) resolve(true);
        else reject(error);
      };
      if (waiter.wait(done)) return true;
      // Only a wait still asleep may be cancelled: once `done` ran, the
      // waiter may already serve somebody else's wait.
      if (waiter.busy) signal?.addEventListener("abort", onAbort, { once: true });
      return promise;
    }
    return this.#threadWaiter(reactor).wait(options.timeout ?? -1, options.signal);
  }

  /**
   * {@link Semaphore.wait} without a promise, for hot paths: returns true
   * when it took one count at once (`done` is not called); otherwise false,
   * and `done` is called once one is taken — or with the reason the wait
   * stopped ({@link Semaphore.cancelWaits}, or the mapping closing), the
   * count then unchanged. No timeout.
   */
  waitThen(done: WaitDone): boolean {
    this.#checkOpen();
    if (this.tryWait()) return true;
    const started = Reactor.get();
    if (started instanceof Promise) {
      const pendingStart = { cancelled: undefined as unknown };
      this.#startingWaits.add(pendingStart);
      started.then(
        () => {
          this.#startingWaits.delete(pendingStart);
          if (pendingStart.cancelled !== undefined) return done(pendingStart.cancelled);
          try {
            if (this.waitThen(done)) done();
          } catch (error) {
            done(error); // closed meanwhile
          }
        },
        (error: unknown) => {
          this.#startingWaits.delete(pendingStart);
          done(error);
        },
      );
      return false;
    }
    if (started.futexWaits) return this.#futexWaiter(started).wait(done);
    this.#threadWaiter(started)
      .wait(-1)
      .then(() => done(), done);
    return false;
  }

  /** Waits started before the reactor ran: they begin once it does, unless cancelled meanwhile. */
  readonly #startingWaits = new Set<{ cancelled: unknown }>();

  /** Stop every wait in progress on this semaphore; each ends with `reason`. */
  cancelWaits(reason: unknown): void {
    for (const pending of this.#startingWaits) pending.cancelled = reason;
    for (const waiter of this.#futexWaiters) waiter.cancel(reason);
    for (const waiter of this.#waiters.splice(0)) waiter.destroy(reason);
  }

  #futexWaiter(reactor: Reactor): FutexWaiter {
    let waiter = this.#futexWaiters.find((w) => !w.busy);
    if (!waiter) {
      waiter = reactor.futexWaiter(this.#ptr);
      this.#futexWaiters.push(waiter);
    }
    return waiter;
  }

  #threadWaiter(reactor: Reactor): SemWaiter {
    let waiter = this.#waiters.find((w) => !w.busy);
    if (!waiter) {
      waiter = reactor.semWaiter(this.#ptr);
      this.#waiters.push(waiter);
    }
    return waiter;
  }

  /**
   * Blocking wait on the calling thread — it stalls the event loop. For
   * scripts and tests; servers use {@link Semaphore.wait}.
   */
  waitSync(timeoutMs: number): boolean {
    this.#checkOpen();
    const rc = this.#native.qbn_sem_timedwait(this.#ptr, timeoutMs);
    if (rc === -110 /* ETIMEDOUT */) return false;
    check(rc, "sem_clockwait");
    return true;
  }

  /** The current count (sem_getvalue). */
  get value(): number {
    this.#checkOpen();
    return check(this.#native.qbn_sem_getvalue(this.#ptr), "sem_getvalue");
  }

  /** Destroy (sem_destroy): only when no process waits on it any more. */
  destroy(): void {
    this.#checkOpen();
    this.#detached = true; // first: a wait's callback must not start another one on this memory
    this.#stopWaits();
    this.#mapping.removeDependent(this);
    check(this.#native.qbn_sem_destroy(this.#ptr), "sem_destroy");
  }

  /** Cancel io_uring waits and join every helper thread: nothing touches the semaphore afterwards. */
  #stopWaits(): void {
    for (const pending of this.#startingWaits) pending.cancelled ??= new ClosedError("semaphore");
    for (const waiter of this.#futexWaiters.splice(0)) waiter.dispose(new ClosedError("semaphore"));
    for (const waiter of this.#waiters.splice(0)) waiter.destroy(new ClosedError("semaphore"));
  }

  /** @internal called by the mapping before it unmaps */
  detachFromMapping(): void {
    this.#detached = true; // first: a wait's callback must not start another one on this memory
    this.#stopWaits();
  }
}
