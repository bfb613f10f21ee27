/**
 * The lease path against misbehaving peers and failing resources: a hostile
 * owner (stub over a real seqpacket socket) sending bad regions and frames,
 * hostile WRITE bodies, listeners that throw, resource failures in the owner,
 * and the limits that keep one client from growing the owner's state.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ClosedError, QbunSystemError } from "../ffi/errors.ts";
import {
  CapabilityPolicy, LeaseClient, LeaseError, LeaseOwner, MAX_QUEUED_ACQUIRES_PER_CLIENT, MAX_WAITERS_PER_CLASS, type AuditRecord, type LeaseEvent,
} from "../src/lease/index.ts";
import { encodeLocator, HEADER_SIZE } from "../src/lease/locator.ts";
import { decodeFrame, encodeJson, encodeRaw, encodeWritten, FRAME_MAGIC, FrameType, MAX_FRAME, nameBytes } from "../src/lease/protocol.ts";
import { REGION_MAGIC } from "../src/lease/region.ts";
import { SharedMemory, type Mapping } from "../src/shm/index.ts";
import { UnixListener, UnixSeqpacket } from "../src/unix/index.ts";
import { caught, settledFdCount, uniqueName } from "./helpers/env.ts";

const PEER = join(import.meta.dir, "peers", "lease_listeners.ts");
const fill = (n: number, value: number) => new Uint8Array(n).fill(value);

/** A region file as a hostile (or foreign) owner might hand out: header words set by hand. */
function regionFile(size: number, options: { seal?: boolean; magic?: number; epoch?: number; sequence?: number } = {}): { mem: SharedMemory; map: Mapping; header: Int32Array } {
  const mem = SharedMemory.memfd({ size: HEADER_SIZE + size, name: "hostile-region" });
  const map = mem.map({ access: "read-write" });
  const header = new Int32Array(map.bytes.buffer, map.bytes.byteOffset, HEADER_SIZE / 4);
  header[0] = options.magic ?? REGION_MAGIC;
  header[1] = 1;
  header[2] = options.sequence ?? 0;
  header[4] = options.epoch ?? 1;
  header[5] = size;
  if (options.seal !== false) mem.addSeals(["future-write", "grow", "shrink"]);
  return { mem, map, header };
}

function locatorFrame(size: number, options: { sealed?: boolean; fileSize?: number } = {}): Uint8Array {
  return encodeRaw(FrameType.LOCATOR, 0, encodeLocator({
    endpoint: "s", epoch: 1, size, fileSize: options.fileSize ?? HEADER_SIZE + size, sequenced: true, sealed: options.sealed ?? true,
    segments: [{ offset: 0, length: size, fileOffset: HEADER_SIZE }],
  }));
}

/** A stub owner on a real socket: answers the client's SUBSCRIBE with whatever `answer` sends. */
async function hostileOwner(answer: (socket: UnixSeqpacket, requestId: number) => Promise<void>) {
  const address = `\0${uniqueName("lease-evil")}`;
  const listener = UnixListener.listen(address, { type: "seqpacket" });
  const client = await LeaseClient.connect(address);
  const socket = await listener.accept();
  const subscribed = client.subscribe("s");
  const request = await socket.receive();
  await answer(socket, decodeFrame(request!.data).requestId);
  return {
    client, socket, subscribed,
    [Symbol.dispose]() {
      client.close();
      socket.close();
      listener.close();
    },
  };
}

const reply = (requestId: number) => encodeJson(FrameType.REPLY, requestId, { epoch: 1 });

describe("a hostile owner", () => {
  const cases: Array<[string, (socket: UnixSeqpacket, id: number) => Promise<void>, RegExp]> = [
    ["claims a sealed region but sends an unsealed memfd", async (socket, id) => {
      const { mem, map } = regionFile(100, { seal: false });
      await socket.send(locatorFrame(100), { fds: [mem.fd] });
      await socket.send(reply(id));
      map.close();
      mem.close();
    }, /lacks the shrink, grow, future-write seal/],
    ["sends an fd smaller than the locator's file size", async (socket, id) => {
      const { mem, map } = regionFile(10);
      await socket.send(locatorFrame(100, { fileSize: HEADER_SIZE + 100 }), { fds: [mem.fd] });
      await socket.send(reply(id));
      map.close();
      mem.close();
    }, /the region file has 74 bytes, the locator claims 164/],
    ["sends a file whose header has the wrong magic", async (socket, id) => {
      const { mem, map } = regionFile(100, { magic: 0x1234 });
      await socket.send(locatorFrame(100), { fds: [mem.fd] });
      await socket.send(reply(id));
      map.close();
      mem.close();
    }, /no valid header/],
    ["sends a file whose header epoch differs from the locator's", async (socket, id) => {
      const { mem, map } = regionFile(100, { epoch: 7 });
      await socket.send(locatorFrame(100), { fds: [mem.fd] });
      await socket.send(reply(id));
      map.close();
      mem.close();
    }, /header \(epoch 7, 100 bytes\) does not match the locator \(epoch 1/],
    ["sends extra fds with a locator", async (socket, id) => {
      const { mem, map } = regionFile(100);
      await socket.send(locatorFrame(100), { fds: [mem.fd, mem.fd] });
      await socket.send(reply(id));
      map.close();
      mem.close();
    }, /came with 2 fds, expected 1/],
    ["sends an fd with a reply", async (socket, id) => {
      using mem = SharedMemory.memfd({ size: 10 });
      await socket.send(reply(id), { fds: [mem.fd] });
    }, /came with 1 fds, expected 0/],
    ["answers the subscribe without a locator", async (socket, id) => {
      await socket.send(reply(id));
    }, /without a locator/],
    ["sends a frame larger than any the protocol allows", async (socket) => {
      const big = new Uint8Array(MAX_FRAME + 100);
      new DataView(big.buffer).setUint32(0, FRAME_MAGIC, true);
      await socket.send(big);
    }, /over \d+ bytes/],
  ];
  beforeAll(async () => {
    // Let the process create what it keeps for its lifetime (the reactor, the native helper) before fds are counted.
    using stub = await hostileOwner(async (socket, id) => void (await socket.send(reply(id))));
    await caught(stub.subscribed);
  });

  for (const [what, answer, message] of cases) {
    test(`${what}: the client refuses it with a protocol error, closes, and keeps no fd`, async () => {
      const before = await settledFdCount();
      {
        using stub = await hostileOwner(answer);
        const error = await caught(stub.subscribed);
        expect(error).toBeInstanceOf(LeaseError);
        expect(error).toMatchObject({ code: "ERR_QBUN_LEASE_PROTOCOL", message: expect.stringMatching(message) });
        expect(stub.client.closed).toBe(true);
      }
      expect(await settledFdCount(before)).toBe(before);
    });
  }

  test("an unsealed region (not claimed sealed) is mapped with the SIGBUS guard: shrinking it under the reader is a protocol error, not a crash", async () => {
    const SIZE = 3 * 4096;
    const { mem, map } = regionFile(SIZE, { seal: false });
    map.bytes.fill(5, HEADER_SIZE);
    using stub = await hostileOwner(async (socket, id) => {
      await socket.send(locatorFrame(SIZE, { sealed: false }), { fds: [mem.fd] });
      await socket.send(reply(id));
    });
    using sub = await stub.subscribed;
    expect(sub.readConsistent(0, 4).bytes).toEqual(fill(4, 5));
    map.close();
    mem.resize(0); // pages the reader maps are gone: unguarded, the next read would kill this process with SIGBUS
    expect(() => sub.readConsistent()).toThrow(expect.objectContaining({ code: "ERR_QBUN_LEASE_PROTOCOL", message: expect.stringContaining("shrank") }));
    mem.close();
  });

  test("a write that never finishes: the sync read gives up at once with CONTENDED (pointing to read()); read() waits for the next notification", async () => {
    const { mem, map, header } = regionFile(64, { sequence: 1 }); // odd: a write "in progress"
    using stub = await hostileOwner(async (socket, id) => {
      await socket.send(locatorFrame(64), { fds: [mem.fd] });
      await socket.send(reply(id));
    });
    using sub = await stub.subscribed;
    expect(() => sub.readConsistent()).toThrow(expect.objectContaining({ code: "ERR_QBUN_LEASE_CONTENDED", message: expect.stringContaining("read()") }));
    const reading = sub.read(0, 4);
    let settled = false;
    void reading.finally(() => (settled = true));
    await Bun.sleep(20); // it waits on the socket, not on a spin
    expect(settled).toBe(false);
    map.bytes.fill(9, HEADER_SIZE, HEADER_SIZE + 64);
    Atomics.store(header, 2, 2);
    await stub.socket.send(encodeWritten(nameBytes("s"), 1, 2, 0, 64));
    expect(await reading).toEqual({ bytes: fill(4, 9), sequence: 2, epoch: 1 });
    map.close();
    mem.close();
  });
});

/** A raw WRITE frame, built by hand so that every field can be wrong. */
function rawWrite(requestId: number, f: { offset: number; token: number; epoch?: number; nameLength?: number; name?: Uint8Array; data?: Uint8Array }): Uint8Array {
  const name = f.name ?? nameBytes("state");
  const data = f.data ?? new Uint8Array(4);
  const body = new Uint8Array(22 + name.length + data.length);
  const dv = new DataView(body.buffer);
  dv.setFloat64(0, f.offset, true);
  dv.setFloat64(8, f.token, true);
  dv.setUint32(16, f.epoch ?? 0, true);
  dv.setUint16(20, f.nameLength ?? name.length, true);
  body.set(name, 22);
  body.set(data, 22 + name.length);
  return encodeRaw(FrameType.WRITE, requestId, body);
}

async function answerOf(raw: UnixSeqpacket): Promise<{ type: number; text: string }> {
  const message = await raw.receive();
  const frame = decodeFrame(message!.data);
  return { type: frame.type, text: new TextDecoder().decode(frame.body) };
}

describe("hostile WRITE bodies", () => {
  test("NaN, negative or unsafe offsets and tokens, a name running past the end, a non-UTF-8 name: refused as protocol errors, the peer disconnected, the region untouched", async () => {
    const address = `\0${uniqueName("lease-write")}`;
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    owner.createRegion("state", { size: 64 });
    owner.listen(address);
    await using reader = await LeaseClient.connect(address);
    using sub = await reader.subscribe("state");
    const bad: Array<[string, Parameters<typeof rawWrite>[1]]> = [
      ["NaN offset", { offset: NaN, token: 1 }],
      ["negative offset", { offset: -4, token: 1 }],
      ["offset past 2^53", { offset: 2 ** 60, token: 1 }],
      ["NaN token", { offset: 0, token: NaN }],
      ["token past 2^53", { offset: 0, token: 2 ** 60 }],
      ["name length past the end", { offset: 0, token: 1, nameLength: 60_000, data: new Uint8Array(0) }],
      ["non-UTF-8 name", { offset: 0, token: 1, name: Uint8Array.of(0xff, 0xfe, 0x41) }],
    ];
    for (const [what, fields] of bad) {
      await using raw = await UnixSeqpacket.connect(address);
      await raw.send(encodeJson(FrameType.ACQUIRE, 1, { leaseClass: "memory-write", ttlMs: 60_000, wait: false }));
      const grant = await answerOf(raw);
      expect(grant.type).toBe(FrameType.REPLY);
      const token = JSON.parse(grant.text).token;
      await raw.send(rawWrite(2, { ...fields, token: Number.isNaN(fields.token) || fields.token > 2 ** 53 ? fields.token : token }));
      let answer = await answerOf(raw);
      while (answer.type === FrameType.LEASE_EVENT) answer = await answerOf(raw);
      expect([what, answer.type, answer.text]).toEqual([what, FrameType.ERROR, expect.stringContaining("ERR_QBUN_LEASE_PROTOCOL")]);
      let end = await raw.receive();
      while (end !== null && decodeFrame(end.data).type === FrameType.LEASE_EVENT) end = await raw.receive();
      expect(end).toBeNull();
    }
    expect(sub.readConsistent().bytes).toEqual(fill(64, 0));
  });

  test("offset + length overflowing past 2^53 is out of bounds (not wrapped), and the connection carries on", async () => {
    const address = `\0${uniqueName("lease-write")}`;
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    owner.createRegion("state", { size: 64 });
    owner.listen(address);
    await using raw = await UnixSeqpacket.connect(address);
    await raw.send(encodeJson(FrameType.ACQUIRE, 1, { leaseClass: "memory-write", ttlMs: 60_000, wait: false }));
    const token = JSON.parse((await answerOf(raw)).text).token;
    await answerOf(raw); // our own "granted" announcement
    await raw.send(rawWrite(2, { offset: Number.MAX_SAFE_INTEGER - 1, token, data: new Uint8Array(8) }));
    expect((await answerOf(raw)).text).toContain("ERR_QBUN_LEASE_OUT_OF_BOUNDS");
    await raw.send(rawWrite(3, { offset: 60, token, data: fill(4, 1) }));
    expect((await answerOf(raw)).type).toBe(FrameType.ACK);
  });
});

describe("the owner's own failures and limits", () => {
  test("out of fds while answering a subscribe: ERR_QBUN_LEASE_UNAVAILABLE, the client stays connected and can retry", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    owner.createRegion("state", { size: 8 });
    using client = owner.connect();
    const original = SharedMemory.prototype.readOnlyFd;
    SharedMemory.prototype.readOnlyFd = () => { throw new QbunSystemError(24, "open"); };
    let error: unknown;
    try {
      error = await caught(client.subscribe("state"));
    } finally {
      SharedMemory.prototype.readOnlyFd = original;
    }
    expect(error).toMatchObject({ code: "ERR_QBUN_LEASE_UNAVAILABLE", message: expect.stringContaining("retry") });
    expect(client.closed).toBe(false);
    using sub = await client.subscribe("state");
    expect(sub.epoch).toBe(1);
  });

  test("a failed accept (EMFILE) is audited and retried; the owner keeps serving, with no unhandled rejection", async () => {
    const audit: AuditRecord[] = [];
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit: (r) => audit.push(r) });
    owner.createRegion("state", { size: 8 });
    const original = UnixListener.prototype.accept;
    let failures = 0;
    UnixListener.prototype.accept = function (this: UnixListener<"seqpacket">, ...args: Parameters<typeof original>) {
      if (failures++ === 0) return Promise.reject(new QbunSystemError(24, "accept"));
      return original.apply(this, args);
    } as typeof original;
    const address = `\0${uniqueName("lease-emfile")}`;
    try {
      owner.listen(address);
    } finally {
      queueMicrotask(() => (UnixListener.prototype.accept = original));
    }
    await using client = await LeaseClient.connect(address);
    using sub = await client.subscribe("state");
    expect(sub.epoch).toBe(1);
    expect(audit.find((a) => a.action === "accept")).toMatchObject({ result: "refused", detail: { error: expect.stringContaining("EMFILE") } });
    UnixListener.prototype.accept = original;
  });

  test("maxTtlMs must be an integer from 1 to one day", () => {
    for (const bad of [0, -1, 1.5, NaN, 86_400_001]) {
      expect(() => new LeaseOwner({ maxTtlMs: bad })).toThrow(expect.objectContaining({ message: expect.stringContaining("maxTtlMs") }));
    }
  });

  test("acquiring a lease you hold is refused at once (instead of waiting on yourself)", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    using client = owner.connect();
    const lease = await client.acquire("power", { ttlMs: 60_000 });
    expect(await caught(client.acquire("power", { ttlMs: 60_000 }))).toMatchObject({ code: "ERR_QBUN_LEASE_BUSY", message: expect.stringContaining(`you already hold the power lease (token ${lease.token})`) });
    await lease.renew();
    expect(lease.lost).toBeUndefined();
  });

  test("queued acquires are bounded per client; refused ones are BUSY and the queue still works", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    using holder = owner.connect();
    using greedy = owner.connect();
    const lease = await holder.acquire("input", { ttlMs: 60_000 });
    const classes = Array.from({ length: MAX_QUEUED_ACQUIRES_PER_CLIENT }, (_, i) => (i === 0 ? "input" : `c${i}`));
    for (const c of [...classes.slice(1), "one-too-many"]) await holder.acquire(c, { ttlMs: 60_000 });
    const queued = classes.map((c) => greedy.acquire(c, { ttlMs: 60_000 }));
    expect(await caught(greedy.acquire("one-too-many", { ttlMs: 60_000 }))).toMatchObject({ code: "ERR_QBUN_LEASE_BUSY", message: expect.stringContaining(`${MAX_QUEUED_ACQUIRES_PER_CLIENT} acquires waiting`) });
    await lease.release();
    expect((await queued[0])!.leaseClass).toBe("input");
    holder.close(); // the rest are granted as the holder goes
    expect((await Promise.all(queued)).map((l) => l.leaseClass)).toEqual(classes);
  });

  test("queued acquires are bounded per lease class", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    using holder = owner.connect();
    await holder.acquire("x", { ttlMs: 60_000 });
    const waiting: Promise<unknown>[] = [];
    const clients = Array.from({ length: MAX_WAITERS_PER_CLASS / MAX_QUEUED_ACQUIRES_PER_CLIENT }, () => owner.connect());
    for (const c of clients) for (let i = 0; i < MAX_QUEUED_ACQUIRES_PER_CLIENT; i++) waiting.push(caught(c.acquire("x", { ttlMs: 60_000 })));
    using late = owner.connect();
    expect(await caught(late.acquire("x", { ttlMs: 60_000 }))).toMatchObject({ code: "ERR_QBUN_LEASE_BUSY", message: expect.stringContaining(`${MAX_WAITERS_PER_CLASS} acquires of x are already waiting`) });
    for (const c of clients) c.close();
    await Promise.all(waiting);
  });

  test("lease events go only to clients the policy allows that lease class", async () => {
    const outsider = { pid: 1, uid: process.getuid!() + 1, gid: process.getgid!() + 1 };
    const policy = new CapabilityPolicy((peer, capability, resource) => peer.uid !== outsider.uid || (capability === "lease" && resource === "input"));
    await using owner = new LeaseOwner({ policy });
    using insider = owner.connect();
    using other = owner.connect({ identity: outsider });
    const heard: LeaseEvent[] = [];
    other.onLeaseEvent((e) => heard.push(e));
    const power = await insider.acquire("power", { ttlMs: 60_000 });
    await power.release();
    const input = await insider.acquire("input", { ttlMs: 60_000 });
    await input.release();
    await other.acquire("input", { ttlMs: 60_000 }); // a round trip: everything sent before has arrived
    expect(heard.map((e) => `${e.leaseClass} ${e.event}`)).toEqual(["input granted", "input released", "input granted"]);
  });

  test("a write meant for an earlier epoch is refused as stale", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    owner.createRegion("state", { size: 8 });
    using client = owner.connect();
    using sub = await client.subscribe("state");
    const lease = await client.acquire("memory-write", { ttlMs: 60_000 });
    expect(await client.write("state", 0, fill(1, 1), lease.token, { epoch: 1 })).toMatchObject({ epoch: 1 });
    const epochSeen = sub.epoch;
    const next = sub.nextEpoch();
    owner.replaceRegion("state", {});
    await next;
    expect(await caught(client.write("state", 0, fill(1, 2), lease.token, { epoch: epochSeen }))).toMatchObject({ code: "ERR_QBUN_LEASE_STALE_EPOCH" });
    expect(await client.write("state", 0, fill(1, 3), lease.token, { epoch: 2 })).toMatchObject({ epoch: 2 });
    expect(await client.write("state", 0, fill(1, 4), lease.token)).toMatchObject({ epoch: 2 }); // no epoch: any
    expect((await sub.read(0, 1)).bytes[0]).toBe(4);
  });
});

describe("the client", () => {
  test("an aborted subscribe does not leave the owner sending locators and notices to this client", async () => {
    const audit: AuditRecord[] = [];
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit: (r) => audit.push(r) });
    owner.createRegion("state", { size: 8 });
    using client = owner.connect();
    const controller = new AbortController();
    const pending = client.subscribe("state", { signal: controller.signal });
    controller.abort(new Error("not any more"));
    expect(await caught(pending)).toMatchObject({ message: "not any more" });
    using writer = owner.connect();
    const lease = await writer.acquire("memory-write", { ttlMs: 60_000 });
    await writer.write("state", 0, fill(1, 1), lease.token); // a round trip after the client's unsubscribe went out
    await client.acquire("other", { ttlMs: 1000 }); // and one for the client itself
    expect(audit.filter((a) => a.resource === "state" && a.peer?.session === 1).map((a) => `${a.action} ${a.result}`)).toEqual(["subscribe granted", "unsubscribe ok"]);
    using sub = await client.subscribe("state"); // and it can subscribe again
    expect(sub.epoch).toBe(1);
  });

  test("a second subscribe while the first is pending shares it; a different notifyWrites is refused", async () => {
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
    owner.createRegion("state", { size: 8 });
    using client = owner.connect();
    const first = client.subscribe("state");
    const second = client.subscribe("state");
    expect(await caught(client.subscribe("state", { notifyWrites: false }))).toMatchObject({ name: "QbunArgumentError" });
    const [a, b] = await Promise.all([first, second]);
    expect(a).toBe(b);
    expect(a.view).toBeDefined();
    expect(await caught(client.subscribe("state", { notifyWrites: false }))).toMatchObject({ message: expect.stringContaining("notifyWrites true") });
    a.close();
    using quiet = await client.subscribe("state", { notifyWrites: false });
    expect(quiet.notifyWrites).toBe(false);
  });

  test("internal constructors cannot be called by users", () => {
    const Ctor = LeaseClient as unknown as new (...args: unknown[]) => unknown;
    expect(() => new Ctor(Symbol("qbun.lease.construct"), {})).toThrow(expect.objectContaining({ name: "QbunArgumentError" }));
  });

  test("a listener that throws does not disconnect the client: the error is reported, other listeners still run", async () => {
    const proc = Bun.spawn([process.execPath, PEER, "throwing"], { stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(proc.exitCode, err).toBe(0);
    const result = JSON.parse(out.trim());
    expect(result).toEqual({
      uncaught: [
        "Error: from onEpoch", "Error: from onInvalidate", "Error: from onLeaseEvent", "Error: from onLeaseEvent",
        "Error: from onLeaseEvent", "Error: from onLost", "Error: from onWrite", "Error: from onWrite",
      ],
      heard: ["lease granted", "write", "epoch 2", "lease released", "lease granted", "write"],
      closed: false,
      value: 2,
    });
  });

  test("a held lease does not keep the owner's process alive (its expiry timer is unref'd)", async () => {
    const proc = Bun.spawn([process.execPath, PEER, "idle"], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill(), 20_000); // the lease lasts 60 s: a ref'd timer would hold it that long
    await proc.exited;
    clearTimeout(timer);
    expect(proc.signalCode).toBeNull();
    expect(proc.exitCode).toBe(0);
  });
});

test("ClosedError is what a closed listener throws (the accept loop relies on it)", async () => {
  const listener = UnixListener.listen(`\0${uniqueName("lease-closed")}`, { type: "seqpacket" });
  const accepting = listener.accept();
  listener.close();
  expect(await caught(accepting)).toBeInstanceOf(ClosedError);
});
