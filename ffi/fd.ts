/**
 * Owned file descriptors: a handle that closes its fd exactly once, by
 * `close()`, `using`, or — as a backstop for dropped handles, e.g. fds that
 * arrived with a message nobody looked at — when it is garbage-collected.
 * @module
 */
import { check, ClosedError } from "./errors.ts";
import { loadNative } from "./native.ts";

const orphanCloser = new FinalizationRegistry<number>((fd) => {
  loadNative().qbn_close(fd);
});

/**
 * An open file descriptor this process owns. Closing twice is harmless;
 * {@link OwnedFd.take} hands the number over to code that will close it.
 */
export class OwnedFd implements Disposable {
  #fd: number;

  /** Adopt `fd`: from now on this handle closes it. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`not a file descriptor: ${fd}`);
    this.#fd = fd;
    orphanCloser.register(this, fd, this);
  }

  /** The fd number. Throws {@link ClosedError} once closed or taken. */
  get fd(): number {
    if (this.#fd < 0) throw new ClosedError("file descriptor");
    return this.#fd;
  }

  /** Whether the handle still owns an fd. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Give up ownership and return the raw fd; the caller must close it. */
  take(): number {
    const fd = this.fd;
    this.#fd = -1;
    orphanCloser.unregister(this);
    return fd;
  }

  /** A new owned fd for the same open file (`F_DUPFD_CLOEXEC`). */
  dup(): OwnedFd {
    return new OwnedFd(check(loadNative().qbn_dup(this.fd), "fcntl(F_DUPFD_CLOEXEC)"));
  }

  /** Close the fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    orphanCloser.unregister(this);
    loadNative().qbn_close(fd);
  }

  /** Same as {@link OwnedFd.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Anything that names an fd: a raw number (not owned) or an {@link OwnedFd}. */
export type FdLike = number | OwnedFd;

/** The number behind an {@link FdLike}. */
export function fdNumber(fd: FdLike): number {
  return typeof fd === "number" ? fd : fd.fd;
}
