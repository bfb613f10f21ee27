/**
 * The client side: subscribe to regions (readers), take leases, and send
 * writes to the owner (writers). One class for both roles, over either
 * transport: {@link LeaseClient.connect} for a unix socket, or
 * `LeaseOwner.connect()` in-process.
 * @module
 */
import { QbunArgumentError } from "../../ffi/errors.ts";
import type { OwnedFd } from "../../ffi/fd.ts";
import { UnixSeqpacket, type AddressInput, type ConnectOptions, type Credentials } from "../unix/index.ts";
import { isLeaseErrorCode, LeaseError } from "./errors.ts";
import { CONSTRUCT } from "./internal.ts";
import { checkName, decodeLocator, type Locator } from "./locator.ts";
import {
  decodeAck, decodeFrame, decodeWritten, encodeJson, encodeWrite, FrameType, MAX_WRITE_BYTES, nameBytes, parseJson,
  type BodyOf, type LeaseEventKind, type WrittenEvent,
} from "./protocol.ts";
import { RegionView, type ConsistentRead, type ReadConsistentOptions } from "./region.ts";
import { SeqpacketChannel, type Channel } from "./transport.ts";

export type { WrittenEvent } from "./protocol.ts";

/** A lease announcement: every client the policy allows a lease class hears of each grant and end of it. */
export interface LeaseEvent {
  /** The lease class concerned. */
  readonly leaseClass: string;
  /** `granted`, or why it ended: `released`, `expired`, `revoked` (holder disconnected). */
  readonly event: LeaseEventKind;
  /** The fencing token of the grant concerned. */
  readonly token: number;
}

/** Options for {@link LeaseClient.write}. */
export interface WriteOptions {
  /**
   * The epoch the write is meant for (e.g. `subscription.epoch` when the
   * bytes were computed from what you read). The owner refuses it with
   * `ERR_QBUN_LEASE_STALE_EPOCH` if the region moved on. 0 or absent: any.
   */
  epoch?: number;
}

/** Options for {@link LeaseClient.acquire}. */
export interface AcquireOptions {
  /** Time-to-live in ms (the owner may cap it). Renew before it runs out. */
  ttlMs: number;
  /** Wait while another client holds it (default true); false fails at once with `ERR_QBUN_LEASE_BUSY`. */
  wait?: boolean;
  /** Give up waiting after this many ms (rejects with a TimeoutError). */
  timeoutMs?: number;
  /** Cancels the wait (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** Options for {@link LeaseClient.subscribe}. */
export interface SubscribeOptions {
  /** Ask the owner for a notification after every write (default true). */
  notifyWrites?: boolean;
  /** Cancels waiting for the owner's answer. */
  signal?: AbortSignal;
}

/** What the owner answered to a write. */
export interface WriteAck {
  /** Epoch the write went into. */
  readonly epoch: number;
  /** The region's sequence after the write: readers that see it (or later) see the write. */
  readonly sequence: number;
}

interface Pending {
  resolve(frame: { type: number; body: Uint8Array }): void;
  reject(error: Error): void;
  /** For acquires: what to do with a grant that arrives after the caller gave up. */
  abandoned?: boolean;
  leaseClass?: string;
}

type Listener<T> = (value: T) => void;

// Members only this module calls; symbols keep them out of reach of users.
const kMarkLost = Symbol("markLost");
const kAttach = Symbol("attach");
const kInvalidate = Symbol("invalidate");
const kWritten = Symbol("written");
const kEnd = Symbol("end");
const kRequest = Symbol("request");
const kUnsubscribed = Symbol("unsubscribed");

/**
 * Call every listener; one that throws does not stop the others or the
 * connection: its error is reported as an uncaught exception (where
 * `process.on("uncaughtException")` sees it), as an event emitter would.
 */
function emit<T>(listeners: Iterable<Listener<T>>, value: T): void {
  for (const listener of [...listeners]) {
    try {
      listener(value);
    } catch (error) {
      reportError(error);
    }
  }
}

function guardKey(key: unknown, what: string): void {
  if (key !== CONSTRUCT) throw new QbunArgumentError(`${what} is not constructed directly: use LeaseClient.connect(), LeaseOwner.connect(), acquire() or subscribe()`);
}
type RequestType = typeof FrameType.SUBSCRIBE | typeof FrameType.UNSUBSCRIBE | typeof FrameType.ACQUIRE | typeof FrameType.RENEW | typeof FrameType.RELEASE;

/**
 * A granted lease. Keep it alive with {@link Lease.renew}; pass
 * {@link Lease.token} with every write. `lost` turns true (and `onLost`
 * fires) when the owner announces its end.
 */
export class Lease implements AsyncDisposable {
  /** The lease class this grant is for. */
  readonly leaseClass: string;
  /** The fencing token of this grant. */
  readonly token: number;
  #ttlMs: number;
  #expiresAt: number;
  #lost: LeaseEvent["event"] | undefined;
  readonly #client: LeaseClient;
  readonly #onLost = new Set<Listener<LeaseEvent["event"]>>();

  /** Made by {@link LeaseClient.acquire} only. */
  constructor(key: typeof CONSTRUCT, client: LeaseClient, leaseClass: string, token: number, ttlMs: number) {
    guardKey(key, "Lease");
    this.#client = client;
    this.leaseClass = leaseClass;
    this.token = token;
    this.#ttlMs = ttlMs;
    this.#expiresAt = Date.now() + ttlMs;
  }

  /** The granted time-to-live in ms. */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** When the lease runs out unless renewed (local clock, ms since the epoch; the owner's clock decides). */
  get expiresAt(): number {
    return this.#expiresAt;
  }

  /** Why the lease ended (`released`, `expired`, `revoked`), or undefined while it is held. */
  get lost(): LeaseEvent["event"] | undefined {
    return this.#lost;
  }

  /** Call `listener` when the lease ends; returns a function that removes it. */
  onLost(listener: Listener<LeaseEvent["event"]>): () => void {
    this.#onLost.add(listener);
    return () => this.#onLost.delete(listener);
  }

  [kMarkLost](reason: LeaseEvent["event"]): void {
    if (this.#lost) return;
    this.#lost = reason;
    emit(this.#onLost, reason);
  }

  /** Extend the lease by `ttlMs` (default: the granted TTL) from now. Fails if it already ended. */
  async renew(ttlMs = this.#ttlMs): Promise<void> {
    const reply = await this.#client[kRequest](FrameType.RENEW, { leaseClass: this.leaseClass, token: this.token, ttlMs });
    const body = parseJson(FrameType.REPLY, reply.body);
    this.#ttlMs = body.ttlMs ?? ttlMs;
    this.#expiresAt = Date.now() + this.#ttlMs;
  }

  /** Give the lease back. Resolves quietly if it had already ended. */
  async release(): Promise<void> {
    if (this.#lost || this.#client.closed) return;
    try {
      await this.#client[kRequest](FrameType.RELEASE, { leaseClass: this.leaseClass, token: this.token });
      this[kMarkLost]("released");
    } catch (error) {
      if (error instanceof LeaseError && (error.code === "ERR_QBUN_LEASE_NOT_HELD" || error.code === "ERR_QBUN_LEASE_STALE_TOKEN" || error.code === "ERR_QBUN_LEASE_DISCONNECTED")) return;
      throw error;
    }
  }

  /** Same as {@link Lease.release}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/**
 * A subscription to one region: the current epoch's read-only mapping,
 * replaced when the owner starts a new epoch.
 *
 * ```ts
 * using sub = await client.subscribe("state");
 * const { bytes, sequence } = await sub.read(0, 64);
 * for (;;) { await sub.nextWrite(); ... }
 * ```
 */
export class Subscription implements Disposable {
  /** The region this subscription maps. */
  readonly endpoint: string;
  /** Whether the owner sends a notification after every write (see {@link SubscribeOptions.notifyWrites}). */
  readonly notifyWrites: boolean;
  #view: RegionView | undefined;
  #closed = false;
  #lastWrite: WrittenEvent | undefined;
  readonly #client: LeaseClient;
  readonly #onEpoch = new Set<Listener<number>>();
  readonly #onInvalid = new Set<Listener<number>>();
  readonly #onWrite = new Set<Listener<WrittenEvent>>();
  #writeWaiters: Array<{ resolve(event: WrittenEvent): void; reject(error: Error): void }> = [];
  #epochWaiters: Array<{ resolve(): void; reject(error: Error): void }> = [];
  /** Woken by anything that can end a read's contention: a write notification, a new or invalidated epoch. */
  #changeWaiters: Array<{ resolve(): void; reject(error: Error): void }> = [];

  /** Made by {@link LeaseClient.subscribe} only. */
  constructor(key: typeof CONSTRUCT, client: LeaseClient, endpoint: string, notifyWrites: boolean) {
    guardKey(key, "Subscription");
    this.#client = client;
    this.endpoint = endpoint;
    this.notifyWrites = notifyWrites;
  }

  /** The current locator (undefined between an invalidation and the next locator). */
  get locator(): Locator | undefined {
    return this.#view?.locator;
  }

  /** The current epoch (0 while between epochs). */
  get epoch(): number {
    return this.#view?.epoch ?? 0;
  }

  /** The current epoch's view: its read-only fd and mapping. Undefined between epochs. */
  get view(): RegionView | undefined {
    return this.#view;
  }

  /** The most recent write notification received. */
  get lastWrite(): WrittenEvent | undefined {
    return this.#lastWrite;
  }

  /** Whether the subscription ended (closed, or the client disconnected). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Synchronous consistent read from the current epoch (see
   * {@link RegionView.readConsistent}). Throws `ERR_QBUN_LEASE_STALE_EPOCH`
   * between epochs, and `ERR_QBUN_LEASE_CONTENDED` when writes kept
   * overlapping for a few microseconds: use {@link Subscription.read} then.
   */
  readConsistent(offset?: number, length?: number, options?: ReadConsistentOptions): ConsistentRead {
    const view = this.#view;
    if (!view) throw new LeaseError(this.#closed ? "ERR_QBUN_LEASE_DISCONNECTED" : "ERR_QBUN_LEASE_STALE_EPOCH", `${this.endpoint}: no current epoch${this.#closed ? " (subscription closed)" : " (waiting for the new locator)"}`);
    return view.readConsistent(offset, length, options);
  }

  /**
   * A consistent read that rides out epoch changes and write contention:
   * on a stale epoch it waits for the new locator; when writes keep
   * overlapping it waits for the owner's next write notification (the write
   * it collided with is announced once applied) — no spinning. Without
   * `notifyWrites` it can only retry on a timer (1 ms, doubling to 64 ms).
   * `offset`/`length` default to the whole region of whichever epoch is read.
   */
  async read(offset?: number, length?: number, options: { signal?: AbortSignal } = {}): Promise<ConsistentRead> {
    let backoff = 1;
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        return this.readConsistent(offset, length);
      } catch (error) {
        if (!(error instanceof LeaseError)) throw error;
        if (error.code === "ERR_QBUN_LEASE_STALE_EPOCH") {
          await this.nextEpoch(options);
        } else if (error.code === "ERR_QBUN_LEASE_CONTENDED") {
          // Registered in the same turn as the failed read, so the notice of the colliding write cannot slip by.
          if (this.notifyWrites) await this.#wait(this.#changeWaiters as Array<{ resolve(v: unknown): void; reject(e: Error): void }>, options.signal);
          else {
            await sleep(backoff, options.signal);
            backoff = Math.min(backoff * 2, 64);
          }
        } else throw error;
      }
    }
  }

  #wake(): void {
    const waiters = this.#changeWaiters;
    this.#changeWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /**
   * Resolves with the next write notification (needs `notifyWrites`). With
   * `after`, resolves at once if the latest notification already carries a
   * different sequence (a write you have not seen yet).
   */
  nextWrite(options: { signal?: AbortSignal; after?: number } = {}): Promise<WrittenEvent> {
    const last = this.#lastWrite;
    if (options.after !== undefined && last && last.sequence !== options.after && last.epoch === this.epoch) return Promise.resolve(last);
    return this.#wait(this.#writeWaiters, options.signal);
  }

  /** Resolves when the next epoch's locator has been mapped. */
  async nextEpoch(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#wait(this.#epochWaiters as Array<{ resolve(v: unknown): void; reject(e: Error): void }>, options.signal);
  }

  #wait<T>(queue: Array<{ resolve(value: T): void; reject(error: Error): void }>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) return Promise.reject(new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `subscription to ${this.endpoint} is closed`));
    signal?.throwIfAborted();
    return new Promise<T>((resolve, reject) => {
      const entry = {
        resolve: (value: T) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(value);
        },
        reject: (error: Error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = queue.indexOf(entry);
        if (at >= 0) queue.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(entry);
    });
  }

  /** Call `listener` with the epoch each time a new epoch is mapped. */
  onEpoch(listener: Listener<number>): () => void {
    this.#onEpoch.add(listener);
    return () => this.#onEpoch.delete(listener);
  }

  /** Call `listener` with the old epoch each time the owner invalidates one. */
  onInvalidate(listener: Listener<number>): () => void {
    this.#onInvalid.add(listener);
    return () => this.#onInvalid.delete(listener);
  }

  /** Call `listener` on every write notification. */
  onWrite(listener: Listener<WrittenEvent>): () => void {
    this.#onWrite.add(listener);
    return () => this.#onWrite.delete(listener);
  }

  /** A locator and its fd arrived (takes the fd); a region that cannot be mapped throws a protocol error. */
  [kAttach](locator: Locator, fd: OwnedFd): void {
    if (this.#closed) {
      fd.close();
      return;
    }
    const view = RegionView.attach(locator, fd);
    this.#view?.close();
    this.#view = view;
    const waiters = this.#epochWaiters;
    this.#epochWaiters = [];
    for (const waiter of waiters) waiter.resolve();
    this.#wake();
    emit(this.#onEpoch, locator.epoch);
  }

  /** The owner invalidated `epoch`. */
  [kInvalidate](epoch: number): void {
    if (this.#view && this.#view.epoch === epoch) {
      this.#view.close();
      this.#view = undefined;
    }
    this.#wake();
    emit(this.#onInvalid, epoch);
  }

  [kWritten](event: WrittenEvent): void {
    this.#lastWrite = event;
    const waiters = this.#writeWaiters;
    this.#writeWaiters = [];
    for (const waiter of waiters) waiter.resolve(event);
    this.#wake();
    emit(this.#onWrite, event);
  }

  /** End locally (client closed, unsubscribed, or the region went away). */
  [kEnd](error: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#view?.close();
    this.#view = undefined;
    for (const waiter of [...this.#writeWaiters, ...this.#epochWaiters, ...this.#changeWaiters]) waiter.reject(error);
    this.#writeWaiters = [];
    this.#epochWaiters = [];
    this.#changeWaiters = [];
  }

  /** Stop receiving this region: unmaps it and tells the owner. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this[kEnd](new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `subscription to ${this.endpoint} is closed`));
    this.#client[kUnsubscribed](this);
  }

  /** Same as {@link Subscription.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A client of a lease owner.
 *
 * ```ts
 * await using client = await LeaseClient.connect("/run/app/state.sock");
 * await using lease = await client.acquire("memory-write", { ttlMs: 2000 });
 * await client.write("state", 0, new Uint8Array([1, 2, 3]), lease.token);
 * ```
 */
export class LeaseClient implements AsyncDisposable, Disposable {
  readonly #channel: Channel;
  readonly #pending = new Map<number, Pending>();
  readonly #subscriptions = new Map<string, Subscription>();
  /** Subscribes waiting for the owner's answer, shared by every caller asking for the same endpoint meanwhile. */
  readonly #subscribing = new Map<string, { notifyWrites: boolean; callers: number; promise: Promise<Subscription> }>();
  readonly #leases = new Map<string, Lease>();
  readonly #leaseListeners = new Set<Listener<LeaseEvent>>();
  readonly #names = new Map<string, Uint8Array>();
  #nextRequest = 1;
  #closed = false;
  #closeError: Error | undefined;

  /** Made by {@link LeaseClient.connect} or `LeaseOwner.connect()` only. */
  constructor(key: typeof CONSTRUCT, channel: Channel) {
    guardKey(key, "LeaseClient");
    this.#channel = channel;
    channel.start({
      frame: (bytes, fds) => this.#onFrame(bytes, fds),
      closed: (error) => this.#end(error ?? new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the owner closed the connection")),
    });
  }

  /** Connect to an owner listening on a unix seqpacket socket. */
  static async connect(address: AddressInput, options: ConnectOptions = {}): Promise<LeaseClient> {
    const socket = await UnixSeqpacket.connect(address, options);
    try {
      return new LeaseClient(CONSTRUCT, new SeqpacketChannel(socket));
    } catch (error) {
      socket.close();
      throw error;
    }
  }

  /** The owner's credentials (kernel-reported for a socket; this process in-process). */
  get ownerCredentials(): Credentials {
    return this.#channel.peer;
  }

  /** Whether the client is closed or disconnected. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Why the connection ended, once it has. */
  get closeReason(): Error | undefined {
    return this.#closeError;
  }

  /**
   * Subscribe to a region: resolves once its current locator is mapped.
   * Subscribing again to the same endpoint (even while the first subscribe
   * is still waiting) gives the same subscription; asking for a different
   * `notifyWrites` than it has is an error (close it first). `signal` stops
   * this caller's wait; when every caller gave up, the owner is told to
   * drop the subscription.
   */
  async subscribe(endpoint: string, options: SubscribeOptions = {}): Promise<Subscription> {
    checkName(endpoint, "endpoint");
    options.signal?.throwIfAborted();
    const notifyWrites = options.notifyWrites ?? true;
    const sameNotify = (has: boolean): void => {
      if (has !== notifyWrites) throw new QbunArgumentError(`already subscribed to ${endpoint} with notifyWrites ${has}: close that subscription before asking for notifyWrites ${notifyWrites}`);
    };
    const existing = this.#subscriptions.get(endpoint);
    if (existing && !existing.closed && !this.#subscribing.has(endpoint)) {
      sameNotify(existing.notifyWrites);
      return existing;
    }
    let pending = this.#subscribing.get(endpoint);
    if (pending) sameNotify(pending.notifyWrites);
    else pending = this.#startSubscribe(endpoint, notifyWrites);
    const entry = pending;
    entry.callers++;
    try {
      return await untilAborted(entry.promise, options.signal);
    } catch (error) {
      if (options.signal?.aborted && error === options.signal.reason) entry.callers--; // gave up; the last one out unsubscribes
      throw error;
    }
  }

  #startSubscribe(endpoint: string, notifyWrites: boolean): { notifyWrites: boolean; callers: number; promise: Promise<Subscription> } {
    const subscription = new Subscription(CONSTRUCT, this, endpoint, notifyWrites);
    this.#subscriptions.set(endpoint, subscription); // the locator arrives before the reply
    const entry = { notifyWrites, callers: 0, promise: undefined as unknown as Promise<Subscription> };
    const settled = (): void => {
      if (this.#subscribing.get(endpoint) === entry) this.#subscribing.delete(endpoint);
    };
    entry.promise = this[kRequest](FrameType.SUBSCRIBE, { endpoint, notifyWrites }).then(
      () => {
        settled();
        if (!subscription.view && !subscription.closed) {
          // The owner sends the locator before its reply; a reply alone is a broken owner.
          const broken = new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `the owner answered the subscribe to ${endpoint} without a locator`);
          this.#end(broken);
          this.#channel.close();
          throw broken;
        }
        if (entry.callers === 0) {
          // Everyone gave up while the owner was answering: do not stay subscribed (locators, notices) for nobody.
          subscription.close();
          throw new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `subscribe to ${endpoint} was abandoned`);
        }
        return subscription;
      },
      (error: unknown) => {
        settled();
        if (this.#subscriptions.get(endpoint) === subscription) this.#subscriptions.delete(endpoint);
        const failure = error instanceof Error ? error : new Error(String(error));
        subscription[kEnd](failure);
        throw failure;
      },
    );
    entry.promise.catch(() => {}); // callers that gave up do not see it: no unhandled rejection
    this.#subscribing.set(endpoint, entry);
    return entry;
  }

  /** A subscription closed itself. */
  [kUnsubscribed](subscription: Subscription): void {
    if (this.#subscriptions.get(subscription.endpoint) !== subscription) return;
    this.#subscriptions.delete(subscription.endpoint);
    if (!this.#closed) this[kRequest](FrameType.UNSUBSCRIBE, { endpoint: subscription.endpoint }).catch(() => {});
  }

  /**
   * Acquire an exclusive lease on `leaseClass`. With `wait` (default) the
   * promise waits its turn (first come, first served) until granted,
   * `timeoutMs`, or `signal`; without, it fails at once with
   * `ERR_QBUN_LEASE_BUSY` if held. A grant that crosses a cancellation is
   * released automatically.
   */
  async acquire(leaseClass: string, options: AcquireOptions): Promise<Lease> {
    checkName(leaseClass, "lease class");
    if (!Number.isSafeInteger(options.ttlMs) || options.ttlMs < 1) throw new QbunArgumentError(`ttlMs must be a positive integer, got ${options.ttlMs}`);
    const signals = [options.signal, options.timeoutMs !== undefined ? AbortSignal.timeout(options.timeoutMs) : undefined].filter((s) => s !== undefined);
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    const reply = await this[kRequest](FrameType.ACQUIRE, { leaseClass, ttlMs: options.ttlMs, wait: options.wait ?? true }, signal, leaseClass);
    const body = parseJson(FrameType.REPLY, reply.body);
    if (body.token === undefined || body.ttlMs === undefined) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "the owner granted a lease without a token");
    return this.#adopt(leaseClass, body.token, body.ttlMs);
  }

  #adopt(leaseClass: string, token: number, ttlMs: number): Lease {
    const lease = new Lease(CONSTRUCT, this, leaseClass, token, ttlMs);
    this.#leases.get(leaseClass)?.[kMarkLost]("revoked");
    this.#leases.set(leaseClass, lease);
    return lease;
  }

  /**
   * Ask the owner to write `bytes` at `offset` of `endpoint`. Accepted only
   * while this client holds the write lease with `token`, and only inside
   * the region; the owner applies it atomically for readers and answers
   * with the new sequence. With `options.epoch`, it is refused
   * (`ERR_QBUN_LEASE_STALE_EPOCH`) unless the region is still at that epoch.
   */
  async write(endpoint: string, offset: number, bytes: Uint8Array, token: number, options: WriteOptions = {}): Promise<WriteAck> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new QbunArgumentError(`offset must be a non-negative integer, got ${offset}`);
    if (!Number.isSafeInteger(token) || token < 0) throw new QbunArgumentError(`token must be a non-negative integer, got ${token}`);
    const epoch = options.epoch ?? 0;
    if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new QbunArgumentError(`epoch must be an integer from 0 to 2^32-1, got ${epoch}`);
    if (!(bytes instanceof Uint8Array)) throw new QbunArgumentError("bytes must be a Uint8Array");
    if (bytes.length > MAX_WRITE_BYTES) throw new QbunArgumentError(`a write carries at most ${MAX_WRITE_BYTES} bytes, got ${bytes.length}: split it (each part is atomic on its own)`);
    let name = this.#names.get(endpoint);
    if (!name) {
      checkName(endpoint, "endpoint");
      this.#names.set(endpoint, (name = nameBytes(endpoint)));
    }
    const id = this.#newRequest();
    const reply = await this.#exchange(id, encodeWrite(id, name, offset, token, epoch, bytes));
    if (reply.type !== FrameType.ACK) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `expected an ACK, got frame type ${reply.type}`);
    return decodeAck(reply.body);
  }

  /**
   * Call `listener` for every lease announcement on the classes the owner's
   * policy lets this client lease; returns a function that removes it.
   */
  onLeaseEvent(listener: Listener<LeaseEvent>): () => void {
    this.#leaseListeners.add(listener);
    return () => this.#leaseListeners.delete(listener);
  }

  #newRequest(): number {
    const id = this.#nextRequest;
    this.#nextRequest = id >= 0xfffffffe ? 1 : id + 1;
    return id;
  }

  /** Send a JSON request and wait for its REPLY (an ERROR rejects). */
  [kRequest]<T extends RequestType>(
    type: T,
    body: BodyOf<T>,
    signal?: AbortSignal,
    leaseClass?: string,
  ): Promise<{ type: number; body: Uint8Array }> {
    const id = this.#newRequest();
    return this.#exchange(id, encodeJson(type, id, body), signal, leaseClass);
  }

  #exchange(id: number, frame: Uint8Array, signal?: AbortSignal, leaseClass?: string): Promise<{ type: number; body: Uint8Array }> {
    if (this.#closed) return Promise.reject(this.#closeError ?? new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the client is closed"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        // Tell the owner to drop the queued acquire; a grant already on its way is released on arrival.
        pending.abandoned = true;
        if (!this.#closed && leaseClass !== undefined) {
          try {
            this.#channel.send(encodeJson(FrameType.CANCEL, 0, { requestId: id }));
          } catch {
            // disconnected meanwhile: nothing to cancel
          }
        }
        reject(signal!.reason);
      };
      const pending: Pending = {
        resolve: (value) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(value);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
        ...(leaseClass !== undefined ? { leaseClass } : {}),
      };
      this.#pending.set(id, pending);
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        this.#channel.send(frame);
      } catch (error) {
        this.#pending.delete(id);
        pending.reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  #onFrame(bytes: Uint8Array, fds: OwnedFd[]): void {
    try {
      const frame = decodeFrame(bytes);
      const expectedFds = frame.type === FrameType.LOCATOR ? 1 : 0;
      if (fds.length !== expectedFds) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `frame type ${frame.type} came with ${fds.length} fds, expected ${expectedFds}`);
      switch (frame.type) {
        case FrameType.REPLY:
        case FrameType.ACK:
        case FrameType.ERROR:
          return this.#onAnswer(frame);
        case FrameType.LOCATOR: {
          const locator = decodeLocator(frame.body);
          const fd = fds.shift();
          if (!fd) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "a locator arrived without its fd");
          const subscription = this.#subscriptions.get(locator.endpoint);
          if (subscription) subscription[kAttach](locator, fd);
          else fd.close(); // unsubscribed meanwhile
          return;
        }
        case FrameType.EPOCH_INVALID: {
          const body = parseJson(FrameType.EPOCH_INVALID, frame.body);
          const subscription = this.#subscriptions.get(body.endpoint);
          subscription?.[kInvalidate](body.epoch);
          if (subscription && body.next === 0) {
            this.#subscriptions.delete(body.endpoint);
            subscription[kEnd](new LeaseError("ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `the owner stopped serving ${body.endpoint}`));
          }
          return;
        }
        case FrameType.WRITTEN: {
          const event = decodeWritten(frame.body);
          this.#subscriptions.get(event.endpoint)?.[kWritten](event);
          return;
        }
        case FrameType.LEASE_EVENT: {
          const event = parseJson(FrameType.LEASE_EVENT, frame.body);
          const mine = this.#leases.get(event.leaseClass);
          if (mine && mine.token === event.token && event.event !== "granted") {
            this.#leases.delete(event.leaseClass);
            mine[kMarkLost](event.event);
          }
          emit(this.#leaseListeners, event);
          return;
        }
        default:
          throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `unknown frame type ${frame.type} from the owner`);
      }
    } catch (error) {
      // An owner that breaks the protocol (or a region we cannot map) ends this client. (Listeners' errors never get here.)
      this.#end(error instanceof Error ? error : new Error(String(error)));
      this.#channel.close();
    } finally {
      for (const fd of fds) fd.close();
    }
  }

  #onAnswer(frame: { type: number; requestId: number; body: Uint8Array }): void {
    const pending = this.#pending.get(frame.requestId);
    if (!pending) return; // answer to a request nobody waits for (e.g. a cancelled one)
    this.#pending.delete(frame.requestId);
    if (frame.type === FrameType.ERROR) {
      const body = parseJson(FrameType.ERROR, frame.body);
      pending.reject(new LeaseError(isLeaseErrorCode(body.code) ? body.code : "ERR_QBUN_LEASE_PROTOCOL", body.message));
      return;
    }
    if (pending.abandoned && pending.leaseClass !== undefined && frame.type === FrameType.REPLY) {
      // A grant that crossed our cancel: give it back at once.
      const body = parseJson(FrameType.REPLY, frame.body);
      if (body.token !== undefined) this[kRequest](FrameType.RELEASE, { leaseClass: pending.leaseClass, token: body.token }).catch(() => {});
      return;
    }
    pending.resolve(frame);
  }

  #end(error: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error;
    const gone = error instanceof LeaseError ? error : new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `disconnected from the owner: ${error.message}`);
    for (const pending of this.#pending.values()) pending.reject(gone);
    this.#pending.clear();
    for (const subscription of this.#subscriptions.values()) subscription[kEnd](gone);
    this.#subscriptions.clear();
    for (const lease of this.#leases.values()) lease[kMarkLost]("revoked");
    this.#leases.clear();
  }

  /** Disconnect: the owner revokes this client's leases at once; subscriptions are unmapped. Idempotent. */
  close(): void {
    this.#end(new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the client is closed"));
    this.#channel.close();
  }

  /** Same as {@link LeaseClient.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link LeaseClient.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

/** `promise`, or the signal's reason as soon as it aborts (the promise itself carries on). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** A timer wait that an abort cuts short. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
