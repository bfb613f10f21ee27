/**
 * libqb's shared-memory transport, client side: attach to the three rings
 * the server created, write requests (one notification byte each on the
 * setup socket), wait on the response ring's semaphore, and read one event
 * per notification byte from the server.
 * @module
 */
import { rmdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import type { UnixStream } from "../unix/index.ts";
import { Ring, RingCorruptError, ringFiles } from "./ring.ts";
import { type ClientTransport, PeerGoneError } from "./transport.ts";
import { type QbMessage, readMessage } from "./wire.ts";

/** Zero bytes to notify the server with: one per request. */
const NOTIFY = new Uint8Array(256);
/** NOTIFY's first n bytes, for every n: a view per flush would be an allocation per flush. */
const NOTIFY_VIEWS = Array.from({ length: NOTIFY.byteLength + 1 }, (_, n) => NOTIFY.subarray(0, n));

/** The client half of one SHM connection. */
export class ShmClientTransport implements ClientTransport {
  readonly kind = "shm" as const;
  readonly #request: Ring;
  readonly #response: Ring;
  readonly #event: Ring;
  readonly #setup: UnixStream;
  readonly #gone = new AbortController();
  /** Notification bytes received and not yet matched with an event. */
  #eventBytes = 0;
  #eventWaiter: (() => void) | undefined;
  #closed = false;

  /** Attach to the rings named in the connection response. */
  constructor(setup: UnixStream, names: { request: string; response: string; event: string }, maxMessageSize: number) {
    for (const prefix of [names.request, names.response, names.event]) {
      // The server chooses the names, but only absolute paths (libqb ≥ 1.0.4) are followed.
      if (!prefix.startsWith("/") || prefix.includes("\0")) throw new RingCorruptError(prefix, "ring name is not an absolute path");
    }
    const opened: Ring[] = [];
    try {
      opened.push(Ring.open(ringFiles(names.request), maxMessageSize));
      opened.push(Ring.open(ringFiles(names.response), maxMessageSize));
      opened.push(Ring.open(ringFiles(names.event), maxMessageSize));
    } catch (error) {
      for (const ring of opened) ring.close(false);
      throw error;
    }
    [this.#request, this.#response, this.#event] = opened as [Ring, Ring, Ring];
    this.#setup = setup;
    // A wait for a response ends with the connection.
    this.#gone.signal.addEventListener("abort", () => this.#response.cancelWait(this.#gone.signal.reason), { once: true });
    void this.#readNotifications();
  }

  get gone(): AbortSignal {
    return this.#gone.signal;
  }

  /** Count the server's event bytes; end of stream means the server is gone. */
  async #readNotifications(): Promise<void> {
    const bytes = new Uint8Array(256);
    try {
      for (;;) {
        const n = await this.#setup.readInto(bytes, { signal: this.#gone.signal });
        if (n === 0) break;
        this.#eventBytes += n;
        this.#eventWaiter?.();
      }
    } catch {}
    if (!this.#gone.signal.aborted) this.#gone.abort(new PeerGoneError());
    this.#eventWaiter?.();
  }

  get flowControl(): number {
    return this.#closed ? 0 : this.#request.userInt;
  }

  get attached(): boolean {
    return !this.#closed && this.#request.refCount === 2;
  }

  /**
   * Requests written in this turn of the event loop whose semaphore posts
   * and notification bytes are held back for one flush: a burst of N
   * requests costs one send(2) instead of N. Posts are held too, so a libqb
   * server never sees a request before its byte is on the way (it reads one
   * byte per request it took, blocking).
   */
  #batched = 0;

  send(parts: readonly Uint8Array[]): boolean {
    if (this.#batched === 0) this.#request.holdPosts();
    if (!this.#request.write(parts)) {
      if (this.#batched === 0) this.#request.releasePosts();
      return false;
    }
    if (this.#batched++ === 0) queueMicrotask(this.#flush);
    return true;
  }

  flush(): void {
    this.#flush();
  }

  /**
   * Whether the server seems to run on another CPU, answering while this
   * client runs, rather than on this one, answering while the client waits
   * (it preempts the notification send, so the answers are there when the
   * send returns). Measured at every flush: the share of the flushed
   * requests already answered once the send returned, averaged.
   */
  get serverRunsAlongside(): boolean {
    return this.#answeredAtFlush < 0.5;
  }

  #answeredAtFlush = 1;

  /** Make the batch visible: post once per request, then one byte per request. */
  readonly #flush = (): void => {
    const count = this.#batched;
    this.#batched = 0;
    if (count === 0 || this.#closed) return;
    const before = this.#response.pending;
    this.#request.releasePosts();
    try {
      for (let left = count; left > 0; ) {
        const bytes = NOTIFY_VIEWS[Math.min(left, NOTIFY.byteLength)]!;
        const sent = this.#setup.tryWrite(bytes);
        left -= sent;
        if (sent < bytes.byteLength) {
          // The socket buffer is full (a server slow to read): queue the rest, in order.
          this.#setup.write(new Uint8Array(left)).catch(() => {});
          break;
        }
      }
    } catch {
      // A dead server shows up as the end of the setup stream.
      return;
    }
    const answered = Math.min(Math.max(this.#response.pending - before, 0), count) / count;
    this.#answeredAtFlush += (answered - this.#answeredAtFlush) / 8;
  };

  /** A finished wait already took the semaphore count of the next response. */
  #acquired = false;
  #responseReady: ((error?: unknown) => void) | undefined;

  takeResponse(into?: Uint8Array): QbMessage | undefined {
    if (this.#closed) return undefined;
    let start: number;
    if (this.#acquired) {
      this.#acquired = false;
      start = this.#response.takeOffsetAcquired();
    } else {
      start = this.#response.takeOffset();
      if (start < 0) return undefined;
    }
    return this.#readOut(this.#response, start, "response", into);
  }

  /** The message just taken from `ring`, checked and its payload copied out; then reclaimed. */
  #readOut(ring: Ring, start: number, what: "response" | "event", into?: Uint8Array): QbMessage {
    const length = ring.takenLength;
    const message = readMessage(ring.data, start, length, ring.maxMessageSize, what, ring.files.prefix, true, into);
    ring.reclaim(length);
    return message;
  }

  /**
   * Send what is batched, then call `ready` once {@link ShmClientTransport.takeResponse}
   * has a response, or with the reason the connection ended. Returns true
   * (and never calls `ready`) when one is there already.
   */
  #awaitResponse(ready: (error?: unknown) => void): boolean {
    // About to sleep: what was written goes out first. (Arming the wait
    // before the send measured 3x slower on 64 B round trips.)
    this.#flush();
    this.#gone.signal.throwIfAborted();
    this.#responseReady = ready; // before the wait: a wait that fails at once calls back at once
    if (this.#response.waitForChunkThen(this.#responseWaitDone)) {
      this.#responseReady = undefined;
      this.#acquired = true;
      return true;
    }
    return false;
  }

  readonly #responseWaitDone = (error?: unknown): void => {
    const ready = this.#responseReady;
    this.#responseReady = undefined;
    if (error === undefined) this.#acquired = true;
    ready?.(error);
  };

  async nextResponse(into?: () => Uint8Array | undefined): Promise<QbMessage> {
    for (;;) {
      const ready = this.takeResponse(into?.());
      if (ready) return ready;
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      if (!this.#awaitResponse((error) => (error === undefined ? resolve() : reject(error)))) await promise;
    }
  }

  async nextEvent(): Promise<QbMessage> {
    for (;;) {
      this.#gone.signal.throwIfAborted();
      if (this.#eventBytes > 0) {
        const start = this.#event.takeOffset();
        if (start >= 0) {
          this.#eventBytes--;
          return this.#readOut(this.#event, start, "event");
        }
        this.#eventBytes = 0; // a byte with no event behind it: nothing to read
      }
      // Woken by the next notification byte, or by the end of the connection.
      await new Promise<void>((resolve) => (this.#eventWaiter = resolve));
      this.#eventWaiter = undefined;
    }
  }

  close(): void {
    if (this.#closed) return;
    // Requests sent in this turn of the event loop still go (qb_ipcc_send
    // then disconnect delivers them too); a dead server makes this a no-op.
    this.#flush();
    this.#closed = true;
    if (!this.#gone.signal.aborted) this.#gone.abort(new PeerGoneError());
    this.#eventWaiter?.();
    for (const ring of [this.#request, this.#response, this.#event]) ring.close(false);
  }

  removeDeadServerFiles(): void {
    for (const ring of [this.#request, this.#response, this.#event]) {
      for (const path of [ring.files.dataPath, ring.files.headerPath]) {
        try {
          unlinkSync(path);
        } catch {}
      }
    }
    // libqb's client leaves the empty directory; it is removed here too.
    try {
      rmdirSync(dirname(this.#request.files.prefix));
    } catch {}
  }
}
