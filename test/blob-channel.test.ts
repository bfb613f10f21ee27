/**
 * qbun/blob across processes: BlobChannel to a Bun child and to a Python
 * peer on every backend, acknowledgements, read-only enforcement seen from
 * the other process, crashes of either side, and hostile peers.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  BlobAllocator,
  BlobChannel,
  BlobChannelClosedError,
  BlobDelivery,
  BlobDeliveryAbandonedError,
  BlobDescriptorError,
  BlobProtocolError,
  BlobRefusedError,
  BlobStaleError,
  QbunArgumentError,
  type BlobBackend,
  type BlobChannelOptions,
  type ReadonlyBytes,
  type ShmBlob,
} from "../src/blob/index.ts";
import { MAX_UNSENT_ACKS } from "../src/blob/channel.ts";
import { encodeFrame, FrameType, HEADER_SIZE } from "../src/blob/wire.ts";
import { SharedMemory } from "../src/shm/index.ts";
import { UnixListener, UnixSeqpacket } from "../src/unix/index.ts";
import { BACKENDS, blobShmNames, until } from "./helpers/blob.ts";
import { caught, isPendingAfter, settledFdCount, uniqueName } from "./helpers/env.ts";
import { Peer } from "./helpers/peers.ts";

const PEERS = join(import.meta.dir, "peers");
const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

const allocator = new BlobAllocator({ defaultLeaseMs: 120_000 });
afterAll(() => allocator.close());

/** A published blob of `size` random-ish bytes on `backend`, with its hash. */
function makeBlob(size: number, backend: BlobBackend = "memfd"): { blob: ShmBlob; sha: string } {
  const w = allocator.create(size, { backend });
  crypto.getRandomValues(w.bytes.subarray(0, Math.min(size, 65536)));
  const blob = w.publish();
  using r = blob.openReader();
  return { blob, sha: sha256(r.view.slice()) };
}

/** Listen on a fresh abstract seqpacket name, start `cmd` with it, accept its connection as a channel. */
async function withPeer(
  cmd: (address: string) => string[],
  name: string,
  options: BlobChannelOptions = {},
): Promise<{ peer: Peer; channel: BlobChannel; listener: UnixListener<"seqpacket"> }> {
  const abstract = uniqueName(name);
  const listener = UnixListener.listen(`\0${abstract}`, { type: "seqpacket" });
  const accepted = listener.accept({ signal: AbortSignal.timeout(15_000) });
  const peer = await Peer.spawn(cmd(`@${abstract}`), name);
  const channel = new BlobChannel(await accepted, options);
  return { peer, channel, listener };
}

const pythonConsumer = (hold = false) => (address: string) => ["python3", "-u", join(PEERS, "blob_peer.py"), address, ...(hold ? ["--hold"] : [])];
const bunChild = (...args: string[]) => (address: string) => ["bun", join(PEERS, "blob_child.ts"), args[0]!, address, ...args.slice(1)];

describe("BlobChannel in one process", () => {
  test("hands over id, size, seal state and metadata; acknowledges mapped, then released", async () => {
    const [a, b] = BlobChannel.pair();
    const { blob, sha } = makeBlob(100_000);
    const delivery = await a.send(blob, { metadata: { name: "frame-1", dims: [640, 480] } });
    expect(delivery.state).toBe("sent");
    expect(a.pending).toBe(1);
    const reader = (await b.receive())!;
    expect(reader.id).toBe(blob.id);
    expect(reader.size).toBe(100_000);
    expect(reader.sealed).toBe(true);
    expect(reader.metadata).toEqual({ name: "frame-1", dims: [640, 480] });
    expect(sha256(reader.view.slice())).toBe(sha);
    await delivery.mapped;
    expect(delivery.state).toBe("mapped");
    expect(b.held).toBe(1);
    reader.close();
    expect(await delivery.released).toBe("released");
    expect(a.pending).toBe(0);
    expect(b.held).toBe(0);
    blob.cleanup();
    a.close();
    b.close();
  });

  test("cleanupWhenReleased frees the producer's blob once the consumer lets go", async () => {
    const [a, b] = BlobChannel.pair();
    const { blob } = makeBlob(4096);
    const before = allocator.stats().count;
    const delivery = await a.send(blob, { cleanupWhenReleased: true });
    (await b.receive())!.close();
    await delivery.released;
    await Bun.sleep(0);
    expect(allocator.stats().count).toBe(before - 1);
    expect(blob.held).toBe(false);
    a.close();
    b.close();
  });

  test("a reader dropped without close still tells the producer it was released (when collected)", async () => {
    const [a, b] = BlobChannel.pair();
    const { blob } = makeBlob(4096);
    const delivery = await a.send(blob, { cleanupWhenReleased: true });
    await (async () => {
      (await b.receive())!.view.at(0); // used, then forgotten
    })();
    await delivery.mapped;
    let outcome: string | undefined;
    void delivery.released.then((o) => (outcome = o));
    for (let i = 0; i < 50 && outcome === undefined; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(outcome).toBe("released");
    a.close();
    b.close();
  });

  test("the blob may be cleaned up right after sending: the consumer still gets it", async () => {
    const [a, b] = BlobChannel.pair({ requireSealed: false });
    const { blob, sha } = makeBlob(8192, "posix");
    const delivery = await a.send(blob);
    blob.cleanup();
    using reader = (await b.receive())!;
    expect(sha256(reader.view.slice())).toBe(sha);
    reader.close();
    expect(await delivery.released).toBe("released");
    a.close();
    b.close();
  });

  test("refuses to send a stale blob, a blob already in flight, or oversized metadata", async () => {
    const [a, b] = BlobChannel.pair({ maxMetadataBytes: 100 });
    const { blob } = makeBlob(4096);
    await a.send(blob);
    expect(await caught(a.send(blob))).toBeInstanceOf(QbunArgumentError);
    expect(await caught(a.send(makeBlob(10).blob, { metadata: { x: "y".repeat(200) } }))).toBeInstanceOf(QbunArgumentError);
    expect(await caught(a.send(makeBlob(10).blob, { metadata: [1] as never }))).toBeInstanceOf(QbunArgumentError);
    blob.cleanup();
    expect(await caught(a.send(blob))).toBeInstanceOf(BlobStaleError);
    using writer = allocator.create(10);
    expect(await caught(a.send(writer as never))).toMatchObject({ message: expect.stringContaining("publish()") });
    a.close();
    b.close();
  });

  test("blobs sent just before the peer closed are still received, then null", async () => {
    const [a, b] = BlobChannel.pair();
    const blobs = [makeBlob(4096).blob, makeBlob(8192).blob];
    const first = b.receive(); // the channel reads on from here on
    for (const blob of blobs) await a.send(blob, { cleanupWhenReleased: true });
    a.close();
    using r1 = (await first)!;
    await until(() => b.closed, "the end of stream behind the second offer");
    using r2 = (await b.receive())!;
    expect([r1.id, r2.id]).toEqual(blobs.map((x) => x.id));
    expect(r2.view.length).toBe(8192);
    expect(await b.receive()).toBeNull();
    r1.close();
    r2.close();
    b.close();
  });

  test("close: a pending receive resolves null, unreleased deliveries settle as closed", async () => {
    const [a, b] = BlobChannel.pair();
    const pendingReceive = b.receive();
    const { blob } = makeBlob(4096);
    const [c, d] = BlobChannel.pair();
    const delivery = await c.send(blob);
    b.close();
    expect(await pendingReceive).toBeNull();
    c.close();
    expect(await delivery.released).toBe("closed");
    expect(await caught(delivery.mapped)).toBeInstanceOf(BlobChannelClosedError);
    expect(await caught(c.send(blob))).toMatchObject({ code: "ERR_QBUN_CLOSED" });
    a.close();
    d.close();
    blob.cleanup();
  });

  test("by default a channel takes only sealed (memfd) blobs; the refusal says how to accept others", async () => {
    const [a, b] = BlobChannel.pair();
    for (const backend of ["posix", "tempfile"] as const) {
      const delivery = await a.send(makeBlob(4096, backend).blob, { cleanupWhenReleased: true });
      expect(await caught(b.receive())).toMatchObject({ problem: "not-sealed", message: expect.stringContaining("requireSealed: false") });
      expect(await caught(delivery.mapped)).toMatchObject({ code: "ERR_QBUN_BLOB_REFUSED", message: expect.stringContaining("memfd backend") });
      expect(await delivery.released).toBe("refused");
    }
    const delivery = await a.send(makeBlob(4096).blob, { cleanupWhenReleased: true });
    using reader = (await b.receive())!;
    expect([reader.sealed, reader.immutable]).toEqual([true, true]);
    reader.close();
    expect(await delivery.released).toBe("released");
    a.close();
    b.close();
  });

  test("a dropped reader whose view is still read is not released until the view is dropped too", async () => {
    const [a, b] = BlobChannel.pair();
    const { blob, sha } = makeBlob(64 * 1024);
    const delivery = await a.send(blob, { cleanupWhenReleased: true });
    const holder: { view?: ReadonlyBytes } = {};
    await (async () => {
      holder.view = (await b.receive())!.view; // the reader itself is dropped here
    })();
    await delivery.mapped;
    let outcome: string | undefined;
    void delivery.released.then((o) => (outcome = o));
    for (let i = 0; i < 10; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(outcome).toBeUndefined(); // the producer has not been told to let go
    expect(blob.held).toBe(true);
    expect(sha256(holder.view!.slice())).toBe(sha); // and the bytes are still mapped
    delete holder.view;
    for (let i = 0; i < 100 && outcome === undefined; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(outcome).toBe("released");
    a.close();
    b.close();
  });

  test("an offer whose metadata exceeds this side's limit is refused alone (metadata-too-large); the channel carries on", async () => {
    const before = await settledFdCount();
    const [s1, s2] = UnixSeqpacket.pair();
    const producer = new BlobChannel(s1, { maxMetadataBytes: 4000 });
    const consumer = new BlobChannel(s2, { maxMetadataBytes: 100 });
    const receiving = consumer.receive();
    // {"x":"…"} is n + 8 bytes: 93 is one byte over the consumer's limit (a whole frame), 2000 is cut by the socket.
    for (const n of [93, 2000]) {
      const delivery = await producer.send(makeBlob(4096).blob, { metadata: { x: "y".repeat(n) }, cleanupWhenReleased: true });
      const refused = await caught(delivery.mapped);
      expect(refused).toBeInstanceOf(BlobRefusedError);
      expect(refused).toMatchObject({ problem: "metadata-too-large", message: expect.stringContaining("maxMetadataBytes") });
      expect(await delivery.released).toBe("refused");
    }
    const { blob } = makeBlob(4096);
    const delivery = await producer.send(blob, { metadata: { x: "y".repeat(92) }, cleanupWhenReleased: true });
    using reader = (await receiving)!;
    expect(reader.id).toBe(blob.id);
    expect(reader.metadata.x).toHaveLength(92);
    reader.close();
    expect(await delivery.released).toBe("released");
    expect([producer.closed, consumer.closed]).toEqual([false, false]);
    producer.close();
    consumer.close();
    expect(await settledFdCount(before)).toBe(before);
  });

  test("deliveries are made by send() only, and their state cannot be set from outside", async () => {
    const [a, b] = BlobChannel.pair();
    const delivery = await a.send(makeBlob(10).blob, { cleanupWhenReleased: true });
    expect("setState" in delivery).toBe(false);
    const Ctor = BlobDelivery as unknown as new (...args: unknown[]) => unknown;
    expect(() => new Ctor(Symbol("forged"), "00", 1, Promise.resolve(), Promise.resolve("released"), () => {})).toThrow(TypeError);
    expect(await caught(a.send(makeBlob(10).blob, { timeoutMs: 0 }))).toBeInstanceOf(QbunArgumentError);
    expect(await caught(a.send(makeBlob(10).blob, { timeout: 5 } as never))).toMatchObject({ message: expect.stringContaining("timeout") });
    (await b.receive())!.close();
    expect(await delivery.released).toBe("released");
    a.close();
    b.close();
  });

  test("an aborted receive leaves the channel usable", async () => {
    const [a, b] = BlobChannel.pair();
    const controller = new AbortController();
    const waiting = b.receive({ signal: controller.signal });
    controller.abort();
    expect(await caught(waiting)).toMatchObject({ name: "AbortError" });
    const { blob } = makeBlob(10);
    const delivery = await a.send(blob, { cleanupWhenReleased: true });
    (await b.receive())!.close();
    expect(await delivery.released).toBe("released");
    a.close();
    b.close();
  });
});

describe.each(BACKENDS)("%s blob to another process", (backend) => {
  test("a Bun child maps it, sees the same bytes and metadata, and releases it", async () => {
    const { peer, channel, listener } = await withPeer(bunChild("consume"), `bun-consumer-${backend}`);
    try {
      const { blob, sha } = makeBlob(3 << 20, backend);
      const delivery = await channel.send(blob, { metadata: { backend }, cleanupWhenReleased: true });
      const line = JSON.parse((await peer.line())!);
      expect(line).toEqual({ id: blob.id, size: 3 << 20, sealed: backend === "memfd", metadata: { backend }, sha256: sha });
      await delivery.mapped;
      expect(await delivery.released).toBe("released");
      channel.close();
      expect(await peer.line()).toBe("END");
    } finally {
      channel.close();
      listener.close();
      await peer.kill();
    }
  });

  test("a Python peer maps it read-only: writable mmap fails with EACCES, write(2) and resizing fail", async () => {
    const { peer, channel, listener } = await withPeer(pythonConsumer(), `py-consumer-${backend}`);
    try {
      const { blob, sha } = makeBlob(1 << 20, backend);
      const delivery = await channel.send(blob, { metadata: { n: 1 } });
      const r = JSON.parse((await peer.line())!);
      expect(r.id).toBe(blob.id);
      expect(r.sha256).toBe(sha);
      expect(r.metadata).toEqual({ n: 1 });
      expect(r.accessMode).toBe("read-only");
      expect(r.mapWrite).toBe("EACCES");
      expect(r.write).toBe("EBADF");
      expect(r.grow).toBe("EINVAL");
      expect(r.shrink).toBe("EINVAL");
      expect(r.announcedSealed).toBe(backend === "memfd");
      if (backend === "memfd") expect(r.seals).toBe(15); // seal|shrink|grow|write
      else expect(r.seals & 14).toBe(0); // tmpfs files report only F_SEAL_SEAL (cannot be sealed), disk files none
      expect(await delivery.released).toBe("released");
      using check = blob.openReader();
      expect(sha256(check.view.slice())).toBe(sha); // the peer changed nothing
      blob.cleanup();
    } finally {
      channel.close();
      listener.close();
      await peer.kill();
    }
  });
});

describe("giving up on a delivery", () => {
  test("timeoutMs: mapped and released reject with BlobDeliveryAbandonedError; late acknowledgements are ignored", async () => {
    const [a, raw] = UnixSeqpacket.pair();
    const channel = new BlobChannel(a);
    const { blob } = makeBlob(4096);
    const delivery = await channel.send(blob, { timeoutMs: 50, cleanupWhenReleased: true });
    using offer = (await raw.receive())!; // the consumer got it, and says nothing
    const error = await caught(delivery.released);
    expect(error).toBeInstanceOf(BlobDeliveryAbandonedError);
    expect(error).toMatchObject({ code: "ERR_QBUN_BLOB_ABANDONED", timedOut: true, id: blob.id, message: expect.stringContaining("timeoutMs") });
    expect(await caught(delivery.mapped)).toBe(error);
    expect(delivery.state).toBe("abandoned");
    expect(channel.pending).toBe(0);
    await until(() => !blob.held, "the abandoned blob to be cleaned up");
    // The consumer speaks up late: no protocol error, nothing happens.
    await raw.send(encodeFrame(FrameType.Mapped, blob.id));
    await raw.send(encodeFrame(FrameType.Released, blob.id));
    const next = makeBlob(10).blob;
    const second = await channel.send(next, { cleanupWhenReleased: true });
    using offer2 = (await raw.receive())!;
    expect(offer2.fds.length).toBe(1);
    await raw.send(encodeFrame(FrameType.Mapped, next.id));
    await raw.send(encodeFrame(FrameType.Released, next.id));
    expect(await second.released).toBe("released");
    expect(channel.closed).toBe(false);
    // Once its release came, the abandoned id is forgotten: another ack for it is a protocol error again.
    await raw.send(encodeFrame(FrameType.Released, blob.id));
    expect(await caught(channel.receive())).toBeInstanceOf(BlobProtocolError);
    raw.close();
  });

  test("abandon(): stops waiting at once (mapped stays resolved); a delivery that already ended is not affected", async () => {
    const [a, b] = BlobChannel.pair();
    const held = await a.send(makeBlob(10).blob, { cleanupWhenReleased: true });
    const reader = (await b.receive())!;
    await held.mapped;
    held.abandon();
    expect(await caught(held.released)).toMatchObject({ code: "ERR_QBUN_BLOB_ABANDONED", timedOut: false });
    expect(await held.mapped).toBeUndefined();
    reader.close(); // its RELEASED arrives late and is ignored
    const done = await a.send(makeBlob(10).blob, { timeoutMs: 60_000 });
    (await b.receive())!.close();
    expect(await done.released).toBe("released");
    done.abandon();
    expect(done.state).toBe("released");
    expect([a.closed, b.closed]).toEqual([false, false]);
    a.close();
    b.close();
  });

  test("a producer whose consumer never acknowledges exits once timeoutMs passes (and stays without it)", async () => {
    const spawn = (timeout: string) => Bun.spawn(["bun", join(PEERS, "blob_child.ts"), "abandon", timeout], { stdout: "pipe", stderr: "pipe" });
    const timed = spawn("300");
    const stuck = spawn("none");
    const watchdog = setTimeout(() => timed.kill("SIGKILL"), 20_000);
    try {
      expect(await timed.exited).toBe(0);
      expect(timed.signalCode).toBeNull(); // it exited by itself
      expect(await new Response(timed.stdout).text()).toBe("READY\nABANDONED ERR_QBUN_BLOB_ABANDONED\n");
      // Without a timeout the pending delivery keeps the producer alive.
      expect(await isPendingAfter(stuck.exited, 1500)).toBe(true);
    } finally {
      clearTimeout(watchdog);
      stuck.kill("SIGKILL");
      timed.kill("SIGKILL");
      await stuck.exited;
    }
  });
});

describe("what a consumer can do to a blob it received (a Python peer)", () => {
  const isRoot = process.getuid!() === 0;
  const NOBODY = 65534;
  // As root the peer runs as nobody via setpriv, with a Python that user may execute (a per-user pyenv shim is not).
  const systemPython = ["/usr/bin/python3", "/usr/local/bin/python3"].find((path) => existsSync(path));
  const canDropPrivileges = isRoot && systemPython !== undefined && Bun.which("setpriv") !== null;
  const source = readFileSync(join(PEERS, "blob_attack.py"), "utf8");
  const attacker = (uid: number | undefined) => (address: string) =>
    uid === undefined
      ? ["python3", "-u", "-c", source, address]
      : ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", systemPython!, "-u", "-c", source, address];

  async function attack(blob: ShmBlob, uid: number | undefined, name: string) {
    const { peer, channel, listener } = await withPeer(attacker(uid), name);
    try {
      const delivery = await channel.send(blob);
      const outcome = JSON.parse((await peer.line())!);
      expect(await delivery.released).toBe("released");
      return outcome;
    } finally {
      channel.close();
      listener.close();
      await peer.kill();
    }
  }

  // Running as the blob's owner (as root: the file is given to nobody, and the peer runs as nobody).
  test.skipIf(isRoot && !canDropPrivileges).each(BACKENDS)("%s: the owner's user can chmod and reopen it; only a sealed memfd still cannot be changed", async (backend) => {
    const { blob, sha } = makeBlob(3 * 4096, backend);
    using reader = blob.openReader(); // the producer's own view, made before the attack
    expect(reader.view.length).toBe(3 * 4096);
    if (isRoot) {
      using file = SharedMemory.fromFd(blob.fd);
      file.chown(NOBODY, NOBODY);
    }
    const r = await attack(blob, isRoot ? NOBODY : undefined, `attack-owner-${backend}`);
    expect(r.uid).toBe(isRoot ? NOBODY : process.getuid!());
    // Through the fd it was sent: read-only, whatever the backend.
    expect([r.mapWrite, r.write]).toEqual(["EACCES", "EBADF"]);
    // As the owner it may give itself write permission back and reopen the file read-write...
    expect([r.chmod, r.reopen]).toEqual(["ok", "ok"]);
    if (backend === "memfd") {
      // ...but the seals bind every fd: no writable mapping, no write, no shrink.
      expect([r.reopenMapWrite, r.reopenWrite, r.reopenShrink]).toEqual(["EPERM", "EPERM", "EPERM"]);
      expect(reader.immutable).toBe(true);
      expect(sha256(reader.view.slice())).toBe(sha);
      expect(reader.faulted).toBe(false);
    } else {
      // ...and nothing else stops it (the documented limit of unsealed backends): reader.immutable says so.
      expect([r.reopenMapWrite, r.reopenWrite, r.reopenShrink]).toEqual(["ok", "ok", "ok"]);
      expect(reader.immutable).toBe(false);
      expect(reader.view.at(0)).toBe("X".charCodeAt(0));
      // Shrunk to one page under the reader: zeros past the new end from the SIGBUS guard, and this process lives on.
      expect(reader.view.at(2 * 4096 + 5)).toBe(0);
      expect(reader.faulted).toBe(true);
    }
    blob.cleanup();
  });

  describe.skipIf(!canDropPrivileges)("as another user (nobody)", () => {
    test.each(BACKENDS)("%s: it can neither write, map writable, chmod nor reopen it", async (backend) => {
      const { blob, sha } = makeBlob(3 * 4096, backend);
      const r = await attack(blob, NOBODY, `attack-other-${backend}`);
      expect(r.uid).toBe(NOBODY);
      expect([r.mapWrite, r.write, r.chmod, r.reopen]).toEqual(["EACCES", "EBADF", "EPERM", "EACCES"]);
      expect(r.reopenWrite).toBeUndefined();
      using reader = blob.openReader();
      expect(sha256(reader.view.slice())).toBe(sha);
      blob.cleanup();
    });
  });
});

describe("crashes leak nothing", () => {
  test.each(["python", "bun"] as const)("a %s consumer killed while holding blobs: the producer learns peer-gone and frees them", async (kind) => {
    const shmBefore = blobShmNames();
    const fdsBefore = await settledFdCount();
    const countBefore = allocator.stats().count;
    const { peer, channel, listener } = await withPeer(kind === "python" ? pythonConsumer(true) : bunChild("consume", "--hold"), `held-${kind}`);
    const deliveries = [];
    for (const backend of BACKENDS) {
      deliveries.push(await channel.send(makeBlob(256 * 1024, backend).blob, { cleanupWhenReleased: true }));
      await peer.line();
    }
    await Promise.all(deliveries.map((d) => d.mapped));
    expect(allocator.stats().count).toBe(countBefore + 3);
    await peer.kill();
    expect(await Promise.all(deliveries.map((d) => d.released))).toEqual(["peer-gone", "peer-gone", "peer-gone"]);
    await Bun.sleep(0);
    expect(allocator.stats().count).toBe(countBefore);
    expect(channel.closed).toBe(true);
    listener.close();
    expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    expect(blobShmNames()).toEqual(shmBefore);
  });

  test.each(BACKENDS)("a producer (%s) killed after sending: the consumer keeps its mapping, then nothing is left", async (backend) => {
    const shmBefore = blobShmNames();
    const fdsBefore = await settledFdCount();
    const { peer, channel, listener } = await withPeer(bunChild("produce", backend, String(2 << 20)), `producer-${backend}`, { requireSealed: false });
    const reader = (await channel.receive({ signal: AbortSignal.timeout(15_000) }))!;
    const sent = JSON.parse((await peer.line())!);
    expect(reader.id).toBe(sent.id);
    expect(reader.metadata).toEqual({ from: "bun-child" });
    expect(blobShmNames()).toEqual(shmBefore); // the producer never left a name, even while alive
    await peer.kill();
    expect(await channel.receive()).toBeNull();
    expect(sha256(reader.view.slice())).toBe(sent.sha256); // still readable after the producer died
    reader.close();
    channel.close();
    listener.close();
    expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    expect(blobShmNames()).toEqual(shmBefore);
  });
});

describe("hostile peers", () => {
  /** A BlobChannel whose peer is a raw seqpacket socket the test writes frames on. */
  function rawPeer(options: BlobChannelOptions = {}): { channel: BlobChannel; raw: UnixSeqpacket } {
    const [a, raw] = UnixSeqpacket.pair();
    return { channel: new BlobChannel(a, { requireSealed: false, ...options }), raw };
  }

  const refusalOf = async (raw: UnixSeqpacket) => {
    using msg = (await raw.receive({ signal: AbortSignal.timeout(5000) }))!;
    const view = new DataView(msg.data.buffer, msg.data.byteOffset);
    return { type: msg.data[5], reason: view.getUint32(36, true) };
  };

  test("a descriptor whose size or seals do not match is refused alone; the channel carries on", async () => {
    const before = await settledFdCount();
    const { channel, raw } = rawPeer();
    using liar = SharedMemory.memfd({ size: 4096 });
    const id = "ab".repeat(16);
    await raw.send(encodeFrame(FrameType.Offer, id, { size: 8192, backend: "memfd" }), { fds: [liar.fd] });
    const sizeError = await caught(channel.receive());
    expect(sizeError).toBeInstanceOf(BlobDescriptorError);
    expect((sizeError as BlobDescriptorError).problem).toBe("size-mismatch");
    expect(await refusalOf(raw)).toEqual({ type: FrameType.Refused, reason: 1 });

    await raw.send(encodeFrame(FrameType.Offer, id, { size: 4096, sealed: true, backend: "memfd" }), { fds: [liar.fd] });
    expect(await caught(channel.receive())).toMatchObject({ code: "ERR_QBUN_BLOB_DESCRIPTOR", problem: "not-sealed" });
    expect(await refusalOf(raw)).toEqual({ type: FrameType.Refused, reason: 2 });

    const [s1, s2] = UnixSeqpacket.pair(); // not a file at all
    await raw.send(encodeFrame(FrameType.Offer, id, { size: 4096, backend: "memfd" }), { fds: [s1.fd] });
    expect(await caught(channel.receive())).toMatchObject({ problem: "not-a-file" });
    s1.close();
    s2.close();
    await refusalOf(raw);

    // An honest offer afterwards is taken.
    await raw.send(encodeFrame(FrameType.Offer, id, { size: 4096, backend: "memfd" }), { fds: [liar.fd] });
    using ok = (await channel.receive())!;
    expect(ok.size).toBe(4096);
    expect(channel.closed).toBe(false);
    ok.close();
    channel.close();
    raw.close();
    liar.close();
    expect(await settledFdCount(before)).toBe(before);
  });

  test("a producer whose blob is refused (unsealed, consumer requires seals) sees BlobRefusedError, then a sealed one goes through", async () => {
    const [a, b] = BlobChannel.pair({ requireSealed: true });
    const { blob } = makeBlob(4096, "tempfile"); // unsealed
    const delivery = await a.send(blob, { cleanupWhenReleased: true });
    expect(await caught(b.receive())).toMatchObject({ problem: "not-sealed" });
    const refused = await caught(delivery.mapped);
    expect(refused).toBeInstanceOf(BlobRefusedError);
    expect((refused as BlobRefusedError).problem).toBe("not-sealed");
    expect(await delivery.released).toBe("refused");
    const sealed = makeBlob(4096).blob;
    const ok = await a.send(sealed, { cleanupWhenReleased: true });
    (await b.receive())!.close();
    expect(await ok.released).toBe("released");
    a.close();
    b.close();
  });

  test("offers beyond the queue limit and duplicate ids are refused (busy, duplicate) with their fds closed", async () => {
    const before = await settledFdCount();
    const [a, raw] = UnixSeqpacket.pair();
    const channel = new BlobChannel(a, { maxQueuedOffers: 2, requireSealed: false });
    using mem = SharedMemory.memfd({ size: 4096 });
    const ids = ["01", "02", "03", "04"].map((b) => b.repeat(16));
    const first = channel.receive(); // starts reading
    for (const id of ids) await raw.send(encodeFrame(FrameType.Offer, id, { size: 4096, backend: "memfd" }), { fds: [mem.fd] });
    using r1 = (await first)!;
    expect(r1.id).toBe(ids[0]);
    // 1 is taken, 2 and 3 wait in the queue, 4 is turned away.
    const acks = [await refusalOf(raw), await refusalOf(raw)];
    expect(acks).toContainEqual({ type: FrameType.Refused, reason: 7 /* busy */ });
    expect(acks).toContainEqual({ type: FrameType.Mapped, reason: 0 });
    // A second offer of an id this side holds is a duplicate.
    await raw.send(encodeFrame(FrameType.Offer, ids[0]!, { size: 4096, backend: "memfd" }), { fds: [mem.fd] });
    using r2 = (await channel.receive())!;
    expect(r2.id).toBe(ids[1]);
    const more = [await refusalOf(raw), await refusalOf(raw)];
    expect(more).toContainEqual({ type: FrameType.Refused, reason: 6 /* duplicate */ });
    using r3 = (await channel.receive())!;
    expect(r3.id).toBe(ids[2]);
    expect(channel.closed).toBe(false);
    r1.close();
    r2.close();
    r3.close();
    channel.close();
    raw.close();
    mem.close();
    expect(await settledFdCount(before)).toBe(before);
  });

  test.each([
    ["bad magic", (f: Uint8Array) => f.fill(0, 0, 4), true],
    ["a short frame", (f: Uint8Array) => f.subarray(0, 20), true],
    ["a metadata length past the frame", (f: Uint8Array) => (new DataView(f.buffer).setUint32(32, 1 << 30, true), f), true],
    ["an unknown frame type", (f: Uint8Array) => ((f[5] = 9), f), true],
    ["metadata that is not JSON", (f: Uint8Array) => { const g = new Uint8Array(HEADER_SIZE + 3); g.set(f); g.set([123, 123, 0], HEADER_SIZE); new DataView(g.buffer).setUint32(32, 3, true); return g; }, true],
    ["an offer without an fd", (f: Uint8Array) => f, false],
  ] as const)("%s disconnects the peer with BlobProtocolError; other channels carry on", async (_what, mangle, withFd) => {
    const before = await settledFdCount();
    const { channel, raw } = rawPeer();
    using mem = SharedMemory.memfd({ size: 4096 });
    const frame = mangle(encodeFrame(FrameType.Offer, "cd".repeat(16), { size: 4096, backend: "memfd" }));
    await raw.send(frame, withFd ? { fds: [mem.fd] } : {});
    const error = await caught(channel.receive());
    expect(error).toBeInstanceOf(BlobProtocolError);
    expect(channel.closed).toBe(true);
    expect(await raw.receive()).toBeNull(); // disconnected
    expect(await caught(channel.receive())).toBe(error);
    // A well-behaved pair in the same process is still served.
    const [a, b] = BlobChannel.pair();
    const delivery = await a.send(makeBlob(10).blob, { cleanupWhenReleased: true });
    (await b.receive())!.close();
    expect(await delivery.released).toBe("released");
    a.close();
    b.close();
    raw.close();
    mem.close();
    expect(await settledFdCount(before)).toBe(before);
  });

  test("a peer that floods offers and never reads its acknowledgements is disconnected, not queued for without bound", async () => {
    const before = await settledFdCount();
    const { channel, raw } = rawPeer({ maxQueuedOffers: 1 });
    using mem = SharedMemory.memfd({ size: 4096 });
    const receiving = channel.receive(); // starts reading: the first offer is taken, every later one refused as busy
    let sent = 0;
    for (; sent < MAX_UNSENT_ACKS * 8 && !channel.closed; sent++) {
      const id = sent.toString(16).padStart(32, "0");
      try {
        await raw.send(encodeFrame(FrameType.Offer, id, { size: 4096, backend: "memfd" }), { fds: [mem.fd], signal: AbortSignal.timeout(10_000) });
      } catch {
        break; // disconnected under our feet
      }
    }
    await until(() => channel.closed, "the flooding peer to be disconnected");
    expect(sent).toBeGreaterThan(MAX_UNSENT_ACKS);
    (await receiving)?.close();
    expect(await caught(channel.receive())).toMatchObject({
      code: "ERR_QBUN_BLOB_PROTOCOL",
      message: expect.stringContaining("does not read its acknowledgements"),
    });
    raw.close();
    mem.close();
    expect(await settledFdCount(before)).toBe(before);
  });

  test("acknowledgements for blobs never sent, or carrying fds, disconnect the consumer; deliveries end as peer-gone", async () => {
    for (const bad of ["unknown id", "fd on ack"] as const) {
      const { channel, raw } = rawPeer();
      const { blob } = makeBlob(4096);
      const delivery = await channel.send(blob, { cleanupWhenReleased: true });
      using offer = (await raw.receive())!;
      expect(offer.fds.length).toBe(1);
      if (bad === "unknown id") await raw.send(encodeFrame(FrameType.Mapped, "ee".repeat(16)));
      else await raw.send(encodeFrame(FrameType.Mapped, blob.id), { fds: [offer.fds[0]!] });
      expect(await delivery.released).toBe("peer-gone");
      expect(await caught(delivery.mapped)).toBeInstanceOf(BlobChannelClosedError);
      expect(channel.closed).toBe(true);
      expect(await caught(channel.receive())).toBeInstanceOf(BlobProtocolError);
      raw.close();
    }
  });
});
