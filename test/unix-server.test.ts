/**
 * Servers and clients: bind (mode, stale files, EADDRINUSE), listen backlog,
 * accept as an async iterator and as a callback, close removing the socket
 * file, and typed connect errors. Peers are Python processes.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, lstatSync, renameSync, writeFileSync, readFileSync } from "node:fs";
import {
  QbunSystemError,
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
} from "../src/unix/index.ts";
import { bytes, caught, isPendingAfter, tempDir, text, uniqueName } from "./helpers/env.ts";
import { PyPeer, pyAddr } from "./helpers/peers.ts";


function expectSystemError(error: unknown, fields: { code: string; errno: number; syscall: string }) {
  expect(error).toBeInstanceOf(QbunSystemError);
  const e = error as QbunSystemError;
  expect({ code: e.code, errno: e.errno, syscall: e.syscall }).toEqual(fields);
}

/** A Python stream (or other type) socket bound, and listening unless datagram. */
async function pyBound(py: PyPeer, addr: object, type = "stream"): Promise<number> {
  const { sock } = await py.call("socket", { type });
  await py.call("bind", { sock, addr });
  if (type !== "datagram") await py.call("listen", { sock });
  return sock;
}

describe("bind", () => {
  test("mode sets the permission bits of the socket file", () => {
    using dir = tempDir("mode");
    for (const mode of [0o600, 0o640, 0o666, 0o604]) {
      const path = dir.file(`m${mode.toString(8)}.sock`);
      using server = UnixListener.listen(path, { mode });
      const st = lstatSync(path);
      expect(st.isSocket()).toBe(true);
      expect((st.mode & 0o777).toString(8)).toBe(mode.toString(8));
    }
    const dgPath = dir.file("dg.sock");
    using dg = UnixDatagram.bound(dgPath, { mode: 0o620 });
    expect((lstatSync(dgPath).mode & 0o777).toString(8)).toBe("620");
  });

  test("a live listener at the path gives EADDRINUSE from bind, and is left working", async () => {
    using dir = tempDir("inuse");
    const path = dir.file("live.sock");
    await using py = await PyPeer.start();
    const listener = await pyBound(py, pyAddr.path(path));
    const inode = lstatSync(path).ino;

    for (const attempt of [
      () => UnixListener.listen(path),
      () => UnixListener.listen(path, { type: "seqpacket" }),
      () => UnixDatagram.bound(path),
    ]) {
      const error = await caught(attempt);
      expectSystemError(error, { code: "EADDRINUSE", errno: 98, syscall: "bind" });
      expect((error as Error).message).toContain(path);
    }
    // The live socket file was not replaced: the Python server still accepts there.
    expect(lstatSync(path).ino).toBe(inode);
    using conn = await UnixStream.connect(path);
    await conn.write(bytes("hello server"));
    // (The stale-file check probes with a connect of its own, which the
    // server sees as a connection closed at once: skip such connections.)
    let got = "";
    for (let i = 0; i < 3 && got === ""; i++) {
      const { sock } = await py.call("accept", { sock: listener });
      got = (await py.call("recv", { sock })).text;
    }
    expect(got).toBe("hello server");
  });

  test("a live datagram socket at the path gives EADDRINUSE", async () => {
    using dir = tempDir("inuse-dg");
    const path = dir.file("live.sock");
    await using py = await PyPeer.start();
    const s = await pyBound(py, pyAddr.path(path), "datagram");
    expectSystemError(await caught(() => UnixDatagram.bound(path)), { code: "EADDRINUSE", errno: 98, syscall: "bind" });
    using client = UnixDatagram.unbound();
    await client.sendTo(path, bytes("to python"));
    expect((await py.call("recv", { sock: s })).text).toBe("to python");
  });

  test("an abstract name held by another process gives EADDRINUSE", async () => {
    const name = uniqueName("held");
    await using py = await PyPeer.start();
    await pyBound(py, pyAddr.abstract(name));
    expectSystemError(await caught(() => UnixListener.listen(`\0${name}`)), {
      code: "EADDRINUSE",
      errno: 98,
      syscall: "bind",
    });
    // The padded form is another name: it is free.
    using padded = UnixListener.listen({ abstract: name, padded: true });
    expect(padded.localAddress()).toEqual({ kind: "abstract", name, padded: true });
  });

  test("a regular file at the path is never replaced", () => {
    using dir = tempDir("regular");
    const path = dir.file("data.txt");
    writeFileSync(path, "precious");
    expectSystemError(
      (() => {
        try {
          UnixListener.listen(path);
        } catch (e) {
          return e;
        }
      })(),
      { code: "EADDRINUSE", errno: 98, syscall: "bind" },
    );
    expect(readFileSync(path, "utf8")).toBe("precious");
  });

  for (const how of ["exited", "was killed"] as const) {
    test(`a stale socket file left by a Python process that ${how} is replaced`, async () => {
      using dir = tempDir("stale");
      const path = dir.file("stale.sock");
      {
        await using py = await PyPeer.start();
        await pyBound(py, pyAddr.path(path));
        if (how === "exited") await py.exit();
        else await py.kill();
      }
      expect(lstatSync(path).isSocket()).toBe(true); // left behind
      // Nothing listens there any more: a client is refused.
      expectSystemError(await caught(() => UnixStream.connect(path)), {
        code: "ECONNREFUSED",
        errno: 111,
        syscall: "connect",
      });

      using server = UnixListener.listen(path);
      await using py2 = await PyPeer.start();
      const { sock } = await py2.call("socket", { type: "stream" });
      await py2.call("connect", { sock, addr: pyAddr.path(path) });
      using conn = await server.accept();
      await conn.write(bytes("new server"));
      expect((await py2.call("recv", { sock })).text).toBe("new server");
    });
  }

  test("a stale datagram socket file is replaced by UnixDatagram.bound", async () => {
    using dir = tempDir("stale-dg");
    const path = dir.file("stale.sock");
    {
      await using py = await PyPeer.start();
      await pyBound(py, pyAddr.path(path), "datagram");
      await py.kill();
    }
    using sock = UnixDatagram.bound(path);
    using client = UnixDatagram.unbound();
    await client.sendTo(path, bytes("fresh"));
    expect(text((await sock.receive()).data)).toBe("fresh");
  });

  test("replaceStale: false keeps a stale file and reports EADDRINUSE", async () => {
    using dir = tempDir("nostale");
    const path = dir.file("stale.sock");
    {
      await using py = await PyPeer.start();
      await pyBound(py, pyAddr.path(path));
      await py.exit();
    }
    const ino = lstatSync(path).ino;
    expectSystemError(await caught(() => UnixListener.listen(path, { replaceStale: false })), {
      code: "EADDRINUSE",
      errno: 98,
      syscall: "bind",
    });
    expect(lstatSync(path).ino).toBe(ino);
  });
});

describe("close", () => {
  test("removes the socket file the listener created, and only that file", async () => {
    using dir = tempDir("close");
    const path = dir.file("s.sock");
    const server = UnixListener.listen(path);
    expect(existsSync(path)).toBe(true);
    server.close();
    expect(existsSync(path)).toBe(false);
    server.close(); // idempotent

    const dgPath = dir.file("dg.sock");
    const dg = UnixDatagram.bound(dgPath);
    dg.close();
    expect(existsSync(dgPath)).toBe(false);

    // The file was moved away and someone else now serves at the path:
    // closing must not unlink the other server's file.
    const server2 = UnixListener.listen(path);
    renameSync(path, dir.file("moved.sock"));
    await using py = await PyPeer.start();
    await pyBound(py, pyAddr.path(path));
    const theirs = lstatSync(path).ino;
    server2.close();
    expect(lstatSync(path).ino).toBe(theirs);
    expect(existsSync(dir.file("moved.sock"))).toBe(true); // not ours to chase either
  });

  test("a listener that failed to bind removes nothing", async () => {
    using dir = tempDir("failbind");
    const path = dir.file("s.sock");
    using server = UnixListener.listen(path);
    await caught(() => UnixListener.listen(path));
    expect(existsSync(path)).toBe(true);
    using c = await UnixStream.connect(path);
    using s = await server.accept();
    expect(s.type).toBe("stream");
  });
});

describe("listen and accept", () => {
  test("backlog: connects beyond it wait (EAGAIN after the timeout) until the server accepts", async () => {
    const name = `\0${uniqueName("backlog")}`;
    using server = UnixListener.listen(name, { backlog: 2 });
    // Linux queues backlog + 1 unaccepted connections on an AF_UNIX listener.
    const queued = [await UnixStream.connect(name), await UnixStream.connect(name), await UnixStream.connect(name)];
    try {
      const refused = await caught(() => UnixStream.connect(name, { timeout: 100 }));
      expectSystemError(refused, { code: "EAGAIN", errno: 11, syscall: "connect" });

      const waiting = UnixStream.connect(name);
      expect(await isPendingAfter(waiting, 100)).toBe(true);
      using first = await server.accept();
      using late = await waiting; // room in the backlog: the connect completes
      await late.write(bytes("late"));
      const rest = [await server.accept(), await server.accept(), await server.accept()];
      expect(text(await rest[2]!.read())).toBe("late");
      for (const c of rest) c.close();
    } finally {
      for (const c of queued) c.close();
    }
  });

  test("accept as an async iterator serves Python clients and ends when the listener closes", async () => {
    using dir = tempDir("iter");
    const path = dir.file("s.sock");
    const server = UnixListener.listen(path);
    const seen: string[] = [];
    const loop = (async () => {
      for await (const conn of server) {
        using c = conn;
        const msg = text(await c.read())!;
        seen.push(msg);
        await c.write(bytes(`ack ${msg}`));
      }
      return "ended";
    })();
    await using py = await PyPeer.start();
    for (let i = 0; i < 3; i++) {
      const { sock } = await py.call("socket", { type: "stream" });
      await py.call("connect", { sock, addr: pyAddr.path(path) });
      await py.call("send", { sock, text: `client ${i}` });
      expect((await py.call("recv", { sock })).text).toBe(`ack client ${i}`);
    }
    server.close();
    expect(await loop).toBe("ended");
    expect(seen).toEqual(["client 0", "client 1", "client 2"]);
  });

  test("serve(handler) calls the handler per connection; a throwing handler closes that connection", async () => {
    using dir = tempDir("serve");
    const path = dir.file("s.sock");
    const server = UnixListener.listen(path);
    const errors: unknown[] = [];
    const done = server.serve(
      async (conn) => {
        const msg = text(await conn.read())!;
        if (msg === "boom") throw new Error("handler failed");
        await conn.write(bytes(msg.toUpperCase()));
        conn.close();
      },
      (error) => errors.push(error),
    );
    await using py = await PyPeer.start();
    const { sock: a } = await py.call("socket", { type: "stream" });
    const { sock: b } = await py.call("socket", { type: "stream" });
    await py.call("connect", { sock: a, addr: pyAddr.path(path) });
    await py.call("connect", { sock: b, addr: pyAddr.path(path) });
    await py.call("send", { sock: b, text: "boom" });
    await py.call("send", { sock: a, text: "hello" });
    expect((await py.call("read_all", { sock: a })).n).toBe(5); // "HELLO" then end of stream
    expect(await py.call("recv", { sock: b })).toMatchObject({ text: "" }); // closed by serve
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe("handler failed");
    server.close();
    expect(await done).toBeUndefined();
    expect(existsSync(path)).toBe(false);
  });

  test("a seqpacket listener accepts UnixSeqpacket connections from Python", async () => {
    const name = uniqueName("seqlisten");
    using server = UnixListener.listen({ abstract: name }, { type: "seqpacket" });
    await using py = await PyPeer.start();
    const { sock } = await py.call("socket", { type: "seqpacket" });
    await py.call("connect", { sock, addr: pyAddr.abstract(name) });
    using conn = await server.accept();
    expect(conn).toBeInstanceOf(UnixSeqpacket);
    await py.call("send", { sock, text: "one" });
    await py.call("send", { sock, text: "two" });
    expect(text((await conn.receive())!.data)).toBe("one");
    expect(text((await conn.receive())!.data)).toBe("two");
  });
});

describe("connect errors are typed", () => {
  test("no socket file: ENOENT from connect", async () => {
    using dir = tempDir("enoent");
    const path = dir.file("nobody.sock");
    for (const connect of [() => UnixStream.connect(path), () => UnixSeqpacket.connect(path)]) {
      const error = await caught(connect);
      expectSystemError(error, { code: "ENOENT", errno: 2, syscall: "connect" });
      expect((error as QbunSystemError).address).toBe(path);
    }
  });

  test("nothing listening on an abstract name: ECONNREFUSED from connect", async () => {
    const name = uniqueName("nobody");
    expectSystemError(await caught(() => UnixStream.connect(`\0${name}`)), {
      code: "ECONNREFUSED",
      errno: 111,
      syscall: "connect",
    });
  });

  test("a bound but not listening Python socket: ECONNREFUSED", async () => {
    using dir = tempDir("notlistening");
    const path = dir.file("s.sock");
    await using py = await PyPeer.start();
    const { sock } = await py.call("socket", { type: "stream" });
    await py.call("bind", { sock, addr: pyAddr.path(path) });
    expectSystemError(await caught(() => UnixStream.connect(path)), {
      code: "ECONNREFUSED",
      errno: 111,
      syscall: "connect",
    });
  });

  test("a socket file of another type: EPROTOTYPE", async () => {
    using dir = tempDir("wrongtype");
    const path = dir.file("stream.sock");
    await using py = await PyPeer.start();
    await pyBound(py, pyAddr.path(path), "stream");
    expectSystemError(await caught(() => UnixSeqpacket.connect(path)), {
      code: "EPROTOTYPE",
      errno: 91,
      syscall: "connect",
    });
  });

  test("an aborted signal stops a connect waiting on a full backlog", async () => {
    const name = `\0${uniqueName("abortconnect")}`;
    using server = UnixListener.listen(name, { backlog: 0 });
    const held = await UnixStream.connect(name); // fills backlog 0 (+1)
    try {
      const reason = new Error("gave up");
      const ac = new AbortController();
      const pending = UnixStream.connect(name, { signal: ac.signal });
      setTimeout(() => ac.abort(reason), 30);
      expect(await caught(() => pending)).toBe(reason);
    } finally {
      held.close();
    }
  });
});
