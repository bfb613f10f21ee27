/**
 * The common core of every qbun AF_UNIX socket: fd ownership, readiness
 * waits, sendmsg/recvmsg with fds and credentials, addresses, options.
 * Public socket classes (stream, seqpacket, datagram, listener) build on it.
 * @module
 */
import { check, ClosedError, QbunSystemError } from "../../ffi/errors.ts";
import { fdNumber, OwnedFd, type FdLike } from "../../ffi/fd.ts";
import { loadNative, type Native } from "../../ffi/native.ts";
import { Reactor, type FdWatch } from "../../ffi/reactor.ts";
import { decodeAddress, SOCKADDR_UN_SIZE, type EncodedAddress, type UnixAddress } from "./address.ts";

/** Kernel socket types qbun supports. */
export type SocketType = "stream" | "datagram" | "seqpacket";

/** @internal numeric values of {@link SocketType}. */
export const SOCK_TYPE: Record<SocketType, number> = { stream: 1, datagram: 2, seqpacket: 5 };

const SOL_SOCKET = 1;
const SO_PASSCRED = 16;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const EAGAIN = 11;
const MSG_TRUNC = 0x20;
const MSG_CTRUNC = 0x08;
const MSG_PEEK = 0x02;
const MSG_DONTWAIT = 0x40;

/**
 * Receives in a row that find data without waiting, after which the next one
 * first lets the event loop take a turn. Each of them resolves in a
 * microtask, so without this a loop reading a socket that never runs dry (a
 * flooding peer) would keep every timer and every other socket waiting.
 */
const RECEIVES_PER_TURN = 64;
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Process credentials as the kernel reports them (SCM_CREDENTIALS, SO_PEERCRED). */
export interface Credentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** Ancillary data and options for one outgoing message. */
export interface SendOptions {
  /** File descriptors to pass (SCM_RIGHTS). They stay open on this side. */
  fds?: readonly FdLike[];
  /**
   * Credentials to attach (SCM_CREDENTIALS): `true` for this process's own,
   * or explicit ids (the kernel only lets privileged processes claim others).
   */
  credentials?: true | Credentials;
  /** Cancels a send that is waiting for buffer space. */
  signal?: AbortSignal;
}

/** Limits and options for receiving one message. */
export interface ReceiveOptions {
  /** Largest payload to accept; longer datagrams are cut and marked `truncated`. */
  maxBytes?: number;
  /** Most fds to accept; more set `controlTruncated` (the rest are closed). */
  maxFds?: number;
  /** Cancels the wait. Nothing is consumed from the socket when aborted. */
  signal?: AbortSignal;
}

/**
 * One received message with its ancillary data. Received fds are owned
 * handles: take or close them; any left are closed when the message is
 * disposed (`using`) or garbage-collected.
 */
export class ReceivedMessage implements Disposable {
  /** The payload. */
  readonly data: Uint8Array;
  /** File descriptors that arrived (SCM_RIGHTS), close-on-exec. */
  readonly fds: readonly OwnedFd[];
  /** Sender's credentials, when they were attached or SO_PASSCRED is on. */
  readonly credentials: Credentials | undefined;
  /** Sender's address (datagram sockets). */
  readonly from: UnixAddress | undefined;
  /** The datagram was longer than `maxBytes`; the rest was discarded. */
  readonly truncated: boolean;
  /** More fds arrived than `maxFds` allowed (or MSG_CTRUNC): the surplus was closed. */
  readonly controlTruncated: boolean;

  /** @internal */
  constructor(
    data: Uint8Array,
    fds: OwnedFd[],
    credentials: Credentials | undefined,
    from: UnixAddress | undefined,
    truncated: boolean,
    controlTruncated: boolean,
  ) {
    this.data = data;
    this.fds = fds;
    this.credentials = credentials;
    this.from = from;
    this.truncated = truncated;
    this.controlTruncated = controlTruncated;
  }

  /** Close every fd of this message that was not taken. */
  [Symbol.dispose](): void {
    for (const fd of this.fds) fd.close();
  }
}

/** Outcome of one raw receive: a message or end of stream (null); undefined: nothing yet (non-waiting calls). */
type RawReceive = ReceivedMessage | null;

/** What the GC backstop needs to release a socket nobody closed. */
interface SocketResources {
  fd: number;
  watch: FdWatch | undefined;
}

// Backstop for sockets dropped without close(): release the fd when the
// object is collected. Explicit close() is the normal path and unregisters.
const droppedSockets = new FinalizationRegistry<SocketResources>((res) => {
  res.watch?.close();
  loadNative().qbn_close(res.fd);
});

/**
 * Base of all qbun unix sockets. Owns its fd; `close()` is idempotent and
 * rejects pending waits with {@link ClosedError}.
 */
export class UnixSocket implements Disposable, AsyncDisposable {
  /** The kernel socket type. */
  readonly type: SocketType;
  #fd: number;
  #watch: FdWatch | undefined;
  #ref = true;
  protected readonly native: Native;
  readonly #meta = new Int32Array(8);
  readonly #addrBuf = new Uint8Array(SOCKADDR_UN_SIZE);
  #fdBuf = new Int32Array(16);
  #recvScratch: Uint8Array | undefined;
  /** Waiting receives since the last one that waited (see RECEIVES_PER_TURN). */
  #receivedWithoutWait = 0;

  readonly #resources: SocketResources;

  /** @internal adopt a socket fd created by qbun (non-blocking, close-on-exec). */
  constructor(fd: number, type: SocketType) {
    this.native = loadNative();
    this.#fd = fd;
    this.type = type;
    this.#resources = { fd, watch: undefined };
    droppedSockets.register(this, this.#resources, this);
  }

  /** The socket's fd. Throws {@link ClosedError} after close. */
  get fd(): number {
    if (this.#fd < 0) throw new ClosedError(`${this.type} socket`);
    return this.#fd;
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The address this socket is bound to. */
  localAddress(): UnixAddress {
    this.#meta[0] = SOCKADDR_UN_SIZE;
    check(this.native.qbn_getsockname(this.fd, this.#addrBuf, this.#meta), "getsockname");
    return decodeAddress(this.#addrBuf, this.#meta[0]!);
  }

  /** The address of the connected peer. */
  peerAddress(): UnixAddress {
    this.#meta[0] = SOCKADDR_UN_SIZE;
    check(this.native.qbn_getpeername(this.fd, this.#addrBuf, this.#meta), "getpeername");
    return decodeAddress(this.#addrBuf, this.#meta[0]!);
  }

  /** The connected peer's credentials at connect time (SO_PEERCRED). */
  peerCredentials(): Credentials {
    const out = new Int32Array(3);
    check(this.native.qbn_peercred(this.fd, out), "getsockopt(SO_PEERCRED)");
    return { pid: out[0]!, uid: out[1]! >>> 0, gid: out[2]! >>> 0 };
  }

  /** SO_PASSCRED: receive the sender's credentials with every message. */
  get passCredentials(): boolean {
    return check(this.native.qbn_getsockopt_int(this.fd, SOL_SOCKET, SO_PASSCRED), "getsockopt(SO_PASSCRED)") !== 0;
  }
  set passCredentials(on: boolean) {
    check(this.native.qbn_setsockopt_int(this.fd, SOL_SOCKET, SO_PASSCRED, on ? 1 : 0), "setsockopt(SO_PASSCRED)");
  }

  /** Kernel send buffer size (SO_SNDBUF). */
  get sendBufferSize(): number {
    return check(this.native.qbn_getsockopt_int(this.fd, SOL_SOCKET, SO_SNDBUF), "getsockopt(SO_SNDBUF)");
  }
  set sendBufferSize(bytes: number) {
    check(this.native.qbn_setsockopt_int(this.fd, SOL_SOCKET, SO_SNDBUF, bytes), "setsockopt(SO_SNDBUF)");
  }

  /** Kernel receive buffer size (SO_RCVBUF). */
  get receiveBufferSize(): number {
    return check(this.native.qbn_getsockopt_int(this.fd, SOL_SOCKET, SO_RCVBUF), "getsockopt(SO_RCVBUF)");
  }
  set receiveBufferSize(bytes: number) {
    check(this.native.qbn_setsockopt_int(this.fd, SOL_SOCKET, SO_RCVBUF, bytes), "setsockopt(SO_RCVBUF)");
  }

  /** Let pending waits keep the process alive (the default). */
  ref(): this {
    this.#ref = true;
    this.#watch?.setRef(true);
    return this;
  }

  /** Pending waits on this socket no longer keep the process alive. */
  unref(): this {
    this.#ref = false;
    this.#watch?.setRef(false);
    return this;
  }

  /**
   * Resolves once the socket is readable, has hung up, or has an error —
   * for code that runs its own non-blocking calls (`tryReceive`). The
   * readiness may be spurious: the next call can still find nothing.
   */
  async readable(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.waitReadable(options.signal);
  }

  /** Resolves once the socket is writable, has hung up, or has an error. */
  async writable(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.waitWritable(options.signal);
  }

  /** Resolves when the socket is readable, has hung up, or has an error. */
  protected async waitReadable(signal?: AbortSignal): Promise<number> {
    return (this.#watch ?? (await this.#makeWatch())).readable(signal);
  }

  /** Resolves when the socket is writable, has hung up, or has an error. */
  protected async waitWritable(signal?: AbortSignal): Promise<number> {
    return (this.#watch ?? (await this.#makeWatch())).writable(signal);
  }

  async #makeWatch(): Promise<FdWatch> {
    const reactor = await Reactor.get();
    const fd = this.fd; // throws if closed meanwhile
    this.#watch ??= this.#resources.watch = reactor.watch(fd);
    this.#watch.setRef(this.#ref);
    return this.#watch;
  }

  /**
   * sendmsg, waiting for buffer space on EAGAIN. Returns bytes sent (streams
   * may send fewer than given; control data goes with the first byte).
   */
  protected async sendRaw(
    data: Uint8Array,
    options: SendOptions,
    to: EncodedAddress | undefined,
    context?: string,
  ): Promise<number> {
    const fds = options.fds?.length ? Int32Array.from(options.fds, fdNumber) : null;
    const cred = options.credentials === true
      ? Int32Array.of(process.pid, process.getuid!(), process.getgid!())
      : options.credentials
        ? Int32Array.of(options.credentials.pid, options.credentials.uid, options.credentials.gid)
        : null;
    for (;;) {
      options.signal?.throwIfAborted();
      const rc = this.native.qbn_sendmsg(
        this.fd,
        data.byteLength > 0 ? data : null,
        data.byteLength,
        to ? to.bytes : null,
        to ? to.length : 0,
        fds,
        fds ? fds.length : 0,
        cred,
        0,
      );
      if (rc >= 0) return rc;
      if (rc !== -EAGAIN) {
        throw new QbunSystemError(-rc, "sendmsg", {
          address: to?.display ?? context,
          hint: rc === -90 ? `the message is ${data.byteLength} bytes; the socket's limit is lower (raise sendBufferSize or send less)` : undefined,
        });
      }
      await this.waitForSendSpace(options.signal, to);
    }
  }

  /** Wait until a send may succeed. Datagram sockets override this. */
  protected async waitForSendSpace(signal: AbortSignal | undefined, _to: EncodedAddress | undefined): Promise<void> {
    await this.waitWritable(signal);
  }

  /**
   * recvmsg one message, waiting for data. `exactLength`: peek at the next
   * message's size first (message-oriented sockets) so the buffer fits it.
   * Returns null at end of stream (peer closed, nothing left).
   */
  protected async receiveRaw(
    options: ReceiveOptions,
    exactLength: boolean,
    wantFrom: boolean,
    wait = true,
  ): Promise<RawReceive | undefined> {
    const maxFds = options.maxFds ?? 16;
    if (this.#fdBuf.length < maxFds) this.#fdBuf = new Int32Array(maxFds);
    const meta = this.#meta;
    if (wait && ++this.#receivedWithoutWait >= RECEIVES_PER_TURN) {
      this.#receivedWithoutWait = 0;
      await nextTurn();
    }
    for (;;) {
      options.signal?.throwIfAborted();
      let size = options.maxBytes ?? 65536;
      if (exactLength) {
        const peek = this.native.qbn_recv(this.fd, null, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
        if (peek === -EAGAIN) {
          if (!wait) return undefined;
          this.#receivedWithoutWait = 0;
          await this.waitReadable(options.signal);
          continue;
        }
        if (peek < 0) throw new QbunSystemError(-peek, "recvmsg");
        size = options.maxBytes === undefined ? peek : Math.min(peek, options.maxBytes);
      }
      // Message sockets peeked the exact size; a stream reads into a reusable
      // buffer and copies out only what arrived.
      const reuse = !exactLength && this.#recvScratch !== undefined && this.#recvScratch.length >= size;
      const data = reuse ? this.#recvScratch! : new Uint8Array(size);
      if (!exactLength) this.#recvScratch = undefined; // concurrent receives get their own
      meta[0] = wantFrom ? SOCKADDR_UN_SIZE : 0;
      const rc = this.native.qbn_recvmsg(
        this.fd,
        size > 0 ? data : null,
        size,
        wantFrom ? this.#addrBuf : null,
        meta,
        this.#fdBuf,
        maxFds,
        0,
      );
      if (!exactLength) this.#recvScratch = data;
      if (rc === -EAGAIN) {
        if (!wait) return undefined;
        this.#receivedWithoutWait = 0;
        await this.waitReadable(options.signal);
        continue;
      }
      if (rc < 0) throw new QbunSystemError(-rc, "recvmsg");
      const flags = meta[1]!;
      const arrived = meta[2]!;
      const surplusClosed = meta[7]!;
      const fds: OwnedFd[] = [];
      for (let i = 0; i < arrived; i++) fds.push(new OwnedFd(this.#fdBuf[i]!));
      const credentials = meta[3] ? { pid: meta[4]!, uid: meta[5]! >>> 0, gid: meta[6]! >>> 0 } : undefined;
      // A stream (or seqpacket) read of 0 bytes with no fds is end of stream.
      if (rc === 0 && this.type !== "datagram" && arrived === 0 && surplusClosed === 0) return null;
      const from = wantFrom ? decodeAddress(this.#addrBuf, meta[0]!) : undefined;
      return new ReceivedMessage(
        !exactLength ? data.slice(0, rc) : rc === size ? data : data.subarray(0, rc),
        fds,
        credentials,
        from,
        (flags & MSG_TRUNC) !== 0,
        (flags & MSG_CTRUNC) !== 0 || surplusClosed > 0,
      );
    }
  }

  /** Plain recv into `into` (ancillary data, if any, is discarded by the kernel). */
  protected async recvInto(into: Uint8Array, signal?: AbortSignal): Promise<number> {
    if (++this.#receivedWithoutWait >= RECEIVES_PER_TURN) {
      this.#receivedWithoutWait = 0;
      await nextTurn();
    }
    for (;;) {
      signal?.throwIfAborted();
      const rc = this.native.qbn_recv(this.fd, into, into.byteLength, 0);
      if (rc >= 0) return rc;
      if (rc !== -EAGAIN) throw new QbunSystemError(-rc, "recv");
      this.#receivedWithoutWait = 0;
      await this.waitReadable(signal);
    }
  }

  /**
   * Close the socket: pending waits reject with {@link ClosedError}, the fd
   * is closed. Idempotent.
   */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    droppedSockets.unregister(this);
    this.#watch?.close();
    this.#watch = undefined;
    this.native.qbn_close(fd);
    this.afterClose();
  }

  /** Hook for subclasses that own more than the fd (e.g. a socket file). */
  protected afterClose(): void {}

  /** Same as {@link UnixSocket.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link UnixSocket.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

/** @internal create a non-blocking, close-on-exec AF_UNIX socket. */
export function newSocketFd(native: Native, type: SocketType): number {
  return check(native.qbn_socket(SOCK_TYPE[type]), "socket", {
    hint: "the process may be out of file descriptors (ulimit -n)",
  });
}
