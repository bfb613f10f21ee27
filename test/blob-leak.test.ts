/**
 * qbun/blob leak checks: 10,000 create/send/map/release cycles, in one
 * process and to a Bun child, leave the fd count, the blob mappings
 * (/proc/self/maps: a reader holds a mapping and no fd), /dev/shm and the
 * allocator's holdings as they were.
 */
import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { BlobAllocator, BlobChannel } from "../src/blob/index.ts";
import { UnixListener } from "../src/unix/index.ts";
import { BACKENDS, blobMappingCount, blobShmNames } from "./helpers/blob.ts";
import { settledFdCount, uniqueName } from "./helpers/env.ts";
import { Peer } from "./helpers/peers.ts";

const CYCLES = 10_000;

// The socket reactor opens its own fds (io_uring or epoll, a wake-up pair) once per
// process, on the first wait: start it before taking the baseline.
beforeAll(async () => {
  using allocator = new BlobAllocator();
  const [a, b] = BlobChannel.pair();
  const delivery = await a.send(allocator.create(1).publish(), { cleanupWhenReleased: true });
  (await b.receive())!.close();
  await delivery.released;
  a.close();
  b.close();
});

/** The blob mappings once dropped readers have been collected (like settledFdCount). */
async function settledMappingCount(target: number): Promise<number> {
  for (let round = 0; round < 20 && blobMappingCount() > target; round++) {
    Bun.gc(true);
    await Bun.sleep(round < 5 ? 1 : 20);
  }
  return blobMappingCount();
}

test(`${CYCLES} create/send/map/release cycles over every backend leave fds, mappings and /dev/shm as they were`, async () => {
  const shmBefore = blobShmNames();
  const fdsBefore = await settledFdCount();
  const mapsBefore = await settledMappingCount(0);
  using allocator = new BlobAllocator();
  const [producer, consumer] = BlobChannel.pair({ requireSealed: false });
  let mapsDuring = 0;
  for (let i = 0; i < CYCLES; i++) {
    const writer = allocator.create(4096 + (i % 7), { backend: BACKENDS[i % 3] });
    writer.write(Uint32Array.of(i), 0);
    const delivery = await producer.send(writer.publish(), { metadata: { i }, cleanupWhenReleased: true });
    const reader = (await consumer.receive())!;
    if (reader.view.readUint32(0) !== i || reader.metadata.i !== i) throw new Error(`cycle ${i}: wrong blob`);
    if (i === 0) mapsDuring = blobMappingCount();
    reader.close();
    await delivery.released;
  }
  await Bun.sleep(0);
  expect(allocator.stats()).toMatchObject({ count: 0, bytes: 0 });
  producer.close();
  consumer.close();
  expect(mapsDuring).toBe(mapsBefore + 1); // the count sees a reader's mapping (a memfd blob)
  expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
  expect(await settledMappingCount(mapsBefore)).toBe(mapsBefore);
  expect(blobShmNames()).toEqual(shmBefore);
}, 120_000);

test("the mapping count sees readers of every backend, closed or dropped", async () => {
  const before = await settledMappingCount(0);
  using allocator = new BlobAllocator();
  const blobs = BACKENDS.map((backend) => allocator.create(4096, { backend }).publish());
  const readers = blobs.map((blob) => blob.openReader());
  expect(blobMappingCount()).toBe(before + BACKENDS.length);
  for (const reader of readers) reader.close();
  expect(blobMappingCount()).toBe(before);
  (() => {
    for (const blob of blobs) blob.openReader().view.at(0); // dropped without close
  })();
  expect(blobMappingCount()).toBe(before + BACKENDS.length);
  expect(await settledMappingCount(before)).toBe(before);
});

test(`${CYCLES} cycles to a Bun child consumer leave fds, mappings and /dev/shm as they were`, async () => {
  const shmBefore = blobShmNames();
  const fdsBefore = await settledFdCount();
  const mapsBefore = await settledMappingCount(0);
  using allocator = new BlobAllocator();
  const name = uniqueName("blob-leak");
  const listener = UnixListener.listen(`\0${name}`, { type: "seqpacket" });
  const accepted = listener.accept({ signal: AbortSignal.timeout(15_000) });
  const peer = await Peer.spawn(["bun", join(import.meta.dir, "peers", "blob_child.ts"), "consume", `@${name}`], "blob consumer");
  const channel = new BlobChannel(await accepted);
  try {
    for (let i = 0; i < CYCLES; i++) {
      const writer = allocator.create(4096);
      writer.write(Uint32Array.of(i), 0);
      const blob = writer.publish();
      const delivery = await channel.send(blob, { cleanupWhenReleased: true });
      const line = JSON.parse((await peer.line())!);
      if (line.id !== blob.id) throw new Error(`cycle ${i}: the child saw ${line.id}`);
      if ((await delivery.released) !== "released") throw new Error(`cycle ${i}: not released`);
    }
    channel.close();
    expect(await peer.line()).toBe("END");
  } finally {
    channel.close();
    listener.close();
    await peer.kill();
  }
  await Bun.sleep(0);
  expect(allocator.stats().count).toBe(0);
  expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
  expect(await settledMappingCount(mapsBefore)).toBe(mapsBefore);
  expect(blobShmNames()).toEqual(shmBefore);
}, 120_000);
