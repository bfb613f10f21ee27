/**
 * Ancillary data on every socket type, against a Python peer in both
 * directions: fds (SCM_RIGHTS) that really refer to the same open files,
 * credentials (SCM_CREDENTIALS, SO_PASSCRED), SO_PEERCRED, and truncated
 * control data (MSG_CTRUNC) without leaking fds.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";
import {
  OwnedFd,
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
  type ReceivedMessage,
  type ReceiveOptions,
  type SendOptions,
  type SocketType,
  type UnixSocket,
} from "../src/unix/index.ts";
import { bytes, openFdCount, settledFdCount, tempDir, text, uniqueName } from "./helpers/env.ts";
import { PyPeer, pyAddr, type PyReply } from "./helpers/peers.ts";

const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

/** One qbun socket talking to one Python socket, whatever the type. */
interface Link extends Disposable {
  readonly q: UnixSocket;
  /** The Python socket's id. */
  readonly ps: number;
  send(data: Uint8Array, options?: SendOptions): Promise<void>;
  receive(options?: ReceiveOptions): Promise<ReceivedMessage>;
  /** Python sends (to qbun's address, for datagrams). */
  pySend(args: Record<string, unknown>): Promise<PyReply>;
}

async function link(py: PyPeer, type: SocketType): Promise<Link> {
  const name = uniqueName(`anc-${type}`);
  if (type === "datagram") {
    const pyName = `${name}-py`;
    const q = UnixDatagram.bound({ abstract: name });
    const { sock: ps } = await py.call("socket", { type });
    await py.call("bind", { sock: ps, addr: pyAddr.abstract(pyName) });
    return {
      q,
      ps,
      send: (data, options) => q.sendTo({ abstract: pyName }, data, options),
      receive: (options) => q.receive(options),
      pySend: (args) => py.call("send", { sock: ps, to: pyAddr.abstract(name), ...args }),
      [Symbol.dispose]: () => q.close(),
    };
  }
  using listener = UnixListener.listen({ abstract: name }, { type });
  const { sock: ps } = await py.call("socket", { type });
  await py.call("connect", { sock: ps, addr: pyAddr.abstract(name) });
  const q = await listener.accept();
  return {
    q,
    ps,
    send: (data, options) => (q instanceof UnixStream ? q.sendMessage(data, options) : (q as UnixSeqpacket).send(data, options)),
    receive: async (options) => {
      const msg = q instanceof UnixStream ? await q.receiveMessage(options) : await (q as UnixSeqpacket).receive(options);
      if (msg === null) throw new Error("unexpected end of stream");
      return msg;
    },
    pySend: (args) => py.call("send", { sock: ps, ...args }),
    [Symbol.dispose]: () => q.close(),
  };
}

/** Whether fd `n` is open in this process (fstat opens nothing, unlike listing /proc/self/fd). */
function isOpen(n: number): boolean {
  try {
    fstatSync(n);
    return true;
  } catch {
    return false;
  }
}

/** The fd flags line of /proc/self/fdinfo/N says close-on-exec (O_CLOEXEC = 02000000). */
function isCloseOnExec(fd: number): boolean {
  const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!;
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

let py: PyPeer;
let dir: ReturnType<typeof tempDir>;
let baselineFds: number;
beforeAll(async () => {
  py = await PyPeer.start();
  dir = tempDir("anc");
  // Warm up: the reactor opens its own fds on the first wait.
  const [a, b] = UnixStream.pair();
  const read = b.read();
  await a.write(bytes("warm-up"));
  await read;
  a.close();
  b.close();
  baselineFds = await settledFdCount();
});
afterAll(async () => {
  await py?.kill();
  dir?.[Symbol.dispose]();
});

const TYPES: SocketType[] = ["stream", "seqpacket", "datagram"];

for (const type of TYPES) {
  describe(`${type}: fds (SCM_RIGHTS)`, () => {
    test("qbun passes several fds to Python, which gets the same open files", async () => {
      using l = await link(py, type);
      const paths = [0, 1, 2].map((i) => dir.file(`${type}-q2p-${i}`));
      paths.forEach((p, i) => writeFileSync(p, `file ${i}:`));
      const raw = openSync(paths[0]!, "r+");
      using owned1 = new OwnedFd(openSync(paths[1]!, "r+"));
      using owned2 = new OwnedFd(openSync(paths[2]!, "r+"));
      try {
        await l.send(bytes("three fds"), { fds: [raw, owned1, owned2] });
        const got = await py.call("recv", { sock: l.ps });
        expect(got.text).toBe("three fds");
        expect(got.ctrunc).toBe(false);
        expect(got.fds).toHaveLength(3);
        // Same inode and device as the files qbun opened...
        const mine = [raw, owned1.fd, owned2.fd].map((fd) => fstatSync(fd));
        expect(got.fds.map((f: any) => [f.ino, f.dev])).toEqual(mine.map((st) => [st.ino, st.dev]));
        // ...and they share the open file description: qbun moves the file
        // offset past "file i:", and Python's writes land after it.
        for (const fd of [raw, owned1.fd, owned2.fd]) expect(readSync(fd, Buffer.alloc(7), 0, 7, null)).toBe(7);
        for (const [i, f] of got.fds.entries()) {
          await py.call("fd_write", { fd: f.id, text: `written by python ${i}` });
        }
        paths.forEach((p, i) => expect(readFileSync(p, "utf8")).toBe(`file ${i}:written by python ${i}`));
        // The sender's fds stay open.
        expect(owned1.closed).toBe(false);
        expect(isOpen(raw)).toBe(true);
        for (const f of got.fds) await py.call("close", { id: f.id });
      } finally {
        closeSync(raw);
      }
    });

    test("Python passes several fds to qbun: OwnedFd handles on the same files, closed with the message", async () => {
      using l = await link(py, type);
      const a = await py.call("open", { path: dir.file(`${type}-p2q-a`) });
      const b = await py.call("memfd", { name: "peer-memfd", text: "memfd content" });
      const c = await py.call("open", { path: dir.file(`${type}-p2q-c`) });
      await l.pySend({ text: "from python", fds: [a.id, b.id, c.id] });

      let numbers: number[];
      {
        using msg = await l.receive();
        expect(text(msg.data)).toBe("from python");
        expect(msg.controlTruncated).toBe(false);
        expect(msg.fds).toHaveLength(3);
        for (const fd of msg.fds) expect(fd).toBeInstanceOf(OwnedFd);
        numbers = msg.fds.map((fd) => fd.fd);
        expect(numbers.map((n) => fstatSync(n).ino)).toEqual([a.ino, b.ino, c.ino]);
        expect(numbers.every(isCloseOnExec)).toBe(true);

        // Read what Python wrote into the memfd; write through the file fds.
        const buf = Buffer.alloc(64);
        const n = readSync(numbers[1]!, buf, 0, 64, 0);
        expect(buf.subarray(0, n).toString()).toBe("memfd content");
        writeSync(numbers[0]!, "qbun wrote this");
        expect((await py.call("fd_read", { fd: a.id })).text).toBe("qbun wrote this");
        expect(numbers.every(isOpen)).toBe(true);
      }
      // Disposing the message closed every fd it carried.
      expect(numbers.some(isOpen)).toBe(false);
      for (const id of [a.id, b.id, c.id]) await py.call("close", { id });
    });

    test("received fds that are taken stay open; the rest close with the message", async () => {
      using l = await link(py, type);
      const a = await py.call("memfd", { name: "keep", text: "kept" });
      const b = await py.call("memfd", { name: "drop", text: "dropped" });
      await l.pySend({ text: "two", fds: [a.id, b.id] });
      let kept: number;
      let dropped: number;
      {
        using msg = await l.receive();
        dropped = msg.fds[1]!.fd;
        kept = msg.fds[0]!.take();
      }
      expect(isOpen(dropped)).toBe(false);
      expect(fstatSync(kept).ino).toBe(a.ino);
      closeSync(kept);
      await py.call("close", { id: a.id });
      await py.call("close", { id: b.id });
    });

    test("fds of a message that is dropped without dispose are closed once collected", async () => {
      using l = await link(py, type);
      const m = await py.call("memfd", { name: "gc", text: "x" });
      await settledFdCount();
      const before = openFdCount();
      // In a function of its own: an async function's frame lives on the
      // heap, and a slot of this one could keep the last message reachable.
      const receiveAndDrop = async (count: number) => {
        for (let i = 0; i < count; i++) {
          await l.pySend({ text: "x", fds: [m.id, m.id] });
          const msg = await l.receive(); // never disposed
          expect(msg.fds).toHaveLength(2);
        }
      };
      await receiveAndDrop(20);
      expect(openFdCount()).toBeGreaterThanOrEqual(before + 40); // they are open until collected
      // The GC scans stacks and registers conservatively, and a stale slot
      // (seen twice in CI: one message, 2 fds) may still point at a recent
      // message. Receiving more messages, each disposed, moves it on; a
      // message that stays reachable for real keeps its fds through all rounds.
      let settled = Number.POSITIVE_INFINITY;
      for (let round = 0; round < 4 && settled > before; round++) {
        await l.pySend({ text: "x", fds: [m.id] });
        (await l.receive())[Symbol.dispose]();
        settled = await settledFdCount(before);
      }
      expect(settled).toBe(before);
      await py.call("close", { id: m.id });
    });

    test("more fds than maxFds: controlTruncated, the first maxFds are returned, none leaks", async () => {
      using l = await link(py, type);
      const files = [];
      for (let i = 0; i < 5; i++) files.push(await py.call("memfd", { name: `trunc${i}`, text: `${i}` }));
      const ids = files.map((f) => f.id);
      await settledFdCount();
      const before = openFdCount();
      for (const maxFds of [2, 3, 0]) {
        await l.pySend({ text: `five fds for ${maxFds}`, fds: ids });
        {
          using msg = await l.receive({ maxFds });
          expect(text(msg.data)).toBe(`five fds for ${maxFds}`);
          expect(msg.controlTruncated).toBe(true);
          expect(msg.fds).toHaveLength(maxFds);
          expect(msg.fds.map((fd) => fstatSync(fd.fd).ino)).toEqual(files.slice(0, maxFds).map((f) => f.ino));
          expect(openFdCount()).toBe(before + maxFds); // the others were closed, not leaked
        }
        expect(openFdCount()).toBe(before);
      }
      // Exactly maxFds is not truncated.
      await l.pySend({ text: "three", fds: ids.slice(0, 3) });
      {
        using msg = await l.receive({ maxFds: 3 });
        expect(msg.controlTruncated).toBe(false);
        expect(msg.fds).toHaveLength(3);
      }
      expect(openFdCount()).toBe(before);
      for (const id of ids) await py.call("close", { id });
    });
  });

  describe(`${type}: credentials`, () => {
    test("qbun sends credentials: true; Python (SO_PASSCRED) receives this process's pid/uid/gid", async () => {
      using l = await link(py, type);
      await py.call("passcred", { sock: l.ps });
      await l.send(bytes("who am i"), { credentials: true });
      const got = await py.call("recv", { sock: l.ps });
      expect(got.text).toBe("who am i");
      expect(got.creds).toEqual(me);
      // Explicit own ids are accepted as well.
      await l.send(bytes("explicit"), { credentials: { ...me } });
      expect((await py.call("recv", { sock: l.ps })).creds).toEqual(me);
    });

    test("Python sends SCM_CREDENTIALS; qbun with passCredentials receives the Python pid/uid/gid", async () => {
      using l = await link(py, type);
      const peer = py.ready as { pid: number; uid: number; gid: number };
      expect(peer.pid).toBe(py.pid);
      expect(l.q.passCredentials).toBe(false);
      l.q.passCredentials = true;
      expect(l.q.passCredentials).toBe(true);

      await l.pySend({ text: "explicit creds", creds: true });
      {
        using msg = await l.receive();
        expect(text(msg.data)).toBe("explicit creds");
        expect(msg.credentials).toEqual(peer);
      }
      // With SO_PASSCRED the kernel reports the sender even when it attached nothing.
      await l.pySend({ text: "implicit" });
      {
        using msg = await l.receive();
        expect(msg.credentials).toEqual(peer);
      }
      // Credentials and fds together.
      const m = await py.call("memfd", { name: "with-creds", text: "" });
      await l.pySend({ text: "both", creds: true, fds: [m.id] });
      {
        using msg = await l.receive();
        expect(msg.credentials).toEqual(peer);
        expect(msg.fds.map((fd) => fstatSync(fd.fd).ino)).toEqual([m.ino]);
      }
      await py.call("close", { id: m.id });
    });

    test("without passCredentials no credentials are reported", async () => {
      using l = await link(py, type);
      await l.pySend({ text: "plain" });
      using msg = await l.receive();
      expect(text(msg.data)).toBe("plain");
      expect(msg.credentials).toBeUndefined();
    });
  });
}

describe("Python's high-level socket.send_fds / socket.recv_fds", () => {
  test("send_fds to qbun and qbun to recv_fds", async () => {
    using l = await link(py, "stream");
    const m = await py.call("memfd", { name: "hl", text: "high level" });
    await py.call("send_fds", { sock: l.ps, text: "hl", fds: [m.id, m.id] });
    {
      using msg = await l.receive();
      expect(text(msg.data)).toBe("hl");
      expect(msg.fds.map((fd) => fstatSync(fd.fd).ino)).toEqual([m.ino, m.ino]);
      // Send one of them straight back.
      await l.send(bytes("back"), { fds: [msg.fds[0]!] });
    }
    const got = await py.call("recv_fds", { sock: l.ps });
    expect(got.text).toBe("back");
    expect(got.fds.map((f: any) => f.ino)).toEqual([m.ino]);
    expect((await py.call("fd_read", { fd: got.fds[0].id })).text).toBe("high level");
  });
});

describe("peerCredentials (SO_PEERCRED)", () => {
  for (const type of ["stream", "seqpacket"] as const) {
    test(`${type}: qbun client and qbun server both see the Python peer's pid/uid/gid, and Python sees ours`, async () => {
      const peer = py.ready as { pid: number; uid: number; gid: number };
      // qbun server, Python client.
      {
        using l = await link(py, type);
        expect(l.q.peerCredentials()).toEqual(peer);
        expect(await py.call("peercred", { sock: l.ps })).toMatchObject(me);
      }
      // Python server, qbun client.
      const name = uniqueName(`peercred-${type}`);
      const { sock: listener } = await py.call("socket", { type });
      await py.call("bind", { sock: listener, addr: pyAddr.abstract(name) });
      await py.call("listen", { sock: listener });
      using client = type === "stream" ? await UnixStream.connect(`\0${name}`) : await UnixSeqpacket.connect(`\0${name}`);
      expect(client.peerCredentials()).toEqual(peer);
      const { sock } = await py.call("accept", { sock: listener });
      expect(await py.call("peercred", { sock })).toMatchObject(me);
      await py.call("close", { id: sock });
      await py.call("close", { id: listener });
    });
  }

  test("a socketpair reports this process", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    expect(a.peerCredentials()).toEqual(me);
  });
});

test("after all of the above, this process has the fds it started with", async () => {
  // Every socket, received fd and file above was closed (or collected).
  expect(await settledFdCount(baselineFds)).toBe(baselineFds);
});
