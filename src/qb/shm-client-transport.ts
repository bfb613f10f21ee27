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

const NOTIFY = new Uint8Array([0]);

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

  send(parts: readonly Uint8Array[]): boolean {
    if (!this.#request.write(parts)) return false;
    this.#setup.write(NOTIFY).catch(() => {}); // a dead server shows up as the end of the setup stream
    return true;
  }

  takeResponse(): Uint8Array | undefined {
    if (this.#closed) return undefined;
    const chunk = this.#response.take();
    return chunk === null ? undefined : this.#copyOut(this.#response, chunk);
  }

  async nextResponse(): Promise<Uint8Array> {
    await this.#response.waitForChunk({ signal: this.#gone.signal }); // no timeout: true, or rejects when gone
    return this.#copyOut(this.#response, this.#response.takeAcquired());
  }

  async nextEvent(): Promise<Uint8Array> {
    for (;;) {
      this.#gone.signal.throwIfAborted();
      if (this.#eventBytes > 0) {
        const chunk = this.#event.take();
        if (chunk) {
          this.#eventBytes--;
          return this.#copyOut(this.#event, chunk);
        }
        this.#eventBytes = 0; // a byte with no event behind it: nothing to read
      }
      // Woken by the next notification byte, or by the end of the connection.
      await new Promise<void>((resolve) => (this.#eventWaiter = resolve));
      this.#eventWaiter = undefined;
    }
  }

  #copyOut(ring: Ring, chunk: Uint8Array): Uint8Array {
    const copy = chunk.slice();
    ring.reclaim(chunk.byteLength);
    return copy;
  }

  close(): void {
    if (this.#closed) return;
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
