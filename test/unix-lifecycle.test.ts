/**
 * Lifecycle: close() (idempotent, `using`, `await using`), AbortSignal on
 * pending waits (rejects with the reason, consumes nothing), ClosedError for
 * waits pending at close, peers that vanish (SIGKILL), and whether pending
 * waits keep the process alive (ref/unref).
 */
import { describe, expect, test } from "bun:test";
import { existsSync, fstatSync } from "node:fs";
import { join } from "node:path";
import {
  ClosedError,
  QbunSystemError,
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
} from "../src/unix/index.ts";
import { bytes, caught, isPendingAfter, settlesWithin, tempDir, text, uniqueName } from "./helpers/env.ts";
import { Peer, PyPeer, pyAddr } from "./helpers/peers.ts";


function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** A stream connection qbun client ↔ qbun server (abstract name). */
async function streamPair(): Promise<[UnixStream, UnixStream, UnixListener]> {
  const name = `\0${uniqueName("life")}`;
  const listener = UnixListener.listen(name);
  const [c, s] = await Promise.all([UnixStream.connect(name), listener.accept()]);
  return [c, s, listener];
}

describe("close", () => {
  test("is idempotent on every kind of socket, and the fd is released once", async () => {
    const [c, s, l] = await streamPair();
    const [sa, sb] = UnixSeqpacket.pair();
    const [da, db] = UnixDatagram.pair();
    for (const sock of [c, s, l, sa, sb, da, db]) {
      const fd = sock.fd;
      expect(sock.closed).toBe(false);
      sock.close();
      expect(sock.closed).toBe(true);
      expect(isOpen(fd)).toBe(false);
      sock.close();
      await sock[Symbol.asyncDispose]();
      sock[Symbol.dispose]();
      expect(() => sock.fd).toThrow(ClosedError);
    }
  });

  test("operations on a closed socket fail with ClosedError", async () => {
    const [c, s, l] = await streamPair();
    c.close();
    s.close();
    l.close();
    const [sa, sb] = UnixSeqpacket.pair();
    sa.close();
    sb.close();
    const d = UnixDatagram.unbound();
    d.close();
    const attempts: [string, () => unknown][] = [
      ["write", () => c.write(bytes("x"))],
      ["read", () => c.read()],
      ["sendMessage", () => c.sendMessage(bytes("x"))],
      ["receiveMessage", () => c.receiveMessage()],
      ["accept", () => l.accept()],
      ["seqpacket send", () => sa.send(bytes("x"))],
      ["seqpacket receive", () => sa.receive()],
      ["datagram sendTo", () => d.sendTo("\0nobody", bytes("x"))],
      ["datagram receive", () => d.receive()],
      ["peerCredentials", () => c.peerCredentials()],
      ["localAddress", () => l.localAddress()],
    ];
    for (const [name, attempt] of attempts) {
      const error = await caught(attempt);
      expect(error, name).toBeInstanceOf(ClosedError);
      expect((error as ClosedError).code).toBe("ERR_QBUN_CLOSED");
    }
  });

  test("`using` and `await using` close at the end of the scope, removing the socket file", async () => {
    using dir = tempDir("using");
    const path = dir.file("s.sock");
    let fds: number[];
    {
      using server = UnixListener.listen(path);
      await using client = await UnixStream.connect(path);
      using conn = await server.accept();
      fds = [server.fd, client.fd, conn.fd];
      expect(fds.every(isOpen)).toBe(true);
    }
    expect(fds.some(isOpen)).toBe(false);
    expect(existsSync(path)).toBe(false);
  });
});

describe("AbortSignal", () => {
  test("a pending stream read rejects with the signal's reason and consumes nothing", async () => {
    const [c, s, l] = await streamPair();
    using _c = c;
    using _s = s;
    using _l = l;
    const ac = new AbortController();
    const reason = new Error("no longer needed");
    const read = s.read({ signal: ac.signal });
    expect(await isPendingAfter(read, 30)).toBe(true);
    ac.abort(reason);
    expect(await caught(read)).toBe(reason);
    await c.write(bytes("kept for the next read"));
    expect(text(await s.read())).toBe("kept for the next read");
    // An already-aborted signal rejects at once, without reading.
    await c.write(bytes("still here"));
    expect(await caught(s.read({ signal: AbortSignal.abort(reason) }))).toBe(reason);
    expect(text(await s.read())).toBe("still here");
  });

  test("receiveMessage, seqpacket receive and datagram receive: the reason, then the message is still there", async () => {
    const [c, s, l] = await streamPair();
    using _c = c;
    using _s = s;
    using _l = l;
    const [sa, sb] = UnixSeqpacket.pair();
    using _sa = sa;
    using _sb = sb;
    const [da, db] = UnixDatagram.pair();
    using _da = da;
    using _db = db;
    const cases: [string, (signal?: AbortSignal) => Promise<unknown>, () => Promise<unknown>][] = [
      ["stream message", (signal) => s.receiveMessage({ signal }), () => c.sendMessage(bytes("msg"), { fds: [0] })],
      ["seqpacket", (signal) => sb.receive({ signal }), () => sa.send(bytes("msg"), { fds: [0] })],
      ["datagram", (signal) => db.receive({ signal }), () => da.send(bytes("msg"), { fds: [0] })],
    ];
    for (const [name, receive, send] of cases) {
      const ac = new AbortController();
      const reason = new DOMException(`stop ${name}`, "AbortError");
      const pending = receive(ac.signal);
      expect(await isPendingAfter(pending, 20)).toBe(true);
      ac.abort(reason);
      expect(await caught(pending), name).toBe(reason);
      await send();
      using msg = (await receive()) as Disposable & { data: Uint8Array; fds: unknown[] };
      expect([text(msg.data), msg.fds.length], name).toEqual(["msg", 1]);
    }
  });

  test("a pending accept rejects with the reason; the next connection is still accepted", async () => {
    const name = `\0${uniqueName("abort-accept")}`;
    using server = UnixListener.listen(name);
    const ac = new AbortController();
    const accepting = server.accept({ signal: ac.signal });
    expect(await isPendingAfter(accepting, 20)).toBe(true);
    ac.abort("timeout reached");
    expect(await caught(accepting)).toBe("timeout reached");
    using client = await UnixStream.connect(name);
    using conn = await server.accept();
    await client.write(bytes("after abort"));
    expect(text(await conn.read())).toBe("after abort");
  });

  test("a write waiting for buffer space rejects with the reason", async () => {
    const [c, s, l] = await streamPair();
    using _c = c;
    using _s = s;
    using _l = l;
    const ac = new AbortController();
    const write = c.write(new Uint8Array(8 * 1024 * 1024), { signal: ac.signal });
    expect(await isPendingAfter(write, 50)).toBe(true);
    const reason = new Error("write cancelled");
    ac.abort(reason);
    expect(await caught(write)).toBe(reason);
  });

  test("a write with an already-aborted signal rejects and sends nothing", async () => {
    const [c, s, l] = await streamPair();
    using _c = c;
    using _s = s;
    using _l = l;
    const reason = new Error("too late");
    expect(await caught(c.write(bytes("never sent"), { signal: AbortSignal.abort(reason) }))).toBe(reason);
    expect(await caught(c.sendMessage(bytes("never"), { fds: [0], signal: AbortSignal.abort(reason) }))).toBe(reason);
    await c.write(bytes("sent"));
    c.end();
    let all = "";
    for await (const chunk of s) all += text(chunk);
    expect(all).toBe("sent");
  });
});

describe("pending waits when the socket is closed", () => {
  test("read, receive, accept, backpressured write and datagram receive reject with ClosedError", async () => {
    const [c, s, l] = await streamPair();
    const [wa, wb] = UnixStream.pair();
    const [sa, sb] = UnixSeqpacket.pair();
    const [da, db] = UnixDatagram.pair();
    const pending: [string, Promise<unknown>, () => void][] = [
      ["read", s.read(), () => s.close()],
      ["accept", l.accept(), () => l.close()],
      ["write", wa.write(new Uint8Array(8 * 1024 * 1024)), () => wa.close()],
      ["seqpacket receive", sb.receive(), () => sb.close()],
      ["datagram receive", db.receive(), () => db.close()],
    ];
    for (const [name, promise] of pending) expect(await isPendingAfter(promise, 10), name).toBe(true);
    for (const [name, promise, close] of pending) {
      close();
      expect(await caught(promise), name).toBeInstanceOf(ClosedError);
    }
    for (const sock of [c, wb, sa, da]) sock.close();
  });

  test("async iteration over a listener or a datagram socket ends when it is closed", async () => {
    const name = `\0${uniqueName("iter-close")}`;
    const server = UnixListener.listen(name);
    const accepted = (async () => {
      let n = 0;
      for await (const conn of server) {
        conn.close();
        n++;
      }
      return n;
    })();
    (await UnixStream.connect(name)).close();
    const dg = UnixDatagram.bound(`\0${uniqueName("iter-close-dg")}`);
    const received = (async () => {
      let n = 0;
      for await (const msg of dg) n += msg.data.length;
      return n;
    })();
    await Bun.sleep(20);
    server.close();
    dg.close();
    expect(await settlesWithin(accepted, 2000)).toBe(1);
    expect(await settlesWithin(received, 2000)).toBe(0);
  });
});

describe("a peer that vanishes (SIGKILL)", () => {
  async function pythonConnected<T extends "stream" | "seqpacket">(type: T) {
    const name = uniqueName(`vanish-${type}`);
    const py = await PyPeer.start();
    using listener = UnixListener.listen({ abstract: name }, { type });
    const { sock } = await py.call("socket", { type });
    await py.call("connect", { sock, addr: pyAddr.abstract(name) });
    const conn = await listener.accept();
    return { py, conn, sock };
  }

  test("stream: a pending read resolves null (end of stream), never hangs", async () => {
    const { py, conn } = await pythonConnected("stream");
    await using _py = py;
    using _conn = conn;
    const read = conn.read();
    expect(await isPendingAfter(read, 20)).toBe(true);
    await py.kill();
    expect(await settlesWithin(read, 5000)).toBeNull();
  });

  test("stream: with bytes the peer never read, the read fails with ECONNRESET", async () => {
    const { py, conn } = await pythonConnected("stream");
    await using _py = py;
    using _conn = conn;
    await conn.write(bytes("unread by the peer"));
    const read = conn.read().catch((e) => e);
    await py.kill();
    const outcome = await settlesWithin(read, 5000);
    expect(outcome).toBeInstanceOf(QbunSystemError);
    expect((outcome as QbunSystemError).code).toBe("ECONNRESET");
  });

  test("stream: a write waiting on backpressure fails with EPIPE or ECONNRESET", async () => {
    const { py, conn } = await pythonConnected("stream");
    await using _py = py;
    using _conn = conn;
    const write = conn.write(new Uint8Array(16 * 1024 * 1024)).catch((e) => e);
    expect(await isPendingAfter(write, 50)).toBe(true);
    await py.kill();
    const outcome = await settlesWithin(write, 5000);
    expect(outcome).toBeInstanceOf(QbunSystemError);
    expect(["EPIPE", "ECONNRESET"]).toContain((outcome as QbunSystemError).code);
    // Later writes fail the same way rather than hang.
    const again = await settlesWithin(conn.write(bytes("x")).catch((e) => e), 5000);
    expect(["EPIPE", "ECONNRESET"]).toContain((again as QbunSystemError).code);
  });

  test("seqpacket: a pending receive resolves null", async () => {
    const { py, conn } = await pythonConnected("seqpacket");
    await using _py = py;
    using _conn = conn;
    const receive = conn.receive();
    expect(await isPendingAfter(receive, 20)).toBe(true);
    await py.kill();
    expect(await settlesWithin(receive, 5000)).toBeNull();
  });

  test("qbun client of a Python server that is killed: read resolves null", async () => {
    const name = uniqueName("vanish-server");
    await using py = await PyPeer.start();
    const { sock: listener } = await py.call("socket", { type: "stream" });
    await py.call("bind", { sock: listener, addr: pyAddr.abstract(name) });
    await py.call("listen", { sock: listener });
    using client = await UnixStream.connect({ abstract: name });
    await py.call("accept", { sock: listener });
    const read = client.read();
    await py.kill();
    expect(await settlesWithin(read, 5000)).toBeNull();
  });

  test("datagram: sending to a killed peer's address fails with ECONNREFUSED", async () => {
    const name = uniqueName("vanish-dg");
    await using py = await PyPeer.start();
    const { sock } = await py.call("socket", { type: "datagram" });
    await py.call("bind", { sock, addr: pyAddr.abstract(name) });
    using dg = UnixDatagram.unbound();
    dg.connect({ abstract: name });
    await dg.send(bytes("alive?"));
    await py.kill();
    const error = await caught(dg.send(bytes("alive?")));
    expect(error).toBeInstanceOf(QbunSystemError);
    expect(["ECONNREFUSED", "ECONNRESET"]).toContain((error as QbunSystemError).code);
  });
});

describe("pending waits and process lifetime", () => {
  const script = join(import.meta.dir, "peers", "accept_once.ts");
  const child = (name: string, mode: string) => Peer.spawn([process.execPath, script, name, mode], `accept_once ${mode}`);

  test("a pending accept keeps the process alive until a client comes", async () => {
    const name = uniqueName("lifetime-ref");
    await using proc = await child(name, "ref");
    expect(await isPendingAfter(proc.proc.exited, 300)).toBe(true);
    using client = await UnixStream.connect(`\0${name}`);
    expect(await proc.line(5000)).toBe("accepted");
    expect(await settlesWithin(proc.proc.exited, 5000)).toBe(0);
  });

  test("after unref() a pending accept does not keep the process alive", async () => {
    await using proc = await child(uniqueName("lifetime-unref"), "unref");
    expect(await settlesWithin(proc.proc.exited, 5000)).toBe(0);
    expect(await proc.line(1000)).toBeNull();
  });

  for (const mode of ["abort", "close"] as const) {
    test(`an accept ended by ${mode === "abort" ? "an abort" : "close()"} no longer keeps the process alive`, async () => {
      await using proc = await child(uniqueName(`lifetime-${mode}`), mode);
      expect(await proc.line(5000)).toBe(mode === "abort" ? "rejected Error" : "rejected ClosedError");
      expect(await settlesWithin(proc.proc.exited, 5000)).toBe(0);
    });
  }
});
