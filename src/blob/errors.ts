/**
 * Typed errors of the blob layer. Each has a stable `code` to branch on and
 * a message that says what to do.
 * @module
 */

/**
 * Why a received blob descriptor can be refused. The order is the wire
 * encoding of a REFUSED frame's reason (index + 1): append, never reorder.
 * @internal
 */
export const DESCRIPTOR_PROBLEMS = [
  "size-mismatch",
  "not-sealed",
  "not-a-file",
  "too-large",
  "map-failed",
  "duplicate",
  "busy",
  "metadata-too-large",
] as const;

/** Why a received blob descriptor was refused. */
export type BlobDescriptorProblem = (typeof DESCRIPTOR_PROBLEMS)[number];

/** What the producer can do about each refusal. */
const REFUSAL_ADVICE: Record<BlobDescriptorProblem, string> = {
  "size-mismatch": "the fd's size differs from the announced size: send the published blob itself, unchanged",
  "not-sealed": "the consumer accepts only sealed (memfd) blobs: create it on the memfd backend, or have the consumer pass requireSealed: false",
  "not-a-file": "the fd is not a shared-memory file: send a published blob",
  "too-large": "the blob exceeds the consumer's maxBlobSize: send a smaller blob or raise that limit on the consumer",
  "map-failed": "the consumer could not map it (out of address space or memory): retry later or send a smaller blob",
  duplicate: "the consumer already holds a blob with this id: wait for its release before sending it again",
  busy: "the consumer has too many blobs waiting to be received: send again once it has taken some, or raise its maxQueuedOffers",
  "metadata-too-large": "the metadata exceeds the consumer's maxMetadataBytes: send less metadata or raise that limit on the consumer",
};

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
    super(`the consumer refused blob ${id} (${problem}): ${REFUSAL_ADVICE[problem]}`);
    this.name = "BlobRefusedError";
    this.id = id;
    this.problem = problem;
  }
}

/** A blob channel that ended (closed here, or the peer went away) before the blob was mapped. */
export class BlobChannelClosedError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_CHANNEL_CLOSED"`. */
  readonly code = "ERR_QBUN_BLOB_CHANNEL_CLOSED";
  /** The blob's id. */
  readonly id: string;
  constructor(id: string) {
    super(
      `the blob channel ended before blob ${id} was mapped by the consumer: the blob is still held here; ` +
        "send it again on a new channel, or clean it up",
    );
    this.name = "BlobChannelClosedError";
    this.id = id;
  }
}

/**
 * The producer stopped waiting for a delivery (its `timeoutMs` passed, or
 * {@link BlobDelivery.abandon} was called) before the consumer released the
 * blob. The consumer may still hold its mapping.
 */
export class BlobDeliveryAbandonedError extends BlobError {
  /** Always `"ERR_QBUN_BLOB_ABANDONED"`. */
  readonly code = "ERR_QBUN_BLOB_ABANDONED";
  /** The blob's id. */
  readonly id: string;
  /** Whether the delivery's `timeoutMs` ran out (false: abandoned by a call). */
  readonly timedOut: boolean;
  constructor(id: string, timedOut: boolean, timeoutMs?: number) {
    super(
      timedOut
        ? `the consumer did not release blob ${id} within ${timeoutMs} ms; the producer stopped waiting (the consumer may still hold its mapping): raise timeoutMs if the consumer needs longer`
        : `the delivery of blob ${id} was abandoned before the consumer released it (the consumer may still hold its mapping)`,
    );
    this.name = "BlobDeliveryAbandonedError";
    this.id = id;
    this.timedOut = timedOut;
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
