/**
 * Event-driven readiness for Bun: "tell me when this fd is readable/writable"
 * and "tell me when this semaphore is posted", without polling.
 *
 * The C side (qbun.c, "reactor") reports readiness through a doorbell: a
 * socketpair whose other end Bun watches with `Bun.connect({ fd })`. With
 * io_uring (preferred), each wait is a one-shot poll the kernel links to a
 * doorbell byte, so a wake-up costs one thread wake, like Bun's own sockets.
 * Without it, a helper thread blocks in `epoll_wait`. Semaphore waits run on
 * threads of their own. The doorbell's data callback drains every report and
 * settles the waiting promises. While nothing is waited on, the doorbell is
 * unref'd, so qbun never keeps a process alive by itself.
 *
 * `QBUN_REACTOR=epoll` (or `io_uring`) in the environment forces a backend.
 * @module
 */
import type { Pointer } from "bun:ffi";
import type { Socket } from "bun";
import { check, ClosedError, QbunSystemError } from "./errors.ts";
import { loadNative, type Native } from "./native.ts";

/** poll/epoll event bits as reported to waiters (the values are the same). */
export const Events = {
  IN: 0x001,
  OUT: 0x004,
  ERR: 0x008,
  HUP: 0x010,
  RDHUP: 0x2000,
} as const;

/** How readiness reaches the event loop. */
export type ReactorBackend = "io_uring" | "epoll";

const BACKEND_CODE: Record<ReactorBackend, number> = { epoll: 1, io_uring: 2 };

interface Waiter {
  resolve(events: number): void;
  reject(error: unknown): void;
  interest: number;
  cleanup?: () => void;
}

/** A report's receiver: `value` is poll bits or a result, `clear` the interest it ends. */
type Settle = (value: number, clear: number) => void;

const DRAIN_TRIPLES = 256;
const ECANCELED = 125;
const EAGAIN = 11;
const ETIMEDOUT = 110;

/**
 * One per process. Owns the backend and the doorbell. Use
 * {@link Reactor.get} to obtain it.
 */
export class Reactor {
  static #instance: Reactor | undefined;
  static #starting: Promise<Reactor> | undefined;

  /** Which backend this reactor runs on. */
  readonly backend: ReactorBackend;
  readonly #native: Native;
  readonly #ptr: Pointer;
  readonly #bell: Socket<unknown>;
  readonly #drainBuf = new Uint32Array(DRAIN_TRIPLES * 3);
  readonly #byToken = new Map<number, Settle>();
  #nextToken = 1;
  #refs = 0;

  private constructor(native: Native, ptr: Pointer, bell: Socket<unknown>) {
    this.#native = native;
    this.#ptr = ptr;
    this.#bell = bell;
    this.backend = native.qbn_reactor_backend(ptr) === BACKEND_CODE.io_uring ? "io_uring" : "epoll";
    bell.unref();
  }

  /** The process's reactor, started on first use. */
  static get(): Reactor | Promise<Reactor> {
    return Reactor.#instance ?? (Reactor.#starting ??= Reactor.#start());
  }

  static async #start(): Promise<Reactor> {
    const native = loadNative();
    const forced = process.env.QBUN_REACTOR;
    if (forced !== undefined && forced !== "" && !(forced in BACKEND_CODE)) {
      throw new Error(`QBUN_REACTOR must be "io_uring" or "epoll", not ${JSON.stringify(forced)}`);
    }
    const pair = new Int32Array(2);
    check(native.qbn_socketpair(1 /* SOCK_STREAM */, pair), "socketpair");
    const err = new Int32Array(1);
    const want = forced ? BACKEND_CODE[forced as ReactorBackend] : 0;
    const ptr = native.qbn_reactor_create(pair[1]!, want, err);
    if (!ptr) {
      native.qbn_close(pair[0]!);
      native.qbn_close(pair[1]!);
      throw new QbunSystemError(-err[0]!, forced === "io_uring" ? "io_uring_setup" : "pthread_create");
    }
    let reactor: Reactor | undefined;
    // Bun adopts a connected fd (not in @types/bun's signature).
    const bell = await Bun.connect({
      fd: pair[0]!,
      socket: { data: () => reactor!.#drain() },
    } as unknown as Parameters<typeof Bun.connect>[0]);
    reactor = new Reactor(native, ptr as Pointer, bell);
    Reactor.#instance = reactor;
    return reactor;
  }

  #drain(): void {
    const buf = this.#drainBuf;
    let n: number;
    do {
      n = this.#native.qbn_reactor_drain(this.#ptr, buf, DRAIN_TRIPLES);
      for (let i = 0; i < n; i++) {
        const settle = this.#byToken.get(buf[3 * i]!);
        try {
          settle?.(buf[3 * i + 1]! | 0, buf[3 * i + 2]!);
        } catch (error) {
          // The reports are out of the kernel's queue: deliver the rest first.
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    } while (n === DRAIN_TRIPLES);
  }

  /** A fresh token: 1 … 2^31-1, so it passes through the C side's `int` unchanged. */
  #takeToken(): number {
    const token = this.#nextToken;
    this.#nextToken = token >= 0x7fffffff ? 1 : token + 1;
    return token;
  }

  /** Keep the process alive while a ref'd wait is pending. */
  ref(): void {
    if (this.#refs++ === 0) this.#bell.ref();
  }

  /** Counterpart of {@link Reactor.ref}. */
  unref(): void {
    if (--this.#refs === 0) this.#bell.unref();
  }

  /** Start watching `fd`; the returned handle must be closed before the fd. */
  watch(fd: number): FdWatch {
    const token = this.#takeToken();
    const watch = new FdWatch(this, this.#native, this.#ptr, fd, token);
    this.#byToken.set(token, (value, clear) => watch.onReport(value, clear));
    return watch;
  }

  /** @internal Called by FdWatch.close. */
  release(token: number): void {
    this.#byToken.delete(token);
  }

  #futexWaits: boolean | undefined;

  /**
   * Whether semaphore waits can sleep in io_uring (FUTEX_WAIT, Linux 6.7+)
   * instead of on a helper thread. `QBUN_SEM_WAIT=thread` turns it off.
   */
  get futexWaits(): boolean {
    return (this.#futexWaits ??= process.env.QBUN_SEM_WAIT !== "thread" && this.#native.qbn_semfutex_supported(this.#ptr) === 1);
  }

  /**
   * A waiter for the process-shared glibc semaphore at `sem` that sleeps in
   * io_uring instead of on a helper thread (requires
   * {@link Reactor.futexWaits}). One wait at a time; reuse it for the next.
   * The memory at `sem` must stay mapped until every wait has settled or
   * been cancelled.
   */
  futexWaiter(sem: Pointer): FutexWaiter {
    const token = this.#takeToken();
    const waiter = new FutexWaiter(this, this.#native, this.#ptr, sem, token);
    this.#byToken.set(token, (result, generation) => waiter.onReport(result, generation));
    return waiter;
  }

  /**
   * A waiter for the process-shared semaphore at `sem`: a helper thread that
   * waits on it whenever asked, so waits never block the event loop. The
   * memory at `sem` must stay mapped until {@link SemWaiter.destroy}.
   */
  semWaiter(sem: Pointer): SemWaiter {
    const token = this.#takeToken();
    const err = new Int32Array(1);
    const ptr = this.#native.qbn_semwaiter_create(this.#ptr, sem, token, err);
    if (!ptr) throw new QbunSystemError(-err[0]!, "pthread_create");
    return new SemWaiter(this, this.#native, ptr as Pointer, token, this.#byToken);
  }
}

/**
 * Called once a wait ends: with nothing when it took one count, with the
 * reason when it was cancelled or failed (the count is then unchanged).
 */
export type WaitDone = (error?: unknown) => void;

/**
 * Semaphore waits on io_uring's FUTEX_WAIT (see qbun.c): no thread, and no
 * allocation per wait beyond what the caller brings (callback-based: a
 * caller that wants a promise makes one); see {@link FutexWaiter.wait}.
 */
export class FutexWaiter {
  readonly #reactor: Reactor;
  readonly #native: Native;
  readonly #rptr: Pointer;
  readonly #sem: Pointer;
  readonly #token: number;
  #done: WaitDone | undefined;
  /** Numbers each sleep: a cancelled sleep's completion can arrive during the next wait. */
  #generation = 0;

  /** @internal use {@link Reactor.futexWaiter} */
  constructor(reactor: Reactor, native: Native, rptr: Pointer, sem: Pointer, token: number) {
    this.#reactor = reactor;
    this.#native = native;
    this.#rptr = rptr;
    this.#sem = sem;
    this.#token = token;
  }

  /** Whether a wait is in progress. */
  get busy(): boolean {
    return this.#done !== undefined;
  }

  /**
   * Take one count: returns true when it did at once (`done` is not called),
   * false when it sleeps; `done` is then called once it took one, or with
   * the reason it stopped. One wait at a time.
   */
  wait(done: WaitDone): boolean {
    if (this.#done) throw new Error("a futex waiter runs one wait at a time");
    const native = this.#native;
    native.qbn_semfutex_register(this.#sem);
    if (native.qbn_semfutex_take(this.#sem, 1) === 1) return true;
    this.#done = done;
    this.#reactor.ref();
    this.#arm();
    return false;
  }

  #arm(): void {
    this.#generation = (this.#generation + 1) & 0x7fffffff; // passes through the C side's `int` unchanged
    const rc = this.#native.qbn_semfutex_arm(this.#rptr, this.#sem, this.#token, this.#generation);
    if (rc < 0) this.#finish(new QbunSystemError(-rc, "io_uring_enter"), true);
  }

  /** @internal Woken (0), or EAGAIN (posted before the sleep began): take the count, or sleep again. */
  onReport(result: number, generation: number): void {
    if (!this.#done || generation !== this.#generation) return; // a cancelled sleep's completion
    if (this.#native.qbn_semfutex_take(this.#sem, 1) === 1) this.#finish(undefined, false);
    else if (result === 0 || result === -EAGAIN) this.#arm(); // another waiter took it first
    else this.#finish(new QbunSystemError(-result, "io_uring futex wait"), true); // would fail again at once
  }

  /** Stop the wait in progress (its `done` gets `reason`; the count is unchanged). No-op when idle. */
  cancel(reason: unknown): void {
    if (!this.#done) return;
    // Takes effect before it returns. (A sleep the kernel already woke is
    // no longer there to cancel: unregistering passes its wake-up on.)
    this.#native.qbn_semfutex_cancel(this.#rptr, this.#token, this.#generation);
    this.#finish(reason, true);
  }

  /** Cancel any wait (with `reason`) and forget the token: the waiter is done for good. */
  dispose(reason: unknown): void {
    this.cancel(reason);
    this.#reactor.release(this.#token);
  }

  #finish(error: unknown, unregister: boolean): void {
    const done = this.#done!;
    this.#done = undefined;
    if (unregister) this.#native.qbn_semfutex_unregister(this.#sem);
    this.#reactor.unref();
    done(error);
  }
}

/**
 * One helper thread bound to one semaphore. One wait at a time; reuse it for
 * the next. Destroy it before the semaphore's memory is unmapped.
 */
export class SemWaiter {
  readonly #reactor: Reactor;
  readonly #native: Native;
  readonly #ptr: Pointer;
  readonly #token: number;
  readonly #byToken: Map<number, Settle>;
  #current: { resolve(acquired: boolean): void; reject(error: unknown): void; reason?: unknown } | undefined;
  #destroyed = false;

  /** @internal use {@link Reactor.semWaiter} */
  constructor(reactor: Reactor, native: Native, ptr: Pointer, token: number, byToken: Map<number, Settle>) {
    this.#reactor = reactor;
    this.#native = native;
    this.#ptr = ptr;
    this.#token = token;
    this.#byToken = byToken;
    byToken.set(token, (result) => this.#settle(result));
  }

  /** Whether a wait is in progress. */
  get busy(): boolean {
    return this.#current !== undefined;
  }

  /**
   * Wait: true when acquired, false on timeout (`timeoutMs` < 0: none).
   * Rejects with the signal's reason when aborted (the count is unchanged).
   */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.#destroyed) return Promise.reject(new ClosedError("semaphore waiter"));
    if (this.#current) return Promise.reject(new Error("a semaphore waiter runs one wait at a time"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    const current: { resolve(acquired: boolean): void; reject(error: unknown): void; reason?: unknown } = { resolve, reject };
    this.#current = current;
    const onAbort = () => {
      current.reason = signal!.reason;
      // Another listener of the same signal may have destroyed this waiter (and freed its C side).
      if (!this.#destroyed) this.#native.qbn_semwaiter_cancel(this.#ptr);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#reactor.ref();
    this.#native.qbn_semwaiter_arm(this.#ptr, timeoutMs);
    return signal ? promise.finally(() => signal.removeEventListener("abort", onAbort)) : promise;
  }

  #settle(result: number): void {
    const current = this.#current;
    if (!current) return;
    this.#current = undefined;
    this.#reactor.unref();
    if (result === 0) current.resolve(true);
    else if (result === -ETIMEDOUT) current.resolve(false);
    else if (result === -ECANCELED) current.reject(current.reason ?? new ClosedError("semaphore wait"));
    else current.reject(new QbunSystemError(-result, "sem_clockwait"));
  }

  /**
   * Stop the thread and join it (a wait in progress rejects with `reason`):
   * afterwards nothing touches the semaphore's memory. Idempotent.
   */
  destroy(reason: unknown = new ClosedError("semaphore")): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#native.qbn_semwaiter_destroy(this.#ptr);
    this.#byToken.delete(this.#token);
    const current = this.#current;
    if (current) {
      this.#current = undefined;
      this.#reactor.unref();
      current.reject(reason);
    }
  }
}

/**
 * Readiness of one fd. `readable()`/`writable()` resolve with the poll bits
 * once the fd is ready (or has an error/hang-up, which wakes every waiter).
 * Callers follow the edge rule: try the syscall first, wait only on EAGAIN.
 */
export class FdWatch {
  readonly #reactor: Reactor;
  readonly #native: Native;
  readonly #rptr: Pointer;
  readonly #fd: number;
  readonly #token: number;
  readonly #uring: boolean;
  #waiters: Waiter[] = [];
  /** IN/OUT bits with a report pending. */
  #armed = 0;
  /** io_uring: the exact masks of the polls in flight (for cancelling). */
  #polls: number[] = [];
  #closed = false;
  #ref = true;

  /** @internal use {@link Reactor.watch} */
  constructor(reactor: Reactor, native: Native, rptr: Pointer, fd: number, token: number) {
    this.#reactor = reactor;
    this.#native = native;
    this.#rptr = rptr;
    this.#fd = fd;
    this.#token = token;
    this.#uring = reactor.backend === "io_uring";
  }

  /** Whether pending waits keep the process alive (default true). */
  setRef(on: boolean): void {
    if (on === this.#ref) return;
    this.#ref = on;
    if (this.#waiters.length > 0) on ? this.#reactor.ref() : this.#reactor.unref();
  }

  /** Resolves when the fd is readable (or errored/hung up). */
  readable(signal?: AbortSignal): Promise<number> {
    return this.#wait(Events.IN, signal);
  }

  /** Resolves when the fd is writable (or errored/hung up). */
  writable(signal?: AbortSignal): Promise<number> {
    return this.#wait(Events.OUT, signal);
  }

  #wait(interest: number, signal?: AbortSignal): Promise<number> {
    if (this.#closed) return Promise.reject(new ClosedError("socket"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    const waiter: Waiter = { resolve, reject, interest };
    if (signal) {
      const onAbort = () => {
        this.#remove(waiter);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      waiter.cleanup = () => signal.removeEventListener("abort", onAbort);
    }
    if (this.#waiters.length === 0 && this.#ref) this.#reactor.ref();
    this.#waiters.push(waiter);
    this.#arm();
    return promise;
  }

  #remove(waiter: Waiter): void {
    const i = this.#waiters.indexOf(waiter);
    if (i < 0) return;
    this.#waiters.splice(i, 1);
    waiter.cleanup?.();
    if (this.#waiters.length === 0 && this.#ref) this.#reactor.unref();
  }

  #arm(): void {
    let interest = 0;
    for (const w of this.#waiters) interest |= w.interest;
    const missing = interest & ~this.#armed;
    if (missing === 0) return;
    // epoll replaces the fd's interest, so it asks for everything wanted;
    // io_uring adds one poll for just the missing bits.
    const want = this.#uring ? missing : interest | this.#armed;
    // RDHUP is level-triggered: ask for it only with readers waiting, or a
    // writer waiting on a half-closed socket would be re-woken forever.
    const bits = want & Events.IN ? want | Events.RDHUP : want;
    const rc = this.#native.qbn_reactor_arm(this.#rptr, this.#fd, bits, this.#token);
    if (rc < 0) {
      const error = new QbunSystemError(-rc, this.#uring ? "io_uring_enter" : "epoll_ctl");
      for (const w of this.#waiters.splice(0)) {
        w.cleanup?.();
        w.reject(error);
      }
      if (this.#ref) this.#reactor.unref();
      return;
    }
    if (this.#uring) this.#polls.push(bits);
    this.#armed |= want;
  }

  /** @internal Called by the reactor with one report: poll bits (or -errno) and the interest it ends. */
  onReport(value: number, clear: number): void {
    this.#armed &= ~clear;
    if (this.#uring) {
      const i = this.#polls.indexOf(clear);
      if (i >= 0) this.#polls.splice(i, 1);
    }
    // A failed poll (io_uring reports -errno) wakes everyone: their syscall
    // retry surfaces the real error.
    const events = value < 0 ? Events.ERR : value;
    const wakeAll = (events & (Events.ERR | Events.HUP)) !== 0;
    const readyIn = wakeAll || (events & (Events.IN | Events.RDHUP)) !== 0;
    const readyOut = wakeAll || (events & Events.OUT) !== 0;
    const still: Waiter[] = [];
    const ready: Waiter[] = [];
    for (const w of this.#waiters) {
      if ((w.interest === Events.IN && readyIn) || (w.interest === Events.OUT && readyOut)) ready.push(w);
      else still.push(w);
    }
    this.#waiters = still;
    if (still.length === 0 && ready.length > 0 && this.#ref) this.#reactor.unref();
    for (const w of ready) {
      w.cleanup?.();
      w.resolve(events);
    }
    if (this.#waiters.length > 0) this.#arm();
  }

  /** Stop watching; pending waits reject with {@link ClosedError}. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#uring) {
      for (const mask of this.#polls) this.#native.qbn_reactor_cancel(this.#rptr, mask, this.#token);
      this.#polls = [];
    } else {
      this.#native.qbn_reactor_forget(this.#rptr, this.#fd);
    }
    this.#reactor.release(this.#token);
    const pending = this.#waiters.splice(0);
    if (pending.length > 0 && this.#ref) this.#reactor.unref();
    for (const w of pending) {
      w.cleanup?.();
      w.reject(new ClosedError("socket"));
    }
  }
}
