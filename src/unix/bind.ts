/**
 * Binding to an address, with stale socket-file detection and cleanup.
 * @module
 */
import { check, QbunSystemError } from "../../ffi/errors.ts";
import { cstr, type Native } from "../../ffi/native.ts";
import type { EncodedAddress } from "./address.ts";
import { SOCK_TYPE, type SocketType } from "./socket.ts";

/** Options for binding a socket to an address. */
export interface BindOptions {
  /** Permission bits for a socket file (e.g. `0o660`); applied right after bind. */
  mode?: number;
  /**
   * Replace a socket file left by a dead process (default true). A file
   * whose socket still has a live owner is never replaced: EADDRINUSE.
   */
  replaceStale?: boolean;
}

/** Identity of a socket file qbun created, so close removes only that file. */
export interface OwnedSocketFile {
  readonly path: string;
  readonly ino: bigint | number;
  readonly dev: bigint | number;
}

const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const EADDRINUSE = 98;
const ECONNREFUSED = 111;

/**
 * bind(2) `fd` to `address`. For a filesystem path, a leftover socket file
 * nobody listens on is unlinked and the bind retried; the created file's
 * identity is returned so that close can remove it (and only it).
 */
export function bindSocket(
  native: Native,
  fd: number,
  address: EncodedAddress,
  type: SocketType,
  options: BindOptions = {},
): OwnedSocketFile | undefined {
  let rc = native.qbn_bind(fd, address.bytes, address.length);
  if (rc === -EADDRINUSE && address.path !== undefined && (options.replaceStale ?? true)) {
    if (isStaleSocketFile(native, address, type)) {
      native.qbn_unlink(cstr(address.path));
      rc = native.qbn_bind(fd, address.bytes, address.length);
    }
  }
  if (rc < 0) {
    throw new QbunSystemError(-rc, "bind", {
      address: address.display,
      hint: rc === -EADDRINUSE
        ? address.path !== undefined
          ? "another live process is listening on this socket (or the path is not a socket)"
          : "another process holds this abstract name"
        : undefined,
    });
  }
  if (address.path === undefined) return undefined;
  if (options.mode !== undefined) check(native.qbn_chmod(cstr(address.path), options.mode), "chmod", { path: address.path });
  const st = new BigInt64Array(6);
  check(native.qbn_lstat(cstr(address.path), st), "lstat", { path: address.path });
  return { path: address.path, ino: st[4]!, dev: st[5]! };
}

/** A socket file is stale when it is a socket and connecting to it is refused. */
function isStaleSocketFile(native: Native, address: EncodedAddress, type: SocketType): boolean {
  const st = new BigInt64Array(6);
  if (native.qbn_lstat(cstr(address.path!), st) < 0) return false;
  if ((Number(st[1]!) & S_IFMT) !== S_IFSOCK) return false;
  const probe = native.qbn_socket(SOCK_TYPE[type]);
  if (probe < 0) return false;
  const rc = native.qbn_connect(probe, address.bytes, address.length);
  native.qbn_close(probe);
  return rc === -ECONNREFUSED;
}

/** Unlink a socket file qbun created, if it is still the same file. */
export function removeSocketFile(native: Native, file: OwnedSocketFile): void {
  const st = new BigInt64Array(6);
  if (native.qbn_lstat(cstr(file.path), st) < 0) return;
  if (st[4] === file.ino && st[5] === file.dev) native.qbn_unlink(cstr(file.path));
}
