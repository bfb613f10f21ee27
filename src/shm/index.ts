/**
 * `qbun/shm`: shared-memory files (memfd with seals, POSIX shm, temp file),
 * crash-proof zero-copy mappings (plain and circular), and process-shared
 * semaphores inside them.
 * @module
 */
export { DeferredMapping, Mapping, ReadonlyBytes } from "./mapping.ts";
export type { MapAccess } from "./mapping.ts";
export { SEMAPHORE_SIZE, Semaphore } from "./semaphore.ts";
export type { SemaphoreWaitOptions } from "./semaphore.ts";
export { SharedMemory } from "./shared-memory.ts";
export type { MapOptions, MemfdOptions, OpenFileOptions, PosixShmOptions, Seal, SharedMemoryKind, SharedMemoryStat } from "./shared-memory.ts";
export { OwnedFd } from "../../ffi/fd.ts";
export { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
