/**
 * libqb's shared-memory transport, server side: three rings (request,
 * response, event) in a per-connection directory under /dev/shm, and one
 * notification byte on the setup socket per request (client → server) and
 * per event (server → client). Responses carry no byte: the client waits on
 * the response ring's semaphore.
 * @module
 */
import type { UnixStream } from "../unix/index.ts";
import { Ring, ringFiles, type RingFiles } from "./ring.ts";
import { PeerGoneError, removeConnectionFiles, type IncomingMessage, type ServerTransport, type TransportNames, type TransportSetup } from "./transport.ts";

const NOTIFY = new Uint8Array([0]);
/** Requests handled without a wait after which notification bytes are read in bulk. */
const DRAIN_EVERY = 32;
/** Most notification bytes read at once (bounded: a flooding client must not keep us reading). */
const DRAIN_BYTES = 4096;

/** The server half of one SHM connection. */
export class ShmServerTransport implements ServerTransport {
  readonly kind = "shm" as const;
  readonly names: TransportNames;
  readonly #request: Ring;
  readonly #response: Ring;
  readonly #event: Ring;
  readonly #setup: UnixStream;
  readonly #dir: string;
  #closed = false;

  /** Create the three rings in `setup.dir` (request, response, event, in libqb's order). */
  constructor(setup: TransportSetup) {
    const files = (name: string): RingFiles => ringFiles(`${setup.dir}/qb-${name}-${setup.service}`);
    const ring = (name: string) =>
      Ring.create({ files: files(name), maxMessageSize: setup.maxMessageSize, uid: setup.uid, gid: setup.gid, mode: setup.mode });
    const made: Ring[] = [];
    try {
      made.push(ring("request"), ring("response"), ring("event"));
    } catch (error) {
      for (const r of made) r.close(true);
      throw error;
    }
    [this.#request, this.#response, this.#event] = made as [Ring, Ring, Ring];
    this.#setup = setup.setup;
    this.#dir = setup.dir;
    this.names = {
      request: this.#request.files.prefix,
      response: this.#response.files.prefix,
      event: this.#event.files.prefix,
    };
  }

  take(): IncomingMessage | null {
    const ring = this.#request;
    const start = ring.takeOffset();
    if (start < 0) return null;
    // Under sustained load the ring never empties: stop the event loop's
    // reads of notification bytes and drain them here in bulk instead
    // (unread, they would fill the socket and stall the client).
    if (++this.#takenSinceWait % DRAIN_EVERY === 0) this.#drainNotifications();
    return { bytes: ring.data, start, length: ring.takenLength, inPlace: true, release: this.#reclaim };
  }

  /** Releases the chunk last taken (requests are released before the next take). */
  readonly #reclaim = (): void => this.#request.reclaim(this.#request.takenLength);

  #takenSinceWait = 0;
  #paused = false;

  #drainNotifications(): void {
    if (!this.#paused && this.#watching === true) {
      this.#setup.pauseArrivals();
      this.#paused = true;
    }
    if (this.#setup.discardAvailable(DRAIN_BYTES) === null) throw new PeerGoneError();
  }

  // Notification bytes mean only "look at the ring". While we wait, Bun's
  // event loop reads them (UnixStream.watchArrivals).
  #watching: Promise<void> | true | undefined;
  /** Bytes arrived since the last wait ended. */
  #arrived = false;
  /** Why the setup socket ended, once it has. */
  #ended: unknown;
  #waiter: { resolve(): void; reject(error: unknown): void; signal: AbortSignal } | undefined;

  #onArrival(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) {
      this.#arrived = true;
      return;
    }
    this.#waiter = undefined;
    waiter.resolve();
  }

  #onEnd(error?: unknown): void {
    this.#ended = error ?? new PeerGoneError();
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#ended);
  }

  waitForRequests(signal: AbortSignal): Promise<void> | undefined {
    signal.throwIfAborted();
    this.#takenSinceWait = 0; // the ring ran empty: not sustained load
    if (this.#arrived) {
      this.#arrived = false;
      return undefined;
    }
    if (this.#ended !== undefined) throw this.#ended;
    // A client that sent its next request while we worked left its byte
    // here: taking it directly skips a trip through the event loop.
    const n = this.#setup.discardAvailable(DRAIN_BYTES);
    if (n === null) throw new PeerGoneError();
    if (n > 0) return undefined;
    if (this.#paused) {
      this.#paused = false;
      this.#setup.resumeArrivals();
    }
    if (this.#watching === true) return this.#sleep(signal);
    this.#watching ??= this.#setup.watchArrivals({ onArrival: () => this.#onArrival(), onEnd: (error) => this.#onEnd(error) });
    return this.#watching.then(() => {
      this.#watching = true;
      return this.#sleep(signal);
    });
  }

  /** Until the next arrival (which may have come while watching started). */
  #sleep(signal: AbortSignal): Promise<void> {
    if (this.#ended !== undefined) return Promise.reject(this.#ended);
    if (this.#closed) return Promise.reject(signal.reason);
    if (this.#arrived) {
      this.#arrived = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.#waiter = { resolve, reject, signal };
    });
  }

  /** Nested holds: a batch of requests holds, and each request inside it too. */
  #holds = 0;

  holdResponses(): void {
    if (this.#holds++ === 0) this.#response.holdPosts();
  }

  releaseResponses(): void {
    if (--this.#holds === 0 && !this.#closed) this.#response.releasePosts();
  }

  writeResponse(parts: readonly Uint8Array[]): boolean {
    return this.#response.write(parts);
  }

  writeEventNow(parts: readonly Uint8Array[]): boolean {
    return this.writeEvent(parts);
  }

  writeEvent(parts: readonly Uint8Array[]): boolean {
    // Responses held for the batch were written before this event: let the
    // client see them first, as it would have without the batching.
    if (this.#holds > 0 && !this.#closed) {
      this.#response.releasePosts();
      this.#response.holdPosts();
    }
    if (!this.#event.write(parts)) return false;
    // One byte per event, never dropped: stream writes queue when the socket is full.
    this.#setup.write(NOTIFY).catch(() => {}); // a dead peer is noticed by the reader
    return true;
  }

  get flowControl(): number {
    return this.#request.userInt;
  }
  set flowControl(value: number) {
    this.#request.userInt = value;
  }

  get unreadEvents(): number {
    return this.#closed ? 0 : this.#event.pending;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(waiter.signal.reason);
    const rings = [this.#response, this.#event, this.#request];
    for (const ring of rings) ring.close(false);
    removeConnectionFiles(this.#dir, rings.flatMap((ring) => [ring.files.dataPath, ring.files.headerPath]));
  }
}
