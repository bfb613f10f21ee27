/**
 * Connected SOCK_SEQPACKET sockets: reliable, ordered, message boundaries kept.
 * @module
 */
import { check } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";
import type { AddressInput } from "./address.ts";
import { connectFd, type ConnectOptions } from "./connect.ts";
import { UnixSocket, SOCK_TYPE, type ReceivedMessage, type ReceiveOptions, type SendOptions } from "./socket.ts";

/**
 * A connected AF_UNIX seqpacket socket. Each `send` is one message; each
 * `receive` returns exactly one. A zero-length message with no fds cannot be
 * told apart from end of stream by the kernel API, so it reads as end.
 */
export class UnixSeqpacket extends UnixSocket {
  /** Connect to a listening seqpacket socket. */
  static async connect(address: AddressInput, options: ConnectOptions = {}): Promise<UnixSeqpacket> {
    return new UnixSeqpacket(await connectFd(address, "seqpacket", options));
  }

  /** A connected pair (socketpair). */
  static pair(): [UnixSeqpacket, UnixSeqpacket] {
    const fds = new Int32Array(2);
    check(loadNative().qbn_socketpair(SOCK_TYPE.seqpacket, fds), "socketpair");
    return [new UnixSeqpacket(fds[0]!), new UnixSeqpacket(fds[1]!)];
  }

  /** Adopt a connected seqpacket socket fd created by qbun (consumes it). */
  constructor(fd: number) {
    super(fd, "seqpacket");
  }

  /** Send one message (EMSGSIZE if larger than the socket allows). */
  async send(data: Uint8Array, options: SendOptions = {}): Promise<void> {
    await this.sendRaw(data, options, undefined);
  }

  /** Receive one message; null at end of stream. */
  receive(options: ReceiveOptions = {}): Promise<ReceivedMessage | null> {
    return this.receiveRaw(options, true, false) as Promise<ReceivedMessage | null>;
  }

  /** Messages until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ReceivedMessage, void, void> {
    for (;;) {
      const message = await this.receive();
      if (message === null) return;
      yield message;
    }
  }
}
