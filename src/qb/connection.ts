/**
 * One established libqb connection on the server: reads requests from its
 * transport, runs the application's handler, writes responses in request
 * order, sends events, applies flow control and keeps statistics.
 * @module
 */
import type { UnixStream } from "../unix/index.ts";
import { RingCorruptError } from "./ring.ts";
import { type IncomingMessage, PeerGoneError, type ServerTransport } from "./transport.ts";
import { int32At, MessageId, putResponseHeader, REQUEST_HEADER_SIZE, RESPONSE_HEADER_SIZE } from "./wire.ts";

/** Access granted to a client by the application's `authenticate`. */
export type AccessLevel = "read-write" | "read-only";

/** Who is on the other end, from the kernel (SCM_CREDENTIALS at connect). */
export interface ConnectionInfo {
  /** Server-unique connection number. */
  readonly id: number;
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  readonly access: AccessLevel;
  /** `shm` or `socket`. */
  readonly transport: "shm" | "socket";
  /** Negotiated largest message, header included. */
  readonly maxMessageSize: number;
}

/** A request as the handler sees it. */
export interface QbRequest {
  /** The request header's id. */
  readonly id: number;
  /** The bytes after the 16-byte request header. */
  readonly payload: Uint8Array;
  readonly connection: QbConnection;
  /** Aborted when the client disconnects or the server stops. */
  readonly signal: AbortSignal;
}

/** What a handler answers: error (0 or -errno) and payload; id defaults to the request's. */
export interface QbReply {
  error?: number;
  data?: Uint8Array | readonly Uint8Array[];
  id?: number;
}

/** A request handler. Throwing (or rejecting) answers -EIO and reports the error. */
export type QbHandler = (request: QbRequest) => QbReply | Promise<QbReply>;

/** Per-connection statistics (libqb's `qb_ipcs_connection_stats_2`, plus bytes). */
export interface ConnectionStats {
  readonly pid: number;
  readonly uid: number;
  readonly requests: number;
  readonly responses: number;
  readonly events: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Writes retried because the client's ring or socket was full. */
  readonly sendRetries: number;
  readonly flowControlState: number;
  readonly flowControlCount: number;
  /** Events written that the client has not read yet. */
  readonly eventQueueLength: number;
  /** Responses and events waiting for room (not yet written). */
  readonly queued: number;
  /** Requests being handled. */
  readonly inFlight: number;
}

/** The connection's queue of outgoing messages reached its bound. */
export class QueueFullError extends Error {
  /** Always `"ERR_QBUN_QUEUE_FULL"`. */
  readonly code = "ERR_QBUN_QUEUE_FULL";
  constructor(bound: number) {
    super(`the connection's outgoing queue holds ${bound} messages already (its bound): the client is not reading`);
    this.name = "QueueFullError";
  }
}

/** Server-wide settings a connection follows. @internal */
export interface ConnectionPolicy {
  handler: QbHandler;
  /** Requests handled per wake-up before yielding to other connections. */
  batch: number;
  /** In-flight requests at which flow control closes (reopens at half). */
  flowControlHighWater: number;
  /** Most responses + events queued per connection. */
  maxQueued: number;
  /** Hand handlers the request bytes in place (valid during the synchronous part only). */
  zeroCopy: boolean;
  /**
   * Resolves at the server's next round: every connection that yields
   * during one turn of the event loop goes on together in the next.
   */
  nextRound(): Promise<void>;
  onError(error: unknown, connection: QbConnection): void;
}

/** A response or event waiting to be written; its header is built at write time. */
interface Outgoing {
  kind: "response" | "event";
  id: number;
  error: number;
  /** Header included. */
  size: number;
  data: Uint8Array[];
}

/** A request being handled; `item` once its reply is known. */
interface PendingResponse {
  item?: Outgoing;
}

const EIO = 5;
const EMSGSIZE = 90;
const EBADMSG = 74;

/**
 * A connected client. Created by the server after a successful handshake.
 */
export class QbConnection {
  /** Identity and negotiated parameters. */
  readonly info: ConnectionInfo;
  readonly #transport: ServerTransport;
  readonly #setup: UnixStream;
  readonly #policy: ConnectionPolicy;
  readonly #onClosed: (connection: QbConnection, reason: unknown) => void;
  readonly #abort = new AbortController();
  /** Responses in request order; the head is written first. */
  readonly #pending: PendingResponse[] = [];
  /** Responses and events ready to write, in order. */
  readonly #outgoing: Outgoing[] = [];
  #flushing = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #retryDelay = 0;
  #flowControl = 0;
  #closed = false;
  #stats = { requests: 0, responses: 0, events: 0, bytesIn: 0, bytesOut: 0, sendRetries: 0, flowControlCount: 0 };

  /** @internal */
  constructor(
    info: ConnectionInfo,
    transport: ServerTransport,
    setup: UnixStream,
    policy: ConnectionPolicy,
    onClosed: (connection: QbConnection, reason: unknown) => void,
  ) {
    this.info = info;
    this.#transport = transport;
    this.#setup = setup;
    this.#policy = policy;
    this.#onClosed = onClosed;
    this.#budget = policy.batch;
  }

  /** Aborted when the connection ends. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** @internal run until the client leaves or the connection is closed. */
  async run(): Promise<void> {
    const signal = this.#abort.signal;
    try {
      for (;;) {
        const taken = this.#stats.requests;
        // Synchronous while requests are there: no promise per request.
        if (this.#pump()) {
          await this.#policy.nextRound(); // the turn's budget is spent: let other connections, and I/O, run
          this.#budget = this.#policy.batch;
          continue;
        }
        if (this.#closed) return;
        // Flow control closed: requests may be queued but are not taken, so
        // waiting for requests would return at once, again and again.
        if (this.#flowControl !== 0) {
          await (this.#reopen ??= Promise.withResolvers<void>()).promise;
          this.#budget = this.#policy.batch;
          continue;
        }
        // A wake-up that found nothing counts too, so that a peer sending
        // wake-ups without requests cannot keep this loop from yielding.
        if (this.#stats.requests === taken) this.#budget--;
        const waiting = this.#transport.waitForRequests(signal);
        if (waiting !== undefined) {
          await waiting;
          this.#budget = this.#policy.batch;
        }
      }
    } catch (error) {
      this.#end(error);
    }
  }

  /** End on an error from reading: a client that left is a normal end, not an error. */
  #end(error: unknown): void {
    if (!this.#closed) this.close(error instanceof PeerGoneError ? undefined : error);
  }

  /**
   * Requests this connection may still take before it yields to the event
   * loop: libqb's `batch` per wake-up (5 with the default rate limit). It is
   * renewed only by a yield or a real wait, so a client whose next request
   * is always there already (it runs while the server is preempted) still
   * takes turns with the other connections.
   */
  #budget: number;

  /**
   * Handle what is ready, within the budget (only the run loop calls this).
   * True when the budget ran out, so more may be waiting after a yield;
   * false when the requests ran out or flow control stopped them.
   */
  #pump(): boolean {
    // The batch's responses become visible together: a client waiting for
    // them wakes once per batch, not once per response (each wake-up is a
    // futex syscall here and a context switch there).
    this.#transport.holdResponses();
    try {
      while (!this.#closed && this.#flowControl === 0) {
        if (this.#budget <= 0) return true;
        // No await between taking a ring chunk and releasing it (SHM answers synchronously).
        const message = this.#transport.take();
        if (message === null) return false;
        this.#budget--;
        this.#dispatch(message);
      }
      return false;
    } finally {
      this.#transport.releaseResponses();
    }
  }

  /** Settled when flow control reopens (or the connection closes), for a run loop waiting on it. */
  #reopen: PromiseWithResolvers<void> | undefined;

  #dispatch(message: IncomingMessage): void {
    const { bytes, start, length } = message;
    if (length < REQUEST_HEADER_SIZE) {
      message.release();
      throw new RingCorruptError(this.#transport.names.request, `a ${length}-byte request has no room for its header`);
    }
    const id = int32At(bytes, start);
    const size = int32At(bytes, start + 8);
    this.#stats.requests++;
    this.#stats.bytesIn += length;
    if (id === MessageId.DISCONNECT) {
      message.release();
      this.close();
      return;
    }
    const slot: PendingResponse = {};
    this.#pending.push(slot);
    this.#updateFlowControl();
    // Refusals keep the connection usable: answer with an error.
    if (length > this.info.maxMessageSize) {
      message.release();
      this.#complete(slot, id, { error: -EMSGSIZE }, false);
      return;
    }
    if (size < REQUEST_HEADER_SIZE || size > length) {
      message.release();
      this.#complete(slot, id, { error: -EBADMSG }, false);
      return;
    }
    const inPlace = message.inPlace && this.#policy.zeroCopy;
    const payload = inPlace || !message.inPlace
      ? bytes.subarray(start + REQUEST_HEADER_SIZE, start + size)
      : bytes.slice(start + REQUEST_HEADER_SIZE, start + size);
    let result: QbReply | Promise<QbReply>;
    try {
      result = this.#policy.handler({ id, payload, connection: this, signal: this.#abort.signal });
    } catch (error) {
      this.#policy.onError(error, this);
      result = { error: -EIO };
    }
    if (result instanceof Promise) {
      message.release();
      result.then(
        (reply) => this.#complete(slot, id, reply, false),
        (error) => {
          this.#policy.onError(error, this);
          this.#complete(slot, id, { error: -EIO }, false);
        },
      );
      return;
    }
    // A synchronous reply may point into the request ring: write it before
    // reclaiming, but let the client see it only after the reclaim, or a
    // client sending its next request at once could find the ring still full.
    this.#transport.holdResponses();
    try {
      this.#complete(slot, id, result, inPlace);
    } finally {
      message.release();
      this.#transport.releaseResponses();
    }
  }

  /** Record a handler's reply; responses leave in request order. */
  #complete(slot: PendingResponse, requestId: number, reply: QbReply, mayAliasRing: boolean): void {
    if (this.#closed) return;
    const data = reply.data === undefined ? [] : reply.data instanceof Uint8Array ? [reply.data] : [...reply.data];
    let size = RESPONSE_HEADER_SIZE;
    for (const part of data) size += part.byteLength;
    let error = reply.error ?? 0;
    if (size > this.info.maxMessageSize) {
      this.#policy.onError(
        new RangeError(`response of ${size} bytes to request ${requestId} exceeds the connection's ${this.info.maxMessageSize}-byte maximum; answered -EMSGSIZE`),
        this,
      );
      data.length = 0;
      size = RESPONSE_HEADER_SIZE;
      error = -EMSGSIZE;
    }
    const item: Outgoing = { kind: "response", id: reply.id ?? requestId, error, size, data };
    slot.item = item;
    while (this.#pending.length > 0 && this.#pending[0]!.item) this.#outgoing.push(this.#pending.shift()!.item!);
    this.#flush();
    // A reply that could not be written now must not keep pointing into the ring.
    if (mayAliasRing && data.length > 0 && (this.#pending.includes(slot) || this.#outgoing.includes(item))) {
      item.data = data.map((part) => part.slice());
    }
    this.#updateFlowControl();
  }

  /**
   * Send an event to this client (libqb's `qb_ipcs_event_send`): header id
   * `id`, then `data`. Events reach the client in the order sent and before
   * the response to the request being handled when they were sent. When the
   * client's event ring is full the event waits in the connection's queue;
   * throws {@link QueueFullError} at the queue's bound, RangeError above the
   * negotiated size.
   */
  sendEvent(id: number, data: Uint8Array | readonly Uint8Array[] = []): void {
    if (this.#closed) throw new Error(`connection ${this.info.id} is closed`);
    const parts = data instanceof Uint8Array ? [data] : [...data];
    let size = RESPONSE_HEADER_SIZE;
    for (const part of parts) size += part.byteLength;
    if (size > this.info.maxMessageSize) {
      throw new RangeError(`an event of ${size} bytes exceeds the connection's ${this.info.maxMessageSize}-byte maximum`);
    }
    // Nothing queued ahead of it and a transport that writes synchronously:
    // write it now, straight from the caller's bytes, without a copy.
    const written = this.#outgoing.length === 0 && !this.#flushing && this.#transport.writeEventNow?.(this.#withHeader(id, size, 0, parts));
    this.#headerAndData[1] = this.#header;
    if (written) {
      this.#stats.events++;
      this.#stats.bytesOut += size;
      return;
    }
    if (this.#outgoing.length >= this.#policy.maxQueued) throw new QueueFullError(this.#policy.maxQueued);
    this.#outgoing.push({ kind: "event", id, error: 0, size, data: parts.map((p) => p.slice()) });
    this.#flush();
  }

  /** One reusable header: every write copies it out before the next is built. */
  readonly #header = new Uint8Array(RESPONSE_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);

  /** Reused for the usual one-part reply: transports copy the parts before a write returns. */
  readonly #headerAndData: Uint8Array[] = [this.#header, this.#header];

  #withHeader(id: number, size: number, error: number, data: readonly Uint8Array[]): Uint8Array[] {
    putResponseHeader(this.#headerView, 0, id, size, error);
    if (data.length !== 1) return [this.#header, ...data];
    this.#headerAndData[1] = data[0]!;
    return this.#headerAndData;
  }

  /**
   * Write what is queued, in order, until something does not fit.
   * Synchronous while the transport writes synchronously (SHM); an
   * asynchronous write (socket) finishes in #finishWrite and flushes on.
   */
  #flush(): void {
    if (this.#flushing || this.#closed) return;
    this.#flushing = true;
    let async = false;
    try {
      while (this.#outgoing.length > 0 && !this.#closed) {
        const item = this.#outgoing[0]!;
        const parts = this.#withHeader(item.id, item.size, item.error, item.data);
        const result = item.kind === "response" ? this.#transport.writeResponse(parts) : this.#transport.writeEvent(parts);
        this.#headerAndData[1] = this.#header; // keep no reply alive
        if (typeof result !== "boolean") {
          async = true;
          void this.#finishWrite(item, result);
          return;
        }
        if (!result) {
          this.#stats.sendRetries++;
          this.#scheduleRetry();
          return;
        }
        this.#written(item);
      }
      this.#afterFlush();
    } catch (error) {
      this.close(error);
    } finally {
      if (!async) this.#flushing = false;
    }
  }

  async #finishWrite(item: Outgoing, result: Promise<boolean>): Promise<void> {
    try {
      if (await result) this.#written(item);
      else {
        this.#stats.sendRetries++;
        this.#scheduleRetry();
        return;
      }
    } catch (error) {
      this.close(error);
      return;
    } finally {
      this.#flushing = false;
    }
    if (this.#outgoing.length > 0) this.#flush();
    else this.#afterFlush();
  }

  #written(item: Outgoing): void {
    this.#outgoing.shift();
    this.#retryDelay = 0;
    this.#stats.bytesOut += item.size;
    if (item.kind === "response") this.#stats.responses++;
    else this.#stats.events++;
  }

  #afterFlush(): void {
    this.#updateFlowControl();
    if (this.#outgoing.length === 0 && this.#pending.length === 0) this.#notifyIdle();
  }

  #idleWaiters: (() => void)[] = [];

  #notifyIdle(): void {
    if (this.#idleWaiters.length === 0) return; // after every response: no array per call
    for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /**
   * The client frees ring space by reading, which it does not announce: a
   * full ring is retried after a doubling pause (1 … 50 ms) — only while
   * something is waiting — and at every request the client sends.
   */
  #scheduleRetry(): void {
    if (this.#retryTimer || this.#closed) return;
    this.#retryDelay = Math.min(this.#retryDelay * 2 || 1, 50);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#flush();
    }, this.#retryDelay);
  }

  /** Close or reopen libqb's flow control from the number of unanswered requests. */
  #updateFlowControl(): void {
    if (this.#forcedFlowControl !== 0) return;
    const unanswered = this.#pending.length + this.#outgoing.length;
    const high = this.#policy.flowControlHighWater;
    if (this.#flowControl === 0 && unanswered >= high) this.#setFlowControl(1);
    else if (this.#flowControl !== 0 && unanswered <= high / 2) {
      this.#setFlowControl(0);
    }
  }

  /** Flow control imposed by the server's rate limit (0: none). */
  #forcedFlowControl = 0;

  /**
   * @internal The server's rate limit changed. As libqb does, it reaches the
   * connections that exist now ("off": 1, "off2": 2, others: 0).
   */
  forceFlowControl(value: number): void {
    this.#forcedFlowControl = value;
    if (value !== 0) this.#setFlowControl(value);
    else {
      this.#setFlowControl(0);
      this.#updateFlowControl();
    }
  }

  #setFlowControl(value: number): void {
    if (value === this.#flowControl) return;
    this.#flowControl = value;
    this.#stats.flowControlCount++;
    if (!this.#closed) this.#transport.flowControl = value;
    if (value === 0) this.#wakeRunLoop();
  }

  #wakeRunLoop(): void {
    const reopen = this.#reopen;
    this.#reopen = undefined;
    reopen?.resolve();
  }

  /** Current statistics. */
  stats(): ConnectionStats {
    return {
      pid: this.info.pid,
      uid: this.info.uid,
      ...this.#stats,
      flowControlState: this.#flowControl,
      eventQueueLength: this.#transport.unreadEvents,
      queued: this.#outgoing.length,
      inFlight: this.#pending.length,
    };
  }

  /** Wait until every accepted request is answered and written (or the connection ends). */
  async drain(signal?: AbortSignal): Promise<void> {
    while (!this.#closed && (this.#pending.length > 0 || this.#outgoing.length > 0)) {
      signal?.throwIfAborted();
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#idleWaiters.push(resolve);
      const onAbort = () => resolve();
      signal?.addEventListener("abort", onAbort, { once: true });
      await promise;
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * End the connection now: pending handlers see their signal aborted, their
   * replies are dropped, every file and socket of the connection is removed.
   */
  close(reason?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#abort.abort(reason ?? new Error("connection closed"));
    this.#wakeRunLoop();
    this.#notifyIdle();
    this.#transport.close();
    this.#setup.close();
    this.#onClosed(this, reason);
  }
}

