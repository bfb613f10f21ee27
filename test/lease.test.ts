import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import {
  AuditLog, CapabilityPolicy, LeaseClient, LeaseError, LeaseOwner, type AuditRecord,
  type LeaseEvent, type LeaseOwnerOptions, type Locator,
} from "../src/lease/index.ts";
import { decodeLocator, encodeLocator, HEADER_SIZE } from "../src/lease/locator.ts";
import { encodeJson, FrameType } from "../src/lease/protocol.ts";
import { QbunArgumentError, SharedMemory } from "../src/shm/index.ts";
import { UnixSeqpacket } from "../src/unix/index.ts";
import { caught, settledFdCount, shmListing, tempDir, uniqueName } from "./helpers/env.ts";

const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

/** An owner plus a way to make clients over one transport; everything is closed by dispose. */
interface Rig extends AsyncDisposable {
  owner: LeaseOwner;
  audit: AuditRecord[];
  client(): Promise<LeaseClient>;
}

type Transport = "in-process" | "unix socket";

async function rig(transport: Transport, options: Omit<LeaseOwnerOptions, "audit"> = {}): Promise<Rig> {
  const audit: AuditRecord[] = [];
  const owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), ...options, audit: (r) => audit.push(r) });
  const address = `\0${uniqueName("lease")}`;
  if (transport === "unix socket") owner.listen(address);
  const clients: LeaseClient[] = [];
  return {
    owner,
    audit,
    async client() {
      const c = transport === "in-process" ? owner.connect() : await LeaseClient.connect(address);
      clients.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      for (const c of clients) c.close();
      owner.close();
    },
  };
}

function events(client: LeaseClient): LeaseEvent[] {
  const seen: LeaseEvent[] = [];
  client.onLeaseEvent((e) => seen.push(e));
  return seen;
}

/** Resolves once `predicate` holds, checked after each lease event (event-driven; the watchdog is the test timeout). */
function whenEvent(client: LeaseClient, predicate: (e: LeaseEvent) => boolean): Promise<LeaseEvent> {
  return new Promise((resolve) => {
    const off = client.onLeaseEvent((e) => {
      if (predicate(e)) {
        off();
        resolve(e);
      }
    });
  });
}

const fill = (n: number, value: number) => new Uint8Array(n).fill(value);

describe("locator", () => {
  const base: Locator = {
    endpoint: "state", epoch: 3, size: 100, fileSize: HEADER_SIZE + 100, sequenced: true, sealed: true,
    segments: [{ offset: 0, length: 40, fileOffset: HEADER_SIZE }, { offset: 40, length: 60, fileOffset: HEADER_SIZE + 40 }],
  };

  test("round-trips with its segment table", () => {
    expect(decodeLocator(encodeLocator(base))).toEqual(base);
  });

  test("an empty segment table means one segment after the header", () => {
    const bytes = encodeLocator({ ...base, segments: [{ offset: 0, length: 100, fileOffset: HEADER_SIZE }] });
    const dv = new DataView(bytes.buffer);
    dv.setUint32(12, 0, true);
    expect(decodeLocator(bytes.subarray(0, bytes.length - 24)).segments).toEqual([{ offset: 0, length: 100, fileOffset: HEADER_SIZE }]);
  });

  test("refuses malformed input with a protocol error", () => {
    const good = encodeLocator(base);
    const cases: Array<[string, (b: Uint8Array, dv: DataView) => Uint8Array]> = [
      ["short", (b) => b.subarray(0, 20)],
      ["magic", (b, dv) => (dv.setUint32(0, 1, true), b)],
      ["version", (b, dv) => (dv.setUint16(4, 9, true), b)],
      ["unknown flag", (b, dv) => (dv.setUint16(6, 0x80, true), b)],
      ["segment count vs length", (b, dv) => (dv.setUint32(12, 3, true), b)],
      ["huge segment count", (b, dv) => (dv.setUint32(12, 0xffffffff, true), b)],
      ["size not an integer", (b, dv) => (dv.setFloat64(16, 1.5, true), b)],
      ["segment past the file", (b, dv) => (dv.setFloat64(24, HEADER_SIZE + 50, true), b)],
      ["name past the end", (b, dv) => (dv.setUint16(32, 500, true), b)],
      ["segment gap", (b, dv) => (dv.setFloat64(36 + 5 + 24, 41, true), b)],
      ["segment in the header", (b, dv) => (dv.setFloat64(36 + 5 + 16, 0, true), b)],
      ["negative length", (b, dv) => (dv.setFloat64(36 + 5 + 8, -40, true), b)],
    ];
    for (const [what, mutate] of cases) {
      const copy = good.slice();
      const error = (() => {
        try {
          decodeLocator(mutate(copy, new DataView(copy.buffer)));
        } catch (e) {
          return e;
        }
        return new Error(`accepted: ${what}`);
      })();
      expect(error, what).toBeInstanceOf(LeaseError);
      expect((error as LeaseError).code, what).toBe("ERR_QBUN_LEASE_PROTOCOL");
    }
  });
});

describe("capability policy", () => {
  test("rules match kernel-style credentials; a bad config names the field", () => {
    const policy = CapabilityPolicy.fromConfig({
      rules: [
        { match: { uid: 1000 }, subscribe: "*", lease: ["memory-write"], write: ["state"] },
        { subscribe: ["public"] },
      ],
    });
    const owner = { pid: 10, uid: 1000, gid: 1000 };
    const stranger = { pid: 11, uid: 1001, gid: 1001 };
    expect(policy.allows(owner, "write", "state")).toBe(true);
    expect(policy.allows(owner, "lease", "power")).toBe(false);
    expect(policy.allows(stranger, "subscribe", "public")).toBe(true);
    expect(policy.allows(stranger, "subscribe", "state")).toBe(false);
    expect(policy.allows(stranger, "lease", "memory-write")).toBe(false);
    expect(() => CapabilityPolicy.fromConfig({ rules: [{ match: { uid: -1 } }] })).toThrow(QbunArgumentError);
    expect(() => CapabilityPolicy.fromConfig({ rules: [{ wrte: "*" }] })).toThrow(/rules/);
    expect(new CapabilityPolicy(() => { throw new Error("bug"); }).allows(owner, "write", "state")).toBe(false);
  });
});

describe.each(["in-process", "unix socket"] as const)("over %s", (transport) => {
  test("a reader gets a locator and a read-only fd: mapping it writable fails with EACCES, the JS view rejects writes", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 1000, initial: fill(1000, 7) });
    const reader = await r.client();
    using sub = await reader.subscribe("state");
    expect(sub.locator).toMatchObject({ endpoint: "state", epoch: 1, size: 1000, sequenced: true, sealed: true });
    expect(sub.readConsistent(0, 4).bytes).toEqual(fill(4, 7));
    const view = sub.view!;
    using mem = SharedMemory.fromFd(view.fd);
    expect(mem.readOnly).toBe(true);
    expect(() => mem.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EACCES", syscall: "mmap" }));
    // Reopening the memfd writable through /proc does not help either: it is sealed against new writable maps.
    using reopened = SharedMemory.openFile({ path: `/proc/self/fd/${view.fd}` });
    expect(() => reopened.map({ access: "read-write" })).toThrow(expect.objectContaining({ code: "EPERM" }));
    expect(() => reopened.resize(10)).toThrow(expect.objectContaining({ code: "EPERM" }));
    expect(() => view.mapping.bytes).toThrow(QbunArgumentError);
    expect("set" in view.mapping.view).toBe(false);
  });

  test("writes without the lease, with a stale token, or out of bounds are refused and audited; the holder's write is acknowledged", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 64 });
    const writer = await r.client();
    const reader = await r.client();
    using sub = await reader.subscribe("state");
    expect(await caught(writer.write("state", 0, fill(4, 1), 1))).toMatchObject({ code: "ERR_QBUN_LEASE_NOT_HELD" });
    const first = await writer.acquire("memory-write", { ttlMs: 10_000 });
    await first.release();
    const lease = await writer.acquire("memory-write", { ttlMs: 10_000 });
    expect(lease.token).toBeGreaterThan(first.token);
    expect(await caught(writer.write("state", 0, fill(4, 1), first.token))).toMatchObject({ code: "ERR_QBUN_LEASE_STALE_TOKEN" });
    expect(await caught(writer.write("state", 61, fill(4, 1), lease.token))).toMatchObject({ code: "ERR_QBUN_LEASE_OUT_OF_BOUNDS" });
    expect(await caught(writer.write("nope", 0, fill(4, 1), lease.token))).toMatchObject({ code: "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT" });
    expect(await caught(writer.write("state", 0, fill(70_000, 1), lease.token))).toBeInstanceOf(QbunArgumentError);
    expect(sub.readConsistent().bytes).toEqual(fill(64, 0)); // nothing refused reached the region
    const ack = await writer.write("state", 60, fill(4, 9), lease.token);
    expect(ack).toEqual({ epoch: 1, sequence: 2 });
    const seen = await sub.nextWrite({ after: 0 });
    expect(seen).toMatchObject({ endpoint: "state", epoch: 1, sequence: 2, offset: 60, length: 4 });
    expect(sub.readConsistent(56, 8)).toEqual({ bytes: Uint8Array.of(0, 0, 0, 0, 9, 9, 9, 9), sequence: 2, epoch: 1 });
    const writes = r.audit.filter((a) => a.action === "write").map((a) => [a.result, a.detail?.code]);
    expect(writes).toEqual([
      ["refused", "ERR_QBUN_LEASE_NOT_HELD"],
      ["refused", "ERR_QBUN_LEASE_STALE_TOKEN"],
      ["refused", "ERR_QBUN_LEASE_OUT_OF_BOUNDS"],
      ["refused", "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT"],
      ["ok", undefined],
    ]);
    expect(r.audit.find((a) => a.action === "write" && a.result === "ok")!.peer).toMatchObject({ pid: me.pid, uid: me.uid, gid: me.gid });
  });

  test("two writers contend: only the holder writes; the waiter gets a larger token when the holder releases", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 16 });
    const a = await r.client();
    const b = await r.client();
    const reader = await r.client();
    const announced = events(reader);
    using sub = await reader.subscribe("state");
    const leaseA = await a.acquire("memory-write", { ttlMs: 10_000 });
    expect(await caught(b.acquire("memory-write", { ttlMs: 10_000, wait: false }))).toMatchObject({ code: "ERR_QBUN_LEASE_BUSY" });
    const waitingB = b.acquire("memory-write", { ttlMs: 10_000 });
    // B guesses tokens: refused, whatever it guesses.
    for (const guess of [leaseA.token, leaseA.token + 1]) {
      expect(await caught(b.write("state", 0, fill(16, 2), guess))).toMatchObject({ code: "ERR_QBUN_LEASE_NOT_HELD" });
    }
    await a.write("state", 0, fill(16, 1), leaseA.token);
    const grantToB = whenEvent(reader, (e) => e.event === "granted" && e.token > leaseA.token);
    await leaseA.release();
    const leaseB = await waitingB;
    expect(leaseB.token).toBeGreaterThan(leaseA.token);
    expect(await caught(a.write("state", 0, fill(16, 3), leaseA.token))).toMatchObject({ code: "ERR_QBUN_LEASE_NOT_HELD" });
    await b.write("state", 0, fill(16, 2), leaseB.token);
    expect((await sub.read()).bytes).toEqual(fill(16, 2));
    expect((await grantToB).token).toBe(leaseB.token);
    expect(announced.map((e) => [e.event, e.token])).toEqual([
      ["granted", leaseA.token],
      ["released", leaseA.token],
      ["granted", leaseB.token],
    ]);
  });

  test("a lease expires while its holder stalls: announced, the holder's token is dead, the waiter is granted", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 16 });
    const holder = await r.client();
    const waiter = await r.client();
    const expired = whenEvent(waiter, (e) => e.event === "expired");
    const lease = await holder.acquire("memory-write", { ttlMs: 150 });
    const lost = new Promise((resolve) => lease.onLost(resolve));
    const next = await waiter.acquire("memory-write", { ttlMs: 10_000 }); // waits for the expiry
    expect((await expired).token).toBe(lease.token);
    expect(await lost).toBe("expired");
    expect(next.token).toBeGreaterThan(lease.token);
    expect(await caught(holder.write("state", 0, fill(1, 1), lease.token))).toMatchObject({ code: "ERR_QBUN_LEASE_NOT_HELD" });
    expect(await caught(lease.renew())).toMatchObject({ code: "ERR_QBUN_LEASE_NOT_HELD" });
    expect(r.audit.some((a) => a.action === "lease.expire" && a.detail?.token === lease.token)).toBe(true);
  });

  test("renewing keeps the lease; a holder that disconnects loses its leases at once", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 16 });
    const holder = await r.client();
    const other = await r.client();
    const lease = await holder.acquire("memory-write", { ttlMs: 10_000 });
    await lease.renew(20_000);
    expect(lease.ttlMs).toBe(20_000);
    const power = await holder.acquire("power", { ttlMs: 10_000 });
    const gotWrite = other.acquire("memory-write", { ttlMs: 10_000 });
    const gotPower = other.acquire("power", { ttlMs: 10_000 });
    holder.close();
    const [w, p] = await Promise.all([gotWrite, gotPower]);
    expect(w.token).toBeGreaterThan(power.token);
    expect(p.token).toBeGreaterThan(power.token);
    const revoked = r.audit.filter((a) => a.action === "lease.revoke").map((a) => a.resource).sort();
    expect(revoked).toEqual(["memory-write", "power"]);
  });

  test("a waiting acquire can be aborted or time out; the lease then goes to the next waiter", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 16 });
    const holder = await r.client();
    const impatient = await r.client();
    const patient = await r.client();
    const lease = await holder.acquire("input", { ttlMs: 10_000 });
    const controller = new AbortController();
    const aborted = impatient.acquire("input", { ttlMs: 10_000, signal: controller.signal });
    const timedOut = impatient.acquire("input", { ttlMs: 10_000, timeoutMs: 50 });
    const third = patient.acquire("input", { ttlMs: 10_000 });
    controller.abort(new Error("changed my mind"));
    expect(await caught(aborted)).toMatchObject({ message: "changed my mind" });
    expect(await caught(timedOut)).toMatchObject({ name: "TimeoutError" });
    await lease.release();
    const granted = await third;
    expect(granted.token).toBe(lease.token + 1);
    expect(r.audit.filter((a) => a.action === "lease.acquire" && a.result === "cancelled")).toHaveLength(2);
  });

  test("epoch change: readers are told the old epoch is invalid, then get the new locator; late subscribers get it at once", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 32, initial: fill(32, 5) });
    const reader = await r.client();
    using sub = await reader.subscribe("state");
    const oldView = sub.view!;
    const order: string[] = [];
    sub.onInvalidate((epoch) => order.push(`invalid ${epoch}`));
    sub.onEpoch((epoch) => order.push(`epoch ${epoch}`));
    const pending = sub.nextEpoch();
    expect(r.owner.replaceRegion("state", { size: 64 })).toBe(2);
    await pending;
    expect(order).toEqual(["invalid 1", "epoch 2"]);
    expect(oldView.closed).toBe(true);
    expect(sub.locator).toMatchObject({ epoch: 2, size: 64 });
    const { bytes, epoch } = await sub.read();
    expect(epoch).toBe(2);
    expect(bytes).toEqual(new Uint8Array([...fill(32, 5), ...fill(32, 0)]));
    const late = await r.client();
    using lateSub = await late.subscribe("state");
    expect(lateSub.epoch).toBe(2);
    expect(lateSub.readConsistent(0, 4).bytes).toEqual(fill(4, 5));
    expect(r.audit.filter((a) => a.action === "epoch").map((a) => a.detail?.epoch)).toEqual([1, 2]);
  });

  // Reads that run *while* an epoch is retired are covered across processes (lease-cross: the continuous readers).
  test("a view of a retired epoch refuses reads as stale (the owner flags it in the shared header first); read() carries on in the new epoch", async () => {
    await using r = await rig(transport);
    r.owner.createRegion("state", { size: 8, initial: fill(8, 1) });
    const reader = await r.client();
    using sub = await reader.subscribe("state");
    const oldView = sub.view!;
    r.owner.replaceRegion("state", { copy: false, initial: fill(8, 2) });
    // The owner retired epoch 1 in the shared header before telling anyone: the reader sees it at once.
    expect(oldView.retired).toBe(true);
    expect(() => oldView.readConsistent()).toThrow(expect.objectContaining({ code: "ERR_QBUN_LEASE_STALE_EPOCH" }));
    const { bytes, epoch } = await sub.read();
    expect([epoch, bytes[0]]).toEqual([2, 2]);
  });

  test("the capability policy decides subscribe, lease class and write on the peer's credentials", async () => {
    const policy = CapabilityPolicy.fromConfig({
      rules: [
        { match: { uid: me.uid + 1 }, subscribe: "*", lease: "*", write: "*" }, // someone else
        { match: { uid: me.uid, pid: me.pid }, subscribe: ["public"], lease: ["input"] },
      ],
    });
    await using r = await rig(transport, { policy });
    r.owner.createRegion("public", { size: 8 });
    r.owner.createRegion("secret", { size: 8 });
    const c = await r.client();
    using pub = await c.subscribe("public");
    expect(pub.epoch).toBe(1);
    expect(await caught(c.subscribe("secret"))).toMatchObject({ code: "ERR_QBUN_LEASE_REFUSED" });
    expect(await caught(c.acquire("memory-write", { ttlMs: 1000 }))).toMatchObject({ code: "ERR_QBUN_LEASE_REFUSED" });
    const input = await c.acquire("input", { ttlMs: 1000 });
    expect(await caught(c.write("public", 0, fill(1, 1), input.token))).toMatchObject({ code: "ERR_QBUN_LEASE_REFUSED" });
    const refused = r.audit.filter((a) => a.result === "refused").map((a) => `${a.action} ${a.resource}`);
    expect(refused).toEqual(["subscribe secret", "lease.acquire memory-write", "write public"]);
  });

  test("leaves no fds or /dev/shm entries behind", async () => {
    const shmBefore = shmListing();
    const before = await settledFdCount();
    {
      await using r = await rig(transport);
      r.owner.createRegion("a", { size: 4096 });
      r.owner.createRegion("b", { size: 100 });
      const readers = await Promise.all([r.client(), r.client(), r.client()]);
      for (const reader of readers) {
        await reader.subscribe("a");
        await reader.subscribe("b");
      }
      const w = await r.client();
      const lease = await w.acquire("memory-write", { ttlMs: 5000 });
      for (let i = 0; i < 20; i++) await w.write("a", i, fill(10, i), lease.token);
      r.owner.replaceRegion("a", { size: 8192 });
      r.owner.removeRegion("b");
      await (await readers[0]!.subscribe("a")).read();
      readers[1]!.close(); // one reader goes away early
      await lease.release();
    }
    expect(await settledFdCount(before)).toBe(before);
    expect(shmListing()).toEqual(shmBefore);
  });
});

describe("audit log", () => {
  test("a file log has one JSON line per decision: grants, refusals, writes, expiry, release, revocation, epochs", async () => {
    using dir = tempDir("lease-audit");
    const path = dir.file("audit.jsonl");
    {
      using audit = AuditLog.toFile(path);
      await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit });
      owner.createRegion("state", { size: 8 });
      const a = owner.connect();
      const b = owner.connect();
      using _sub = await b.subscribe("state");
      const lease = await a.acquire("memory-write", { ttlMs: 60_000 });
      await a.write("state", 0, fill(2, 1), lease.token);
      await caught(b.write("state", 0, fill(2, 1), lease.token));
      const lost = new Promise((resolve) => lease.onLost(resolve));
      await lease.renew(1); // drive the expiry: a 1 ms lease
      expect(await lost).toBe("expired");
      const again = await a.acquire("memory-write", { ttlMs: 10_000 });
      await again.release();
      await a.acquire("power", { ttlMs: 10_000 });
      owner.replaceRegion("state", { size: 16 });
      a.close();
      await Bun.sleep(0);
      b.close();
    }
    const lines = readFileSync(path, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
    for (const line of lines) {
      expect(Object.keys(line).slice(0, 5)).toEqual(["time", "peer", "action", "resource", "result"]);
      expect(Number.isNaN(Date.parse(line.time))).toBe(false);
    }
    const summary = lines.map((l) => `${l.action} ${l.resource} ${l.result}`.replace(/ +/g, " "));
    for (const expected of [
      "epoch state ok",
      "subscribe state granted",
      "lease.acquire memory-write granted",
      "write state ok",
      "write state refused",
      "lease.expire memory-write ok",
      "lease.release memory-write ok",
      "lease.revoke power ok",
    ]) expect(summary).toContain(expected);
    // created, replaced, and retired when the owner closed
    expect(lines.filter((l) => l.action === "epoch").map((l) => [l.detail.epoch, l.detail.closed ?? false])).toEqual([[1, false], [2, false], [0, true]]);
  });

  test("a callback or stream sink gets every record; a sink that throws does not stop the owner", async () => {
    const lines: string[] = [];
    const audit = AuditLog.to({ write: (line: string) => lines.push(line) });
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit });
    owner.createRegion("s", { size: 4 });
    using c = owner.connect();
    await c.subscribe("s");
    expect(lines.map((l) => JSON.parse(l).action)).toEqual(["epoch", "connect", "subscribe"]);
    const failing = AuditLog.to(() => { throw new Error("disk full"); });
    await using owner2 = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit: failing });
    owner2.createRegion("s", { size: 4 });
    using c2 = owner2.connect();
    await c2.subscribe("s");
    expect(failing.failures).toBe(3);
  });
});

describe("a peer that breaks the protocol", () => {
  test("is told why and disconnected; other clients carry on", async () => {
    const address = `\0${uniqueName("lease-hostile")}`;
    const audit: AuditRecord[] = [];
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll(), audit: (r) => audit.push(r) });
    owner.createRegion("state", { size: 8 });
    owner.listen(address);
    await using good = await LeaseClient.connect(address);
    const badFrames = [
      new Uint8Array(3),
      (() => { const f = encodeJson(FrameType.SUBSCRIBE, 1, { endpoint: "state", notifyWrites: true }); f[0] = 0; return f; })(),
      (() => { const f = encodeJson(FrameType.SUBSCRIBE, 1, { endpoint: "state", notifyWrites: true }); f[12] = 200; return f; })(),
      new TextEncoder().encode("QBLS not really"),
      encodeJson(FrameType.ACQUIRE, 1, { leaseClass: "../../etc", ttlMs: -1, wait: true } as never),
      (() => { const f = encodeJson(FrameType.REPLY, 1, {}); return f; })(),
    ];
    for (const frame of badFrames) {
      await using raw = await UnixSeqpacket.connect(address);
      await raw.send(frame);
      const answer = await raw.receive();
      expect(answer).not.toBeNull();
      expect(new TextDecoder().decode(answer!.data)).toContain("ERR_QBUN_LEASE_PROTOCOL");
      expect(await raw.receive()).toBeNull(); // disconnected
    }
    // fds are not accepted from clients (and are closed)
    {
      await using raw = await UnixSeqpacket.connect(address);
      using mem = SharedMemory.memfd({ size: 10 });
      await raw.send(encodeJson(FrameType.SUBSCRIBE, 1, { endpoint: "state", notifyWrites: true }), { fds: [mem.fd] });
      expect(new TextDecoder().decode((await raw.receive())!.data)).toContain("must not send file descriptors");
      expect(await raw.receive()).toBeNull();
    }
    using sub = await good.subscribe("state");
    expect(sub.epoch).toBe(1);
    expect(audit.filter((a) => a.action === "protocol")).toHaveLength(badFrames.length + 1);
  });
});

afterAll(() => {});
