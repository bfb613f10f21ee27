/**
 * Loads qbun's C helper (`qbun.c`) once per process with bun:ffi's `cc`
 * (TinyCC) and exposes its typed symbols.
 *
 * Two ways to build it:
 * - from source, `qbun.c` next to this file (needs libc6-dev: headers and
 *   the `libc.so` link script);
 * - header-free, from a preprocessed copy: the text registered by a `bun
 *   build --compile` entry ({@link useEmbeddedHelper}), or, when building
 *   from source fails for want of headers, the `qbun.i` the npm package
 *   ships next to `qbun.c` (written by `prepack`, scripts/preprocess-helper.ts).
 *   The text goes to a memfd (TinyCC cannot read Bun's embedded files,
 *   oven-sh/bun#24752) and is linked straight against the `libc.so.6` this
 *   process already runs on.
 *
 * Paths come from this module's own location (an import of the source with
 * `type: "file"`), never from the working directory: the same code loads
 * from this repository, from `node_modules`, and from inside a consumer's
 * compiled executable (where `qbun.c` is embedded as `/$bunfs/…`).
 *
 * Importing this module checks the platform (ffi/platform.ts): on anything
 * but Linux x86_64 with glibc, the import throws `UnsupportedPlatformError`.
 * @module
 */
/// <reference path="./assets.d.ts" />
import { cc, dlopen, type FFIFunction } from "bun:ffi";
import { closeSync, existsSync, readFileSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { withCompileLock } from "./cc-lock.ts";
import { assertSupportedPlatform } from "./platform.ts";
// The path of qbun.c: on disk from source or node_modules, `/$bunfs/…` in a compiled executable.
import helperSourcePath from "./qbun.c" with { type: "file" };

assertSupportedPlatform();

const symbols = {
  qbn_strerror: { args: ["int", "ptr", "int"], returns: "int" },
  qbn_close: { args: ["int"], returns: "int" },
  qbn_dup: { args: ["int"], returns: "int" },
  qbn_fcntl: { args: ["int", "int", "int"], returns: "int" },
  qbn_set_nonblocking: { args: ["int", "int"], returns: "int" },
  qbn_open: { args: ["cstring", "int", "int"], returns: "int" },
  qbn_unlink: { args: ["cstring"], returns: "int" },
  qbn_rmdir: { args: ["cstring"], returns: "int" },
  qbn_ftruncate: { args: ["int", "i64"], returns: "int" },
  qbn_fstat: { args: ["int", "ptr"], returns: "int" },
  qbn_lstat: { args: ["cstring", "ptr"], returns: "int" },
  qbn_chmod: { args: ["cstring", "int"], returns: "int" },
  qbn_fchmod: { args: ["int", "int"], returns: "int" },
  qbn_fchown: { args: ["int", "int", "int"], returns: "int" },
  qbn_fallocate: { args: ["int", "i64", "i64"], returns: "int" },
  qbn_reopen: { args: ["int", "int"], returns: "int" },
  qbn_memfd_create: { args: ["cstring", "int"], returns: "int" },
  qbn_shm_open: { args: ["cstring", "int", "int"], returns: "int" },
  qbn_shm_unlink: { args: ["cstring"], returns: "int" },
  qbn_tmpfile: { args: ["cstring", "ptr", "int"], returns: "int" },
  qbn_mmap: { args: ["i64", "int", "int", "int", "i64", "ptr"], returns: "ptr" },
  qbn_mmap_circular: { args: ["int", "i64", "int", "ptr"], returns: "ptr" },
  qbn_munmap: { args: ["ptr", "i64"], returns: "int" },
  qbn_unmap_deallocator: { args: ["ptr", "ptr"], returns: "void" },
  qbn_guard_add: { args: ["ptr", "i64"], returns: "int" },
  qbn_guard_tripped: { args: ["int"], returns: "int" },
  qbn_guard_trips_address: { args: [], returns: "ptr" },
  qbn_guard_release: { args: ["int"], returns: "void" },
  qbn_unmap_guarded_deallocator: { args: ["ptr", "ptr"], returns: "void" },
  qbn_socket: { args: ["int"], returns: "int" },
  qbn_socketpair: { args: ["int", "ptr"], returns: "int" },
  qbn_bind: { args: ["int", "ptr", "int"], returns: "int" },
  qbn_listen: { args: ["int", "int"], returns: "int" },
  qbn_connect: { args: ["int", "ptr", "int"], returns: "int" },
  qbn_accept: { args: ["int", "ptr", "ptr"], returns: "int" },
  qbn_getsockname: { args: ["int", "ptr", "ptr"], returns: "int" },
  qbn_getpeername: { args: ["int", "ptr", "ptr"], returns: "int" },
  qbn_setsockopt_int: { args: ["int", "int", "int", "int"], returns: "int" },
  qbn_getsockopt_int: { args: ["int", "int", "int"], returns: "int" },
  qbn_peercred: { args: ["int", "ptr"], returns: "int" },
  qbn_shutdown: { args: ["int", "int"], returns: "int" },
  qbn_send: { args: ["int", "ptr", "i64", "int"], returns: "int" },
  qbn_recv: { args: ["int", "ptr", "i64", "int"], returns: "int" },
  qbn_send2: { args: ["int", "ptr", "i64", "ptr", "i64", "int"], returns: "int" },
  qbn_sendmsg: {
    args: ["int", "ptr", "i64", "ptr", "int", "ptr", "int", "ptr", "int"],
    returns: "int",
  },
  qbn_recvmsg: { args: ["int", "ptr", "i64", "ptr", "ptr", "ptr", "int", "int"], returns: "int" },
  qbn_sem_init: { args: ["ptr", "int", "int"], returns: "int" },
  qbn_sem_destroy: { args: ["ptr"], returns: "int" },
  qbn_sem_post: { args: ["ptr"], returns: "int" },
  qbn_sem_post_many: { args: ["ptr", "int"], returns: "int" },
  qbn_sem_trywait: { args: ["ptr"], returns: "int" },
  qbn_sem_getvalue: { args: ["ptr"], returns: "int" },
  qbn_sem_timedwait: { args: ["ptr", "i64"], returns: "int" },
  qbn_sizeof_sem: { args: [], returns: "int" },
  qbn_page_size: { args: [], returns: "int" },
  qbn_reactor_create: { args: ["int", "int", "ptr"], returns: "ptr" },
  qbn_reactor_backend: { args: ["ptr"], returns: "int" },
  qbn_reactor_arm: { args: ["ptr", "int", "int", "int"], returns: "int" },
  qbn_reactor_cancel: { args: ["ptr", "int", "int"], returns: "int" },
  qbn_reactor_forget: { args: ["ptr", "int"], returns: "int" },
  qbn_reactor_drain: { args: ["ptr", "ptr", "int"], returns: "int" },
  qbn_reactor_destroy: { args: ["ptr"], returns: "void" },
  qbn_semfutex_supported: { args: ["ptr"], returns: "int" },
  qbn_semfutex_take: { args: ["ptr", "int"], returns: "int" },
  qbn_semfutex_register: { args: ["ptr"], returns: "void" },
  qbn_semfutex_unregister: { args: ["ptr"], returns: "void" },
  qbn_semfutex_arm: { args: ["ptr", "ptr", "int", "int"], returns: "int" },
  qbn_semfutex_cancel: { args: ["ptr", "int", "int"], returns: "int" },
  qbn_semwaiter_create: { args: ["ptr", "ptr", "int", "ptr"], returns: "ptr" },
  qbn_semwaiter_arm: { args: ["ptr", "i64"], returns: "void" },
  qbn_semwaiter_cancel: { args: ["ptr"], returns: "int" },
  qbn_semwaiter_destroy: { args: ["ptr"], returns: "void" },
} as const satisfies Record<string, FFIFunction>;

/** The helper's symbols, typed from the table above. */
export type Native = ReturnType<typeof cc<typeof symbols>>["symbols"];

/** A NUL-terminated UTF-8 copy of `s`, for `cstring` arguments. */
export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/**
 * How the loaded helper was built: `"source"` from `qbun.c` (with libc
 * headers), or `"embedded"`: header-free, from a preprocessed copy (the one
 * registered with {@link useEmbeddedHelper}, or the package's `qbun.i`).
 */
export type HelperBuild = "source" | "embedded";

let native: Native | undefined;
let build: HelperBuild | undefined;
let embeddedSource: string | undefined;

/**
 * Register the preprocessed helper text embedded in a compiled executable.
 * Must be called before the first native call; later calls are ignored.
 */
export function useEmbeddedHelper(preprocessedSource: string): void {
  embeddedSource ??= preprocessedSource;
}

/** Which build the process is using (`undefined` until first use). */
export function helperBuild(): HelperBuild | undefined {
  return build;
}

/** The helper's symbols; compiles the helper on first call. */
export function loadNative(): Native {
  if (native) return native;
  if (process.platform !== "linux") {
    throw new Error(`qbun needs Linux (AF_UNIX, memfd, epoll); this is ${process.platform}`);
  }
  if (embeddedSource !== undefined) {
    native = compileHeaderFree(embeddedSource, "the embedded (header-free) C helper");
    build = "embedded";
    return native;
  }
  if (!existsSync(helperSourcePath)) {
    throw new Error(`qbun: the C helper is missing: neither ${helperSourcePath} nor an embedded copy was found`);
  }
  try {
    native = compileFromSource(helperSourcePath);
    build = "source";
  } catch (sourceError) {
    // No libc headers here: use the header-free copy the package ships, if there is one.
    const preprocessed = MISSING_FILE.test(String((sourceError as Error)?.message)) ? findPreprocessed() : undefined;
    if (preprocessed === undefined) throw sourceError;
    native = compileHeaderFree(readFileSync(preprocessed, "utf8"), `the header-free C helper ${preprocessed}`);
    build = "embedded";
  }
  return native;
}

/**
 * The preprocessed helper shipped next to `qbun.c` (`qbun.i`, written by the
 * package's `prepack`), or, inside a consumer's compiled executable, one
 * embedded by naming it as an extra entry point (`bun build --compile
 * app.ts node_modules/qbun/ffi/qbun.i`; Bun stores it as `qbun-<hash>.i`).
 */
function findPreprocessed(): string | undefined {
  const beside = join(dirname(helperSourcePath), "qbun.i");
  if (existsSync(beside)) return beside;
  if (!helperSourcePath.startsWith("/$bunfs/")) return undefined;
  const embedded = Bun.embeddedFiles.find((file) => /^qbun(?:-[a-z0-9]+)?\.i$/.test((file as Blob & { name: string }).name));
  return embedded ? join(dirname(helperSourcePath), basename((embedded as Blob & { name: string }).name)) : undefined;
}


/** bun:ffi `cc`, one qbun process at a time (see cc-lock.ts for why). */
const lockedCc: typeof cc = (options) => withCompileLock(() => cc(options));

/** The path of the glibc this process runs on, read from its own maps. */
function runningLibc(): string {
  const maps = readFileSync("/proc/self/maps", "utf8");
  const match = /\s(\/\S*\/libc\.so\.6)(?: \(deleted\))?$/m.exec(maps);
  if (!match) throw new Error("qbun: this process does not run on glibc (libc.so.6 not mapped)");
  return match[1]!;
}

/**
 * TinyCC reports a missing header or library as "include file 'x.h' not
 * found" / "file 'x' not found" / "library 'c' not found".
 */
const MISSING_FILE = /\b(?:include file|file|library) '[^']*' not found/;

function compileFromSource(sourcePath: string): Native {
  try {
    // Inside a compiled executable the source is embedded (`/$bunfs/…`), which TinyCC cannot open: hand it a memfd.
    if (sourcePath.startsWith("/$bunfs/")) {
      return withMemfd(readFileSync(sourcePath, "utf8"), (path) => lockedCc({ source: path, flags: ["-w"], symbols }).symbols);
    }
    return lockedCc({ source: sourcePath, flags: ["-w"], symbols }).symbols;
  } catch (error) {
    const detail = String((error as Error)?.message ?? error).trim();
    const hint = MISSING_FILE.test(detail)
      ? " Building it from source needs the C library headers and the libc.so link script" +
        " (Debian/Ubuntu: apt install libc6-dev; Fedora: dnf install glibc-devel)." +
        " The npm package ships a header-free copy (ffi/qbun.i) that needs neither; so does the" +
        " standalone executable (bun scripts/build-binary.ts). In your own `bun build --compile`," +
        " add node_modules/qbun/ffi/qbun.i as an extra entry point to embed it."
      : "";
    throw new Error(`qbun: could not compile the C helper ${sourcePath} with bun:ffi cc (TinyCC).${hint}\n${detail}`, {
      cause: error,
    });
  }
}

/** Writes `text` to a fresh memfd and calls `use` with its `/proc/self/fd/N` path; closes it afterwards. */
function withMemfd<T>(text: string, use: (path: string) => T): T {
  // memfd_create straight from libc: the helper that wraps it is what we are building.
  const libc = dlopen(runningLibc(), {
    memfd_create: { args: ["cstring", "uint32_t"], returns: "int" },
  });
  const MFD_CLOEXEC = 1;
  const fd = libc.symbols.memfd_create(Buffer.from("qbun-helper.c\0"), MFD_CLOEXEC);
  libc.close();
  if (fd < 0) throw new Error("qbun: memfd_create failed while loading the C helper");
  try {
    const bytes = Buffer.from(text, "utf8");
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off);
    return use(`/proc/self/fd/${fd}`);
  } finally {
    closeSync(fd);
  }
}

function compileHeaderFree(text: string, what: string): Native {
  const libcPath = runningLibc();
  try {
    return withMemfd(text, (path) =>
      lockedCc({
        // An array `source` works at run time; @types/bun declares a string.
        source: [path, libcPath] as unknown as string,
        flags: ["-nostdlib", "-w"],
        symbols,
      }).symbols,
    );
  } catch (error) {
    const detail = String((error as Error)?.message ?? error).trim();
    throw new Error(
      `qbun: could not compile ${what} against ${libcPath}.` +
        " Likely causes: it was preprocessed on another architecture or C library," +
        ` or the helper uses a libc symbol this glibc does not export.\n${detail}`,
      { cause: error },
    );
  }
}
