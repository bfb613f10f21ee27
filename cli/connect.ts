/**
 * Connecting to a libqb service from the CLI (`call`, `bench`, the
 * interactive session): one deadline for connecting and what follows, and
 * connect failures turned into errors that say what to do.
 * @module
 */
import { errnoOf, QbunSystemError } from "../ffi/errors.ts";
import { QbClient } from "../src/qb/index.ts";

/**
 * One time budget for several steps (connect, then request): each step
 * gets what is left, so the whole never takes longer than `ms`.
 */
export class Deadline {
  /** The budget, ms. */
  readonly ms: number;
  /** Aborts (with a TimeoutError) when the budget is spent. */
  readonly signal: AbortSignal;
  readonly #end: number;

  /** Starts the clock: `ms` milliseconds from now. */
  constructor(ms: number) {
    this.ms = ms;
    this.#end = performance.now() + ms;
    this.signal = AbortSignal.timeout(ms);
  }

  /** Milliseconds left (at least 1, so a step that starts right at the end still fails by timing out, not on a zero timeout). */
  remaining(): number {
    return Math.max(1, Math.ceil(this.#end - performance.now()));
  }
}

/** How to connect. */
export interface ConnectOptions {
  /** Max message size to negotiate. */
  readonly maxMessageSize?: number;
  /** Time budget for connecting (the handshake included); the rest is left for the caller's requests. */
  readonly deadline?: Deadline;
  /** Timeout for connecting, ms, when no deadline is given (default 5000). */
  readonly timeout?: number;
  /** Cancels the connect. */
  readonly signal?: AbortSignal;
}

/**
 * Connects to `service` with qbun's client.
 * @throws QbunSystemError with a hint: ECONNREFUSED/ENOENT when nothing listens under the name, ETIMEDOUT when the deadline passed first.
 */
export async function connectService(service: string, options: ConnectOptions = {}): Promise<QbClient> {
  const deadline = options.deadline ?? new Deadline(options.timeout ?? 5_000);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal;
  try {
    return await QbClient.connect(service, { maxMessageSize: options.maxMessageSize, signal, timeout: deadline.remaining() });
  } catch (error) {
    if (deadline.signal.aborted && !options.signal?.aborted) {
      throw new QbunSystemError(errnoOf("ETIMEDOUT"), "connect", { address: service, hint: `no connection within ${deadline.ms} ms (the server accepts but does not answer, or is very busy)` });
    }
    throw connectHint(service, error);
  }
}

/**
 * A connect failure with a sentence on what to do: nothing listens under
 * that name (ECONNREFUSED/ENOENT) means the service is not running here.
 */
export function connectHint(service: string, error: unknown): unknown {
  if (error instanceof QbunSystemError && (error.code === "ECONNREFUSED" || error.code === "ENOENT")) {
    return new QbunSystemError(error.errno, "connect", {
      address: service,
      hint: `no libqb service "${service}" is listening here (in this network namespace); "qbun ls" lists the running ones`,
    });
  }
  return error;
}

/** The negative errno a failure stands for (ETIMEDOUT for a timeout, EIO when it carries none). */
export function failureErrno(error: unknown): number {
  if (error instanceof QbunSystemError) return -error.errno;
  if (error instanceof Error && error.name === "TimeoutError") return -errnoOf("ETIMEDOUT");
  return -errnoOf("EIO");
}
