/**
 * SOCK_DGRAM sockets: bound or unbound, connected or not.
 * @module
 */
import { check, QbunSystemError } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";
import { encodeAddress, type AddressInput, type EncodedAddress } from "./address.ts";
import { bindSocket, removeSocketFile, type BindOptions, type OwnedSocketFile } from "./bind.ts";
import { newSocketFd, UnixSocket, SOCK_TYPE, type ReceivedMessage, type ReceiveOptions, type SendOptions } from "./socket.ts";

const EAGAIN = 11;
const EMSGSIZE = 90;
const MSG_PEEK = 0x02;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;

/** The parts of one message, joined (trySend with three parts or more). */
function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.byteLength;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * An AF_UNIX datagram socket. Message boundaries are kept; a datagram larger
 * than the socket allows fails with EMSGSIZE.
 *
 * ```ts
 * using a = UnixDatagram.bound("\0my-service");
 * using b = UnixDatagram.unbound();
 * await b.sendTo("\0my-service", bytes);
 * const msg = await a.receive(); // msg.data, msg.from
 * ```
 */
export class UnixDatagram extends UnixSocket {
  #file: OwnedSocketFile | undefined;

  private constructor(fd: number, file?: OwnedSocketFile) {
    super(fd, "datagram");
    this.#file = file;
  }

  /** A datagram socket bound to `address` (a stale socket file is replaced). */
  static bound(address: AddressInput, options: BindOptions = {}): UnixDatagram {
    const encoded = encodeAddress(address);
    const native = loadNative();
    const fd = newSocketFd(native, "datagram");
    try {
      return new UnixDatagram(fd, bindSocket(native, fd, encoded, "datagram", options));
    } catch (error) {
      native.qbn_close(fd);
      throw error;
    }
  }

  /** A datagram socket with no address (it can send; replies need an address). */
  static unbound(): UnixDatagram {
    return new UnixDatagram(newSocketFd(loadNative(), "datagram"));
  }

  /** A connected pair (socketpair). */
  static pair(): [UnixDatagram, UnixDatagram] {
    const fds = new Int32Array(2);
    check(loadNative().qbn_socketpair(SOCK_TYPE.datagram, fds), "socketpair");
    return [new UnixDatagram(fds[0]!), new UnixDatagram(fds[1]!)];
  }

  /** Set the default destination (and only accept datagrams from it). */
  connect(address: AddressInput): void {
    const encoded = encodeAddress(address);
    check(this.native.qbn_connect(this.fd, encoded.bytes, encoded.length), "connect", { address: encoded.display });
  }

  /** Send one datagram to the connected peer. */
  async send(data: Uint8Array, options: SendOptions = {}): Promise<void> {
    await this.sendRaw(data, options, undefined);
    this.#backoff = 0;
  }

  /** Send one datagram to `address`. */
  async sendTo(address: AddressInput, data: Uint8Array, options: SendOptions = {}): Promise<void> {
    await this.sendRaw(data, options, encodeAddress(address));
    this.#backoff = 0; // the receiver had room again: start the next wait short
  }

  /**
   * Send one datagram to the connected peer now, without waiting. `data` may
   * come in parts (say, a header and its payload): they leave as one
   * datagram, two parts without being joined first. True when sent; false
   * when the peer's queue is full (wait with {@link UnixSocket.writable},
   * then retry). Other failures throw (ECONNREFUSED once the peer is gone).
   */
  trySend(data: Uint8Array | readonly Uint8Array[]): boolean {
    let rc: number;
    if (data instanceof Uint8Array) {
      rc = this.native.qbn_send(this.fd, data.byteLength > 0 ? data : null, data.byteLength, MSG_DONTWAIT);
    } else if (data.length === 2) {
      const [a, b] = data as [Uint8Array, Uint8Array];
      rc = this.native.qbn_send2(this.fd, a.byteLength > 0 ? a : null, a.byteLength, b.byteLength > 0 ? b : null, b.byteLength, MSG_DONTWAIT);
    } else {
      return this.trySend(joinParts(data));
    }
    if (rc >= 0) return true;
    if (rc === -EAGAIN) return false;
    throw new QbunSystemError(-rc, "send", {
      hint: rc === -EMSGSIZE ? "the datagram is larger than the socket allows (raise sendBufferSize or send less)" : undefined,
    });
  }

  /**
   * Take one queued datagram into `into` now, without waiting. Returns the
   * datagram's whole length — more than `into.byteLength` if it did not fit
   * (the rest is lost, as with any datagram read) — or undefined when none
   * is queued. Use {@link UnixDatagram.nextLength} to size `into` first.
   */
  tryReceiveInto(into: Uint8Array): number | undefined {
    const rc = this.native.qbn_recv(this.fd, into.byteLength > 0 ? into : null, into.byteLength, MSG_DONTWAIT | MSG_TRUNC);
    if (rc >= 0) return rc;
    if (rc === -EAGAIN) return undefined;
    throw new QbunSystemError(-rc, "recv");
  }

  /** The length of the next queued datagram, leaving it queued; undefined when none is. */
  nextLength(): number | undefined {
    const rc = this.native.qbn_recv(this.fd, null, 0, MSG_DONTWAIT | MSG_TRUNC | MSG_PEEK);
    if (rc >= 0) return rc;
    if (rc === -EAGAIN) return undefined;
    throw new QbunSystemError(-rc, "recv");
  }

  /** A datagram if one is queued now, else undefined — never waits. */
  async tryReceive(options: Omit<ReceiveOptions, "signal"> = {}): Promise<ReceivedMessage | undefined> {
    return (await this.receiveRaw(options, true, true, false)) ?? undefined;
  }

  /** Receive one datagram with its sender's address and ancillary data. */
  receive(options: ReceiveOptions = {}): Promise<ReceivedMessage> {
    return this.receiveRaw(options, true, true) as Promise<ReceivedMessage>;
  }

  /** Datagrams until the socket is closed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ReceivedMessage, void, void> {
    for (;;) {
      try {
        yield await this.receive();
      } catch (error) {
        if (this.closed) return;
        throw error;
      }
    }
  }

  /**
   * A connected datagram socket is woken by the kernel when its peer drains.
   * An unconnected send to a full receiver gets no wake-up from the kernel
   * (poll only tracks a connected peer), so it retries after a doubling pause.
   */
  protected override async waitForSendSpace(signal: AbortSignal | undefined, to: EncodedAddress | undefined): Promise<void> {
    if (!to) return this.waitWritable(signal).then(() => {});
    this.#backoff = Math.min(this.#backoff * 2 || 1, 50);
    await Bun.sleep(this.#backoff);
    signal?.throwIfAborted();
  }
  #backoff = 0;

  protected override afterClose(): void {
    if (this.#file) removeSocketFile(this.native, this.#file);
    this.#file = undefined;
  }
}
