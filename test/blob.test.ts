/**
 * qbun/blob in one process: the allocator (backends, bounds, tokens, leases,
 * accounting), publishing and seals, and the read-only reader.
 */
import { describe, expect, test } from "bun:test";
import { fstatSync, readdirSync } from "node:fs";
import os from "node:os";
import {
  BlobAllocator,
  BlobChannel,
  BlobDescriptorError,
  BlobQuotaError,
  BlobReader,
  BlobStaleError,
  BlobTokenError,
  ClosedError,
  QbunArgumentError,
  ShmBlob,
  ShmBlobWriter,
  backendAvailable,
  type BlobBackend,
} from "../src/blob/index.ts";
import { resolveBackend } from "../src/blob/backend.ts";
import { OwnedFd, SharedMemory } from "../src/shm/index.ts";
import { UnixStream } from "../src/unix/index.ts";
import { BACKENDS, blobMappingCount, blobShmNames } from "./helpers/blob.ts";
import { caught, settledFdCount } from "./helpers/env.ts";

/** Temp files the tempfile backend could leave if it ever failed to unlink (mkostemp names "qbun-XXXXXX"). */
const tmpListing = () => readdirSync(os.tmpdir()).filter((n) => /^qbun-[A-Za-z0-9]{6}$/.test(n)).sort();

describe("BlobAllocator", () => {
  test("picks memfd by itself on Linux, and a forced backend when told", () => {
    using auto = new BlobAllocator();
    expect(auto.backend).toBe("memfd");
    using forced = new BlobAllocator({ backend: "tempfile" });
    expect(forced.backend).toBe("tempfile");
    using w = forced.create(100);
    expect(w.backend).toBe("tempfile");
  });

  test("\"auto\" falls back to POSIX shm where memfd is missing, then to a temp file", () => {
    const without = (...missing: BlobBackend[]) => (backend: BlobBackend) => !missing.includes(backend);
    expect(resolveBackend("auto", undefined, without())).toBe("memfd");
    expect(resolveBackend("auto", undefined, without("memfd"))).toBe("posix");
    expect(resolveBackend("auto", undefined, without("memfd", "posix"))).toBe("tempfile");
    expect(() => resolveBackend("auto", undefined, without("memfd", "posix", "tempfile"))).toThrow(expect.objectContaining({ code: "ENOSYS" }));
    expect(resolveBackend("posix", undefined, without("posix"))).toBe("posix"); // forced: used as given
    expect(BACKENDS.every((b) => backendAvailable(b))).toBe(true);
  });

  test("BlobAllocator.create uses the process-wide default allocator", () => {
    const writer = BlobAllocator.create(100, { leaseMs: 1000 });
    expect(BlobAllocator.default.stats().count).toBeGreaterThanOrEqual(1);
    expect(BlobAllocator.default.cleanup(writer.token)).toBe(true);
  });

  test("ids are 128 random bits; tokens name their blob and are distinct", () => {
    using allocator = new BlobAllocator();
    const ids = new Set<string>();
    for (let i = 0; i < 50; i++) {
      using w = allocator.create(1);
      expect(w.id).toMatch(/^[0-9a-f]{32}$/);
      expect(w.token.startsWith(`${w.id}.`)).toBe(true);
      ids.add(w.id);
    }
    expect(ids.size).toBe(50);
  });

  test("rejects bad sizes, bad options and unknown option keys before allocating", () => {
    using allocator = new BlobAllocator({ maxBlobSize: 1 << 20 });
    for (const size of [0, -1, 1.5, Number.NaN, (1 << 20) + 1]) expect(() => allocator.create(size)).toThrow(QbunArgumentError);
    expect(() => allocator.create(10, { leaseMs: 0 })).toThrow(QbunArgumentError);
    expect(() => allocator.create(10, { lease: 5 } as never)).toThrow(/lease/);
    expect(() => new BlobAllocator({ backend: "disk" as never })).toThrow(QbunArgumentError);
    expect(() => new BlobAllocator({ tempDir: "relative" })).toThrow(/absolute/);
  });

  test("a quota on held bytes is enforced and freed by cleanup", async () => {
    using allocator = new BlobAllocator({ maxTotalBytes: 10_000 });
    const a = allocator.create(6000);
    const over = await caught(() => allocator.create(6000));
    expect(over).toBeInstanceOf(BlobQuotaError);
    expect(over).toMatchObject({ code: "ERR_QBUN_BLOB_QUOTA", message: expect.stringContaining("raise maxTotalBytes") });
    a.cleanup();
    using b = allocator.create(6000);
    expect(b.size).toBe(6000);
  });

  test("a closed allocator refuses to create with ClosedError", () => {
    const allocator = new BlobAllocator();
    allocator.close();
    expect(() => allocator.create(10)).toThrow(ClosedError);
    expect(allocator.closed).toBe(true);
  });

  test("writers and blobs are made by the allocator only", () => {
    using allocator = new BlobAllocator();
    using w = allocator.create(10);
    const fake = { id: "0".repeat(32), token: "x", size: 10, backend: "memfd", state: "writable" };
    const Writer = ShmBlobWriter as unknown as new (...args: unknown[]) => unknown;
    const Blob = ShmBlob as unknown as new (...args: unknown[]) => unknown;
    expect(() => new Writer(fake, {})).toThrow(TypeError);
    expect(() => new Writer(Symbol("qbun.blob.construct"), fake, {})).toThrow(/BlobAllocator.create/);
    expect(() => new Blob(fake, {})).toThrow(/publish\(\)/);
    expect(w).toBeInstanceOf(ShmBlobWriter);
    expect(w.publish()).toBeInstanceOf(ShmBlob);
  });

  test("reports what it holds: count, bytes, per backend, the oldest lease", async () => {
    using allocator = new BlobAllocator();
    expect(allocator.stats()).toMatchObject({ count: 0, bytes: 0, oldest: undefined, nextExpiry: undefined });
    const first = allocator.create(1000, { leaseMs: 60_000 });
    await Bun.sleep(5);
    allocator.create(2000, { backend: "posix", leaseMs: Number.POSITIVE_INFINITY });
    allocator.create(3000, { backend: "tempfile", leaseMs: 30_000 }).publish();
    const stats = allocator.stats();
    expect(stats.count).toBe(3);
    expect(stats.bytes).toBe(6000);
    expect(stats.byBackend).toEqual({ memfd: { count: 1, bytes: 1000 }, posix: { count: 1, bytes: 2000 }, tempfile: { count: 1, bytes: 3000 } });
    expect(stats.oldest?.id).toBe(first.id);
    expect(stats.oldest!.ageMs).toBeGreaterThanOrEqual(4);
    expect(stats.nextExpiry).toBeLessThan(first.expiresAt);
    allocator.close();
    expect(allocator.stats().count).toBe(0);
  });
});

describe.each(BACKENDS)("%s backend", (backend) => {
  test("write is bounds-checked and lands in the blob; the view is zero-copy", () => {
    using allocator = new BlobAllocator({ backend });
    using w = allocator.create(4096);
    expect(w.write(new Uint8Array([1, 2, 3]), 4093)).toBe(3);
    expect(() => w.write(new Uint8Array(4), 4093)).toThrow(/does not fit in the 4096-byte blob/);
    expect(() => w.write(new Uint8Array(1), -1)).toThrow(QbunArgumentError);
    expect(() => w.write(new Uint8Array(0), 4097)).toThrow(QbunArgumentError);
    w.write(new Uint16Array([0x0201]).buffer, 0); // any BufferSource
    w.bytes[10] = 42;
    const blob = w.publish();
    using r = blob.openReader();
    expect([r.view.at(0), r.view.at(1), r.view.at(10), r.view.at(4093), r.view.at(4095)]).toEqual([1, 2, 42, 1, 3]);
  });

  test("create reserves the memory (fallocate), so a blob that does not fit fails there, not at first write", () => {
    using allocator = new BlobAllocator({ backend });
    const size = 1 << 20;
    const blob = allocator.create(size).publish(); // never written: a sparse file would hold no blocks
    expect(fstatSync(blob.fd).blocks * 512).toBeGreaterThanOrEqual(size);
    blob.cleanup();
  });

  test("publishing leaves only a read-only fd: no writable mapping, write(2) or resize through it", () => {
    using allocator = new BlobAllocator({ backend });
    const w = allocator.create(8192);
    const early = w.bytes;
    w.bytes.fill(7);
    const blob = w.publish();
    expect(early.length).toBe(0); // the producer's writable view is gone, not dangling
    expect(() => w.bytes).toThrow(ClosedError);
    expect(() => w.write(new Uint8Array(1))).toThrow(ClosedError);
    expect(() => w.publish()).toThrow(ClosedError);
    using mem = SharedMemory.fromFd(blob.fd);
    expect(mem.readOnly).toBe(true);
    expect(() => mem.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EACCES", syscall: "mmap" }));
    expect(() => mem.resize(4096)).toThrow(expect.objectContaining({ syscall: "ftruncate" }));
    expect(mem.size).toBe(8192);
    blob.cleanup();
  });

  test("a published blob's file mode is 0400: reopening it writable takes a chmod by its owner (or root)", () => {
    using allocator = new BlobAllocator({ backend });
    const blob = allocator.create(4096).publish();
    expect(fstatSync(blob.fd).mode & 0o777).toBe(0o400);
    // root bypasses file modes (CAP_DAC_OVERRIDE); any other user, the owner included, gets EACCES until it chmods.
    if (process.getuid!() !== 0) {
      expect(() => SharedMemory.openFile({ path: `/proc/self/fd/${blob.fd}` })).toThrow(expect.objectContaining({ code: "EACCES" }));
    }
    // Whether the owner can then change it is per backend: see "immutability" below and blob-channel.test.ts.
    expect(blob.sealed).toBe(backend === "memfd");
    blob.cleanup();
  });

  test("the reader's view rejects writes and stays in bounds", () => {
    using allocator = new BlobAllocator({ backend });
    const w = allocator.create(100);
    w.write(new TextEncoder().encode("immutable"));
    const blob = w.publish();
    using r = blob.openReader();
    expect(r.view.text(0, 9)).toBe("immutable");
    expect(r.view.at(100)).toBeUndefined();
    expect(() => r.view.readUint32(98)).toThrow(RangeError);
    expect(() => {
      (r.view as unknown as Record<number, number>)[0] = 1; // frozen: a TypeError, not a segfault
    }).toThrow(TypeError);
    expect("set" in r.view).toBe(false);
    expect(r.view.text(0, 9)).toBe("immutable");
    const target = new Uint8Array(16);
    expect(r.copyTo(target, 95)).toBe(5);
    expect(r.copyTo(target, 100)).toBe(0);
    for (const bad of [-1, 101, 1.5, Number.NaN]) expect(() => r.copyTo(target, bad)).toThrow(QbunArgumentError);
    r.close();
    expect(r.closed).toBe(true);
    expect(() => r.view).toThrow(ClosedError);
    blob.cleanup();
  });

  test("leaves no name in /dev/shm or the temp dir at any point, and no fd after cleanup", async () => {
    const shmBefore = blobShmNames();
    const tmpBefore = tmpListing();
    const fdsBefore = await settledFdCount();
    using allocator = new BlobAllocator({ backend });
    const w = allocator.create(1 << 20);
    expect(blobShmNames()).toEqual(shmBefore);
    expect(tmpListing()).toEqual(tmpBefore);
    const blob = w.publish();
    using r = blob.openReader();
    expect(blobShmNames()).toEqual(shmBefore);
    blob.cleanup();
    r.close();
    expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    expect(blobShmNames()).toEqual(shmBefore);
    expect(tmpListing()).toEqual(tmpBefore);
  });
});

describe("memfd seals", () => {
  test("a published memfd blob is sealed against shrink, grow and write, for every fd", () => {
    using allocator = new BlobAllocator();
    const blob = allocator.create(4096).publish();
    expect(blob.sealed).toBe(true);
    using mem = SharedMemory.fromFd(blob.fd);
    expect(mem.seals.sort()).toEqual(["grow", "seal", "shrink", "write"]);
    // Even a read-write fd reopened through /proc (possible for root) cannot write, map writable or resize it.
    using rw = SharedMemory.openFile({ path: `/proc/self/fd/${blob.fd}`, readOnly: process.getuid!() !== 0 });
    expect(() => rw.map({ access: "read-write" })).toThrow(expect.objectContaining({ syscall: "mmap" }));
    expect(() => rw.resize(8192)).toThrow(expect.objectContaining({ syscall: "ftruncate" }));
    blob.cleanup();
  });

});

describe("immutability (per backend)", () => {
  test("a sealed memfd blob stays as it was even for its owner: chmod back, reopen read-write, then no write, map or resize", () => {
    using allocator = new BlobAllocator();
    const w = allocator.create(3 * 4096);
    w.bytes.fill(9);
    const blob = w.publish();
    using r = blob.openReader();
    expect([r.sealed, r.immutable]).toEqual([true, true]);
    using file = SharedMemory.fromFd(blob.fd);
    file.chmod(0o600); // the owner may do this
    using rw = SharedMemory.openFile({ path: `/proc/self/fd/${blob.fd}` });
    expect(rw.readOnly).toBe(false);
    expect(() => rw.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EPERM", syscall: "mmap" }));
    expect(() => rw.resize(4096)).toThrow(expect.objectContaining({ code: "EPERM", syscall: "ftruncate" }));
    expect(r.view.at(3 * 4096 - 1)).toBe(9);
    expect(r.faulted).toBe(false);
    blob.cleanup();
  });

  test.each(["posix", "tempfile"] as const)(
    "a %s blob is not immutable for its owner: shrunk under a guarded reader, reads past the new end give zeros and the process lives",
    (backend) => {
      using allocator = new BlobAllocator({ backend });
      const w = allocator.create(3 * 4096);
      w.bytes.fill(9);
      const blob = w.publish();
      using r = blob.openReader();
      expect([r.sealed, r.immutable]).toEqual([false, false]);
      expect(r.view.at(2 * 4096 + 5)).toBe(9);
      // Play the producer's user: chmod the file back, reopen it read-write through /proc, shrink it.
      using file = SharedMemory.fromFd(blob.fd);
      file.chmod(0o600);
      using rw = SharedMemory.openFile({ path: `/proc/self/fd/${blob.fd}` });
      rw.resize(4096);
      expect(r.view.at(0)).toBe(9);
      expect(r.faulted).toBe(false); // nothing past the end was touched yet
      expect(r.view.at(2 * 4096 + 5)).toBe(0); // SIGBUS without the guard
      expect(r.faulted).toBe(true);
      expect(r.view.slice(4096 - 2, 4096 + 2)).toEqual(new Uint8Array([9, 9, 0, 0]));
      blob.cleanup();
    },
  );
});

describe("tokens", () => {
  test("cleanup is idempotent; forged tokens are refused with BlobTokenError", () => {
    using allocator = new BlobAllocator();
    const w = allocator.create(10);
    const token = w.token;
    expect(allocator.cleanup(token)).toBe(true);
    expect(allocator.cleanup(token)).toBe(false);
    w.cleanup(); // also harmless
    const forged = `${w.id}.${"A".repeat(22)}`;
    for (const bad of [forged, "nonsense", "", `${"0".repeat(32)}.${token.split(".")[1]}`, `${token}!!`, ` ${token}`, 42 as never]) {
      expect(() => allocator.cleanup(bad)).toThrow(BlobTokenError);
    }
    // A token from another allocator is not this one's.
    using other = new BlobAllocator();
    using x = other.create(10);
    expect(() => allocator.cleanup(x.token)).toThrow(expect.objectContaining({ code: "ERR_QBUN_BLOB_TOKEN" }));
  });

  test("a stale token or blob is refused with BlobStaleError", () => {
    using allocator = new BlobAllocator();
    const w = allocator.create(10);
    const blob = w.publish();
    blob.cleanup();
    expect(blob.held).toBe(false);
    expect(() => allocator.renew(blob.token, 1000)).toThrow(BlobStaleError);
    expect(() => blob.fd).toThrow(expect.objectContaining({ code: "ERR_QBUN_BLOB_STALE" }));
    expect(() => blob.openReader()).toThrow(BlobStaleError);
    const w2 = allocator.create(10);
    w2.cleanup();
    expect(() => w2.write(new Uint8Array(1))).toThrow(/already cleaned up/);
  });
});

describe("leases", () => {
  test("an expired blob is reclaimed by the timer, reported, and refused afterwards", async () => {
    const expired: string[] = [];
    using allocator = new BlobAllocator({ onExpire: (info) => expired.push(info.id) });
    const short = allocator.create(4096, { leaseMs: 30 });
    const long = allocator.create(4096, { leaseMs: 60_000 });
    const published = allocator.create(4096, { leaseMs: 40 }).publish();
    using r = published.openReader(); // a reader's mapping outlives the producer's lease
    for (let i = 0; i < 200 && allocator.stats().count > 1; i++) await Bun.sleep(10);
    expect(allocator.stats().count).toBe(1);
    expect(expired.sort()).toEqual([short.id, published.id].sort());
    expect(() => short.write(new Uint8Array(1))).toThrow(/lease expired/);
    expect(() => published.fd).toThrow(BlobStaleError);
    expect(r.view.at(0)).toBe(0);
    expect(long.bytes.length).toBe(4096);
  });

  test("leases run on a monotonic clock: a wall-clock jump neither expires nor keeps a blob", () => {
    using allocator = new BlobAllocator();
    const w = allocator.create(10, { leaseMs: 60_000 });
    const realNow = Date.now;
    try {
      Date.now = () => realNow() + 3_600_000; // the wall clock jumps an hour ahead
      expect(allocator.reclaimExpired()).toBe(0);
      expect(w.bytes.length).toBe(10);
      Date.now = () => realNow() - 3_600_000; // and back behind
      expect(allocator.stats().oldest!.ageMs).toBeGreaterThanOrEqual(0);
    } finally {
      Date.now = realNow;
    }
    expect(allocator.reclaimExpired(Date.now() + 61_000)).toBe(1); // an explicit wall-clock time still works
  });

  test("renew pushes the expiry out", async () => {
    using allocator = new BlobAllocator();
    const w = allocator.create(10, { leaseMs: 30 });
    const at = w.renew(60_000);
    expect(at).toBeGreaterThan(Date.now() + 50_000);
    await Bun.sleep(80);
    expect(w.bytes.length).toBe(10);
    expect(allocator.reclaimExpired(at + 1)).toBe(1);
  });

  test("lease timers and idle channels do not keep a process alive", async () => {
    const child = Bun.spawn(["bun", `${import.meta.dir}/peers/blob_child.ts`, "idle-lease"], { stdout: "pipe", stderr: "pipe" });
    const watchdog = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await child.exited;
    clearTimeout(watchdog);
    expect(await new Response(child.stdout).text()).toBe("READY\n");
    expect(child.signalCode).toBeNull(); // not killed by the watchdog: it exited by itself
    expect(code).toBe(0);
  });
});

test("README example", async () => {
  // --- README: qbun/blob ---
  using allocator = new BlobAllocator({ defaultLeaseMs: 30_000 });
  const [producer, consumer] = BlobChannel.pair(); // or BlobChannel.connect("\0name") in another process

  using writer = allocator.create(1 << 20);
  writer.write(new TextEncoder().encode("frame 1"));
  const blob = writer.publish(); // sealed: nobody can change it any more
  const delivery = await producer.send(blob, { metadata: { kind: "frame" }, cleanupWhenReleased: true });

  using reader = (await consumer.receive())!; // mapped read-only
  const head = reader.view.text(0, 7); // "frame 1"
  reader.close(); // tells the producer
  await delivery.released; // "released": the producer's blob is cleaned up
  // --- end ---
  expect(head).toBe("frame 1");
  expect(reader.metadata).toEqual({ kind: "frame" });
  expect(await delivery.released).toBe("released");
  expect(allocator.stats().count).toBe(0);
  producer.close();
  consumer.close();
});

describe("BlobReader mappings", () => {
  const blobMappings = blobMappingCount;

  test("a reader maps at open and unmaps at close, viewed or not; a dropped one is unmapped when collected", async () => {
    using allocator = new BlobAllocator();
    const blob = allocator.create(64 * 1024).publish();
    const base = blobMappings();
    const unread = blob.openReader();
    expect(blobMappings()).toBe(base + 1); // mapped at open, before any view exists
    unread.close();
    expect(blobMappings()).toBe(base);
    const read = blob.openReader();
    expect(read.view.length).toBe(64 * 1024);
    read.close();
    expect(blobMappings()).toBe(base);
    (() => {
      for (let i = 0; i < 20; i++) blob.openReader();
    })();
    expect(blobMappings()).toBe(base + 20);
    for (let i = 0; i < 50 && blobMappings() > base; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(blobMappings()).toBe(base);
    blob.cleanup();
  });
});

describe("BlobReader.open on descriptors that do not match their announcement", () => {
  test("size mismatch, missing seals, not a file and too large are typed refusals; nothing leaks", async () => {
    const before = await settledFdCount();
    using mem = SharedMemory.memfd({ size: 4096 });
    const problem = (fd: number | OwnedFd, expected: object) => {
      try {
        BlobReader.open(fd, expected).close();
      } catch (error) {
        expect(error).toBeInstanceOf(BlobDescriptorError);
        return (error as BlobDescriptorError).problem;
      }
      return "accepted";
    };
    expect(problem(mem.fd, { size: 8192 })).toBe("size-mismatch");
    expect(problem(mem.fd, { size: 4096, sealed: true })).toBe("not-sealed");
    expect(problem(mem.fd, { requireSealed: true })).toBe("not-sealed");
    expect(problem(mem.fd, { maxSize: 1024 })).toBe("too-large");
    const [a, b] = UnixStream.pair();
    expect(problem(a.fd, {})).toBe("not-a-file");
    a.close();
    b.close();
    using empty = SharedMemory.memfd({ size: 0 });
    expect(problem(empty.fd, {})).toBe("size-mismatch");
    // An owned fd is consumed even when refused.
    const owned = new OwnedFd(mem.readOnlyFd().take());
    expect(problem(owned, { size: 1 })).toBe("size-mismatch");
    expect(owned.closed).toBe(true);
    expect(problem(mem.fd, { size: 4096 })).toBe("accepted");
    mem.close();
    empty.close();
    expect(await settledFdCount(before)).toBe(before);
  });
});
