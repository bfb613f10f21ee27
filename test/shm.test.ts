import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { ClosedError, Mapping, OwnedFd, QbunArgumentError, QbunSystemError, Semaphore, SharedMemory } from "../src/shm/index.ts";
import { UnixListener, UnixStream } from "../src/unix/index.ts";
import { Reactor } from "../ffi/reactor.ts";

const PEER = join(import.meta.dir, "peers", "shm_peer.py");
const openFds = () => readdirSync("/proc/self/fd").length;
const devShm = () => readdirSync("/dev/shm").sort().join("\n");
const mappedMemfds = (name = "qbun-leakcheck") =>
  readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.includes(`/memfd:${name} `)).length;

/** Run the Python peer in `mode` against a fresh listener; hand it `fds`; return its JSON reply. */
async function withPythonPeer(
  mode: string,
  fds: number[],
  extra: string[] = [],
  during?: (conn: UnixStream) => Promise<void>,
): Promise<any> {
  const name = `qbun-shm-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
  using listener = UnixListener.listen(`\0${name}`);
  const peer = Bun.spawn(["python3", PEER, mode, `@${name}`, ...extra], { stderr: "pipe" });
  try {
    await using conn = await listener.accept({ signal: AbortSignal.timeout(10_000) });
    if (fds.length) await conn.sendMessage(new Uint8Array([1]), { fds });
    await during?.(conn);
    const chunks: Uint8Array[] = [];
    for await (const chunk of conn) chunks.push(chunk);
    expect(await peer.exited).toBe(0);
    return JSON.parse(Buffer.concat(chunks).toString());
  } finally {
    peer.kill();
    const err = await new Response(peer.stderr).text();
    if (err) console.error(err);
  }
}

describe("memfd", () => {
  test("is sized, zero-filled, mapped read-write and shared between mappings", () => {
    using mem = SharedMemory.memfd({ size: 10_000, name: "t" });
    expect(mem.kind).toBe("memfd");
    expect(mem.size).toBe(10_000);
    using a = mem.map();
    using b = mem.map();
    expect(a.bytes.every((x) => x === 0)).toBe(true);
    a.bytes.set([7, 8, 9], 4000);
    expect([...b.bytes.subarray(4000, 4003)]).toEqual([7, 8, 9]);
    expect(readlinkSync(`/proc/self/fd/${mem.fd}`)).toStartWith("/memfd:t");
  });

  test("seals: grow, shrink and write are refused once added; future-write blocks new writable maps", () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    {
      using map = mem.map();
      map.bytes[0] = 1;
      // F_SEAL_WRITE needs no writable shared mapping: EBUSY while one exists.
      expect(() => mem.addSeals(["write"])).toThrow(expect.objectContaining({ code: "EBUSY" }));
    }
    mem.addSeals(["grow", "shrink", "write"]);
    expect(mem.seals.sort()).toEqual(["grow", "shrink", "write"]);
    expect(() => mem.resize(8192)).toThrow(expect.objectContaining({ code: "EPERM", syscall: "ftruncate" }));
    expect(() => mem.resize(100)).toThrow(expect.objectContaining({ code: "EPERM" }));
    expect(() => mem.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EPERM", syscall: "mmap" }));
    using ro = mem.map({ access: "read-only" });
    expect(ro.view.at(0)).toBe(1);

    using fut = SharedMemory.memfd({ size: 4096 });
    using keep = fut.map();
    fut.addSeals(["future-write"]); // allowed while a writable mapping exists
    keep.bytes[1] = 5; // the existing mapping stays writable
    expect(() => fut.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EPERM" }));
    fut.addSeals(["seal"]);
    expect(() => fut.addSeals(["grow"])).toThrow(expect.objectContaining({ code: "EPERM" }));
  });

  test("unsealable memfd reports no seals and refuses to be sealed", () => {
    using mem = SharedMemory.memfd({ size: 4096, sealable: false });
    expect(mem.seals).toEqual(["seal"]);
    expect(() => mem.addSeals(["grow"])).toThrow(QbunSystemError);
  });

  test("bad arguments are rejected before any syscall", () => {
    expect(() => SharedMemory.memfd({ size: -1 })).toThrow(QbunArgumentError);
    expect(() => SharedMemory.memfd({ size: 1.5 })).toThrow(QbunArgumentError);
    using mem = SharedMemory.memfd({ size: 4096 });
    expect(() => mem.addSeals(["nope" as never])).toThrow(QbunArgumentError);
    expect(() => SharedMemory.posix({ name: "no-slash" })).toThrow(QbunArgumentError);
    expect(() => SharedMemory.posix({ name: "/a/b" })).toThrow(QbunArgumentError);
    using odd = SharedMemory.memfd({ size: 5000 });
    expect(() => odd.mapCircular()).toThrow(QbunArgumentError);
  });
});

describe("read-only sharing with another process (Python peer)", () => {
  test("a read-only fd cannot be mapped writable, written or resized by the peer; a read-write one can", async () => {
    using mem = SharedMemory.memfd({ size: 8192 });
    using map = mem.map();
    map.bytes.set(new TextEncoder().encode("hello peer"));
    using roFd = mem.readOnlyFd();
    const [ro, rw] = await withPythonPeer("inspect", [roFd.fd, mem.fd]);
    expect(ro.mapWrite).toBe("EACCES");
    expect(ro.mapRead).toBe("ok");
    expect(Buffer.from(ro.head, "hex").toString().startsWith("hello peer")).toBe(true);
    expect(ro.write).toBe("EBADF");
    expect(ro.grow).toBe("EINVAL");
    expect(rw.mapWrite).toBe("ok");
    // The peer's write through its shared mapping is visible here, zero-copy.
    expect(new TextDecoder().decode(map.bytes.subarray(100, 102))).toBe("PY");
  });

  test("a sealed memfd stays immutable even through a read-write fd", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    mem.addSeals(["grow", "shrink", "write", "seal"]);
    const [r] = await withPythonPeer("inspect", [mem.fd]);
    expect(r.mapWrite).toBe("EPERM");
    expect(r.write).toBe("EPERM");
    expect(r.grow).toBe("EPERM");
    expect(r.mapRead).toBe("ok");
  });

  test("a memfd created by the peer is received and mapped read-only here", async () => {
    const name = `qbun-shm-recv-${process.pid}`;
    using listener = UnixListener.listen(`\0${name}`);
    const peer = Bun.spawn(["python3", PEER, "send-memfd", `@${name}`]);
    try {
      await using conn = await listener.accept();
      using msg = (await conn.receiveMessage())!;
      expect(msg.fds.length).toBe(1);
      using mem = SharedMemory.fromFd(msg.fds[0]!);
      expect(msg.fds[0]!.closed).toBe(true); // ownership moved into SharedMemory
      using map = mem.map({ access: "read-only" });
      expect(map.view.text(0, 11)).toBe("from python");
      expect(() => map.bytes).toThrow(QbunArgumentError); // no writable view over read-only memory
      await conn.write(new Uint8Array([0]));
      expect(await peer.exited).toBe(0);
    } finally {
      peer.kill();
    }
  });
});

describe("mappings", () => {
  test("circular mapping: the second half mirrors the first", () => {
    using mem = SharedMemory.memfd({ size: 8192 });
    using ring = mem.mapCircular();
    expect(ring.length).toBe(16384);
    ring.bytes.set([1, 2, 3, 4], 8190); // crosses the end of the file
    expect([...ring.bytes.subarray(0, 2)]).toEqual([3, 4]);
    expect([...ring.bytes.subarray(8190, 8194)]).toEqual([1, 2, 3, 4]);
    using plain = mem.map();
    expect([plain.bytes[8190], plain.bytes[8191], plain.bytes[0], plain.bytes[1]]).toEqual([1, 2, 3, 4]);
  });

  test("read-only view: bounds-checked reads, copies out, no way to write", () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using rw = mem.map();
    new DataView(rw.bytes.buffer).setUint32(8, 0xdeadbeef, true);
    using ro = mem.map({ access: "read-only" });
    const view = ro.view;
    expect(view.readUint32(8)).toBe(0xdeadbeef);
    expect(() => view.readUint32(4094)).toThrow(RangeError);
    const copy = view.slice(8, 12);
    copy[0] = 0;
    expect(view.readUint32(8)).toBe(0xdeadbeef);
    expect(view.at(4096)).toBeUndefined();
  });

  test("touching a view after close cannot crash the process (checked in a child)", async () => {
    const script = `
      import { SharedMemory } from ${JSON.stringify(join(import.meta.dir, "..", "src", "shm", "index.ts"))};
      const mem = SharedMemory.memfd({ size: 1 << 20 });
      const map = mem.map();
      const bytes = map.bytes;            // a view the user keeps
      const ro = mem.map({ access: "read-only" });
      const view = ro.view;
      bytes.fill(7);
      map.close(); ro.close(); mem.close();
      Bun.gc(true);
      bytes[10] = 1;                      // would be a SIGSEGV on unmapped memory
      let error = "none";
      try { view.at(0); } catch (e) { error = e.code; }
      console.log(bytes.length, bytes[10], view.length, error);
    `;
    const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(proc.stdout).text();
    expect(await proc.exited).toBe(0);
    expect(out.trim()).toBe("0 undefined 0 ERR_QBUN_CLOSED");
  });

  test("a guarded mapping survives its file being truncated (unguarded: SIGBUS kills the process)", async () => {
    const script = (guard: boolean) => `
      import { SharedMemory } from ${JSON.stringify(join(import.meta.dir, "..", "src", "shm", "index.ts"))};
      const mem = SharedMemory.tempFile({ size: 65536 });
      const map = mem.mapCircular({ guard: ${guard} });
      map.bytes[65536 + 100] = 9;        // second half: the mirror of byte 100
      const peer = SharedMemory.fromFd(mem.fd);
      peer.resize(4096);                 // what a hostile peer can do to a file it can write
      const before = map.faulted;
      const value = map.bytes[40000];    // beyond the new end of file
      map.bytes[50000] = 1;
      console.log(before, value, map.faulted, map.bytes[100]); // page 0 is still the file's
      map.close();
    `;
    const guarded = Bun.spawn([process.execPath, "-e", script(true)], { stdout: "pipe", stderr: "pipe" });
    expect((await new Response(guarded.stdout).text()).trim()).toBe("false 0 true 9");
    expect(await guarded.exited).toBe(0);
    const unguarded = Bun.spawn([process.execPath, "-e", script(false)], { stdout: "pipe", stderr: "pipe" });
    expect(await unguarded.exited).not.toBe(0);
    expect(unguarded.signalCode ?? (await new Response(unguarded.stderr).text())).toMatch(/SIGBUS|Bus error/);
  });

  test("close unmaps at once; dropped mappings are unmapped by GC; fds do not leak", async () => {
    await Bun.sleep(50); // let earlier tests' child processes and pipes finish closing
    Bun.gc(true);
    const fds0 = openFds();
    const maps0 = mappedMemfds();
    for (let i = 0; i < 200; i++) {
      using mem = SharedMemory.memfd({ size: 4096, name: "qbun-leakcheck" });
      const map = mem.map();
      expect(mappedMemfds()).toBe(maps0 + 1);
      map.close();
      expect(mappedMemfds()).toBe(maps0);
    }
    for (let i = 0; i < 200; i++) {
      const mem = SharedMemory.memfd({ size: 4096, name: "qbun-leakcheck" });
      mem.map().bytes[0] = 1; // dropped without close
      mem.close();
    }
    for (let i = 0; i < 5 && mappedMemfds() > maps0; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    // The collector scans the stack conservatively: the last dropped mapping may still look reachable.
    expect(mappedMemfds()).toBeLessThanOrEqual(maps0 + 1);
    expect(openFds()).toBe(fds0);
  });
});

describe("POSIX shared memory and temp files", () => {
  const name = `/qbun-test-${process.pid}`;
  afterAll(() => {
    try {
      SharedMemory.unlinkPosix(name);
    } catch {}
  });

  test("create, reopen by name, exclusive create, unlink", () => {
    const before = devShm();
    using a = SharedMemory.posix({ name, create: true, exclusive: true, size: 4096, mode: 0o640 });
    expect(a.size).toBe(4096);
    expect(readdirSync("/dev/shm")).toContain(name.slice(1));
    expect(() => SharedMemory.posix({ name, create: true, exclusive: true, size: 4096 })).toThrow(
      expect.objectContaining({ code: "EEXIST", syscall: "shm_open" }),
    );
    using b = SharedMemory.posix({ name, readOnly: true });
    expect(b.readOnly).toBe(true);
    using wa = a.map();
    wa.bytes[3] = 33;
    using rb = b.map();
    expect(rb.access).toBe("read-only");
    expect(rb.view.at(3)).toBe(33);
    SharedMemory.unlinkPosix(name);
    expect(() => SharedMemory.posix({ name })).toThrow(expect.objectContaining({ code: "ENOENT" }));
    expect(devShm()).toBe(before);
  });

  test("temp-file fallback leaves nothing in its directory and maps like the others", () => {
    const dir = join(require("node:os").tmpdir(), `qbun-tmpfile-${process.pid}`);
    require("node:fs").mkdirSync(dir, { recursive: true });
    try {
      using mem = SharedMemory.tempFile({ size: 8192, dir });
      expect(readdirSync(dir)).toEqual([]);
      using ring = mem.mapCircular();
      ring.bytes[8192] = 4;
      expect(ring.bytes[0]).toBe(4);
      using ro = SharedMemory.fromFd(mem.readOnlyFd());
      expect(() => ro.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EACCES" }));
    } finally {
      require("node:fs").rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("named files (how libqb shares its rings)", () => {
  test("openFile: exclusive create, allocate, chown, chmod, reopen read-only", () => {
    const { mkdtempSync, rmSync, statSync } = require("node:fs");
    const dir = mkdtempSync(join(require("node:os").tmpdir(), "qbun-openfile-"));
    const path = join(dir, "ring-data");
    try {
      using file = SharedMemory.openFile({ path, create: true, size: 16384, mode: 0o600 });
      expect(file.kind).toBe("file");
      expect(file.size).toBe(16384);
      expect(statSync(path).blocks * 512).toBeGreaterThanOrEqual(16384); // blocks reserved (posix_fallocate)
      file.chown(65534, 65534);
      file.chmod(0o640);
      const st = statSync(path);
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([65534, 65534, 0o640]);
      expect(() => SharedMemory.openFile({ path, create: true })).toThrow(expect.objectContaining({ code: "EEXIST", syscall: "open" }));
      using rw = file.map();
      rw.bytes[5] = 55;
      using ro = SharedMemory.openFile({ path, readOnly: true });
      expect(ro.readOnly).toBe(true);
      using view = ro.map();
      expect(view.view.at(5)).toBe(55);
      expect(() => SharedMemory.openFile({ path: "relative/path" })).toThrow(QbunArgumentError);
      expect(() => SharedMemory.openFile({ path: join(dir, "missing") })).toThrow(expect.objectContaining({ code: "ENOENT" }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("removeFile and removeDirectory: true when removed, false when already gone, typed errors otherwise", () => {
    const { mkdtempSync, existsSync, rmSync, writeFileSync } = require("node:fs");
    const dir = mkdtempSync(join(require("node:os").tmpdir(), "qbun-remove-"));
    const file = join(dir, "control");
    try {
      writeFileSync(file, "x");
      expect(() => SharedMemory.removeDirectory(dir)).toThrow(expect.objectContaining({ code: "ENOTEMPTY", syscall: "rmdir", path: dir }));
      expect(SharedMemory.removeFile(file)).toBe(true);
      expect(existsSync(file)).toBe(false);
      expect(SharedMemory.removeFile(file)).toBe(false);
      expect(() => SharedMemory.removeFile(dir)).toThrow(expect.objectContaining({ code: "EISDIR", syscall: "unlink" }));
      expect(SharedMemory.removeDirectory(dir)).toBe(true);
      expect(existsSync(dir)).toBe(false);
      expect(SharedMemory.removeDirectory(dir)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("process-shared semaphores", () => {
  test("post, tryWait, value, timed wait and waitSync", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using map = mem.map();
    const sem = Semaphore.init(map, 64, { value: 2 });
    expect(sem.value).toBe(2);
    expect(sem.tryWait()).toBe(true);
    expect(sem.tryWait()).toBe(true);
    expect(sem.tryWait()).toBe(false);
    expect(await sem.wait({ timeout: 20 })).toBe(false);
    expect(sem.waitSync(10)).toBe(false);
    sem.post();
    expect(sem.waitSync(10)).toBe(true);
    expect(() => Semaphore.init(map, 3)).toThrow(QbunArgumentError);
    expect(() => Semaphore.init(map, 4090)).toThrow(QbunArgumentError);
    sem.destroy();
  });

  test("an async wait does not block the event loop and wakes on post from a second mapping", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using a = mem.map();
    using b = mem.mapCircular();
    const sem = Semaphore.init(a, 128);
    const other = Semaphore.open(b, 128);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    setTimeout(() => other.post(), 60);
    const got = await sem.wait({ timeout: 5000 });
    clearInterval(timer);
    expect(got).toBe(true);
    expect(ticks).toBeGreaterThan(3); // the loop ran while the wait was pending
    expect(sem.value).toBe(0);
  });

  test("abort leaves the count unchanged; closing the mapping stops pending waits", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    const map = mem.map();
    const sem = Semaphore.init(map, 0);
    const ac = new AbortController();
    const waiting = sem.wait({ signal: ac.signal });
    setTimeout(() => ac.abort(new Error("cancelled by test")), 20);
    await expect(waiting).rejects.toThrow("cancelled by test");
    expect(sem.value).toBe(0);
    sem.post();
    expect(await sem.wait({ timeout: 100 })).toBe(true);

    const pending = sem.wait();
    await Bun.sleep(20); // let it reach the helper thread
    map.close();
    await expect(pending).rejects.toThrow("closed");
    expect(() => sem.post()).toThrow("closed");
  });

  test("a foreign process (glibc sem_* via Python ctypes) posts and waits on our semaphore", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using map = mem.map();
    const sem = Semaphore.init(map, 256);
    const result = await withPythonPeer("sem", [mem.fd], ["256"], async (conn) => {
      expect(await sem.wait({ timeout: 10_000 })).toBe(true); // posted by Python
      sem.post(); // Python's sem_timedwait takes it
      await conn.write(new Uint8Array([1]));
    });
    expect(result).toEqual({ posted: 0, gotPost: true });
    expect(sem.value).toBe(0);
  });

  test("waits without a timeout sleep in io_uring (no helper thread) where the kernel can, and leave glibc's waiter count at 0", async () => {
    const reactor = await Reactor.get();
    const [major, minor] = readFileSync("/proc/sys/kernel/osrelease", "utf8").split(".").map(Number) as [number, number];
    const kernelHasFutexOp = major > 6 || (major === 6 && minor >= 7);
    if (reactor.backend === "io_uring" && process.env.QBUN_SEM_WAIT !== "thread") expect(reactor.futexWaits).toBe(kernelHasFutexOp);
    using mem = SharedMemory.memfd({ size: 4096 });
    using map = mem.map();
    using other = mem.map();
    const sem = Semaphore.init(map, 512);
    const poster = Semaphore.open(other, 512);
    // glibc's sem_t on x86_64: the count in the low 32 bits, sleeping waiters in the high 32.
    const waiters = () => new DataView(map.bytes.buffer, map.bytes.byteOffset + 512 + 4, 4).getUint32(0, true);
    const before = qbunThreads();

    // Three concurrent waits.
    const pending = [sem.wait(), sem.wait(), sem.wait()];
    await Bun.sleep(5);
    expect(waiters()).toBe(3); // helper threads in sem_wait register there too
    if (reactor.futexWaits) expect(qbunThreads()).toBeLessThanOrEqual(before);
    // Any waiter may take any post: wait for all three, not in order.
    for (let i = 0; i < 3; i++) poster.post();
    expect(await Promise.all(pending)).toEqual([true, true, true]);
    expect(sem.value).toBe(0);
    expect(waiters()).toBe(0);

    // Aborted and closed waits give their place back and leave the count alone.
    const ac = new AbortController();
    const aborted = sem.wait({ signal: ac.signal });
    await Bun.sleep(5);
    ac.abort(new Error("aborted by test"));
    await expect(aborted).rejects.toThrow("aborted by test");
    expect(waiters()).toBe(0);
    poster.post();
    expect(sem.value).toBe(1);
    expect(await sem.wait()).toBe(true);
    const stranded = sem.wait();
    await Bun.sleep(5);
    expect(waiters()).toBe(1);
    const word = new DataView(other.bytes.buffer, other.bytes.byteOffset + 512 + 4, 4);
    map.close();
    await expect(stranded).rejects.toThrow("closed");
    expect(word.getUint32(0, true)).toBe(0);
    expect(qbunThreads()).toBeLessThanOrEqual(before);
  });

  test("postMany: one call posts n and wakes up to n sleepers (ours or glibc's sem_wait)", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using map = mem.map();
    using other = mem.map();
    const sem = Semaphore.init(map, 1024);
    const poster = Semaphore.open(other, 1024);
    poster.postMany(5);
    expect(sem.value).toBe(5);
    for (let i = 0; i < 5; i++) expect(sem.tryWait()).toBe(true);
    expect(sem.tryWait()).toBe(false);
    poster.postMany(0);
    expect(sem.value).toBe(0);
    expect(() => poster.postMany(-1)).toThrow(QbunArgumentError);

    const pending = [sem.wait(), sem.wait(), sem.wait({ timeout: 10_000 })]; // the last on a helper thread
    await Bun.sleep(10);
    poster.postMany(3);
    expect(await Promise.all(pending)).toEqual([true, true, true]);
    expect(sem.value).toBe(0);
    expect(new DataView(map.bytes.buffer, map.bytes.byteOffset + 1024 + 4, 4).getUint32(0, true)).toBe(0); // no sleeper left registered
  });

  test("closing the mapping ends callback waits, and a callback cannot start a new wait on the unmapped memory", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    const map = mem.map();
    const sem = Semaphore.init(map, 2048);
    await sem.wait({ timeout: 1 }); // the reactor runs
    const ended: unknown[] = [];
    let retry: unknown;
    expect(
      sem.waitThen((error) => {
        ended.push(error);
        try {
          sem.waitThen(() => ended.push("a second wait ended"));
        } catch (e) {
          retry = e;
        }
      }),
    ).toBe(false);
    map.close();
    await Bun.sleep(20);
    expect(ended.length).toBe(1);
    expect(ended[0]).toBeInstanceOf(ClosedError);
    expect(retry).toBeInstanceOf(ClosedError);
  });

  test("1,000 async waits leave no thread behind", async () => {
    using mem = SharedMemory.memfd({ size: 4096 });
    using map = mem.map();
    const sem = Semaphore.init(map, 0);
    await sem.wait({ timeout: 1 }); // start the reactor
    const before = qbunThreads();
    for (let i = 0; i < 1000; i++) {
      const p = sem.wait({ timeout: 5000 });
      sem.post();
      expect(await p).toBe(true);
    }
    await Bun.sleep(10);
    expect(qbunThreads()).toBeLessThanOrEqual(before);
  });
});

/**
 * Threads other than the main one that still carry the process name: qbun's
 * helper threads never rename themselves, Bun's own threads (JIT, GC, pools)
 * do, and Bun starts those whenever it likes.
 */
function qbunThreads(): number {
  const comm = (tid: string) => {
    try {
      return readFileSync(`/proc/self/task/${tid}/comm`, "utf8");
    } catch {
      return ""; // exited meanwhile
    }
  };
  const main = comm(String(process.pid));
  return readdirSync("/proc/self/task").filter((tid) => tid !== String(process.pid) && comm(tid) === main).length;
}
