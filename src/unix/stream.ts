/**
 * Connected SOCK_STREAM sockets: a byte stream with backpressure, plus
 * messages carrying fds and credentials.
 * @module
 */
import { check, QbunSystemError } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";
import type { AddressInput } from "./address.ts";
import { connectFd, type ConnectOptions } from "./connect.ts";
import { UnixSocket, SOCK_TYPE, type ReceivedMessage, type ReceiveOptions, type SendOptions } from "./socket.ts";

const SHUT_WR = 1;

/** What {@link UnixStream.watchArrivals} calls. */
export interface ArrivalHandlers {
  /** Bytes arrived (and were discarded). */
  onArrival(): void;
  /** The stream ended (the peer closed it) or failed; called at most once. */
  onEnd(error?: unknown): void;
}

type BunSocket = Awaited<ReturnType<typeof Bun.connect>>;

/** Where discardAvailable reads to (reads are synchronous: one buffer serves every stream). */
const discarded = new Uint8Array(4096);

/** Options for a stream read. */
export interface ReadOptions {
  /** Most bytes to return (default 65536). */
  maxBytes?: number;
  /** Cancels the wait; nothing is consumed when aborted. */
  signal?: AbortSignal;
}

/**
 * A connected AF_UNIX stream socket.
 *
 * ```ts
 * await using conn = await UnixStream.connect("/run/app.sock");
 * await conn.write(new TextEncoder().encode("ping"));
 * const reply = await conn.read(); // Uint8Array, or null at end of stream
 * ```
 */
export class UnixStream extends UnixSocket {
  /** Connect to a listening stream socket. ENOENT/ECONNREFUSED are typed errors. */
  static async connect(address: AddressInput, options: ConnectOptions = {}): Promise<UnixStream> {
    return new UnixStream(await connectFd(address, "stream", options));
  }

  /** A connected pair of stream sockets (socketpair). */
  static pair(): [UnixStream, UnixStream] {
    const fds = new Int32Array(2);
    check(loadNative().qbn_socketpair(SOCK_TYPE.stream, fds), "socketpair");
    return [new UnixStream(fds[0]!), new UnixStream(fds[1]!)];
  }

  /** Adopt a connected stream socket fd created by qbun (consumes it). */
  constructor(fd: number) {
    super(fd, "stream");
  }

  /**
   * Write all of `data`. When the kernel buffer is full, waits for room
   * (backpressure): the promise settles once every byte is accepted. EPIPE
   * or ECONNRESET when the peer has gone. Writes (and `sendMessage`) are
   * queued: one starts when the one before has finished, so writes issued
   * without awaiting never interleave. An aborted signal rejects a write
   * that is queued or waiting for room (bytes already sent stay sent).
   */
  write(data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#queueWrite(() => this.#writeAll(data, options.signal));
  }

  /**
   * Write what the kernel accepts now, without waiting: resolves nothing,
   * returns the byte count (0 when the buffer is full, or when an earlier
   * {@link UnixStream.write} is still queued, so bytes never overtake it).
   * EPIPE or ECONNRESET when the peer has gone. Send any remainder with
   * {@link UnixStream.write}.
   */
  tryWrite(data: Uint8Array): number {
    if (this.#writeTail !== undefined || data.byteLength === 0) return 0;
    const rc = this.native.qbn_send(this.fd, data, data.byteLength, 0x40 /* MSG_DONTWAIT */);
    if (rc >= 0) return rc;
    if (rc === -11 /* EAGAIN */) return 0;
    throw new QbunSystemError(-rc, "send");
  }

  async #writeAll(data: Uint8Array, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    let offset = 0;
    while (offset < data.byteLength) {
      const rc = this.native.qbn_send(this.fd, data.subarray(offset), data.byteLength - offset, 0);
      if (rc >= 0) {
        offset += rc;
        continue;
      }
      if (rc !== -11) throw new QbunSystemError(-rc, "send");
      await this.waitWritable(signal);
    }
  }

  /** The last queued write (settles, never rejects); undefined when none is in flight. */
  #writeTail: Promise<void> | undefined;

  /**
   * Run `send` once every earlier write has finished. A write waiting for
   * room must not let a later write's bytes in ahead of its own remainder.
   */
  #queueWrite(send: () => Promise<void>): Promise<void> {
    const tail = this.#writeTail;
    const run = tail ? tail.then(send) : send();
    const settled = run.then(
      () => {},
      () => {},
    );
    this.#writeTail = settled;
    void settled.then(() => {
      if (this.#writeTail === settled) this.#writeTail = undefined;
    });
    return run;
  }

  #scratch: Uint8Array | undefined;

  /**
   * Read up to `maxBytes` (default 65536); resolves null at end of stream.
   * The bytes are copied out of a reusable buffer, so a small read holds
   * only its own bytes. Use {@link UnixStream.readInto} to avoid the copy.
   */
  async read(options: ReadOptions = {}): Promise<Uint8Array | null> {
    const size = options.maxBytes ?? 65536;
    // Concurrent reads each need their own buffer.
    const buf = this.#scratch && this.#scratch.length >= size ? this.#scratch : new Uint8Array(size);
    this.#scratch = undefined;
    try {
      const n = await this.recvInto(buf.subarray(0, size), options.signal);
      return n === 0 ? null : buf.slice(0, n);
    } finally {
      this.#scratch = buf;
    }
  }

  /** Read into `into` without allocating; resolves the byte count (0 at end of stream). */
  readInto(into: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<number> {
    return this.recvInto(into, options.signal);
  }

  /**
   * Read what is there now, without waiting: the byte count (0 at end of
   * stream), or undefined when nothing is available.
   */
  tryReadInto(into: Uint8Array): number | undefined {
    const rc = this.native.qbn_recv(this.fd, into, into.byteLength, 0x40 /* MSG_DONTWAIT */);
    if (rc === -11 /* EAGAIN */) return undefined;
    if (rc < 0) throw new QbunSystemError(-rc, "recv");
    return rc;
  }

  /**
   * Drop what is there now, up to about `maxBytes`, without waiting (for
   * bytes that carry no data, such as libqb's notification bytes): the count
   * dropped (0 when nothing was there), or null at end of stream. Bounded,
   * so a peer that writes faster than this reads cannot keep the caller in it.
   */
  discardAvailable(maxBytes = 65536): number | null {
    let dropped = 0;
    while (dropped < maxBytes) {
      const n = this.tryReadInto(discarded);
      if (n === 0) return null;
      if (n === undefined) break;
      dropped += n;
      if (n < discarded.length) break; // drained
    }
    return dropped;
  }

  /** Read exactly `length` bytes; throws if the stream ends first. */
  async readExactly(length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = await this.recvInto(buf.subarray(got), options.signal);
      if (n === 0) throw new QbunSystemError(104 /* ECONNRESET */, "recv", { hint: `stream ended after ${got} of ${length} bytes` });
      got += n;
    }
    return buf;
  }

  /**
   * Send `data` with fds and/or credentials attached (they travel with the
   * first byte). Waits for room like {@link UnixStream.write}.
   */
  async sendMessage(data: Uint8Array, options: SendOptions = {}): Promise<void> {
    if (data.byteLength === 0) throw new RangeError("a stream message needs at least one byte to carry its ancillary data");
    await this.#queueWrite(async () => {
      const sent = await this.sendRaw(data, options, undefined);
      if (sent < data.byteLength) await this.#writeAll(data.subarray(sent), options.signal);
    });
  }

  /** Receive bytes with any fds/credentials that came with them; null at end of stream. */
  receiveMessage(options: ReceiveOptions = {}): Promise<ReceivedMessage | null> {
    return this.receiveRaw(options, false, false) as Promise<ReceivedMessage | null>;
  }

  #arrivals: BunSocket | undefined;
  /** Set from the start of watchArrivals (its socket comes later). */
  #arrivalsWatched = false;
  #arrivalsRef = true;
  /** Set once onEnd ran, or once this side closed (its own close is not the peer's end). */
  #arrivalsEnded = false;

  /**
   * For a peer whose bytes carry no data, only "look now" (libqb's SHM
   * notification bytes): Bun's own event loop reads and discards whatever
   * arrives and calls `onArrival`; `onEnd` when the peer closes the stream
   * or it fails. A wake-up then costs one epoll wake-up and one recv; a
   * {@link UnixStream.readInto} that has to wait costs a poll submission,
   * an interrupted wait, a doorbell and a second recv. Bun reads through a
   * duplicate of the fd, so {@link UnixStream.tryReadInto} and writes go on
   * working (a byte is consumed by whichever side reads first). Stops at
   * {@link UnixStream.close}, which closes the duplicate too. While the
   * owner is busy anyway, {@link UnixStream.pauseArrivals} saves a wake-up
   * and a callback per arrival.
   */
  async watchArrivals(handlers: ArrivalHandlers): Promise<void> {
    if (this.#arrivalsWatched) {
      throw Object.assign(new Error("this stream's arrivals are already watched"), { code: "ERR_INVALID_STATE" });
    }
    const dup = check(this.native.qbn_dup(this.fd), "fcntl(F_DUPFD_CLOEXEC)");
    this.#arrivalsWatched = true;
    this.#arrivalsEnded = false;
    const end = (error?: unknown) => {
      if (this.#arrivalsEnded) return;
      this.#arrivalsEnded = true;
      handlers.onEnd(error);
    };
    let socket: BunSocket;
    try {
      // Bun owns `dup` from here: it closes it when its socket closes.
      socket = await Bun.connect({
        fd: dup,
        socket: {
          data: () => handlers.onArrival(),
          end: () => end(),
          close: (_socket: unknown, error?: unknown) => end(error),
          error: (_socket: unknown, error: unknown) => end(error),
        },
      } as unknown as Parameters<typeof Bun.connect>[0]);
    } catch (error) {
      this.native.qbn_close(dup);
      this.#arrivalsWatched = false;
      throw error;
    }
    if (this.closed) {
      this.#arrivalsEnded = true; // closed while connecting: not the peer's doing
      socket.terminate();
      return;
    }
    if (!this.#arrivalsRef) socket.unref();
    this.#arrivals = socket;
  }

  /**
   * Stop reading arrivals (they stay in the socket for
   * {@link UnixStream.tryReadInto}) until {@link UnixStream.resumeArrivals}.
   */
  pauseArrivals(): void {
    this.#arrivals?.pause();
  }

  /** Read arrivals again after {@link UnixStream.pauseArrivals}. */
  resumeArrivals(): void {
    this.#arrivals?.resume();
  }

  /** Let pending waits, and the arrivals watch, keep the process alive (the default). */
  override ref(): this {
    this.#arrivalsRef = true;
    this.#arrivals?.ref();
    return super.ref();
  }

  /** Pending waits, and the arrivals watch, no longer keep the process alive. */
  override unref(): this {
    this.#arrivalsRef = false;
    this.#arrivals?.unref();
    return super.unref();
  }

  protected override afterClose(): void {
    const arrivals = this.#arrivals;
    this.#arrivals = undefined;
    this.#arrivalsEnded = true;
    arrivals?.terminate();
  }

  /** Half-close: the peer reads end of stream; this side can still read. */
  end(): void {
    check(this.native.qbn_shutdown(this.fd, SHUT_WR), "shutdown");
  }

  /** Chunks until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, void> {
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) return;
      yield chunk;
    }
  }
}
