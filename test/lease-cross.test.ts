import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CapabilityPolicy, LeaseClient, LeaseOwner, type AuditRecord } from "../src/lease/index.ts";
import { caught, settledFdCount, settlesWithin, shmListing, uniqueName } from "./helpers/env.ts";
import { CommandPeer, Peer } from "./helpers/peers.ts";

const PEER = join(import.meta.dir, "peers", "lease_peer.ts");
const PY_READER = join(import.meta.dir, "peers", "lease_reader.py");

/** test/peers/lease_peer.ts in a child Bun process, driven by JSON lines. */
class LeasePeer extends CommandPeer {
  static async start(): Promise<LeasePeer> {
    const proc = Bun.spawn([process.execPath, PEER], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const peer = new LeasePeer(proc, "lease peer", 30_000);
    await peer.waitReady();
    return peer;
  }
}

const peers: LeasePeer[] = [];
afterEach(async () => {
  for (const peer of peers.splice(0)) {
    peer.proc.kill("SIGCONT");
    await peer.kill();
  }
});

async function startPeers(n: number, address: string): Promise<LeasePeer[]> {
  const started = await Promise.all(Array.from({ length: n }, () => LeasePeer.start()));
  peers.push(...started);
  // One at a time: each child compiles the C helper on first use, and concurrent TinyCC builds have been seen to fail.
  for (const peer of started) await peer.call("connect", { address });
  return started;
}

/** Let the process create what it keeps for its lifetime (Bun's spawn plumbing, qbun's reactor) before counting fds. */
async function warmUp(): Promise<void> {
  const address = `\0${uniqueName("lease-warm")}`;
  await using owner = new LeaseOwner();
  owner.listen(address);
  await using client = await LeaseClient.connect(address);
  await (await LeasePeer.start()).kill();
}

describe("across processes", () => {
  test("several reader processes see every write whole and follow an epoch change; identities come from the kernel", async () => {
    await warmUp();
    const shmBefore = shmListing();
    const fdsBefore = await settledFdCount();
    const address = `\0${uniqueName("lease-x")}`;
    const audit: AuditRecord[] = [];
    let writerPid = -1;
    {
      await using owner = new LeaseOwner({
        // readers may only subscribe; only the writer process may lease and write
        policy: new CapabilityPolicy((peer, capability) => capability === "subscribe" || peer.pid === writerPid),
        audit: (r) => audit.push(r),
      });
      const SIZE = 64 * 1024; // whole-region writes: the owner's memcpy is long enough for readers' copies to overlap it
      owner.createRegion("frame", { size: SIZE });
      owner.listen(address);
      const [writer, ...readers] = await startPeers(4, address);
      writerPid = writer!.pid;
      for (const reader of readers) expect(await reader.call("subscribe", { endpoint: "frame" })).toMatchObject({ epoch: 1, size: SIZE });

      // Readers hold a read-only fd: the kernel refuses a writable mapping, the JS view refuses writes.
      expect(await readers[0]!.call("try-map-write", { endpoint: "frame" })).toMatchObject({ mapWrite: "EACCES", jsWrite: "QbunArgumentError", readOnly: true });
      // A reader process is not allowed the write lease (decided on its kernel pid).
      expect(await readers[0]!.request("acquire", { leaseClass: "memory-write", ttlMs: 1000 })).toMatchObject({ ok: false, code: "ERR_QBUN_LEASE_REFUSED" });

      const { token } = await writer!.call("acquire", { leaseClass: "memory-write", ttlMs: 60_000 });
      // Watch the writes from here too, to replace the region while the writer and readers are busy.
      await using watcher = owner.connect();
      using watch = await watcher.subscribe("frame");
      const COUNT = 300;
      // Readers read continuously while the writes land (not only after each one), so a torn copy would be seen.
      for (const reader of readers) await reader.call("read-loop", { endpoint: "frame" });
      const loop = writer!.call("write-loop", { endpoint: "frame", count: COUNT, size: SIZE, token });
      while ((await watch.nextWrite()).sequence < 200) { /* event-driven: one notification per write */ }
      expect(owner.replaceRegion("frame", { size: SIZE })).toBe(2);
      const done = await loop;
      expect(done).toMatchObject({ written: COUNT, ack: { epoch: 2 } });

      for (const reader of readers) {
        const report = await reader.call("report", { endpoint: "frame", until: done.ack });
        expect(report).toMatchObject({ torn: 0, errors: [], epochs: [1, 2], epoch: 2, last: COUNT & 0xff });
        expect(report.reads).toBeGreaterThan(0);
        // The continuous reader read while writes were landing (it saw many values) and across the epoch change.
        expect(report.loop).toMatchObject({ torn: 0, epochs: [1, 2] });
        expect(report.loop.values).toBeGreaterThan(2);
      }
      // Every decision names the peer by its kernel pid.
      const writes = audit.filter((a) => a.action === "write" && a.result === "ok");
      expect(writes).toHaveLength(COUNT);
      expect(new Set(writes.map((w) => w.peer!.pid))).toEqual(new Set([writer!.pid]));
      const subscribers = audit.filter((a) => a.action === "subscribe" && a.peer!.pid !== process.pid).map((a) => a.peer!.pid).sort();
      expect(subscribers).toEqual(readers.map((r) => r.pid).sort());
      for (const peer of peers.splice(0)) await peer.kill();
    }
    expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    expect(shmListing()).toEqual(shmBefore);
  });

  test("a holder that is SIGKILLed loses its lease at once (long before its TTL)", async () => {
    const address = `\0${uniqueName("lease-kill")}`;
    const audit: AuditRecord[] = [];
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.sameUser(), audit: (r) => audit.push(r) });
    owner.createRegion("state", { size: 64 });
    owner.listen(address);
    const [holder] = await startPeers(1, address);
    const { token } = await holder!.call("acquire", { leaseClass: "memory-write", ttlMs: 60_000 });
    await using me = await LeaseClient.connect(address);
    const revoked = new Promise((resolve) => me.onLeaseEvent((e) => e.event === "revoked" && resolve(e)));
    const mine = me.acquire("memory-write", { ttlMs: 10_000 });
    holder!.proc.kill("SIGKILL");
    const lease = await settlesWithin(mine, 30_000);
    expect(lease).not.toBe("timeout");
    expect((lease as { token: number }).token).toBeGreaterThan(token);
    expect(await revoked).toMatchObject({ leaseClass: "memory-write", token });
    expect(audit.find((a) => a.action === "lease.revoke")).toMatchObject({ peer: { pid: holder!.pid }, resource: "memory-write", detail: { token } });
  });

  test("a stalled holder (SIGSTOP) loses its lease at expiry; resumed, its stale token is refused", async () => {
    const address = `\0${uniqueName("lease-stop")}`;
    const audit: AuditRecord[] = [];
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.sameUser(), audit: (r) => audit.push(r) });
    owner.createRegion("state", { size: 64 });
    owner.listen(address);
    const [holder] = await startPeers(1, address);
    const { token } = await holder!.call("acquire", { leaseClass: "memory-write", ttlMs: 300 });
    holder!.proc.kill("SIGSTOP");
    await using me = await LeaseClient.connect(address);
    using sub = await me.subscribe("state");
    const lease = await me.acquire("memory-write", { ttlMs: 10_000 }); // granted once the stalled holder's lease expires
    expect(lease.token).toBeGreaterThan(token);
    await me.write("state", 0, new Uint8Array(8).fill(0xaa), lease.token);
    holder!.proc.kill("SIGCONT");
    expect(await holder!.request("write", { endpoint: "state", offset: 0, fill: 0x55, length: 8, token })).toMatchObject({ ok: false, code: "ERR_QBUN_LEASE_NOT_HELD" });
    expect((await sub.read(0, 8)).bytes).toEqual(new Uint8Array(8).fill(0xaa));
    expect(audit.find((a) => a.action === "lease.expire")).toMatchObject({ peer: { pid: holder!.pid }, detail: { token } });
    expect(await caught(me.write("state", 0, new Uint8Array(1), token))).toMatchObject({ code: "ERR_QBUN_LEASE_STALE_TOKEN" });
  });

  test("a Python reader, written from the protocol description alone, subscribes, cannot map writable, and reads a write whole", async () => {
    const name = uniqueName("lease-py");
    await using owner = new LeaseOwner({ policy: CapabilityPolicy.sameUser() });
    owner.createRegion("state", { size: 100, initial: new Uint8Array(100).fill(1) });
    owner.listen(`\0${name}`);
    await using py = await Peer.spawn(["python3", "-u", PY_READER, name, "state"], "python lease reader");
    expect(py.ready).toMatchObject({
      locator: { endpoint: "state", epoch: 1, size: 100, fileSize: 164, flags: 3, segments: [[0, 100, 64]] },
      mapWrite: "EACCES",
      magicOk: true,
      headerEpoch: 1,
      headerSize: 100,
    });
    await using writer = owner.connect();
    const lease = await writer.acquire("memory-write", { ttlMs: 10_000 });
    const ack = await writer.write("state", 0, new Uint8Array(8).fill(0xab), lease.token);
    const line = JSON.parse((await py.line())!);
    expect(line).toEqual({ epoch: 1, notified: ack.sequence, sequence: ack.sequence, head: "ab".repeat(8) });
  });
});
