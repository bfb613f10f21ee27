/**
 * Client-side connect shared by stream and seqpacket sockets.
 * @module
 */
import { QbunSystemError } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";
import { encodeAddress, type AddressInput } from "./address.ts";
import { newSocketFd, type SocketType } from "./socket.ts";

/** Options for connecting a socket. */
export interface ConnectOptions {
  /** Cancels the connect while it waits for room in the listener's backlog. */
  signal?: AbortSignal;
  /** Give up after this many milliseconds of a full backlog (default 10 s). */
  timeout?: number;
}

const EAGAIN = 11;

/**
 * Connect a new socket of `type` to `address`; returns the connected fd.
 * A unix-socket connect never blocks on the network; it only waits when the
 * listener's backlog is full (EAGAIN). The kernel gives no readiness event
 * for that, so qbun retries with a doubling pause (1 ms … 50 ms).
 */
export async function connectFd(address: AddressInput, type: SocketType, options: ConnectOptions): Promise<number> {
  const encoded = encodeAddress(address);
  const native = loadNative();
  const fd = newSocketFd(native, type);
  const deadline = Date.now() + (options.timeout ?? 10_000);
  let pause = 1;
  try {
    for (;;) {
      options.signal?.throwIfAborted();
      const rc = native.qbn_connect(fd, encoded.bytes, encoded.length);
      if (rc === 0) return fd;
      if (rc !== -EAGAIN || Date.now() >= deadline) {
        throw new QbunSystemError(-rc, "connect", {
          address: encoded.display,
          hint: hintFor(-rc),
        });
      }
      await Bun.sleep(pause);
      pause = Math.min(pause * 2, 50);
    }
  } catch (error) {
    native.qbn_close(fd);
    throw error;
  }
}

function hintFor(errno: number): string | undefined {
  switch (errno) {
    case 2:
      return "no socket file exists at that path: is the server running?";
    case 111:
      return "nothing listens there: is the server running (and in this network namespace)?";
    case 13:
      return "permission denied on the socket file or its directory";
    case 91:
      return "the socket there has a different type (stream vs seqpacket vs datagram)";
    case 11:
      return "the listener's backlog stayed full until the timeout";
  }
  return undefined;
}
