/**
 * A libqb-compatible IPC client: talks to libqb 2.x servers (corosync's
 * cmap/quorum, pacemaker, pmxcfs) and to qbun's own server, as
 * `qb_ipcc_*` does, over shared memory or datagram sockets.
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import { UnixStream, type Credentials } from "../unix/index.ts";
import { RingCorruptError } from "./ring.ts";
import { ShmClientTransport } from "./shm-client-transport.ts";
import { SocketClientTransport } from "./socket-client-transport.ts";
import { libqbAbstract } from "./socket-names.ts";
import { type ClientTransport, PeerGoneError } from "./transport.ts";
import {
  CONNECTION_RESPONSE_SIZE,
  ConnectionType,
  encodeConnectionRequest,
  MIN_MAX_MSG_SIZE,
  parseConnectionResponse,
  putRequestHeader,
  type QbMessage,
  REQUEST_HEADER_SIZE,
  RESPONSE_HEADER_SIZE,
} from "./wire.ts";

/** Options for {@link QbClient.connect}. */
export interface QbClientOptions {
  /** Largest message to negotiate, header included (at least 12328, libqb's minimum). */
  maxMessageSize?: number;
  /** Cancels the connect. */
  signal?: AbortSignal;
  /** Give up on a server that accepts but does not answer after this many ms (default 10 s; libqb waits forever). */
  timeout?: number;
  /** Connect to `<socketDir>/<service>`; default: when `/etc/libqb/force-filesystem-sockets` exists, as libqb. */
  filesystemSocket?: boolean;
  /** Directory for filesystem sockets (default `/tmp`, Debian's libqb SOCKETDIR). */
  socketDir?: string;
}

export type { QbMessage } from "./wire.ts";

/** Options for one request. */
/** Options for {@link QbClient.receive}. */
export interface QbReceiveOptions {
  /** Reject with ETIMEDOUT after this many ms (the response, when it comes, is discarded). */
  timeout?: number;
  /** Cancels the wait (the response, when it comes, is discarded). */
  signal?: AbortSignal;
}

/** Options for one {@link QbClient.request}. */
export interface QbRequestOptions extends QbReceiveOptions {
  /**
   * Receive the response's payload into this buffer when it fits (`data` is
   * then a view of it, valid until you reuse the buffer): large responses
   * then cost one copy, not a fresh allocation each (libqb's `qb_ipcc_recv`
   * takes a buffer too). A larger payload gets a buffer of its own. Not
   * written once the request timed out or was aborted.
   */
  into?: Uint8Array;
}

/** The server closed the connection, or it was closed here. */
export class QbDisconnectedError extends QbunSystemError {
  constructor(service: string, why: string) {
    super(107 /* ENOTCONN */, "qb_ipcc", { address: service, hint: why });
    this.name = "QbDisconnectedError";
  }
}

interface Slot {
  /** request(): settle the caller (send(): none, the response queues for receive()). */
  resolve?(message: QbMessage): void;
  reject?(error: unknown): void;
  /** Where the caller wants the payload (request()'s `into`). */
  into?: Uint8Array;
  /** The caller gave up: drop the response when it comes. */
  abandoned?: boolean;
}

const FORCE_FILESYSTEM_SOCKETS = "/etc/libqb/force-filesystem-sockets";
const EMPTY = new Uint8Array(0);

/** The caller gave up on `slot` (timeout, abort, a failed write): reject it, drop its response when it comes. */
function abandon(slot: Slot, error: unknown): void {
  slot.abandoned = true;
  slot.reject?.(error);
}

/** Events read ahead of an iterator that is not pulling. */
const MAX_QUEUED_EVENTS = 256;
const ETIMEDOUT = 110;
const EMSGSIZE = 90;

/**
 * A connection to a libqb service.
 *
 * ```ts
 * await using client = await QbClient.connect("cmap");
 * const { error, data } = await client.request(1, payload, { timeout: 1000 });
 * for await (const event of client.events()) console.log(event.id, event.data);
 * ```
 */
export class QbClient implements AsyncDisposable {
  /** The service name. */
  readonly service: string;
  /** Negotiated largest message, header included. */
  readonly maxMessageSize: number;
  /** `shm` or `socket`, as the server chose. */
  readonly transport: "shm" | "socket";
  /** The server's pid/uid/gid from SCM_CREDENTIALS (libqb's `qb_ipcc_auth_get`); undefined if none came. */
  readonly server: Credentials | undefined;
  /**
   * Back off while the server's flow-control value is in 1…fcEnableMax
   * (libqb's `qb_ipcc_fc_enable_max_set`; 0 ignores flow control). Default 1.
   */
  fcEnableMax: 0 | 1 | 2 = 1;
  readonly #setup: UnixStream;
  readonly #transport: ClientTransport;
  readonly #slots: Slot[] = [];
  readonly #received: QbMessage[] = [];
  #receiveWaiters: { resolve(message: QbMessage): void; reject(error: unknown): void }[] = [];
  readonly #eventQueue: QbMessage[] = [];
  #eventWaiters: { resolve(result: IteratorResult<QbMessage>): void; reject(error: unknown): void }[] = [];
  readonly #eventListeners = new Set<(event: QbMessage) => void>();
  #reading = false;
  #sendChain: Promise<unknown> = Promise.resolve();
  #failure: Error | undefined;
  #eventsStarted = false;
  #eventQueueDrained: (() => void) | undefined;

  private constructor(service: string, setup: UnixStream, transport: ClientTransport, maxMessageSize: number, server: Credentials | undefined) {
    this.service = service;
    this.#setup = setup;
    this.#transport = transport;
    this.transport = transport.kind;
    this.maxMessageSize = maxMessageSize;
    this.server = server;
    transport.gone.addEventListener("abort", () => this.#fail(new QbDisconnectedError(service, "the server closed the connection"), true), { once: true });
  }

  /** Connect to `service`. A refusal carries the server's errno (e.g. EACCES). */
  static async connect(service: string, options: QbClientOptions = {}): Promise<QbClient> {
    if (!service || service.includes("\0") || new TextEncoder().encode(service).length > 106) {
      throw new QbunArgumentError(`service name must be 1-106 bytes without NUL: ${JSON.stringify(service)}`);
    }
    const filesystem = options.filesystemSocket ?? existsSync(FORCE_FILESYSTEM_SOCKETS);
    const address = filesystem ? `${options.socketDir ?? "/tmp"}/${service}` : libqbAbstract(service);
    const asked = Math.max(options.maxMessageSize ?? 0, MIN_MAX_MSG_SIZE);
    const setup = await UnixStream.connect(address, { signal: options.signal });
    try {
      setup.passCredentials = true; // to learn who the server is
      await setup.write(encodeConnectionRequest(asked));
      const signal = AbortSignal.any([
        ...(options.signal ? [options.signal] : []),
        AbortSignal.timeout(options.timeout ?? 10_000),
      ]);
      const bytes = new Uint8Array(CONNECTION_RESPONSE_SIZE);
      let got = 0;
      let server: Credentials | undefined;
      while (got < CONNECTION_RESPONSE_SIZE) {
        const message = await setup.receiveMessage({ maxBytes: CONNECTION_RESPONSE_SIZE - got, maxFds: 0, signal });
        if (message === null) throw new QbDisconnectedError(service, "the server closed the connection without answering");
        server ??= message.credentials;
        bytes.set(message.data, got);
        got += message.data.byteLength;
      }
      setup.passCredentials = false;
      const response = parseConnectionResponse(bytes);
      if (!response) throw new RingCorruptError(service, "the connection response is malformed");
      if (response.error !== 0) {
        throw new QbunSystemError(-response.error, "qb_ipcc_connect", {
          address: service,
          hint: response.error === -13 ? "the server refused this user" : "the server refused the connection",
        });
      }
      const max = response.maxMessageSize;
      if (max < RESPONSE_HEADER_SIZE || max > 1 << 30) throw new RingCorruptError(service, `negotiated size ${max} is not sane`);
      let transport: ClientTransport;
      if (response.connectionType === ConnectionType.SHM) transport = new ShmClientTransport(setup, response, max);
      else if (response.connectionType === ConnectionType.SOCKET) transport = new SocketClientTransport(setup, response, max, server?.uid);
      else throw new QbunSystemError(response.connectionType === 2 || response.connectionType === 3 ? 95 : 22, "qb_ipcc_connect", { address: service, hint: `transport type ${response.connectionType} is not supported` });
      return new QbClient(service, setup, transport, max, server);
    } catch (error) {
      setup.close();
      throw error;
    }
  }

  /** Whether the connection is usable. */
  get connected(): boolean {
    return this.#failure === undefined;
  }

  /**
   * Send a request and wait for its response. Several may be in flight;
   * responses are matched in order. Rejects with {@link QbDisconnectedError}
   * when the server goes away, EMSGSIZE above the negotiated size.
   */
  request(id: number, payload: Uint8Array | readonly Uint8Array[] = [], options: QbRequestOptions = {}): Promise<QbMessage> {
    const { promise, resolve, reject } = Promise.withResolvers<QbMessage>();
    const slot: Slot = { resolve, reject, into: options.into };
    if (options.timeout === undefined && !options.signal) {
      // The common case, without a closure: nothing to cancel, nothing to clean up.
      try {
        this.#enqueue(id, payload, slot)?.catch((error) => abandon(slot, error));
      } catch (error) {
        abandon(slot, error);
      }
      return promise;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const giveUp = (error: unknown) => abandon(slot, error);
    if (options.timeout !== undefined) {
      timer = setTimeout(() => giveUp(new QbunSystemError(ETIMEDOUT, "qb_ipcc_recv", { address: this.service, hint: `no response within ${options.timeout} ms` })), options.timeout);
    }
    try {
      this.#enqueue(id, payload, slot, options.signal)?.catch(giveUp);
    } catch (error) {
      giveUp(error);
    }
    const onAbort = () => giveUp(options.signal!.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    return promise.finally(() => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    });
  }

  /**
   * Send a request without waiting for its response (libqb's `qb_ipcc_send`);
   * read responses in order with {@link QbClient.receive}.
   */
  async send(id: number, payload: Uint8Array | readonly Uint8Array[] = [], options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#enqueue(id, payload, {}, options.signal);
  }

  /** Writes still waiting (flow control, a full ring, an asynchronous transport). */
  #writesPending = 0;
  readonly #header = new Uint8Array(REQUEST_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #headerAndPayload: Uint8Array[] = [this.#header, EMPTY];

  /** The next response to a request made with {@link QbClient.send} (libqb's `qb_ipcc_recv`). */
  receive(options: QbReceiveOptions = {}): Promise<QbMessage> {
    const ready = this.#received.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#failure) return Promise.reject(this.#failure);
    const { promise, resolve, reject } = Promise.withResolvers<QbMessage>();
    const waiter = { resolve, reject };
    this.#receiveWaiters.push(waiter);
    const drop = (error: unknown) => {
      this.#receiveWaiters = this.#receiveWaiters.filter((w) => w !== waiter);
      reject(error);
    };
    const timer = options.timeout === undefined ? undefined : setTimeout(() => drop(new QbunSystemError(ETIMEDOUT, "qb_ipcc_recv", { address: this.service })), options.timeout);
    const onAbort = () => drop(options.signal!.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    return promise.finally(() => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    });
  }

  /**
   * Write a request, in call order. Returns undefined when it was written at
   * once (the usual case on SHM: no promise), else a promise for the write.
   * Throws for a request above the negotiated size.
   */
  #enqueue(id: number, payload: Uint8Array | readonly Uint8Array[], slot: Slot, signal?: AbortSignal): Promise<void> | undefined {
    if (this.#failure) throw this.#failure;
    const single = payload instanceof Uint8Array ? payload : payload.length === 1 ? payload[0]! : undefined;
    let size = REQUEST_HEADER_SIZE;
    if (single) size += single.byteLength;
    else for (const part of payload as readonly Uint8Array[]) size += part.byteLength;
    if (size > this.maxMessageSize) {
      throw new QbunSystemError(EMSGSIZE, "qb_ipcc_send", { address: this.service, hint: `a ${size}-byte request exceeds the negotiated ${this.maxMessageSize} bytes` });
    }
    // Fast path: nothing queued ahead, no flow control, room in the ring, a
    // synchronous transport. The header is copied into the ring at once.
    if (this.#writesPending === 0 && this.#transport.attached && !this.#heldByFlowControl()) {
      putRequestHeader(this.#headerView, 0, id, size);
      let sendParts: Uint8Array[];
      if (single) {
        // Reused: transports copy (or concatenate) the parts before send() returns.
        sendParts = this.#headerAndPayload;
        sendParts[1] = single;
      } else sendParts = [this.#header, ...(payload as readonly Uint8Array[])];
      let result: boolean | Promise<boolean>;
      try {
        result = this.#transport.send(sendParts);
      } finally {
        this.#headerAndPayload[1] = EMPTY; // hold no caller's payload
      }
      if (result === true) {
        this.#slots.push(slot);
        this.#readResponses();
        return undefined;
      }
      if (result !== false) {
        // An asynchronous transport: it took the parts; finish in order.
        this.#writesPending++;
        const sent = result.then((ok) => {
          if (!ok) throw new Error("unreachable: asynchronous transports report failures by rejecting");
          this.#slots.push(slot);
          this.#readResponses();
        });
        this.#sendChain = sent.catch(() => {}).finally(() => this.#writesPending--);
        return sent;
      }
    }
    const header = new Uint8Array(REQUEST_HEADER_SIZE);
    putRequestHeader(new DataView(header.buffer), 0, id, size);
    // Requests leave in call order, each after the one before was written.
    this.#writesPending++;
    const parts = single ? [single] : [...(payload as readonly Uint8Array[])];
    const sent = this.#sendChain.then(() => this.#write([header, ...parts], signal)).then(() => {
      this.#slots.push(slot);
      this.#readResponses();
    });
    this.#sendChain = sent.catch(() => {}).finally(() => this.#writesPending--);
    return sent;
  }

  #heldByFlowControl(): boolean {
    const fc = this.#transport.flowControl;
    return fc > 0 && fc <= this.fcEnableMax;
  }

  /** Write one request, backing off while flow control is on or the ring is full. */
  async #write(parts: Uint8Array[], signal?: AbortSignal): Promise<void> {
    let pause = 0;
    for (;;) {
      if (this.#failure) throw this.#failure;
      signal?.throwIfAborted();
      if (!this.#transport.attached) throw this.#fail(new QbDisconnectedError(this.service, "the server dropped this connection"), false);
      if (!this.#heldByFlowControl()) {
        const result = this.#transport.send(parts);
        if (typeof result === "boolean" ? result : await result) return;
      }
      // The server clears flow control and frees ring space without telling us:
      // retry after a doubling pause (1 … 50 ms), only while held back.
      pause = Math.min(pause * 2 || 1, 50);
      await Bun.sleep(pause);
    }
  }

  /** Read responses while any are expected, and hand them to their slots in order. */
  #readResponses(): void {
    if (this.#reading || this.#failure) return;
    this.#reading = true;
    // Once this turn's code has run (and written its requests): send them,
    // take the responses already there, and only then wait for the rest.
    queueMicrotask(this.#takeReady);
  }

  /**
   * Without a promise: a server on this CPU has often answered by the time
   * the notification send returns, and a lone round trip then costs no more
   * than this loop.
   */
  readonly #takeReady = (): void => {
    try {
      this.#transport.flush?.();
      const canTake = this.#transport.takeResponse !== undefined;
      while (canTake && this.#slots.length > 0 && !this.#failure && !this.#transport.serverRunsAlongside) {
        const message = this.#transport.takeResponse!(this.#intoOfNext());
        if (message === undefined) break;
        this.#deliver(message);
      }
    } catch (error) {
      this.#reading = false;
      this.#fail(error, error instanceof PeerGoneError);
      return;
    }
    if (this.#slots.length > 0 && !this.#failure) void this.#waitForResponses();
    else this.#reading = false;
  };

  async #waitForResponses(): Promise<void> {
    try {
      while (this.#slots.length > 0 && !this.#failure) {
        // With several requests in flight, take what is there already without
        // waiting; a lone request waits directly (measured faster sequentially).
        const ready = this.#slots.length > 1 ? this.#transport.takeResponse?.(this.#intoOfNext()) : undefined;
        this.#deliver(ready ?? (await this.#transport.nextResponse(this.#intoOfNext)));
        if (this.#transport.serverRunsAlongside && this.#slots.length > 0) {
          // Let the caller write its next request now, and send it at once:
          // a server on another CPU keeps working instead of draining its
          // queue and going to sleep while we read the rest.
          await null;
          this.#transport.flush?.();
        }
      }
    } catch (error) {
      this.#fail(error, error instanceof PeerGoneError);
    } finally {
      this.#reading = false;
    }
  }

  /** The buffer the oldest waiting request asked its payload in, unless it was given up. */
  readonly #intoOfNext = (): Uint8Array | undefined => {
    const slot = this.#slots[0];
    return slot && !slot.abandoned ? slot.into : undefined;
  };

  /** Hand a response to the oldest request still waiting for one. */
  #deliver(message: QbMessage): void {
    const slot = this.#slots.shift();
    if (!slot || slot.abandoned) return;
    if (slot.resolve) slot.resolve(message);
    else {
      const waiter = this.#receiveWaiters.shift();
      if (waiter) waiter.resolve(message);
      else this.#received.push(message);
    }
  }

  /** Events from the server, in order, until the connection ends. */
  async *events(options: { signal?: AbortSignal } = {}): AsyncGenerator<QbMessage, void, void> {
    this.#startEvents();
    for (;;) {
      const next = this.#eventQueue.shift();
      if (next) {
        this.#eventQueueDrained?.();
        yield next;
        continue;
      }
      if (this.#failure) return;
      options.signal?.throwIfAborted();
      const { promise, resolve, reject } = Promise.withResolvers<IteratorResult<QbMessage>>();
      const waiter = { resolve, reject };
      this.#eventWaiters.push(waiter);
      const onAbort = () => reject(options.signal!.reason);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const result = await promise;
        if (result.done) return;
        yield result.value;
      } finally {
        options.signal?.removeEventListener("abort", onAbort);
        this.#eventWaiters = this.#eventWaiters.filter((w) => w !== waiter);
      }
    }
  }

  /** Call `listener` for every event; returns a function that stops it. */
  onEvent(listener: (event: QbMessage) => void): () => void {
    this.#eventListeners.add(listener);
    this.#startEvents();
    return () => this.#eventListeners.delete(listener);
  }

  #startEvents(): void {
    if (this.#eventsStarted) return;
    this.#eventsStarted = true;
    void (async () => {
      try {
        while (!this.#failure) {
          const event = await this.#transport.nextEvent();
          for (const listener of this.#eventListeners) listener(event);
          const waiter = this.#eventWaiters.shift();
          if (waiter) waiter.resolve({ value: event, done: false });
          else if (this.#eventListeners.size === 0) this.#eventQueue.push(event);
          // An iterator that stopped pulling: stop reading, so events wait in
          // the server's ring and queue (its flow of events backs off) rather
          // than pile up here.
          while (this.#eventQueue.length >= MAX_QUEUED_EVENTS && !this.#failure) {
            const { promise, resolve } = Promise.withResolvers<void>();
            this.#eventQueueDrained = resolve;
            await promise; // resolved by the iterator taking one, or by the end
          }
        }
      } catch (error) {
        this.#fail(error, error instanceof PeerGoneError);
      }
    })();
  }

  /** End everything: pending calls reject with `error`, iterators end, resources go. */
  #fail(error: unknown, serverGone: boolean): Error {
    if (this.#failure) return this.#failure;
    const failure = error instanceof Error ? error : new Error(String(error));
    this.#failure = failure;
    for (const slot of this.#slots.splice(0)) slot.reject?.(failure);
    for (const waiter of this.#receiveWaiters.splice(0)) waiter.reject(failure);
    for (const waiter of this.#eventWaiters.splice(0)) waiter.resolve({ value: undefined, done: true });
    this.#eventQueueDrained?.();
    this.#transport.close();
    this.#setup.close();
    if (serverGone) this.#cleanup = this.#removeFilesIfServerDied();
    return failure;
  }

  #cleanup: Promise<void> = Promise.resolve();

  /**
   * libqb's client removes a dead server's files (a live server removes its
   * own). The server's end of the connection closes as it exits, a moment
   * before it is gone: probe a few times, 10–80 ms apart, as libqb does.
   */
  async #removeFilesIfServerDied(): Promise<void> {
    const pid = this.server?.pid;
    if (!pid) return;
    for (const pause of [0, 10, 20, 40, 80]) {
      if (pause) await Bun.sleep(pause);
      if (processIsGone(pid)) {
        this.#transport.removeDeadServerFiles();
        return;
      }
    }
  }

  /**
   * Disconnect. Pending requests reject with {@link QbDisconnectedError};
   * resolves once the connection's resources are released. Idempotent.
   */
  async close(): Promise<void> {
    const first = this.#failure === undefined;
    this.#fail(new QbDisconnectedError(this.service, "closed by this client"), false);
    // A server that died unnoticed leaves its files to us, as with libqb.
    if (first && this.server && processIsGone(this.server.pid)) this.#transport.removeDeadServerFiles();
    await this.#cleanup;
  }

  /** Same as {@link QbClient.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Whether `pid` has exited (gone, or a zombie nobody has reaped yet). */
function processIsGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as { code?: string }).code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}
