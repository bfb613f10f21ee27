/**
 * Shared-memory files: memfd (optionally sealable), POSIX named shared
 * memory (`/dev/shm`), and an unnamed temp file as a fallback. Each is an fd
 * that can be sized, sealed, mapped, passed to another process over a unix
 * socket, and reopened read-only.
 * @module
 */
import { tmpdir } from "node:os";
import { check, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import { OwnedFd, type FdLike } from "../../ffi/fd.ts";
import { cstr, loadNative, type Native } from "../../ffi/native.ts";
import { Mapping, type MapAccess } from "./mapping.ts";

/** Where the memory comes from. */
export type SharedMemoryKind = "memfd" | "posix" | "tempfile" | "file" | "fd";

/** File seals (memfd only): what nobody may do to the file any more. */
export type Seal = "seal" | "shrink" | "grow" | "write" | "future-write";

const SEAL_BITS: Record<Seal, number> = { seal: 1, shrink: 2, grow: 4, write: 8, "future-write": 16 };
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const MFD_ALLOW_SEALING = 2;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_NOFOLLOW = 0o400000;
const ENOENT = 2;

/** Options for {@link SharedMemory.memfd}. */
export interface MemfdOptions {
  /** Size in bytes (the file starts zero-filled). */
  size: number;
  /** A label shown in /proc/PID/fd (default "qbun"). Not a path; need not be unique. */
  name?: string;
  /** Allow seals to be added later (default true). */
  sealable?: boolean;
}

/** Options for {@link SharedMemory.posix}. */
export interface PosixShmOptions {
  /** Name like `/my-region` (one leading slash, no other). */
  name: string;
  /** Size to set when creating (required with `create`). */
  size?: number;
  /** Create if missing (default false: open an existing object). */
  create?: boolean;
  /** With `create`: fail with EEXIST if it already exists. */
  exclusive?: boolean;
  /** Permission bits when creating (default 0o600). */
  mode?: number;
  /** Open read-only. */
  readOnly?: boolean;
}

/** Options for {@link SharedMemory.openFile}. */
export interface OpenFileOptions {
  /** Absolute path of the file (e.g. under `/dev/shm`). */
  path: string;
  /** Create it (default false). With `exclusive` (default true when creating), an existing file is EEXIST. */
  create?: boolean;
  /** With `create`: fail if the file exists (O_EXCL). Default true. */
  exclusive?: boolean;
  /** Permission bits when creating (default 0o600). */
  mode?: number;
  /** Size to give it, reserving the blocks (posix_fallocate) so that a full tmpfs fails now, not on first touch. */
  size?: number;
  /** Open read-only. */
  readOnly?: boolean;
  /** Refuse a symbolic link as the last path component (O_NOFOLLOW: ELOOP). */
  noFollow?: boolean;
}

/** What `fstat` says of a shared-memory file ({@link SharedMemory.stat}). */
export interface SharedMemoryStat {
  readonly size: number;
  /** File type and permission bits (`st_mode`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly dev: number;
  readonly ino: number;
}

/** Options for {@link SharedMemory.map}. */
export interface MapOptions {
  /** Default `read-write` (`read-only` for read-only fds). */
  access?: MapAccess;
  /** File offset (page-aligned). Default 0. */
  offset?: number;
  /** Bytes to map. Default: the file size minus offset. */
  length?: number;
  /**
   * Survive the file shrinking under the mapping (a peer that can truncate
   * it): an access beyond the new end reads zeros instead of killing the
   * process with SIGBUS, and {@link Mapping.faulted} turns true. For files
   * another process can resize; a sealed memfd does not need it.
   */
  guard?: boolean;
}

/**
 * A shared-memory file this process holds open.
 *
 * ```ts
 * using mem = SharedMemory.memfd({ size: 4096 });
 * using map = mem.map();
 * map.bytes.set([1, 2, 3]);
 * mem.addSeals(["shrink", "grow", "write"]); // needs no writable mapping left: close map first
 * ```
 */
export class SharedMemory implements Disposable {
  /** Which kind of object this is. */
  readonly kind: SharedMemoryKind;
  /** The memfd label, the POSIX name, or the file's path. */
  readonly name: string | undefined;
  /** Whether this fd was opened read-only. */
  readonly readOnly: boolean;
  readonly #fd: OwnedFd;
  readonly #native: Native;

  private constructor(fd: OwnedFd, kind: SharedMemoryKind, name: string | undefined, readOnly: boolean) {
    this.#fd = fd;
    this.kind = kind;
    this.name = name;
    this.readOnly = readOnly;
    this.#native = loadNative();
  }

  /** An anonymous memory file (memfd_create). */
  static memfd(options: MemfdOptions): SharedMemory {
    checkSize(options.size);
    const native = loadNative();
    const name = options.name ?? "qbun";
    const flags = options.sealable === false ? 0 : MFD_ALLOW_SEALING;
    const fd = new OwnedFd(check(native.qbn_memfd_create(cstr(name), flags), "memfd_create", {
      hint: "memfd needs Linux 3.17+; use SharedMemory.tempFile() where it is missing",
    }));
    return SharedMemory.#sized(new SharedMemory(fd, "memfd", name, false), options.size);
  }

  /** Give a new object its size; on failure close it, so nothing leaks. */
  static #sized(mem: SharedMemory, size: number): SharedMemory {
    try {
      if (mem.size !== size) mem.resize(size);
    } catch (error) {
      mem.close();
      throw error;
    }
    return mem;
  }

  /** Open or create a POSIX shared-memory object (`/dev/shm/<name>`). */
  static posix(options: PosixShmOptions): SharedMemory {
    checkPosixName(options.name);
    if (options.create && options.size !== undefined) checkSize(options.size);
    const native = loadNative();
    let flags = options.readOnly ? O_RDONLY : O_RDWR;
    if (options.create) flags |= O_CREAT | (options.exclusive ? O_EXCL : 0);
    const rc = native.qbn_shm_open(cstr(options.name), flags, options.mode ?? 0o600);
    if (rc < 0) {
      throw new QbunSystemError(-rc, "shm_open", {
        path: options.name,
        hint: rc === -2 ? "no such object: pass create: true to make it" : rc === -17 ? "it already exists (exclusive)" : undefined,
      });
    }
    const mem = new SharedMemory(new OwnedFd(rc), "posix", options.name, !!options.readOnly);
    return options.create && options.size !== undefined ? SharedMemory.#sized(mem, options.size) : mem;
  }

  /** Remove a POSIX shared-memory name (open fds and mappings stay valid). */
  static unlinkPosix(name: string): void {
    checkPosixName(name);
    check(loadNative().qbn_shm_unlink(cstr(name)), "shm_unlink", { path: name });
  }

  /**
   * Remove a file by path. Returns false when it was already gone (ENOENT),
   * which is common for files a peer may remove first; other failures throw.
   * Costs one syscall and no exception on the common paths.
   */
  static removeFile(path: string): boolean {
    const rc = loadNative().qbn_unlink(cstr(path));
    if (rc === -ENOENT) return false;
    check(rc, "unlink", { path });
    return true;
  }

  /**
   * Remove an empty directory. Returns false when it was already gone
   * (ENOENT); other failures (ENOTEMPTY, EACCES, ...) throw.
   */
  static removeDirectory(path: string): boolean {
    const rc = loadNative().qbn_rmdir(cstr(path));
    if (rc === -ENOENT) return false;
    check(rc, "rmdir", { path });
    return true;
  }

  /**
   * Open or create a named file to share by path (how libqb's rings are
   * shared). Unlike {@link SharedMemory.posix}, the path is any absolute path.
   */
  static openFile(options: OpenFileOptions): SharedMemory {
    if (!options.path.startsWith("/") || options.path.includes("\0")) {
      throw new QbunArgumentError(`openFile needs an absolute path without NUL bytes: ${JSON.stringify(options.path)}`);
    }
    if (options.size !== undefined) checkSize(options.size);
    const native = loadNative();
    let flags = options.readOnly ? O_RDONLY : O_RDWR;
    if (options.create) flags |= O_CREAT | (options.exclusive === false ? 0 : O_EXCL);
    if (options.noFollow) flags |= O_NOFOLLOW;
    const rc = native.qbn_open(cstr(options.path), flags, options.mode ?? 0o600);
    if (rc < 0) throw new QbunSystemError(-rc, "open", { path: options.path });
    const mem = new SharedMemory(new OwnedFd(rc), "file", options.path, !!options.readOnly);
    if (options.size === undefined) return mem;
    try {
      mem.allocate(options.size);
    } catch (error) {
      mem.close();
      throw error;
    }
    return mem;
  }

  /**
   * An unnamed temporary file in `dir` (default the OS temp dir): the
   * fallback where memfd is unavailable. Nothing is left in the directory.
   */
  static tempFile(options: { size: number; dir?: string }): SharedMemory {
    checkSize(options.size);
    const native = loadNative();
    const dir = options.dir ?? tmpdir();
    const scratch = new Uint8Array(4096 + 16);
    const fd = new OwnedFd(check(native.qbn_tmpfile(cstr(dir), scratch, scratch.length), "open(O_TMPFILE)", { path: dir }));
    return SharedMemory.#sized(new SharedMemory(fd, "tempfile", undefined, false), options.size);
  }

  /**
   * Adopt a shared-memory fd, e.g. one received over a unix socket. An
   * {@link OwnedFd} is taken over; a raw number is duplicated (the caller
   * keeps its own).
   */
  static fromFd(fd: FdLike): SharedMemory {
    const native = loadNative();
    const owned = typeof fd === "number" ? new OwnedFd(check(native.qbn_dup(fd), "fcntl(F_DUPFD_CLOEXEC)")) : new OwnedFd(fd.take());
    const accmode = native.qbn_fcntl(owned.fd, 3 /* F_GETFL */, 0);
    if (accmode < 0) {
      owned.close();
      throw new QbunSystemError(-accmode, "fcntl(F_GETFL)");
    }
    return new SharedMemory(owned, "fd", undefined, (accmode & 3) === O_RDONLY);
  }

  /** The fd (still owned by this object). */
  get fd(): number {
    return this.#fd.fd;
  }

  /** Current size in bytes. */
  get size(): number {
    const st = new BigInt64Array(6);
    check(this.#native.qbn_fstat(this.fd, st), "fstat");
    return Number(st[0]!);
  }

  /** The file's size, type, mode, owner and identity (fstat). */
  stat(): SharedMemoryStat {
    const st = new BigInt64Array(6);
    check(this.#native.qbn_fstat(this.fd, st), "fstat");
    return { size: Number(st[0]!), mode: Number(st[1]!), uid: Number(st[2]!), gid: Number(st[3]!), ino: Number(st[4]!), dev: Number(st[5]!) };
  }

  /** Change the size (ftruncate). EPERM once sealed against it. */
  resize(size: number): void {
    checkSize(size);
    check(this.#native.qbn_ftruncate(this.fd, size), "ftruncate", {
      hint: "a sealed memfd cannot grow or shrink; a read-only fd cannot be resized",
    });
  }

  /**
   * Set the size and reserve its blocks (ftruncate + posix_fallocate): on a
   * full tmpfs this fails with ENOSPC instead of a later SIGBUS.
   */
  allocate(size: number): void {
    this.resize(size);
    if (size > 0) check(this.#native.qbn_fallocate(this.fd, 0, size), "posix_fallocate", { path: this.name, hint: "the filesystem (e.g. /dev/shm) is full" });
  }

  /** Change the owner (fchown); -1 leaves an id unchanged. */
  chown(uid: number, gid: number): void {
    check(this.#native.qbn_fchown(this.fd, uid, gid), "fchown", { path: this.name });
  }

  /** Change the permission bits (fchmod). */
  chmod(mode: number): void {
    check(this.#native.qbn_fchmod(this.fd, mode), "fchmod", { path: this.name });
  }

  /**
   * Add seals (memfd created sealable). "write" fails with EBUSY while a
   * writable shared mapping exists; "future-write" does not, and blocks new
   * writable mappings and write(2) from then on.
   */
  addSeals(seals: readonly Seal[]): void {
    let bits = 0;
    for (const seal of seals) {
      const bit = SEAL_BITS[seal];
      if (bit === undefined) throw new QbunArgumentError(`unknown seal ${JSON.stringify(seal)}; expected one of ${Object.keys(SEAL_BITS).join(", ")}`);
      bits |= bit;
    }
    check(this.#native.qbn_fcntl(this.fd, F_ADD_SEALS, bits), "fcntl(F_ADD_SEALS)", {
      hint: "seals need a memfd created with sealable: true; 'write' needs all writable mappings closed first; nothing can be added after 'seal'",
    });
  }

  /** The seals in force (empty for files that cannot be sealed). */
  get seals(): Seal[] {
    const rc = this.#native.qbn_fcntl(this.fd, F_GET_SEALS, 0);
    if (rc === -22 /* EINVAL: not sealable */) return [];
    const bits = check(rc, "fcntl(F_GET_SEALS)");
    return (Object.keys(SEAL_BITS) as Seal[]).filter((s) => bits & SEAL_BITS[s]);
  }

  /**
   * A new read-only fd for the same memory (reopened through /proc): a
   * process that receives it cannot map it writable — its mmap(PROT_WRITE)
   * fails with EACCES — nor write(2) or resize it.
   *
   * The access mode belongs to this fd only: a receiver with permission on
   * the file itself could open `/proc/self/fd/N` again read-write (a memfd's
   * mode is 0777). To make the contents immutable for everyone, add the
   * `write` (or `future-write`) seal before handing the fd out.
   */
  readOnlyFd(): OwnedFd {
    return new OwnedFd(check(this.#native.qbn_reopen(this.fd, O_RDONLY), "open(/proc/self/fd, O_RDONLY)"));
  }

  /** Map the file (or a range of it) with MAP_SHARED. */
  map(options: MapOptions = {}): Mapping {
    const offset = options.offset ?? 0;
    const length = options.length ?? this.size - offset;
    return Mapping.map(this.fd, length, offset, options.access ?? (this.readOnly ? "read-only" : "read-write"), false, options.guard);
  }

  /**
   * Map the whole file twice back to back (a "circular" mapping for ring
   * buffers): byte i and byte i + size are the same memory. The file size
   * must be a multiple of the page size.
   */
  mapCircular(options: { access?: MapAccess; guard?: boolean } = {}): Mapping {
    const size = this.size;
    const page = this.#native.qbn_page_size();
    if (size === 0 || size % page !== 0) throw new QbunArgumentError(`a circular mapping needs a size that is a multiple of ${page}, got ${size}`);
    return Mapping.map(this.fd, size, 0, options.access ?? (this.readOnly ? "read-only" : "read-write"), true, options.guard);
  }

  /** Whether {@link SharedMemory.close} was called. */
  get closed(): boolean {
    return this.#fd.closed;
  }

  /** Close the fd (mappings stay valid until closed themselves). Idempotent. */
  close(): void {
    this.#fd.close();
  }

  /** Same as {@link SharedMemory.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new QbunArgumentError(`size must be a non-negative integer, got ${size}`);
}

function checkPosixName(name: string): void {
  if (!/^\/[^/\0]{1,254}$/.test(name)) {
    throw new QbunArgumentError(`POSIX shared-memory names look like "/name" (one leading slash, 1-254 other characters, no NUL): ${JSON.stringify(name)}`);
  }
}

