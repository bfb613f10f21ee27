/**
 * Small fd fixtures for the demo and the self-test: an anonymous memory file
 * with known content, and ways to show that a passed fd is the same file.
 * (src/shm will grow a real memfd API; this only serves the CLI.)
 * @module
 */
import { fstatSync, readlinkSync, readSync, writeSync } from "node:fs";
import { check } from "../ffi/errors.ts";
import { OwnedFd } from "../ffi/fd.ts";
import { cstr, loadNative } from "../ffi/native.ts";

const MFD_CLOEXEC = 1;

/** Creates a close-on-exec memfd named `name` holding `text`. */
export function memfdWithText(name: string, text: string): OwnedFd {
  const fd = new OwnedFd(check(loadNative().qbn_memfd_create(cstr(name), MFD_CLOEXEC), "memfd_create"));
  const bytes = Buffer.from(text, "utf8");
  for (let off = 0; off < bytes.length; ) off += writeSync(fd.fd, bytes, off, bytes.length - off, off);
  return fd;
}

/** Reads the whole file behind `fd` from offset 0, as UTF-8 (pread: the file offset is untouched). */
export function readWholeFile(fd: number): string {
  const size = fstatSync(fd).size;
  const buf = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const n = readSync(fd, buf, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return buf.toString("utf8", 0, got);
}

/** Whether two fds refer to the same file (same device and inode). */
export function sameFile(a: number, b: number): boolean {
  const x = fstatSync(a);
  const y = fstatSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}

/** What the kernel calls the file behind `fd`, e.g. `/memfd:qbun-demo (deleted)`. */
export function fdTarget(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return "?";
  }
}
