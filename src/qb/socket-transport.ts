/**
 * libqb's socket transport, server side: a 24-byte control file of atomic
 * counters and flow control, and abstract datagram sockets — one carrying
 * requests and responses (`<base>-request`), one sending events
 * (`<base>-event-tx`). The setup socket only signals liveness.
 * @module
 */
import { SharedMemory, type Mapping } from "../shm/index.ts";
import { UnixDatagram, type UnixStream } from "../unix/index.ts";
import { Control, CONTROL_SIZE, libqbAbstract } from "./socket-names.ts";
import {
  type IncomingMessage,
  PeerGoneError,
  removeConnectionFiles,
  type ServerTransport,
  type TransportNames,
  type TransportSetup,
} from "./transport.ts";

/** Lone requests up to this size are handed over as copies (see take()). */
const COPY_BELOW = 4096;

/** A copied request needs no release. */
const nothing = (): void => {};

/**
 * Requests are read into a buffer shared by every connection (reads are
 * synchronous, so one is enough): no connection keeps a buffer of its
 * maximum size (12 KiB at least) for as long as it lives. A request handled
 * in place keeps the buffer until its release, and a read meanwhile takes
 * another. Connections whose maximum is above this keep one of their own,
 * so that the process does not hold a huge buffer after they leave.
 */
const SHARED_LIMIT = 1024 * 1024 + 1;
let spareBuffer: Uint8Array | undefined;

function borrowBuffer(size: number): Uint8Array {
  const buffer = spareBuffer;
  if (buffer === undefined || buffer.byteLength < size) return new Uint8Array(size);
  spareBuffer = undefined;
  return buffer;
}

/** Keep the larger of `buffer` and the spare one (a connection's own buffer is not shared). */
function returnBuffer(buffer: Uint8Array): void {
  if (buffer.byteLength <= SHARED_LIMIT && (spareBuffer === undefined || spareBuffer.byteLength < buffer.byteLength)) spareBuffer = buffer;
}

/** The server half of one socket-transport connection. */
export class SocketServerTransport implements ServerTransport {
  readonly kind = "socket" as const;
  readonly names: TransportNames;
  readonly #controlPath: string;
  readonly #control: Mapping;
  readonly #counters: Int32Array;
  readonly #requests: UnixDatagram;
  readonly #events: UnixDatagram;
  readonly #base: string;
  readonly #dir: string;
  /** Aborted when the client leaves (PeerGoneError) or the transport closes. */
  readonly #gone = new AbortController();
  readonly #maxMessageSize: number;
  /** The buffer lent to the request being handled in place, if any. */
  #lent: Uint8Array | undefined;
  /** The connection's own receive buffer, when its maximum is above SHARED_LIMIT. */
  #own: Uint8Array | undefined;
  #closed = false;

  constructor(setup: TransportSetup) {
    this.#dir = setup.dir;
    this.#maxMessageSize = setup.maxMessageSize;
    this.#controlPath = `${setup.dir}/qb-control-${setup.service}`;
    this.#base = `${setup.dir}/qb-${setup.service}`;
    let file: SharedMemory | undefined;
    let control: Mapping | undefined;
    let requests: UnixDatagram | undefined;
    let events: UnixDatagram | undefined;
    try {
      // Created, then sized: a full /dev/shm fails the sizing, and the catch removes the file.
      file = SharedMemory.openFile({ path: this.#controlPath, create: true, size: CONTROL_SIZE });
      try {
        file.chown(setup.uid, setup.gid);
      } catch (error) {
        if ((error as { code?: string }).code !== "EPERM") throw error;
      }
      file.chmod(setup.mode);
      control = file.map();
      requests = UnixDatagram.bound(libqbAbstract(`${this.#base}-request`));
      events = UnixDatagram.bound(libqbAbstract(`${this.#base}-event-tx`));
      for (const socket of [requests, events]) {
        if (socket.sendBufferSize <= setup.maxMessageSize) socket.sendBufferSize = setup.maxMessageSize;
        if (socket.receiveBufferSize <= setup.maxMessageSize) socket.receiveBufferSize = setup.maxMessageSize;
      }
    } catch (error) {
      events?.close();
      requests?.close();
      control?.close();
      try {
        SharedMemory.removeFile(this.#controlPath);
      } catch {}
      throw error;
    } finally {
      file?.close();
    }
    this.#control = control;
    this.#counters = new Int32Array(control.bytes.buffer, control.bytes.byteOffset, CONTROL_SIZE / 4);
    this.#requests = requests;
    this.#events = events;
    this.names = { request: this.#controlPath, response: this.#base, event: "" };
    void this.#watchForEnd(setup.setup);
  }

  /**
   * The setup stream carries nothing here: its end of stream is the peer
   * leaving. Whatever else arrives is dropped, a bounded amount per wait,
   * and every wait goes through the event loop (a direct read that keeps
   * succeeding would not), so a client flooding it cannot starve others.
   */
  async #watchForEnd(setup: UnixStream): Promise<void> {
    try {
      for (;;) {
        await setup.readable({ signal: this.#gone.signal });
        if (setup.discardAvailable() === null) throw new PeerGoneError();
      }
    } catch {}
    if (!this.#gone.signal.aborted) this.#gone.abort(new PeerGoneError());
  }

  /**
   * The next request if one is queued. A small one with nothing queued
   * behind it is handed over as a copy; any other in place, in a buffer
   * lent to this connection until the message's release (as a request in
   * an SHM ring is). The buffer is one byte larger than negotiated, so that
   * an oversized request shows as one and is refused.
   */
  take(): IncomingMessage | null {
    const need = this.#maxMessageSize + 1;
    const buffer = need > SHARED_LIMIT ? (this.#own ??= new Uint8Array(need)) : borrowBuffer(need);
    const n = this.#requests.tryReceiveInto(buffer);
    if (n === undefined) {
      returnBuffer(buffer);
      return null;
    }
    const queuedBefore = Atomics.sub(this.#counters, Control.REQUEST_SENT, 1);
    const length = Math.min(n, buffer.byteLength);
    // A small request that is the only one queued is copied out; with more
    // behind it (a pipelining client: the client's own count says so, and a
    // lie only changes which of two correct paths runs) it stays in place.
    // In place costs less CPU (4 clients x 16 in flight: 0.86x libqb's rate
    // against 0.76x), but for lone requests it made a 64 B round trip with a
    // libqb client on one busy CPU settle at 7.1-7.5 us instead of 5.4-5.7:
    // the server then went to sleep after a response more often (0.33
    // against 0.25 voluntary switches per message) instead of being
    // preempted by the client it woke, so its way to sleep landed inside the
    // round trip. Large requests always stay in place (a copy of 1 MiB
    // halves throughput).
    if (length <= COPY_BELOW && queuedBefore <= 1) {
      const copy = buffer.slice(0, length);
      returnBuffer(buffer);
      return { bytes: copy, start: 0, length, inPlace: false, release: nothing };
    }
    if (buffer === this.#own) return { bytes: buffer, start: 0, length, inPlace: true, release: nothing };
    this.#lent = buffer;
    return { bytes: buffer, start: 0, length, inPlace: true, release: this.#returnLent };
  }

  /** Ends the loan of the shared buffer a large request was read into. */
  readonly #returnLent = (): void => {
    if (this.#lent) returnBuffer(this.#lent);
    this.#lent = undefined;
  };

  /** The connection closes this transport when it ends, which ends this wait too. */
  waitForRequests(_signal: AbortSignal): Promise<void> {
    return this.#requests.readable({ signal: this.#gone.signal });
  }

  /** Datagrams are copies: nothing to hold. */
  holdResponses(): void {}

  releaseResponses(): void {}

  writeResponse(parts: readonly Uint8Array[]): boolean | Promise<boolean> {
    return this.#send(this.#requests, `${this.#base}-response`, Control.RESPONSE_SENT, parts);
  }

  writeEvent(parts: readonly Uint8Array[]): boolean | Promise<boolean> {
    return this.#send(this.#events, `${this.#base}-event`, Control.EVENT_SENT, parts);
  }

  /** Sockets already connected to the client's (they connect on first use, as libqb's do). */
  readonly #connected = new Set<UnixDatagram>();

  /** One datagram to the client's `peer` socket, counted in the control file's `counter` slot. */
  #send(socket: UnixDatagram, peer: string, counter: number, parts: readonly Uint8Array[]): boolean | Promise<boolean> {
    if ((this.#connected.has(socket) || this.#tryConnect(socket, peer)) && socket.trySend(parts)) {
      Atomics.add(this.#counters, counter, 1);
      return true;
    }
    // Not connected yet, or the client's queue is full: finish later with a
    // copy (the caller may reuse its parts).
    return this.#sendLater(socket, peer, counter, parts.map((part) => part.slice()));
  }

  /** Connect now if the client's socket is bound already (it usually is by its first request). */
  #tryConnect(socket: UnixDatagram, peer: string): boolean {
    try {
      socket.connect(libqbAbstract(peer));
    } catch {
      return false; // #sendLater retries, and reports what does not go away
    }
    this.#connected.add(socket);
    return true;
  }

  async #sendLater(socket: UnixDatagram, peer: string, counter: number, parts: Uint8Array[]): Promise<boolean> {
    if (!this.#connected.has(socket)) {
      await connectWithRetry(socket, peer);
      this.#connected.add(socket);
    }
    while (!socket.trySend(parts)) await socket.writable({ signal: this.#gone.signal });
    Atomics.add(this.#counters, counter, 1);
    return true;
  }

  get flowControl(): number {
    return Atomics.load(this.#counters, Control.REQUEST_FC);
  }
  set flowControl(value: number) {
    Atomics.store(this.#counters, Control.REQUEST_FC, value);
  }

  get unreadEvents(): number {
    return this.#closed ? 0 : Math.max(0, Atomics.load(this.#counters, Control.EVENT_SENT));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#gone.signal.aborted) this.#gone.abort(new Error("transport closed"));
    this.#requests.close();
    this.#events.close();
    this.#control.close();
    removeConnectionFiles(this.#dir, [this.#controlPath], true);
  }
}

/** The client binds its sockets after reading the connection response: retry briefly, as libqb does (10 × 100 ms). */
async function connectWithRetry(socket: UnixDatagram, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      socket.connect(libqbAbstract(name));
      return;
    } catch (error) {
      if (attempt >= 9 || (error as { code?: string }).code !== "ECONNREFUSED") throw error;
      await Bun.sleep(100);
    }
  }
}


