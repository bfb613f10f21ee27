/**
 * `qbun/blob`: a zero-copy data plane. Producers fill shared-memory blobs
 * (memfd, POSIX shm or temp file), publish (seal) them and hand them to other
 * processes as fds over a unix socket; consumers map them read-only.
 * Imports `src/shm`, `src/unix` and the shared error and fd types of `ffi/`
 * (no native calls of its own); tests in test/blob*.test.ts.
 * @module
 */
export { BlobAllocator } from "./allocator.ts";
export type { BlobAllocatorOptions, BlobHoldings, CreateBlobOptions } from "./allocator.ts";
export { backendAvailable } from "./backend.ts";
export type { BlobBackend, BlobBackendChoice } from "./backend.ts";
export { BlobChannel, BlobDelivery } from "./channel.ts";
export type { BlobChannelOptions, BlobDeliveryState, BlobReleaseOutcome, SendBlobOptions } from "./channel.ts";
export {
  BlobChannelClosedError,
  BlobDeliveryAbandonedError,
  BlobDescriptorError,
  BlobError,
  BlobProtocolError,
  BlobQuotaError,
  BlobRefusedError,
  BlobStaleError,
  BlobTokenError,
} from "./errors.ts";
export type { BlobDescriptorProblem } from "./errors.ts";
export { BlobReader } from "./reader.ts";
export type { BlobExpectation } from "./reader.ts";
export { ShmBlob, ShmBlobWriter } from "./shm-blob.ts";
export { ReadonlyBytes } from "../shm/mapping.ts";
export { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
