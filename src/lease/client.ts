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
import { decodeLocator, isValidName, type Locator } from "./locator.ts";
import {
  decodeAck, decodeFrame, decodeWritten, encodeJson, encodeWrite, FrameType, MAX_WRITE_BYTES, nameBytes, parseJson,
  type BodyOf, type WrittenEvent,
} from "./protocol.ts";
import { RegionView, type ConsistentRead, type ReadConsistentOptions } from "./region.ts";
import { SeqpacketChannel, type Channel } from "./transport.ts";

export type { WrittenEvent } from "./protocol.ts";

/** A lease announcement: every client hears of every grant and end. */
export interface LeaseEvent {
  readonly leaseClass: string;
  /** `granted`, or why it ended: `released`, `expired`, `revoked` (holder disconnected). */
  readonly event: "granted" | "released" | "expired" | "revoked";
  readonly token: number;
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
type RequestType = typeof FrameType.SUBSCRIBE | typeof FrameType.UNSUBSCRIBE | typeof FrameType.ACQUIRE | typeof FrameType.RENEW | typeof FrameType.RELEASE;

/**
 * A granted lease. Keep it alive with {@link Lease.renew}; pass
 * {@link Lease.token} with every write. `lost` turns true (and `onLost`
 * fires) when the owner announces its end.
 */
export class Lease implements AsyncDisposable {
  readonly leaseClass: string;
  /** The fencing token of this grant. */
  readonly token: number;
  #ttlMs: number;
  #expiresAt: number;
  #lost: LeaseEvent["event"] | undefined;
  readonly #client: LeaseClient;
  readonly #onLost = new Set<Listener<LeaseEvent["event"]>>();

  /** @internal */
  constructor(client: LeaseClient, leaseClass: string, token: number, ttlMs: number) {
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

  /** @internal */
  markLost(reason: LeaseEvent["event"]): void {
    if (this.#lost) return;
    this.#lost = reason;
    for (const listener of this.#onLost) listener(reason);
  }

  /** Extend the lease by `ttlMs` (default: the granted TTL) from now. Fails if it already ended. */
  async renew(ttlMs = this.#ttlMs): Promise<void> {
    const reply = await this.#client.request(FrameType.RENEW, { leaseClass: this.leaseClass, token: this.token, ttlMs });
    const body = parseJson(FrameType.REPLY, reply.body);
    this.#ttlMs = body.ttlMs ?? ttlMs;
    this.#expiresAt = Date.now() + this.#ttlMs;
  }

  /** Give the lease back. Resolves quietly if it had already ended. */
  async release(): Promise<void> {
    if (this.#lost || this.#client.closed) return;
    try {
      await this.#client.request(FrameType.RELEASE, { leaseClass: this.leaseClass, token: this.token });
      this.markLost("released");
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
  readonly endpoint: string;
  #view: RegionView | undefined;
  #closed = false;
  #lastWrite: WrittenEvent | undefined;
  readonly #client: LeaseClient;
  readonly #onEpoch = new Set<Listener<number>>();
  readonly #onInvalid = new Set<Listener<number>>();
  readonly #onWrite = new Set<Listener<WrittenEvent>>();
  #writeWaiters: Array<{ resolve(event: WrittenEvent): void; reject(error: Error): void }> = [];
  #epochWaiters: Array<{ resolve(): void; reject(error: Error): void }> = [];

  /** @internal */
  constructor(client: LeaseClient, endpoint: string) {
    this.#client = client;
    this.endpoint = endpoint;
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
   * between epochs.
   */
  readConsistent(offset?: number, length?: number, options?: ReadConsistentOptions): ConsistentRead {
    const view = this.#view;
    if (!view) throw new LeaseError(this.#closed ? "ERR_QBUN_LEASE_DISCONNECTED" : "ERR_QBUN_LEASE_STALE_EPOCH", `${this.endpoint}: no current epoch${this.#closed ? " (subscription closed)" : " (waiting for the new locator)"}`);
    return view.readConsistent(offset, length, options);
  }

  /**
   * A consistent read that rides out epoch changes and write contention:
   * on a stale epoch it waits for the new locator, on contention for the
   * next write notification (or a short timer when notifications are off).
   * `offset`/`length` default to the whole region of whichever epoch is read.
   */
  async read(offset?: number, length?: number, options: { signal?: AbortSignal } = {}): Promise<ConsistentRead> {
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        return this.readConsistent(offset, length);
      } catch (error) {
        if (!(error instanceof LeaseError)) throw error;
        if (error.code === "ERR_QBUN_LEASE_STALE_EPOCH") await this.nextEpoch(options);
        else if (error.code === "ERR_QBUN_LEASE_CONTENDED") await (this.#client.notifies(this.endpoint) ? this.nextWrite(options) : Bun.sleep(1));
        else throw error;
      }
    }
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

  /** @internal a locator and its fd arrived (takes the fd). */
  attach(locator: Locator, fd: OwnedFd): void {
    if (this.#closed) {
      fd.close();
      return;
    }
    const view = RegionView.attach(locator, fd);
    this.#view?.close();
    this.#view = view;
    for (const listener of this.#onEpoch) listener(locator.epoch);
    const waiters = this.#epochWaiters;
    this.#epochWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /** @internal the owner invalidated `epoch`. */
  invalidate(epoch: number): void {
    if (this.#view && this.#view.epoch === epoch) {
      this.#view.close();
      this.#view = undefined;
    }
    for (const listener of this.#onInvalid) listener(epoch);
  }

  /** @internal */
  written(event: WrittenEvent): void {
    this.#lastWrite = event;
    for (const listener of this.#onWrite) listener(event);
    const waiters = this.#writeWaiters;
    this.#writeWaiters = [];
    for (const waiter of waiters) waiter.resolve(event);
  }

  /** @internal end locally (client closed or unsubscribed). */
  end(error: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#view?.close();
    this.#view = undefined;
    for (const waiter of [...this.#writeWaiters, ...this.#epochWaiters]) waiter.reject(error);
    this.#writeWaiters = [];
    this.#epochWaiters = [];
  }

  /** Stop receiving this region: unmaps it and tells the owner. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.end(new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `subscription to ${this.endpoint} is closed`));
    this.#client.unsubscribed(this);
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
  readonly #notify = new Map<string, boolean>();
  readonly #leases = new Map<string, Lease>();
  readonly #leaseListeners = new Set<Listener<LeaseEvent>>();
  readonly #names = new Map<string, Uint8Array>();
  #nextRequest = 1;
  #closed = false;
  #closeError: Error | undefined;

  /** @internal use {@link LeaseClient.connect} or `LeaseOwner.connect()` */
  constructor(channel: Channel) {
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
      return new LeaseClient(new SeqpacketChannel(socket));
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
   * Subscribing again to the same endpoint returns the same subscription.
   */
  async subscribe(endpoint: string, options: SubscribeOptions = {}): Promise<Subscription> {
    checkName(endpoint, "endpoint");
    const existing = this.#subscriptions.get(endpoint);
    if (existing && !existing.closed) return existing;
    const subscription = new Subscription(this, endpoint);
    this.#subscriptions.set(endpoint, subscription);
    this.#notify.set(endpoint, options.notifyWrites ?? true);
    try {
      await this.request(FrameType.SUBSCRIBE, { endpoint, notifyWrites: options.notifyWrites ?? true }, options.signal);
    } catch (error) {
      if (this.#subscriptions.get(endpoint) === subscription) this.#subscriptions.delete(endpoint);
      subscription.end(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    return subscription;
  }

  /** @internal whether write notifications were asked for on `endpoint`. */
  notifies(endpoint: string): boolean {
    return this.#notify.get(endpoint) ?? false;
  }

  /** @internal a subscription closed itself. */
  unsubscribed(subscription: Subscription): void {
    if (this.#subscriptions.get(subscription.endpoint) !== subscription) return;
    this.#subscriptions.delete(subscription.endpoint);
    if (!this.#closed) this.request(FrameType.UNSUBSCRIBE, { endpoint: subscription.endpoint }).catch(() => {});
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
    const reply = await this.request(FrameType.ACQUIRE, { leaseClass, ttlMs: options.ttlMs, wait: options.wait ?? true }, signal, leaseClass);
    const body = parseJson(FrameType.REPLY, reply.body);
    if (body.token === undefined || body.ttlMs === undefined) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "the owner granted a lease without a token");
    return this.#adopt(leaseClass, body.token, body.ttlMs);
  }

  #adopt(leaseClass: string, token: number, ttlMs: number): Lease {
    const lease = new Lease(this, leaseClass, token, ttlMs);
    this.#leases.get(leaseClass)?.markLost("revoked");
    this.#leases.set(leaseClass, lease);
    return lease;
  }

  /**
   * Ask the owner to write `bytes` at `offset` of `endpoint`. Accepted only
   * while this client holds the write lease with `token`, and only inside
   * the region; the owner applies it atomically for readers and answers
   * with the new sequence.
   */
  async write(endpoint: string, offset: number, bytes: Uint8Array, token: number): Promise<WriteAck> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new QbunArgumentError(`offset must be a non-negative integer, got ${offset}`);
    if (!Number.isSafeInteger(token) || token < 0) throw new QbunArgumentError(`token must be a non-negative integer, got ${token}`);
    if (!(bytes instanceof Uint8Array)) throw new QbunArgumentError("bytes must be a Uint8Array");
    if (bytes.length > MAX_WRITE_BYTES) throw new QbunArgumentError(`a write carries at most ${MAX_WRITE_BYTES} bytes, got ${bytes.length}: split it (each part is atomic on its own)`);
    let name = this.#names.get(endpoint);
    if (!name) {
      checkName(endpoint, "endpoint");
      this.#names.set(endpoint, (name = nameBytes(endpoint)));
    }
    const id = this.#newRequest();
    const reply = await this.#exchange(id, encodeWrite(id, name, offset, token, bytes));
    if (reply.type !== FrameType.ACK) throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `expected an ACK, got frame type ${reply.type}`);
    return decodeAck(reply.body);
  }

  /** Call `listener` for every lease announcement; returns a function that removes it. */
  onLeaseEvent(listener: Listener<LeaseEvent>): () => void {
    this.#leaseListeners.add(listener);
    return () => this.#leaseListeners.delete(listener);
  }

  #newRequest(): number {
    const id = this.#nextRequest;
    this.#nextRequest = id >= 0xfffffffe ? 1 : id + 1;
    return id;
  }

  /** @internal send a JSON request and wait for its REPLY (an ERROR rejects). */
  request<T extends RequestType>(
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
        if (!this.#closed) {
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
          if (subscription) subscription.attach(locator, fd);
          else fd.close(); // unsubscribed meanwhile
          return;
        }
        case FrameType.EPOCH_INVALID: {
          const body = parseJson(FrameType.EPOCH_INVALID, frame.body);
          const subscription = this.#subscriptions.get(body.endpoint);
          subscription?.invalidate(body.epoch);
          if (subscription && body.next === 0) {
            this.#subscriptions.delete(body.endpoint);
            subscription.end(new LeaseError("ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `the owner stopped serving ${body.endpoint}`));
          }
          return;
        }
        case FrameType.WRITTEN: {
          const event = decodeWritten(frame.body);
          this.#subscriptions.get(event.endpoint)?.written(event);
          return;
        }
        case FrameType.LEASE_EVENT: {
          const event = parseJson(FrameType.LEASE_EVENT, frame.body);
          const mine = this.#leases.get(event.leaseClass);
          if (mine && mine.token === event.token && event.event !== "granted") {
            this.#leases.delete(event.leaseClass);
            mine.markLost(event.event);
          }
          for (const listener of this.#leaseListeners) listener(event);
          return;
        }
        default:
          throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `unknown frame type ${frame.type} from the owner`);
      }
    } catch (error) {
      // An owner that breaks the protocol (or a region we cannot map) ends this client.
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
      if (body.token !== undefined) this.request(FrameType.RELEASE, { leaseClass: pending.leaseClass, token: body.token }).catch(() => {});
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
    for (const subscription of this.#subscriptions.values()) subscription.end(gone);
    this.#subscriptions.clear();
    for (const lease of this.#leases.values()) lease.markLost("revoked");
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

function checkName(name: string, what: string): void {
  if (!isValidName(name)) throw new QbunArgumentError(`invalid ${what} ${JSON.stringify(name)}: use 1-128 of A-Z a-z 0-9 . _ : @ / -`);
}
