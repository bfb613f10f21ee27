/**
 * Self-test checks for shared memory (src/shm): memfd seals, read-only fds,
 * circular mappings and process-shared semaphores.
 * @module
 */
import { writeSync } from "node:fs";
import { loadNative } from "../../ffi/native.ts";
import { SEMAPHORE_SIZE, Semaphore, SharedMemory, type Seal } from "../../src/shm/index.ts";
import { errorMessage } from "../io.ts";
import type { Check } from "./check.ts";

/** How long the semaphore check waits for a post it made itself. */
const WAIT_MS = 2_000;

/** A ring size that is a whole number of pages for 4, 16 and 64 KiB pages. */
const RING_SIZE = 64 * 1024;

const encoder = new TextEncoder();

/**
 * Runs `attempt`, which the kernel must refuse with `code`; throws a message
 * naming `what` when it succeeds or fails some other way. Anything the
 * attempt wrongly returned (a mapping) is disposed of.
 */
function expectRefused(what: string, code: string, attempt: () => unknown): void {
  let result: unknown;
  try {
    result = attempt();
  } catch (error) {
    const got = (error as { code?: unknown } | null)?.code;
    if (got === code) return;
    throw new Error(`${what} failed with ${typeof got === "string" ? got : "an unexpected error"} instead of ${code}: ${errorMessage(error)}`);
  }
  if (result && typeof result === "object" && Symbol.dispose in result) (result as Disposable)[Symbol.dispose]();
  throw new Error(`${what} succeeded; it must fail with ${code}`);
}

/** Settles like `promise`, or rejects with `message` after `ms` (so a check can never hang). */
async function withDeadline<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Shared-memory checks, in the order they run; each needs the C helper. */
export const shmChecks: readonly Check[] = [
  {
    id: "shm-memfd-seals",
    title: "memfd: seals refuse grow/shrink/write",
    needs: ["helper"],
    run() {
      const size = 4096;
      const text = `qbun selftest ${process.pid}: sealed`;
      using mem = SharedMemory.memfd({ size, name: "qbun-selftest-seals" });
      if (mem.seals.length > 0) throw new Error(`a new memfd already has seals: ${mem.seals.join(", ")}`);
      {
        using map = mem.map();
        map.bytes.set(encoder.encode(text));
      } // F_SEAL_WRITE needs every writable mapping gone
      const wanted: Seal[] = ["shrink", "grow", "write"];
      mem.addSeals(wanted);
      const seals = mem.seals;
      if (!wanted.every((seal) => seals.includes(seal))) {
        throw new Error(`F_GET_SEALS reports [${seals.join(", ")}] after adding shrink, grow, write`);
      }
      expectRefused("growing the sealed memfd (ftruncate)", "EPERM", () => mem.resize(size * 2));
      expectRefused("shrinking the sealed memfd (ftruncate)", "EPERM", () => mem.resize(0));
      expectRefused("mapping the sealed memfd writable", "EPERM", () => mem.map({ access: "read-write" }));
      expectRefused("write(2) to the sealed memfd", "EPERM", () => writeSync(mem.fd, encoder.encode("x"), 0, 1, 0));
      if (mem.size !== size) throw new Error(`the sealed memfd is ${mem.size} bytes, expected ${size}`);
      using view = mem.map({ access: "read-only" });
      const got = view.view.text(0, encoder.encode(text).length);
      if (got !== text) throw new Error(`the sealed memfd reads "${got}", expected "${text}"`);
      return `${size}-byte memfd written, then sealed (shrink, grow, write): grow, shrink, writable mmap and write(2) refused with EPERM; content intact`;
    },
  },
  {
    id: "shm-readonly-fd",
    title: "read-only fd cannot be mapped writable",
    needs: ["helper"],
    run() {
      // Unsealed on purpose: the refusal must come from the fd's access mode, not from a seal.
      using mem = SharedMemory.memfd({ size: 4096, name: "qbun-selftest-ro" });
      using writable = mem.map();
      using readOnly = SharedMemory.fromFd(mem.readOnlyFd());
      if (!readOnly.readOnly) throw new Error("readOnlyFd() returned an fd open for writing (F_GETFL)");
      expectRefused("mapping the read-only fd writable", "EACCES", () => readOnly.map({ access: "read-write" }));
      using view = readOnly.map();
      if (view.access !== "read-only") throw new Error(`the read-only fd was mapped "${view.access}" by default`);
      expectRefused("asking a read-only mapping for writable bytes", "ERR_INVALID_ARG_VALUE", () => view.bytes);
      const text = "written after mapping";
      writable.bytes.set(encoder.encode(text));
      const got = view.view.text(0, text.length);
      if (got !== text) throw new Error(`the read-only mapping reads "${got}" after "${text}" was written through the memfd`);
      return "fd reopened O_RDONLY: writable mmap refused with EACCES; its read-only mapping sees writes made through the memfd";
    },
  },
  {
    id: "shm-circular",
    title: "circular mapping mirrors its halves",
    needs: ["helper"],
    run() {
      using mem = SharedMemory.memfd({ size: RING_SIZE, name: "qbun-selftest-ring" });
      using ring = mem.mapCircular();
      if (ring.length !== 2 * RING_SIZE) throw new Error(`the circular mapping is ${ring.length} bytes, expected ${2 * RING_SIZE}`);
      const bytes = ring.bytes;
      bytes[10] = 0xab;
      if (bytes[RING_SIZE + 10] !== 0xab) throw new Error(`byte 10 was set to 0xab but byte ${RING_SIZE + 10} reads ${bytes[RING_SIZE + 10]}: the second half does not mirror the first`);
      bytes[RING_SIZE + 20] = 0xcd;
      if (bytes[20] !== 0xcd) throw new Error(`byte ${RING_SIZE + 20} was set to 0xcd but byte 20 reads ${bytes[20]}: the first half does not mirror the second`);
      const record = encoder.encode("wraps around");
      const start = RING_SIZE - 5;
      bytes.set(record, start);
      using plain = mem.map({ access: "read-only" });
      const head = plain.view.text(0, record.length - 5);
      const tail = plain.view.text(start, RING_SIZE);
      if (tail + head !== "wraps around") {
        throw new Error(`a record written across the end reads "${tail}" + "${head}" in the file, expected "wraps around"`);
      }
      return `${RING_SIZE / 1024} KiB memfd mapped twice back to back: byte i and i + ${RING_SIZE} are the same memory; a record written across the end lands at the file's start`;
    },
  },
  {
    id: "shm-semaphore",
    title: "semaphore: post wakes an async wait",
    needs: ["helper"],
    async run() {
      const sizeofSem = loadNative().qbn_sizeof_sem();
      if (sizeofSem !== SEMAPHORE_SIZE) throw new Error(`sem_t is ${sizeofSem} bytes here, but qbun reserves ${SEMAPHORE_SIZE}`);
      using mem = SharedMemory.memfd({ size: 4096, name: "qbun-selftest-sem" });
      // Two mappings of one memfd stand for two processes: the semaphore is
      // process-shared (pshared = 1), so only the shared pages connect them.
      using mapA = mem.map();
      using mapB = mem.map();
      const waiter = Semaphore.init(mapA, 0);
      const poster = Semaphore.open(mapB, 0);
      const early = await withDeadline(waiter.wait({ timeout: 20 }), WAIT_MS, `a 20 ms wait on the semaphore did not time out within ${WAIT_MS} ms`);
      if (early) throw new Error("a wait on a semaphore nobody posted (value 0) succeeded; it should have timed out");

      let settled = false;
      const waiting = waiter.wait({ timeout: WAIT_MS }).finally(() => {
        settled = true;
      });
      await Bun.sleep(20);
      if (settled) throw new Error("the wait finished before anything was posted");
      const posted = performance.now();
      poster.post();
      const acquired = await withDeadline(waiting, WAIT_MS + 1_000, `the semaphore wait did not settle within ${WAIT_MS + 1_000} ms, not even by its own timeout`);
      const ms = Math.round((performance.now() - posted) * 10) / 10;
      if (!acquired) throw new Error(`the wait timed out after ${WAIT_MS} ms although the semaphore was posted through the other mapping`);
      if (poster.value !== 0) throw new Error(`the semaphore's value is ${poster.value} after one post and one wait, expected 0`);
      return `sem_t is ${sizeofSem} bytes; a post through one mapping woke an async wait through another in ${ms} ms; an unposted wait timed out`;
    },
  },
];
