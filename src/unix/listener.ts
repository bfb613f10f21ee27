/**
 * Listening stream and seqpacket sockets.
 * @module
 */
import { check, ClosedError, QbunSystemError } from "../../ffi/errors.ts";
import { loadNative } from "../../ffi/native.ts";
import { encodeAddress, type AddressInput } from "./address.ts";
import { bindSocket, removeSocketFile, type BindOptions, type OwnedSocketFile } from "./bind.ts";
import { UnixSeqpacket } from "./seqpacket.ts";
import { newSocketFd, UnixSocket } from "./socket.ts";
import { UnixStream } from "./stream.ts";

/** Options for {@link UnixListener.listen}. */
export interface ListenOptions<T extends "stream" | "seqpacket" = "stream" | "seqpacket"> extends BindOptions {
  /** Socket type (default `"stream"`). */
  type?: T;
  /** listen(2) backlog (default 511). */
  backlog?: number;
}

type ConnectionOf<T extends "stream" | "seqpacket"> = T extends "seqpacket" ? UnixSeqpacket : UnixStream;

const EAGAIN = 11;

/**
 * A listening AF_UNIX socket. Accept with `accept()`, `for await`, or
 * `serve(handler)`. Closing ends iteration and removes the socket file it
 * created.
 *
 * ```ts
 * using server = UnixListener.listen("/run/app.sock", { mode: 0o660 });
 * for await (const conn of server) handle(conn);
 * ```
 */
export class UnixListener<T extends "stream" | "seqpacket" = "stream"> extends UnixSocket {
  readonly #file: OwnedSocketFile | undefined;

  private constructor(fd: number, type: T, file: OwnedSocketFile | undefined) {
    super(fd, type);
    this.#file = file;
  }

  /** Bind and listen. A live socket at the address → EADDRINUSE; a stale file is replaced. */
  static listen<T extends "stream" | "seqpacket" = "stream">(
    address: AddressInput,
    options: ListenOptions<T> = {},
  ): UnixListener<T> {
    const encoded = encodeAddress(address);
    const native = loadNative();
    const type = (options.type ?? "stream") as T;
    const fd = newSocketFd(native, type);
    let file: OwnedSocketFile | undefined;
    try {
      file = bindSocket(native, fd, encoded, type, options);
      check(native.qbn_listen(fd, options.backlog ?? 511), "listen", { address: encoded.display });
    } catch (error) {
      native.qbn_close(fd);
      if (file) removeSocketFile(native, file);
      throw error;
    }
    return new UnixListener(fd, type, file);
  }

  /** Wait for and accept one connection. Rejects with ClosedError once closed. */
  async accept(options: { signal?: AbortSignal } = {}): Promise<ConnectionOf<T>> {
    for (;;) {
      options.signal?.throwIfAborted();
      const meta = Int32Array.of(0);
      const rc = this.native.qbn_accept(this.fd, null, meta);
      if (rc >= 0) {
        return (this.type === "seqpacket" ? new UnixSeqpacket(rc) : new UnixStream(rc)) as ConnectionOf<T>;
      }
      if (rc !== -EAGAIN && rc !== -103 /* ECONNABORTED */ && rc !== -4 /* EINTR */) {
        throw new QbunSystemError(-rc, "accept", {
          hint: rc === -24 ? "out of file descriptors: raise the limit (ulimit -n) or close connections" : undefined,
        });
      }
      await this.waitReadable(options.signal);
    }
  }

  /** Connections until the listener is closed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ConnectionOf<T>, void, void> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (error) {
        if (error instanceof ClosedError) return;
        throw error;
      }
    }
  }

  /**
   * Callback form: call `handler` for every connection until closed. The
   * promise settles when the listener closes (or rejects on an accept error).
   * Errors thrown by the handler close that connection and are passed to
   * `onError` (default: ignored).
   */
  async serve(
    handler: (connection: ConnectionOf<T>) => unknown,
    onError: (error: unknown, connection: ConnectionOf<T>) => void = () => {},
  ): Promise<void> {
    for await (const connection of this) {
      Promise.resolve()
        .then(() => handler(connection))
        .catch((error) => {
          connection.close();
          onError(error, connection);
        });
    }
  }

  protected override afterClose(): void {
    if (this.#file) removeSocketFile(this.native, this.#file);
  }
}
