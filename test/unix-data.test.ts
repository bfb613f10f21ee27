/**
 * Moving data: stream bytes with backpressure, datagram and seqpacket
 * message boundaries, unconnected sendTo/receive with sender addresses,
 * EMSGSIZE, truncation. The other end is a Python process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  QbunSystemError,
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
} from "../src/unix/index.ts";
import { bytes, caught, isPendingAfter, openFdCount, tempDir, text, uniqueName } from "./helpers/env.ts";
import { PyPeer, pyAddr } from "./helpers/peers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The same pattern as unix_peer.py: byte i = (i * 7 + seed) % 251. */
function pattern(n: number, seed = 0): Uint8Array {
  const block = new Uint8Array(251);
  for (let i = 0; i < 251; i++) block[i] = (i * 7 + seed) % 251;
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 251) out.set(block.subarray(0, Math.min(251, n - off)), off);
  return out;
}

const sha256 = (data: Uint8Array) => new Bun.CryptoHasher("sha256").update(data).digest("hex");


let py: PyPeer;
beforeAll(async () => {
  py = await PyPeer.start();
});
afterAll(async () => {
  await py?.kill();
});

/** A qbun stream connected to a Python stream socket (id `ps`). */
async function streamLink(): Promise<{ q: UnixStream; ps: number }> {
  const name = uniqueName("data-stream");
  using listener = UnixListener.listen({ abstract: name });
  const { sock: ps } = await py.call("socket", { type: "stream" });
  await py.call("connect", { sock: ps, addr: pyAddr.abstract(name) });
  return { q: await listener.accept(), ps };
}

describe("stream", () => {
  test("bytes arrive intact in both directions (16 MiB each way)", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    const out = pattern(16 * MiB, 3);
    const [, got] = await Promise.all([q.write(out), py.call("read_all", { sock: ps, n: out.length })]);
    expect(got).toMatchObject({ n: out.length, sha256: sha256(out) });

    const sending = py.call("send_pattern", { sock: ps, n: 16 * MiB, seed: 5 });
    const received = await q.readExactly(16 * MiB);
    const sent = await sending;
    expect(sha256(received)).toBe(sent.sha256);
  });

  test("a large write to a peer that does not read waits without spinning or buffering, and completes once it reads", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    const big = pattern(32 * MiB, 1);
    Bun.gc(true);
    const rss0 = process.memoryUsage().rss;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const write = q.write(big);
    expect(await isPendingAfter(write, 500)).toBe(true);
    const cpu = process.cpuUsage(cpu0);
    const elapsed = performance.now() - t0;
    // Waiting on readiness, not polling: far less CPU than the wall time.
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(elapsed * 0.4);
    // No copy of the payload was made while waiting.
    expect(process.memoryUsage().rss - rss0).toBeLessThan(16 * MiB);

    const read = py.call("read_all", { sock: ps, n: big.length });
    await write;
    expect(await read).toMatchObject({ n: big.length, sha256: sha256(big) });
  });

  test("awaited writes stop being accepted at about the socket buffer while the peer does not read", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    const chunk = pattern(64 * KiB, 9);
    const total = 8 * MiB;
    let accepted = 0;
    const writer = (async () => {
      while (accepted < total) {
        await q.write(chunk);
        accepted += chunk.length;
      }
    })();
    await Bun.sleep(200);
    const stalledAt = accepted;
    expect(stalledAt).toBeGreaterThan(0);
    // Only what the kernel's send buffer holds was accepted: nothing piles up in qbun.
    expect(stalledAt).toBeLessThanOrEqual(q.sendBufferSize + chunk.length);
    await Bun.sleep(200);
    expect(accepted).toBe(stalledAt); // no progress while the peer is not reading

    const read = await py.call("read_all", { sock: ps, n: total });
    await writer;
    expect(accepted).toBe(total);
    expect(read.n).toBe(total);
  });

  test("writes issued without awaiting reach the peer whole and in order, fds included", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    const a = pattern(2 * MiB, 1);
    const b = pattern(2 * MiB, 2);
    const writes = [q.write(a), q.sendMessage(bytes("M"), { fds: [0] }), q.write(b)];
    const got = await py.call("read_all", { sock: ps, n: a.length + 1 + b.length });
    await Promise.all(writes);
    const expected = new Uint8Array(a.length + 1 + b.length);
    expected.set(a);
    expected.set(bytes("M"), a.length);
    expected.set(b, a.length + 1);
    expect(got).toMatchObject({ n: expected.length, sha256: sha256(expected) });
  });

  test("a write started while an earlier one waits for room goes after it, not into the gap", async () => {
    const [w, r] = UnixStream.pair();
    using _w = w;
    using _r = r;
    const big = new Uint8Array(1 * MiB).fill(0x41);
    const first = w.write(big);
    await Bun.sleep(10); // the buffer is full: `first` waits for room
    const head = await r.readExactly(64 * KiB); // room appears...
    const second = w.write(bytes("after")); // ...and a new write comes before `first` is woken
    const tail = await r.readExactly(big.length - head.length + 5);
    await Promise.all([first, second]);
    expect(text(tail.subarray(tail.length - 5))).toBe("after");
    expect(tail.subarray(0, tail.length - 5).every((x) => x === 0x41)).toBe(true);
  });

  test("half-close: end() gives the peer end of stream while qbun can still read", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    await q.write(bytes("request"));
    q.end();
    expect(await py.call("read_all", { sock: ps })).toMatchObject({ n: 7 });
    await py.call("send", { sock: ps, text: "response" });
    await py.call("shutdown", { sock: ps });
    expect(text(await q.read())).toBe("response");
    expect(await q.read()).toBeNull();
    expect(await q.read()).toBeNull(); // stays at end
  });

  test("async iteration yields chunks until the peer closes", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    for (const part of ["a", "bb", "ccc"]) await py.call("send", { sock: ps, text: part });
    await py.call("close", { id: ps });
    let all = "";
    for await (const chunk of q) all += text(chunk);
    expect(all).toBe("abbccc");
  });

  test("watchArrivals: Bun's loop reads and discards wake-up bytes; pause leaves them for tryReadInto; the peer's close ends it once", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    const fdsBefore = openFdCount();
    let arrivals = 0;
    const ends: unknown[] = [];
    let arrived = Promise.withResolvers<void>();
    await q.watchArrivals({
      onArrival: () => {
        arrivals++;
        arrived.resolve();
      },
      onEnd: (error) => ends.push(error),
    });
    expect(openFdCount()).toBe(fdsBefore + 1); // the duplicate Bun reads through
    await py.call("send", { sock: ps, text: "x" });
    await arrived.promise;
    expect(arrivals).toBe(1);
    expect(q.tryReadInto(new Uint8Array(8))).toBeUndefined(); // consumed by the watch
    // Paused: the bytes wait in the socket for a direct read.
    q.pauseArrivals();
    await py.call("send", { sock: ps, text: "yz" });
    await Bun.sleep(50);
    expect(arrivals).toBe(1);
    expect(q.tryReadInto(new Uint8Array(8))).toBe(2);
    arrived = Promise.withResolvers<void>();
    q.resumeArrivals();
    await py.call("send", { sock: ps, text: "w" });
    await arrived.promise;
    expect(arrivals).toBe(2);
    // Writes still go out through the original fd.
    await q.write(bytes("ok"));
    expect(await py.call("recv", { sock: ps, size: 2 })).toMatchObject({ text: "ok" });
    await py.call("close", { id: ps });
    for (let i = 0; i < 100 && ends.length === 0; i++) await Bun.sleep(5);
    await Bun.sleep(20);
    expect(ends.length).toBe(1);
  });

  test("watchArrivals: closing the stream closes the duplicate too, and is not reported as the peer's end", async () => {
    const { q } = await streamLink();
    const fdsBefore = openFdCount();
    const ends: unknown[] = [];
    const watching = q.watchArrivals({ onArrival: () => {}, onEnd: (error) => ends.push(error) });
    // A second watch is refused, also while the first is still starting.
    await expect(q.watchArrivals({ onArrival: () => {}, onEnd: () => {} })).rejects.toThrow("already watched");
    await watching;
    q.close();
    await Bun.sleep(20);
    expect(openFdCount()).toBe(fdsBefore - 1);
    expect(ends).toEqual([]);
  });

  test("watchArrivals keeps the process alive unless the stream is unref'd (before or after the watch starts)", async () => {
    const unix = JSON.stringify(join(import.meta.dir, "..", "src", "unix", "index.ts"));
    const script = (mode: "before" | "after" | "ref") => `
      import { UnixStream } from ${unix};
      const [a, b] = UnixStream.pair();
      globalThis.peer = b; // keep the peer open (a dropped socket is closed by GC)
      ${mode === "before" ? "a.unref();" : ""}
      await a.watchArrivals({ onArrival() { console.log("arrival"); }, onEnd() { console.log("end"); } });
      ${mode === "after" ? "a.unref();" : ""}
      console.log("watching");
    `;
    for (const mode of ["before", "after"] as const) {
      const unrefd = Bun.spawn([process.execPath, "-e", script(mode)], { stdout: "pipe" });
      expect(await unrefd.exited).toBe(0); // nothing keeps it alive
      expect(await new Response(unrefd.stdout).text()).toBe("watching\n");
    }
    const refd = Bun.spawn([process.execPath, "-e", script("ref")], { stdout: "pipe" });
    const outcome = await Promise.race([refd.exited.then(() => "exited"), Bun.sleep(1500).then(() => "still running")]);
    refd.kill();
    expect(outcome).toBe("still running");
  });

  test("discardAvailable drops what is there without waiting, at most about its bound, and says null at end of stream", async () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    expect(a.discardAvailable()).toBe(0); // nothing there: no wait
    await b.write(new Uint8Array(10_000));
    expect(a.discardAvailable(4096)).toBe(4096);
    expect(a.discardAvailable()).toBe(10_000 - 4096);
    expect(a.tryReadInto(new Uint8Array(8))).toBeUndefined();
    b.close();
    expect(a.discardAvailable()).toBeNull();
  });

  test("readExactly fails with ECONNRESET when the stream ends early; readInto fills a caller buffer", async () => {
    const { q, ps } = await streamLink();
    using _q = q;
    await py.call("send", { sock: ps, text: "0123456789" });
    const buf = new Uint8Array(4);
    expect(await q.readInto(buf)).toBe(4);
    expect(text(buf)).toBe("0123");
    await py.call("close", { id: ps });
    const error = await caught(() => q.readExactly(10));
    expect(error).toBeInstanceOf(QbunSystemError);
    expect((error as QbunSystemError).code).toBe("ECONNRESET");
    expect((error as Error).message).toContain("6 of 10");
  });
});

describe("datagram", () => {
  async function datagramLink() {
    const name = uniqueName("dg");
    const q = UnixDatagram.bound({ abstract: name });
    const { sock: ps } = await py.call("socket", { type: "datagram" });
    await py.call("bind", { sock: ps, addr: pyAddr.abstract(`${name}-py`) });
    return { q, ps, qAddr: pyAddr.abstract(name), pyName: `${name}-py` };
  }

  test("message boundaries are kept both ways, including one larger than 64 KiB", async () => {
    const { q, ps, qAddr, pyName } = await datagramLink();
    using _q = q;
    const sizes = [1, 1000, 70_000, 0, 5];
    // Python sends them all while qbun receives (a sender blocks once the
    // receiver holds about a receive buffer's worth, so don't wait in between).
    const sends = sizes.map((n, i) => py.call("send_pattern", { sock: ps, n, seed: i, to: qAddr }));
    for (const [i, n] of sizes.entries()) {
      using msg = await q.receive();
      expect(msg.data.byteLength).toBe(n);
      expect(msg.truncated).toBe(false);
      expect(sha256(msg.data)).toBe(sha256(pattern(n, i)));
    }
    await Promise.all(sends);
    const received = py.call("recv_many", { sock: ps, count: sizes.length });
    for (const n of sizes) await q.sendTo({ abstract: pyName }, pattern(n));
    expect((await received).sizes).toEqual(sizes);
  });

  test("unconnected sockets: receive reports the sender's address, and a reply reaches it", async () => {
    using dir = tempDir("dgfrom");
    const path = dir.file("qbun.sock");
    using q = UnixDatagram.bound(path);
    expect(q.localAddress()).toEqual({ kind: "path", path });

    // A Python sender bound to a path, one bound to an abstract name, and an unbound one.
    const pyPath = dir.file("py.sock");
    const { sock: atPath } = await py.call("socket", { type: "datagram" });
    await py.call("bind", { sock: atPath, addr: pyAddr.path(pyPath) });
    const pyName = uniqueName("dgfrom-py");
    const { sock: atName } = await py.call("socket", { type: "datagram" });
    await py.call("bind", { sock: atName, addr: pyAddr.abstract(pyName) });
    const { sock: unbound } = await py.call("socket", { type: "datagram" });

    await py.call("send", { sock: atPath, text: "from path", to: pyAddr.path(path) });
    await py.call("send", { sock: atName, text: "from name", to: pyAddr.path(path) });
    await py.call("send", { sock: unbound, text: "from nowhere", to: pyAddr.path(path) });

    const m1 = await q.receive();
    expect([text(m1.data), m1.from]).toEqual(["from path", { kind: "path", path: pyPath }]);
    const m2 = await q.receive();
    expect([text(m2.data), m2.from]).toEqual(["from name", { kind: "abstract", name: pyName, padded: false }]);
    const m3 = await q.receive();
    expect([text(m3.data), m3.from]).toEqual(["from nowhere", { kind: "unnamed" }]);

    // Replies go back to where the datagrams came from.
    await q.sendTo({ path: pyPath }, bytes("reply 1"));
    await q.sendTo({ abstract: pyName }, bytes("reply 2"));
    expect(await py.call("recv", { sock: atPath })).toMatchObject({ text: "reply 1", from: pyAddr.path(path) });
    expect(await py.call("recv", { sock: atName })).toMatchObject({ text: "reply 2", from: pyAddr.path(path) });

    // An unbound qbun sender shows up unnamed at Python.
    using anon = UnixDatagram.unbound();
    await anon.sendTo({ path: pyPath }, bytes("anon"));
    expect(await py.call("recv", { sock: atPath })).toMatchObject({ text: "anon", from: { unnamed: true } });
  });

  test("a connected datagram socket sends to and receives from its peer only", async () => {
    const { q, ps, pyName } = await datagramLink();
    using _q = q;
    q.connect({ abstract: pyName });
    expect(q.peerAddress()).toEqual({ kind: "abstract", name: pyName, padded: false });
    await q.send(bytes("connected send"));
    expect((await py.call("recv", { sock: ps })).text).toBe("connected send");
    // Another sender is refused: a connected datagram socket only takes its peer's datagrams.
    const { sock: other } = await py.call("socket", { type: "datagram" });
    const local = q.localAddress();
    if (local.kind !== "abstract") throw new Error("expected abstract");
    const refused = await py.request("send", { sock: other, text: "intruder", to: pyAddr.abstract(local.name) });
    expect(refused).toMatchObject({ ok: false, code: "EPERM" });
  });

  test("EMSGSIZE for a datagram larger than the send buffer; a larger buffer lets it through", async () => {
    const { q, ps, pyName } = await datagramLink();
    using _q = q;
    const limit = q.sendBufferSize; // 212992 with Linux defaults (net.core.wmem_default)
    for (const n of [limit + 1, 300_000, 2 * limit]) {
      const error = await caught(() => q.sendTo({ abstract: pyName }, new Uint8Array(n)));
      expect(error).toBeInstanceOf(QbunSystemError);
      expect({ code: (error as QbunSystemError).code, errno: (error as QbunSystemError).errno, syscall: (error as QbunSystemError).syscall })
        .toEqual({ code: "EMSGSIZE", errno: 90, syscall: "sendmsg" });
    }
    // The socket is still usable, and a big-but-allowed datagram arrives whole.
    const big = limit - 1024;
    const got1 = py.call("recv_many", { sock: ps, count: 1 });
    await q.sendTo({ abstract: pyName }, pattern(big));
    expect((await got1).sizes).toEqual([big]);

    // A larger send buffer lets the refused size through (the kernel doubles the value set).
    q.sendBufferSize = limit;
    expect(q.sendBufferSize).toBeGreaterThan(limit + 64);
    const got2 = py.call("recv_many", { sock: ps, count: 1 });
    await q.sendTo({ abstract: pyName }, pattern(limit + 1));
    expect((await got2).sizes).toEqual([limit + 1]);

    // A socketpair's connected send is limited the same way.
    const [a, b] = UnixDatagram.pair();
    using _a = a;
    using _b = b;
    expect(((await caught(() => a.send(new Uint8Array(300_000)))) as QbunSystemError).code).toBe("EMSGSIZE");
  });

  test("maxBytes cuts a longer datagram (truncated) and drops the rest of it, not the next datagram", async () => {
    const { q, ps, qAddr } = await datagramLink();
    using _q = q;
    await py.call("send", { sock: ps, text: "0123456789", to: qAddr });
    await py.call("send", { sock: ps, text: "next", to: qAddr });
    using m1 = await q.receive({ maxBytes: 4 });
    expect([text(m1.data), m1.truncated]).toEqual(["0123", true]);
    using m2 = await q.receive({ maxBytes: 4 });
    expect([text(m2.data), m2.truncated]).toEqual(["next", false]);
  });

  test("unconnected sends keep pace with a receiver that keeps reading (the retry pause starts short again)", async () => {
    const { q, ps, pyName } = await datagramLink();
    using _q = q;
    const N = 2000;
    // The receiver's queue holds 10 datagrams (net.unix.max_dgram_qlen): the
    // sender finds it full again and again, and must wait each time.
    const got = py.call("recv_many", { sock: ps, count: N, size: 64 });
    const waits: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      await q.sendTo({ abstract: pyName }, bytes(`dgram ${i}`));
      const took = performance.now() - t;
      if (took > 0.5) waits.push(took);
    }
    expect((await got).heads.at(-1)).toBe(`dgram ${N - 1}`);
    expect(waits.length).toBeGreaterThan(0);
    // Each wait is short: pauses that kept growing across waits (to 50 ms)
    // would make most of them ~50 ms and the whole run take seconds.
    waits.sort((a, b) => a - b);
    expect(waits[Math.floor(waits.length / 2)]!).toBeLessThan(20);
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  test("non-waiting calls: trySend (parts gathered into one datagram), nextLength, tryReceiveInto", async () => {
    const { q, ps, qAddr, pyName } = await datagramLink();
    using _q = q;
    q.connect({ abstract: pyName });
    // Two parts leave as one datagram, three or more too; an empty one is a datagram of its own.
    expect(q.trySend([bytes("head:"), bytes("payload")])).toBe(true);
    expect(q.trySend([bytes("a"), bytes("b"), bytes("c")])).toBe(true);
    expect(q.trySend(new Uint8Array(0))).toBe(true);
    expect(await py.call("recv_many", { sock: ps, count: 3 })).toMatchObject({ sizes: [12, 3, 0], heads: ["head:payload", "abc", ""] });

    // Nothing queued: undefined, not a wait.
    expect(q.nextLength()).toBeUndefined();
    expect(q.tryReceiveInto(new Uint8Array(16))).toBeUndefined();
    await py.call("send", { sock: ps, text: "0123456789", to: qAddr });
    await py.call("send", { sock: ps, text: "next", to: qAddr });
    // nextLength leaves the datagram queued; a short buffer gets its start and its whole length.
    expect(q.nextLength()).toBe(10);
    expect(q.nextLength()).toBe(10);
    const into = new Uint8Array(4);
    expect(q.tryReceiveInto(into)).toBe(10);
    expect(text(into)).toBe("0123");
    // The rest of the cut datagram is gone, the next one is whole.
    const next = new Uint8Array(16);
    expect(q.tryReceiveInto(next)).toBe(4);
    expect(text(next.subarray(0, 4))).toBe("next");
    expect(q.tryReceiveInto(next)).toBeUndefined();

    // A full receiver: trySend says false instead of waiting; room again once it reads.
    let sent = 0;
    while (q.trySend(bytes(`dgram ${sent}`))) sent++;
    expect(sent).toBeGreaterThan(0);
    expect(q.trySend(bytes("refused"))).toBe(false);
    const drained = await py.call("recv_many", { sock: ps, count: sent });
    expect(drained.heads.at(-1)).toBe(`dgram ${sent - 1}`);
    await q.writable();
    expect(q.trySend(bytes("after"))).toBe(true);
    expect((await py.call("recv_many", { sock: ps, count: 1 })).heads).toEqual(["after"]);
  });

  for (const mode of ["connected", "unconnected"] as const) {
    test(`${mode} sends to a full receiver wait until it reads, and every datagram arrives`, async () => {
      const { q, ps, pyName } = await datagramLink();
      using _q = q;
      if (mode === "connected") q.connect({ abstract: pyName });
      const send = (i: number) =>
        mode === "connected" ? q.send(bytes(`dgram ${i}`)) : q.sendTo({ abstract: pyName }, bytes(`dgram ${i}`));
      // Fill the receiver's queue (net.unix.max_dgram_qlen, 10 by default).
      let sent = 0;
      for (; sent < 10_000; sent++) {
        const p = send(sent);
        if (await isPendingAfter(p, 100)) {
          // This one waits while the peer does not read; it completes once it does.
          const drained = await py.call("recv_many", { sock: ps, count: sent + 1 });
          await p;
          expect(drained.heads).toEqual(Array.from({ length: sent + 1 }, (_, i) => `dgram ${i}`));
          break;
        }
      }
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(10_000);
    });
  }
});

describe("seqpacket", () => {
  async function seqLink() {
    const name = uniqueName("seq");
    using listener = UnixListener.listen({ abstract: name }, { type: "seqpacket" });
    const { sock: ps } = await py.call("socket", { type: "seqpacket" });
    await py.call("connect", { sock: ps, addr: pyAddr.abstract(name) });
    return { q: await listener.accept(), ps };
  }

  test("message boundaries are kept both ways, including one larger than 64 KiB", async () => {
    const { q, ps } = await seqLink();
    using _q = q;
    const sizes = [3, 100_000, 1, 4096];
    const sends = sizes.map((n, i) => py.call("send_pattern", { sock: ps, n, seed: i }));
    for (const [i, n] of sizes.entries()) {
      using msg = (await q.receive())!;
      expect(msg.data.byteLength).toBe(n);
      expect(sha256(msg.data)).toBe(sha256(pattern(n, i)));
    }
    await Promise.all(sends);
    const received = py.call("recv_many", { sock: ps, count: sizes.length });
    for (const n of sizes) await q.send(pattern(n));
    expect((await received).sizes).toEqual(sizes);
  });

  test("maxBytes truncates one message only", async () => {
    const { q, ps } = await seqLink();
    using _q = q;
    await py.call("send", { sock: ps, text: "long message" });
    await py.call("send", { sock: ps, text: "short" });
    using m1 = (await q.receive({ maxBytes: 4 }))!;
    expect([text(m1.data), m1.truncated]).toEqual(["long", true]);
    using m2 = (await q.receive())!;
    expect([text(m2.data), m2.truncated]).toEqual(["short", false]);
  });

  test("EMSGSIZE for a message larger than the send buffer", async () => {
    const { q } = await seqLink();
    using _q = q;
    const error = await caught(() => q.send(new Uint8Array(300_000)));
    expect(error).toBeInstanceOf(QbunSystemError);
    expect([(error as QbunSystemError).code, (error as QbunSystemError).syscall]).toEqual(["EMSGSIZE", "sendmsg"]);
  });

  test("end of stream reads as null, and iteration stops there", async () => {
    const { q, ps } = await seqLink();
    using _q = q;
    await py.call("send", { sock: ps, text: "one" });
    await py.call("send", { sock: ps, text: "two" });
    await py.call("close", { id: ps });
    const got: string[] = [];
    for await (const msg of q) got.push(text(msg.data)!);
    expect(got).toEqual(["one", "two"]);
    expect(await q.receive()).toBeNull();
  });

  test("a socketpair keeps boundaries too", async () => {
    const [a, b] = UnixSeqpacket.pair();
    using _a = a;
    using _b = b;
    await a.send(bytes("x"));
    await a.send(bytes("yy"));
    expect(text((await b.receive())!.data)).toBe("x");
    expect(text((await b.receive())!.data)).toBe("yy");
  });
});
