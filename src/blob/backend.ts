/**
 * Where a blob's memory comes from: memfd (sealable, never named), POSIX
 * shared memory, or an unnamed temp file. Every backend hands back an fd
 * whose name, if it ever had one, is already gone, so a crash at any later
 * point leaves nothing behind in /dev/shm or the temp dir.
 * @module
 */
import { tmpdir } from "node:os";
import { QbunSystemError } from "../../ffi/errors.ts";
import { SharedMemory } from "../shm/shared-memory.ts";
import { randomHex } from "./ids.ts";

/**
 * The backends, in preference order for `"auto"`. The order is also the wire
 * encoding of an OFFER's backend byte (index + 1): append, never reorder.
 * @internal
 */
export const BACKEND_ORDER = ["memfd", "posix", "tempfile"] as const;

/**
 * A concrete blob backend. Only `memfd` blobs are sealed, and so immutable
 * for every holder of an fd; `posix` and `tempfile` blobs can still be
 * changed by their owner's user (see `ShmBlobWriter.publish`).
 */
export type BlobBackend = (typeof BACKEND_ORDER)[number];

/** A backend, or `"auto"`: the first of memfd, posix, tempfile that works here. */
export type BlobBackendChoice = BlobBackend | "auto";

const probed = new Map<string, boolean>();

/**
 * Whether `backend` works on this system (memfd_create exists and is not
 * blocked, /dev/shm accepts objects, the temp dir accepts files). Cached.
 */
export function backendAvailable(backend: BlobBackend, dir = tmpdir()): boolean {
  const key = backend === "tempfile" ? `tempfile:${dir}` : backend;
  const known = probed.get(key);
  if (known !== undefined) return known;
  let ok: boolean;
  try {
    createMemory(backend, 1, dir).close();
    ok = true;
  } catch (error) {
    if (!(error instanceof QbunSystemError)) throw error;
    ok = false;
  }
  probed.set(key, ok);
  return ok;
}

/** The backend `"auto"` stands for here, or a forced one as given. */
export function resolveBackend(choice: BlobBackendChoice, dir?: string, available = backendAvailable): BlobBackend {
  if (choice !== "auto") return choice;
  for (const backend of BACKEND_ORDER) if (available(backend, dir)) return backend;
  throw new QbunSystemError(38 /* ENOSYS */, "memfd_create/shm_open/open(O_TMPFILE)", {
    hint: "no blob backend works here: memfd is blocked, /dev/shm is missing and the temp dir refuses files; pass tempDir pointing at a writable directory",
  });
}

/**
 * A new read-write shared-memory file of `size` bytes, with no name left
 * anywhere. Every backend's memory is reserved (fallocate) so that a full
 * tmpfs, memory cgroup or filesystem fails here with a typed ENOSPC/ENOMEM
 * rather than with SIGBUS (or the OOM killer) on first touch.
 */
export function createMemory(backend: BlobBackend, size: number, dir = tmpdir()): SharedMemory {
  switch (backend) {
    case "memfd":
      return reserved(SharedMemory.memfd({ size: 0, name: "qbun-blob", sealable: true }), size);
    case "posix": {
      // The name exists only between these two calls: unlinked before anything can fail.
      const name = `/qbun-blob-${process.pid}-${randomHex(8)}`;
      const mem = SharedMemory.posix({ name, create: true, exclusive: true, mode: 0o600 });
      return reserved(mem, size, () => SharedMemory.unlinkPosix(name));
    }
    case "tempfile":
      // O_TMPFILE (or mkostemp + immediate unlink): never visible in the directory.
      return reserved(SharedMemory.tempFile({ size: 0, dir }), size);
  }
}

function reserved(mem: SharedMemory, size: number, unlink?: () => void): SharedMemory {
  try {
    unlink?.();
    mem.allocate(size);
    return mem;
  } catch (error) {
    mem.close();
    throw error;
  }
}
