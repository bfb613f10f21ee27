/**
 * Typed errors for failed system calls, shaped like Node's `SystemError`.
 * @module
 */
import os from "node:os";
import util from "node:util";

// Some numbers have two names (EAGAIN/EWOULDBLOCK, ENOTSUP/EOPNOTSUPP): keep
// the first, which is the one Node reports (util.getSystemErrorName).
const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** The symbolic name (`"EADDRINUSE"`) of a positive errno value. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** The errno value of a symbolic name such as `"EAGAIN"`. */
export function errnoOf(name: keyof typeof os.constants.errno): number {
  return os.constants.errno[name];
}

/** Extra context attached to a {@link QbunSystemError}. */
export interface SystemErrorContext {
  /** Filesystem path involved, if any. */
  path?: string;
  /** Socket address involved, printed as given by the user. */
  address?: string;
  /** A sentence telling the user what to do about it. */
  hint?: string;
}

/**
 * A failed system call: `code` is the errno name (`"ECONNREFUSED"`), `errno`
 * the positive number, `syscall` the call that failed. The message says what
 * went wrong in words, and how to fix it where qbun knows.
 */
export class QbunSystemError extends Error {
  /** Errno name, e.g. `"EADDRINUSE"`. */
  readonly code: string;
  /** Positive errno value. */
  readonly errno: number;
  /** The system call that failed, e.g. `"bind"`. */
  readonly syscall: string;
  /** Path involved, when there is one. */
  readonly path?: string;
  /** Socket address involved, when there is one. */
  readonly address?: string;

  constructor(errno: number, syscall: string, context: SystemErrorContext = {}) {
    const code = errnoName(errno);
    const what = util.getSystemErrorMessage?.(-errno) ?? code;
    const where = context.address ?? context.path;
    super(
      `${syscall}${where ? ` ${where}` : ""} failed: ${what} (${code})` +
        (context.hint ? `. ${context.hint[0]!.toUpperCase()}${context.hint.slice(1)}` : ""),
    );
    this.name = "QbunSystemError";
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    if (context.path !== undefined) this.path = context.path;
    if (context.address !== undefined) this.address = context.address;
  }
}

/**
 * Turn a helper return value into a result: negative values are `-errno` and
 * throw a {@link QbunSystemError}; others are returned.
 */
export function check(rc: number, syscall: string, context?: SystemErrorContext): number {
  if (rc < 0) throw new QbunSystemError(-rc, syscall, context);
  return rc;
}

/** Error thrown when an operation is used on a handle that was closed. */
export class ClosedError extends Error {
  /** Always `"ERR_QBUN_CLOSED"`. */
  readonly code = "ERR_QBUN_CLOSED";
  constructor(what: string) {
    super(`${what} is closed`);
    this.name = "ClosedError";
  }
}

/** Thrown for arguments rejected before any system call is made. */
export class QbunArgumentError extends TypeError {
  /** Always `"ERR_INVALID_ARG_VALUE"`, as in Node. */
  readonly code = "ERR_INVALID_ARG_VALUE";
  constructor(message: string) {
    super(message);
    this.name = "QbunArgumentError";
  }
}
