/**
 * libqb's socket transport, client side: map the control file, bind
 * `<base>-response` connected to `<base>-request` (requests and responses)
 * and `<base>-event` connected to `<base>-event-tx` (events).
 * @module
 */
import { rmdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { SharedMemory, type Mapping } from "../shm/index.ts";
import { UnixDatagram, type UnixStream } from "../unix/index.ts";
import { RingCorruptError } from "./ring.ts";
import { Control, CONTROL_SIZE, libqbAbstract } from "./socket-names.ts";
import { type ClientTransport, PeerGoneError } from "./transport.ts";

/** Connections negotiated up to this size read through one reusable buffer. */
const SCRATCH_LIMIT = 64 * 1024;

/** The client half of one socket-transport connection. */
export class SocketClientTransport implements ClientTransport {
  readonly kind = "socket" as const;
  readonly #controlPath: string;
  readonly #control: Mapping;
  readonly #counters: Int32Array;
  readonly #requests: UnixDatagram;
  readonly #events: UnixDatagram;
  readonly #gone = new AbortController();
  readonly #maxMessageSize: number;
  /** Reused for every read when the negotiated size is small (see #tryReceive). */
  readonly #scratch: Uint8Array | undefined;
  #closed = false;

  constructor(setup: UnixStream, names: { request: string; response: string }, maxMessageSize: number) {
    if (!names.request.startsWith("/") || !names.response.startsWith("/")) {
      throw new RingCorruptError(names.request, "control file or socket name is not an absolute path");
    }
    this.#controlPath = names.request;
    this.#maxMessageSize = maxMessageSize;
    this.#scratch = maxMessageSize <= SCRATCH_LIMIT ? new Uint8Array(maxMessageSize) : undefined;
    const file = SharedMemory.openFile({ path: this.#controlPath });
    const sockets: UnixDatagram[] = [];
    try {
      if (file.size < CONTROL_SIZE) throw new RingCorruptError(this.#controlPath, `control file is ${file.size} bytes, not ${CONTROL_SIZE}`);
      this.#control = file.map({ length: CONTROL_SIZE, guard: true });
      this.#counters = new Int32Array(this.#control.bytes.buffer, this.#control.bytes.byteOffset, CONTROL_SIZE / 4);
      const base = names.response;
      const open = (local: string, remote: string) => {
        const socket = UnixDatagram.bound(libqbAbstract(local));
        sockets.push(socket);
        if (socket.sendBufferSize <= maxMessageSize) socket.sendBufferSize = maxMessageSize;
        if (socket.receiveBufferSize <= maxMessageSize) socket.receiveBufferSize = maxMessageSize;
        socket.connect(libqbAbstract(remote));
        return socket;
      };
      this.#requests = open(`${base}-response`, `${base}-request`);
      this.#events = open(`${base}-event`, `${base}-event-tx`);
    } catch (error) {
      for (const socket of sockets) socket.close();
      throw error;
    } finally {
      file.close();
    }
    // The setup stream carries nothing in this transport: its end is the server leaving.
    void (async () => {
      try {
        for (;;) if ((await setup.read({ maxBytes: 64, signal: this.#gone.signal })) === null) break;
      } catch {}
      if (!this.#gone.signal.aborted) this.#gone.abort(new PeerGoneError());
    })();
  }

  get gone(): AbortSignal {
    return this.#gone.signal;
  }

  get flowControl(): number {
    return this.#closed ? 0 : Atomics.load(this.#counters, Control.REQUEST_FC);
  }

  get attached(): boolean {
    return !this.#closed;
  }

  send(parts: readonly Uint8Array[]): boolean | Promise<boolean> {
    if (this.#closed) return false;
    if (this.#requests.trySend(parts)) {
      Atomics.add(this.#counters, Control.REQUEST_SENT, 1);
      return true;
    }
    // The server's queue is full: wait for room with a copy (the caller may reuse its parts).
    return this.#sendLater(parts.map((part) => part.slice()));
  }

  async #sendLater(parts: Uint8Array[]): Promise<boolean> {
    for (;;) {
      await this.#requests.writable({ signal: this.#gone.signal });
      if (this.#requests.trySend(parts)) break;
    }
    // Sent; a close meanwhile unmapped the control file (nothing left to count into).
    if (!this.#closed) Atomics.add(this.#counters, Control.REQUEST_SENT, 1);
    return true;
  }

  takeResponse(): Uint8Array | undefined {
    if (this.#closed) return undefined;
    const bytes = this.#tryReceive(this.#requests);
    if (bytes) Atomics.sub(this.#counters, Control.RESPONSE_SENT, 1);
    return bytes;
  }

  async nextResponse(): Promise<Uint8Array> {
    const bytes = await this.#receive(this.#requests);
    Atomics.sub(this.#counters, Control.RESPONSE_SENT, 1);
    return bytes;
  }

  async nextEvent(): Promise<Uint8Array> {
    const bytes = await this.#receive(this.#events);
    Atomics.sub(this.#counters, Control.EVENT_SENT, 1);
    return bytes;
  }

  async #receive(socket: UnixDatagram): Promise<Uint8Array> {
    for (;;) {
      this.#gone.signal.throwIfAborted();
      const bytes = this.#tryReceive(socket);
      if (bytes) return bytes;
      await socket.readable({ signal: this.#gone.signal });
    }
  }

  /**
   * One datagram if one is queued, copied out. Small connections read into a
   * reusable buffer (one syscall); large ones ask the size first, to read
   * into a buffer of exactly that size rather than copy megabytes twice.
   */
  #tryReceive(socket: UnixDatagram): Uint8Array | undefined {
    const scratch = this.#scratch;
    if (scratch) {
      const n = socket.tryReceiveInto(scratch);
      if (n === undefined) return undefined;
      if (n > scratch.byteLength) throw this.#oversized(n);
      return scratch.slice(0, n);
    }
    const size = socket.nextLength();
    if (size === undefined) return undefined;
    if (size > this.#maxMessageSize) throw this.#oversized(size);
    const bytes = new Uint8Array(size);
    const n = socket.tryReceiveInto(bytes);
    if (n !== size) throw new RingCorruptError(this.#controlPath, `a ${size}-byte datagram changed size to ${n} while being read`);
    return bytes;
  }

  #oversized(size: number): RingCorruptError {
    return new RingCorruptError(this.#controlPath, `a ${size}-byte datagram above the negotiated ${this.#maxMessageSize} bytes`);
  }

  /** Nothing beyond what close() removes. */
  removeDeadServerFiles(): void {}

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#gone.signal.aborted) this.#gone.abort(new PeerGoneError());
    this.#requests.close();
    this.#events.close();
    this.#control.close();
    // libqb's client removes the control file and the directory in this transport.
    for (const remove of [() => unlinkSync(this.#controlPath), () => rmdirSync(dirname(this.#controlPath))]) {
      try {
        remove();
      } catch {}
    }
  }
}

