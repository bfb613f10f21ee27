/**
 * Errors of the leased write path. Each has a stable `code`, the same on
 * both sides of a connection (the owner sends the code, the client rebuilds
 * the error), so callers branch on `code`, never on message text.
 * @module
 */

/** Stable codes of {@link LeaseError}. */
export type LeaseErrorCode =
  /** The capability policy does not allow this peer the action. */
  | "ERR_QBUN_LEASE_REFUSED"
  /** Another peer holds the lease and the caller asked not to wait. */
  | "ERR_QBUN_LEASE_BUSY"
  /** The caller does not hold the lease (never did, released, expired or revoked). */
  | "ERR_QBUN_LEASE_NOT_HELD"
  /** The fencing token is not the current one for that lease class. */
  | "ERR_QBUN_LEASE_STALE_TOKEN"
  /** offset + length falls outside the region. */
  | "ERR_QBUN_LEASE_OUT_OF_BOUNDS"
  /** No region of that name is served. */
  | "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT"
  /** The region was replaced (a new epoch began); wait for the new locator. */
  | "ERR_QBUN_LEASE_STALE_EPOCH"
  /** A synchronous read kept overlapping writes; use the async `Subscription.read()`, which waits for the next write notification. */
  | "ERR_QBUN_LEASE_CONTENDED"
  /** The owner ran out of a resource (e.g. file descriptors) answering this request; the connection stays up: retry later. */
  | "ERR_QBUN_LEASE_UNAVAILABLE"
  /** A peer sent bytes that do not follow the protocol. */
  | "ERR_QBUN_LEASE_PROTOCOL"
  /** The connection to the owner (or the client) ended. */
  | "ERR_QBUN_LEASE_DISCONNECTED";

const KNOWN = new Set<string>([
  "ERR_QBUN_LEASE_REFUSED",
  "ERR_QBUN_LEASE_BUSY",
  "ERR_QBUN_LEASE_NOT_HELD",
  "ERR_QBUN_LEASE_STALE_TOKEN",
  "ERR_QBUN_LEASE_OUT_OF_BOUNDS",
  "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT",
  "ERR_QBUN_LEASE_STALE_EPOCH",
  "ERR_QBUN_LEASE_CONTENDED",
  "ERR_QBUN_LEASE_UNAVAILABLE",
  "ERR_QBUN_LEASE_PROTOCOL",
  "ERR_QBUN_LEASE_DISCONNECTED",
]);

/** Whether `code` is one of the {@link LeaseErrorCode}s (for codes received from a peer). */
export function isLeaseErrorCode(code: string): code is LeaseErrorCode {
  return KNOWN.has(code);
}

/**
 * A refused or failed lease-path operation. `code` says which rule refused
 * it; the message says what to do.
 */
export class LeaseError extends Error {
  /** Why the operation failed. */
  readonly code: LeaseErrorCode;
  /** An error with a stable `code` and a message that says what to do. */
  constructor(code: LeaseErrorCode, message: string) {
    super(message);
    this.name = "LeaseError";
    this.code = code;
  }
}
