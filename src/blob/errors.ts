/**
 * Typed errors of the blob layer. Each has a stable `code` to branch on and
 * a message that says what to do.
 * @module
 */

/** Why a received blob descriptor was refused. */
export type BlobDescriptorProblem =
  | "size-mismatch"
  | "not-sealed"
  | "not-a-file"
  | "too-large"
  | "map-failed"
  | "duplicate"
  | "busy";

/** Base class of the blob errors. */
export abstract class BlobError extends Error {
  /** Stable machine-readable code, e.g. `"ERR_QBUN_BLOB_TOKEN"`. */
  abstract readonly code: string;
}

/** A token that this allocator never issued (forged, corrupted, or from another allocator). */
export class BlobTokenError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_TOKEN"`. */
  readonly code = "ERR_QBUN_BLOB_TOKEN";
  constructor(detail: string) {
    super(`not a blob token issued by this allocator (${detail}): pass the token returned by create()`);
    this.name = "BlobTokenError";
  }
}

/** A genuine token or blob whose memory is no longer held: cleaned up, or reclaimed when its lease expired. */
export class BlobStaleError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_STALE"`. */
  readonly code = "ERR_QBUN_BLOB_STALE";
  /** The blob's id. */
  readonly id: string;
  constructor(id: string, why: "cleaned-up" | "expired" | "unknown") {
    super(
      why === "expired"
        ? `blob ${id} was reclaimed because its lease expired: create it with a longer leaseMs or call renew() in time`
        : why === "cleaned-up"
          ? `blob ${id} was already cleaned up: it can no longer be written, sent or renewed`
          : `blob ${id} is no longer held by this allocator (cleaned up or expired)`,
    );
    this.name = "BlobStaleError";
    this.id = id;
  }
}

/** A blob descriptor whose fd does not match what was announced (size, seals, kind of file). */
export class BlobDescriptorError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_DESCRIPTOR"`. */
  readonly code = "ERR_QBUN_BLOB_DESCRIPTOR";
  /** What was wrong. */
  readonly problem: BlobDescriptorProblem;
  constructor(problem: BlobDescriptorProblem, detail: string) {
    super(`blob descriptor refused (${problem}): ${detail}`);
    this.name = "BlobDescriptorError";
    this.problem = problem;
  }
}

/** The peer of a blob channel broke the protocol; the channel was closed. */
export class BlobProtocolError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_PROTOCOL"`. */
  readonly code = "ERR_QBUN_BLOB_PROTOCOL";
  constructor(detail: string) {
    super(`blob channel peer broke the protocol: ${detail}; the channel was closed`);
    this.name = "BlobProtocolError";
  }
}

/** The consumer refused a blob this side sent. */
export class BlobRefusedError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_REFUSED"`. */
  readonly code = "ERR_QBUN_BLOB_REFUSED";
  /** The blob's id. */
  readonly id: string;
  /** The consumer's reason. */
  readonly problem: BlobDescriptorProblem;
  constructor(id: string, problem: BlobDescriptorProblem) {
    super(`the consumer refused blob ${id} (${problem})`);
    this.name = "BlobRefusedError";
    this.id = id;
    this.problem = problem;
  }
}

/** A blob channel that ended (closed here, or the peer went away) before the blob was mapped. */
export class BlobChannelClosedError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_CHANNEL_CLOSED"`. */
  readonly code = "ERR_QBUN_BLOB_CHANNEL_CLOSED";
  constructor(id: string) {
    super(`the blob channel ended before blob ${id} was mapped by the consumer`);
    this.name = "BlobChannelClosedError";
  }
}

/** Creating a blob would exceed the allocator's byte quota. */
export class BlobQuotaError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_QUOTA"`. */
  readonly code = "ERR_QBUN_BLOB_QUOTA";
  constructor(size: number, held: number, max: number) {
    super(`a ${size}-byte blob does not fit: ${held} of ${max} bytes are held; clean up blobs or raise maxTotalBytes`);
    this.name = "BlobQuotaError";
  }
}
