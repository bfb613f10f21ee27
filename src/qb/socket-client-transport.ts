/**
 * libqb's socket transport, client side: map the control file, bind
 * `<base>-response` connected to `<base>-request` (requests and responses)
 * and `<base>-event` connected to `<base>-event-tx` (events).
 * @module
 */
import { lstatSync, rmdirSync, unlinkSync } from "node:fs";
import { basename, dirname } from "node:path";
import { SharedMemory, type Mapping } from "../shm/index.ts";
import { UnixDatagram, type UnixStream } from "../unix/index.ts";
import { RingCorruptError } from "./ring.ts";
import { Control, CONTROL_SIZE, libqbAbstract } from "./socket-names.ts";
import { type ClientTransport, PeerGoneError } from "./transport.ts";
import { type QbMessage, readMessage, RESPONSE_HEADER_SIZE } from "./wire.ts";

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/** Whether `path` (not followed if a link) is the file `id` names. */
function sameFile(path: string, id: { dev: number; ino: number }): boolean {
  try {
    const st = lstatSync(path);
    return st.isFile() && st.dev === id.dev && st.ino === id.ino;
  } catch {
    return false;
  }
}

/** Connections negotiated up to this size read through one reusable buffer. */
const SCRATCH_LIMIT = 64 * 1024;

/** The client half of one socket-transport connection. */
export class SocketClientTransport implements ClientTransport {
  readonly kind = "socket" as const;
  readonly #controlPath: string;
  /** The control file's identity when it was checked, to remove only that file. */
  readonly #controlId: { dev: number; ino: number };
  readonly #control: Mapping;
  readonly #counters: Int32Array;
  readonly #requests: UnixDatagram;
  readonly #events: UnixDatagram;
  readonly #gone = new AbortController();
  readonly #maxMessageSize: number;
  /** Reused for every read when the negotiated size is small (see #tryReceive). */
  readonly #scratch: Uint8Array | undefined;
  /** On a large connection, reused for the responses a caller's buffer takes. */
  #large: Uint8Array | undefined;
  #closed = false;

  /**
   * `serverUid`: the server's uid from the handshake's credentials. The
   * control file's path comes from the server, and this client writes
   * counters into the file and removes it at the end (as libqb's does): so
   * it must be a 24-byte regular file, not reached through a symbolic link,
   * owned by this process's user (libqb's server gives it to the client) or
   * by the server's.
   */
  constructor(setup: UnixStream, names: { request: string; response: string }, maxMessageSize: number, serverUid?: number) {
    if (!names.request.startsWith("/") || !names.response.startsWith("/")) {
      throw new RingCorruptError(names.request, "control file or socket name is not an absolute path");
    }
    this.#controlPath = names.request;
    this.#maxMessageSize = maxMessageSize;
    this.#scratch = maxMessageSize <= SCRATCH_LIMIT ? new Uint8Array(maxMessageSize) : undefined;
    const file = SharedMemory.openFile({ path: this.#controlPath, noFollow: true });
    const sockets: UnixDatagram[] = [];
    let control: Mapping | undefined;
    try {
      const st = file.stat();
      if ((st.mode & S_IFMT) !== S_IFREG || st.size !== CONTROL_SIZE) {
        throw new RingCorruptError(this.#controlPath, `control file is not a regular file of ${CONTROL_SIZE} bytes (mode 0o${st.mode.toString(8)}, ${st.size} bytes)`);
      }
      if (st.uid !== process.geteuid!() && st.uid !== serverUid) {
        throw new RingCorruptError(this.#controlPath, `control file belongs to uid ${st.uid}, neither this process's nor the server's`);
      }
      this.#controlId = { dev: st.dev, ino: st.ino };
      control = file.map({ length: CONTROL_SIZE, guard: true });
      this.#control = control;
      this.#counters = new Int32Array(control.bytes.buffer, control.bytes.byteOffset, CONTROL_SIZE / 4);
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
      control?.close();
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

  takeResponse(into?: Uint8Array): QbMessage | undefined {
    if (this.#closed) return undefined;
    const message = this.#tryReceive(this.#requests, "response", into);
    if (message) Atomics.sub(this.#counters, Control.RESPONSE_SENT, 1);
    return message;
  }

  async nextResponse(into?: () => Uint8Array | undefined): Promise<QbMessage> {
    const message = await this.#receive(this.#requests, "response", into);
    Atomics.sub(this.#counters, Control.RESPONSE_SENT, 1);
    return message;
  }

  async nextEvent(): Promise<QbMessage> {
    const message = await this.#receive(this.#events, "event");
    Atomics.sub(this.#counters, Control.EVENT_SENT, 1);
    return message;
  }

  async #receive(socket: UnixDatagram, what: "response" | "event", into?: () => Uint8Array | undefined): Promise<QbMessage> {
    for (;;) {
      this.#gone.signal.throwIfAborted();
      const message = this.#tryReceive(socket, what, into?.());
      if (message) return message;
      await socket.readable({ signal: this.#gone.signal });
    }
  }

  /**
   * One datagram if one is queued, checked, its payload copied out. Small
   * connections read into a reusable buffer (one syscall, then the payload
   * copied); large ones ask the size first and read into a buffer of exactly
   * that size, whose payload is handed over as it is (no second copy).
   */
  #tryReceive(socket: UnixDatagram, what: "response" | "event", into?: Uint8Array): QbMessage | undefined {
    const scratch = this.#scratch;
    if (scratch) {
      const n = socket.tryReceiveInto(scratch);
      if (n === undefined) return undefined;
      if (n > scratch.byteLength) throw this.#oversized(n);
      return readMessage(scratch, 0, n, this.#maxMessageSize, what, this.#controlPath, true, into);
    }
    const size = socket.nextLength();
    if (size === undefined) return undefined;
    if (size > this.#maxMessageSize) throw this.#oversized(size);
    // A caller's buffer takes the payload: read through one buffer kept for that.
    const bytes = into !== undefined && size - RESPONSE_HEADER_SIZE <= into.byteLength
      ? (this.#large ??= new Uint8Array(this.#maxMessageSize))
      : new Uint8Array(size);
    const n = socket.tryReceiveInto(bytes);
    if (n !== size) throw new RingCorruptError(this.#controlPath, `a ${size}-byte datagram changed size to ${n} while being read`);
    return readMessage(bytes, 0, size, this.#maxMessageSize, what, this.#controlPath, bytes === this.#large, into);
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
    // libqb's client removes the control file and the directory in this
    // transport; here only if the name still leads to the file checked at
    // connect, and only a libqb-style connection directory.
    if (!sameFile(this.#controlPath, this.#controlId)) return;
    try {
      unlinkSync(this.#controlPath);
    } catch {}
    const dir = dirname(this.#controlPath);
    if (!basename(dir).startsWith("qb-")) return;
    try {
      rmdirSync(dir);
    } catch {}
  }
}

