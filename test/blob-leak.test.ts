/**
 * qbun/blob leak checks: 10,000 create/send/map/release cycles, in one
 * process and to a Bun child, leave the fd count, /dev/shm and the
 * allocator's holdings as they were.
 */
import { beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { BlobAllocator, BlobChannel, type BlobBackend } from "../src/blob/index.ts";
import { UnixListener } from "../src/unix/index.ts";
import { settledFdCount, shmListing, uniqueName } from "./helpers/env.ts";
import { Peer } from "./helpers/peers.ts";

/** The blob backends' names in /dev/shm ("qbun-blob-*"); other test runs on the machine add their own files. */
const blobShmNames = () => shmListing().filter((name) => name.startsWith("qbun-blob-"));

const CYCLES = 10_000;
const BACKENDS: BlobBackend[] = ["memfd", "posix", "tempfile"];

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

test(`${CYCLES} create/send/map/release cycles over every backend leave fds and /dev/shm as they were`, async () => {
  const shmBefore = blobShmNames();
  const fdsBefore = await settledFdCount();
  using allocator = new BlobAllocator();
  const [producer, consumer] = BlobChannel.pair();
  for (let i = 0; i < CYCLES; i++) {
    const writer = allocator.create(4096 + (i % 7), { backend: BACKENDS[i % 3] });
    writer.write(Uint32Array.of(i), 0);
    const delivery = await producer.send(writer.publish(), { metadata: { i }, cleanupWhenReleased: true });
    const reader = (await consumer.receive())!;
    if (reader.view.readUint32(0) !== i || reader.metadata.i !== i) throw new Error(`cycle ${i}: wrong blob`);
    reader.close();
    await delivery.released;
  }
  await Bun.sleep(0);
  expect(allocator.stats()).toMatchObject({ count: 0, bytes: 0 });
  producer.close();
  consumer.close();
  expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
  expect(blobShmNames()).toEqual(shmBefore);
}, 120_000);

test(`${CYCLES} cycles to a Bun child consumer leave fds and /dev/shm as they were`, async () => {
  const shmBefore = blobShmNames();
  const fdsBefore = await settledFdCount();
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
  expect(blobShmNames()).toEqual(shmBefore);
}, 120_000);
