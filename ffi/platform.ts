/**
 * Which machines qbun runs on, checked when the native layer is imported,
 * so that an unsupported machine gets one clear error at `import` instead
 * of a TinyCC error or a crash at the first call.
 *
 * Supported: Linux on x86_64 with glibc. The C helper uses Linux system
 * calls (memfd, epoll, io_uring, SCM_RIGHTS), x86_64 inline assembly (TinyCC
 * has no C11 atomics), and glibc's `sem_t` layout.
 * @module
 */
import { readFileSync } from "node:fs";

/** The C library a Linux process runs on, as far as qbun can tell. */
export type LibcKind = "glibc" | "musl" | "unknown";

/** What {@link platformProblem} looks at: `process.platform`, `process.arch` and the C library. */
export interface PlatformInfo {
  /** `process.platform`, e.g. `"linux"`, `"darwin"`, `"win32"`. */
  readonly platform: string;
  /** `process.arch`, e.g. `"x64"`, `"arm64"`. */
  readonly arch: string;
  /** The C library (only meaningful on Linux). */
  readonly libc: LibcKind;
}

/**
 * Thrown when qbun is imported on a machine it does not support. `code` is
 * `"ERR_QBUN_UNSUPPORTED_PLATFORM"`; the message names the platform found
 * and the one needed.
 */
export class UnsupportedPlatformError extends Error {
  /** Stable error code. */
  readonly code = "ERR_QBUN_UNSUPPORTED_PLATFORM";
  /** The machine that was found. */
  readonly found: PlatformInfo;

  constructor(message: string, found: PlatformInfo) {
    super(message);
    this.name = "UnsupportedPlatformError";
    this.found = found;
  }
}

/** Reads which C library this process has mapped (glibc's `libc.so.6`, or musl's loader). */
export function detectLibc(maps?: string): LibcKind {
  let text = maps;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/maps", "utf8");
    } catch {
      return "unknown";
    }
  }
  if (/\/libc\.so\.6(?: \(deleted\))?$/m.test(text)) return "glibc"; // "(deleted)": upgraded under a running process
  if (/\/(?:ld-musl-[^/\s]*|libc\.musl-[^/\s]*)$/m.test(text)) return "musl";
  return "unknown";
}

/** The machine this process runs on. */
export function currentPlatform(): PlatformInfo {
  const linux = process.platform === "linux";
  return { platform: process.platform, arch: process.arch, libc: linux ? detectLibc() : "unknown" };
}

/**
 * Says why qbun cannot run on `info`, or returns `undefined` when it can
 * (Linux, x86_64, glibc). A pure function: pass any platform to ask about it.
 */
export function platformProblem(info: PlatformInfo): string | undefined {
  const found = `${info.platform}/${info.arch}${info.platform === "linux" ? ` (${info.libc} C library)` : ""}`;
  const needs = "qbun supports Linux on x86_64 with glibc";
  if (info.platform !== "linux") {
    return `${needs}; this is ${found}. It is built on Linux-only system calls (AF_UNIX with SCM_RIGHTS and SO_PEERCRED, memfd seals, epoll, io_uring), which ${info.platform} does not have.`;
  }
  if (info.arch !== "x64") {
    return `${needs}; this is ${found}. Its C helper uses x86_64 instructions for the shared-memory ring atomics; other architectures are not supported yet.`;
  }
  if (info.libc !== "glibc") {
    return `${needs}; this is ${found}. Its C helper is linked against glibc and shares glibc's sem_t layout with libqb; use a glibc-based distribution (Debian, Ubuntu, Fedora, RHEL) or the glibc build of Bun.`;
  }
  return undefined;
}

/**
 * Throws {@link UnsupportedPlatformError} unless `info` (default: this
 * machine) is a supported platform.
 */
export function assertSupportedPlatform(info: PlatformInfo = currentPlatform()): void {
  const problem = platformProblem(info);
  if (problem !== undefined) throw new UnsupportedPlatformError(problem, info);
}
