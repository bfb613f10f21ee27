/**
 * AF_UNIX addresses: filesystem paths, the short abstract form and libqb's
 * padded abstract form, checked against Python and C peers in both
 * directions; invalid addresses are refused before any system call.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import {
  QbunArgumentError,
  QbunSystemError,
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
  type AddressInput,
} from "../src/unix/index.ts";
import { bytes, openFdCount, tempDir, text, uniqueName } from "./helpers/env.ts";
import { compileC, removeCBuilds, Peer, PyPeer, pyAddr } from "./helpers/peers.ts";

afterAll(removeCBuilds);

/** Expect `fn` to fail with a QbunSystemError of this code from this syscall. */
async function expectSystemError(fn: () => unknown, code: string, syscall: string): Promise<QbunSystemError> {
  let caught: unknown;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(QbunSystemError);
  const error = caught as QbunSystemError;
  expect({ code: error.code, syscall: error.syscall }).toEqual({ code, syscall });
  return error;
}

describe("invalid addresses are rejected before any system call", () => {
  /** Every way of using an address: each must refuse `address` with QbunArgumentError. */
  const uses: [string, (a: AddressInput) => unknown][] = [
    ["UnixListener.listen", (a) => UnixListener.listen(a)],
    ["UnixListener.listen seqpacket", (a) => UnixListener.listen(a, { type: "seqpacket" })],
    ["UnixStream.connect", (a) => UnixStream.connect(a)],
    ["UnixSeqpacket.connect", (a) => UnixSeqpacket.connect(a)],
    ["UnixDatagram.bound", (a) => UnixDatagram.bound(a)],
  ];

  async function expectRejected(address: AddressInput, message: RegExp) {
    for (const [name, use] of uses) {
      const before = openFdCount();
      let caught: unknown;
      try {
        await use(address);
      } catch (error) {
        caught = error;
      }
      expect(caught, name).toBeInstanceOf(QbunArgumentError);
      expect((caught as QbunArgumentError).code).toBe("ERR_INVALID_ARG_VALUE");
      expect((caught as Error).message).toMatch(message);
      // No socket was created for the attempt.
      expect(openFdCount(), name).toBe(before);
    }
  }

  test("a path longer than 107 bytes, and nothing is created", async () => {
    using dir = tempDir("long");
    const name = "x".repeat(108 - dir.path.length - 1); // dir + "/" + name = 108 bytes
    const path = `${dir.path}/${name}`;
    expect(Buffer.byteLength(path)).toBe(108);
    await expectRejected(path, /108 bytes/);
    await expectRejected({ path }, /108 bytes/);
    expect(readdirSync(dir.path)).toEqual([]);
  });

  test("the limit counts UTF-8 bytes, not characters", async () => {
    using dir = tempDir("utf8");
    const name = "é".repeat(Math.ceil((108 - dir.path.length) / 2)); // 2 bytes each
    const path = `${dir.path}/${name}`;
    expect(path.length).toBeLessThan(108);
    expect(Buffer.byteLength(path)).toBeGreaterThan(107);
    await expectRejected(path, /bytes/);
    expect(readdirSync(dir.path)).toEqual([]);
  });

  test("a path with a NUL byte inside, and no file is created at the prefix", async () => {
    using dir = tempDir("nul");
    await expectRejected(`${dir.path}/a\0b`, /NUL/);
    await expectRejected({ path: `${dir.path}/a\0` }, /NUL/);
    expect(readdirSync(dir.path)).toEqual([]);
  });

  test("an empty path", async () => {
    await expectRejected("", /empty/);
    await expectRejected({ path: "" }, /empty/);
  });

  test("an abstract name longer than 107 bytes, in either form", async () => {
    const name = uniqueName("abs").padEnd(108, "n");
    await expectRejected(`\0${name}`, /abstract/);
    await expectRejected({ abstract: name }, /abstract/);
    await expectRejected({ abstract: name, padded: true }, /abstract/);
    await expectRejected({ abstract: new Uint8Array(108).fill(65) }, /abstract/);
  });

  test("sendTo an invalid address is refused and the socket stays usable", async () => {
    using a = UnixDatagram.bound(`\0${uniqueName("dg")}`);
    using b = UnixDatagram.unbound();
    let caught: unknown;
    try {
      await b.sendTo({ path: "" }, bytes("x"));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(QbunArgumentError);
    const to = a.localAddress();
    if (to.kind !== "abstract") throw new Error("expected an abstract address");
    await b.sendTo({ abstract: to.name }, bytes("still works"));
    expect(text((await a.receive()).data)).toBe("still works");
  });
});

describe("boundary lengths are accepted", () => {
  test("a 107-byte path binds, is connectable and is reported back exactly", async () => {
    using dir = tempDir("max");
    const path = `${dir.path}/${"p".repeat(107 - dir.path.length - 1)}`;
    expect(Buffer.byteLength(path)).toBe(107);
    await using py = await PyPeer.start();
    {
      using server = UnixListener.listen(path);
      expect(existsSync(path)).toBe(true);
      expect(server.localAddress()).toEqual({ kind: "path", path });
      const { sock } = await py.call("socket", { type: "stream" });
      await py.call("connect", { sock, addr: pyAddr.path(path) });
      using conn = await server.accept();
      await py.call("send", { sock, text: "hi" });
      expect(text(await conn.read())).toBe("hi");
    }
    expect(existsSync(path)).toBe(false);
  });

  test("a 107-byte abstract name binds and is connectable (both forms coincide at full length)", async () => {
    const name = uniqueName("abs107").padEnd(107, "n");
    using server = UnixListener.listen({ abstract: name });
    // 3 + 107 = 110 bytes: the short form of a full-length name is the padded form.
    expect(server.localAddress()).toEqual({ kind: "abstract", name, padded: true });
    for (const address of [`\0${name}`, { abstract: name, padded: true }] as const) {
      using c = await UnixStream.connect(address);
      using s = await server.accept();
      await c.write(bytes("x"));
      expect(text(await s.read())).toBe("x");
    }
  });
});

describe("filesystem paths", () => {
  test("Python connects to a qbun listener at a path, and qbun to a Python one", async () => {
    using dir = tempDir("fs");
    await using py = await PyPeer.start();
    // qbun listens, Python connects.
    const qbunPath = dir.file("qbun.sock");
    using server = UnixListener.listen(qbunPath);
    const { sock: client } = await py.call("socket", { type: "stream" });
    await py.call("connect", { sock: client, addr: pyAddr.path(qbunPath) });
    using accepted = await server.accept();
    await accepted.write(bytes("from qbun"));
    expect((await py.call("recv", { sock: client })).text).toBe("from qbun");

    // Python listens, qbun connects.
    const pyPath = dir.file("py.sock");
    const { sock: listener } = await py.call("socket", { type: "stream" });
    await py.call("bind", { sock: listener, addr: pyAddr.path(pyPath) });
    await py.call("listen", { sock: listener });
    using conn = await UnixStream.connect(pyPath);
    const { sock: pyConn } = await py.call("accept", { sock: listener });
    expect(conn.peerAddress()).toEqual({ kind: "path", path: pyPath });
    await py.call("send", { sock: pyConn, text: "from python" });
    expect(text(await conn.read())).toBe("from python");
  });
});

describe("abstract names: the short and the padded form are different sockets", () => {
  test("qbun can hold both forms of one name at once", async () => {
    const name = uniqueName("both");
    using short = UnixListener.listen(`\0${name}`);
    using padded = UnixListener.listen({ abstract: name, padded: true });
    expect(short.localAddress()).toEqual({ kind: "abstract", name, padded: false });
    expect(padded.localAddress()).toEqual({ kind: "abstract", name, padded: true });

    using c1 = await UnixStream.connect({ abstract: name, padded: true });
    using s1 = await padded.accept();
    await c1.write(bytes("to padded"));
    expect(text(await s1.read())).toBe("to padded");

    using c2 = await UnixStream.connect({ abstract: name });
    using s2 = await short.accept();
    await c2.write(bytes("to short"));
    expect(text(await s2.read())).toBe("to short");
  });

  test("Python binds the short form: qbun reaches it short, the padded form is refused", async () => {
    const name = uniqueName("pyshort");
    await using py = await PyPeer.start();
    const { sock: listener } = await py.call("socket", { type: "stream" });
    await py.call("bind", { sock: listener, addr: pyAddr.abstract(name) });
    await py.call("listen", { sock: listener });

    await expectSystemError(() => UnixStream.connect({ abstract: name, padded: true }), "ECONNREFUSED", "connect");

    for (const address of [`\0${name}`, { abstract: name }] as const) {
      using conn = await UnixStream.connect(address);
      const { sock } = await py.call("accept", { sock: listener });
      expect(conn.peerAddress()).toEqual({ kind: "abstract", name, padded: false });
      await py.call("send", { sock, text: "short ok" });
      expect(text(await conn.read())).toBe("short ok");
    }
  });

  test("Python binds the 110-byte padded form: qbun reaches it with padded: true only", async () => {
    const name = uniqueName("pypadded");
    await using py = await PyPeer.start();
    const { sock: listener } = await py.call("socket", { type: "stream" });
    await py.call("bind", { sock: listener, addr: pyAddr.padded(name) });
    await py.call("listen", { sock: listener });
    expect((await py.call("getsockname", { sock: listener })).addr).toEqual(pyAddr.padded(name));

    await expectSystemError(() => UnixStream.connect(`\0${name}`), "ECONNREFUSED", "connect");

    using conn = await UnixStream.connect({ abstract: name, padded: true });
    const { sock } = await py.call("accept", { sock: listener });
    expect(conn.peerAddress()).toEqual({ kind: "abstract", name, padded: true });
    await conn.write(bytes("padded ok"));
    expect((await py.call("recv", { sock })).text).toBe("padded ok");
  });

  test("a C peer on libqb's padded address answers a qbun client using padded: true", async () => {
    const name = uniqueName("cpadded");
    await using peer = await Peer.spawn([await compileC("unix_c_peer"), "padded-server", name]);
    await expectSystemError(() => UnixStream.connect({ abstract: name }), "ECONNREFUSED", "connect");
    using conn = await UnixStream.connect({ abstract: name, padded: true });
    await conn.write(bytes("hello from qbun"));
    expect(text(await conn.read())).toBe("c-echo:hello from qbun");
    expect(await conn.read()).toBeNull(); // the C server closes after answering
  });

  test("a qbun listener on the padded form is reached by a C client in the padded form only", async () => {
    const name = uniqueName("qpadded");
    const cpeer = await compileC("unix_c_peer");
    using server = UnixListener.listen({ abstract: name, padded: true });
    const served = (async () => {
      using conn = await server.accept();
      const msg = await conn.read();
      await conn.write(bytes(`qbun-echo:${text(msg)}`));
    })();

    const padded = Bun.spawn([cpeer, "connect", "padded", name], { stdout: "pipe" });
    const short = Bun.spawn([cpeer, "connect", "short", name], { stdout: "pipe" });
    try {
      expect((await new Response(short.stdout).text()).trim()).toBe("ERR ECONNREFUSED");
      expect((await new Response(padded.stdout).text()).trim()).toBe("REPLY qbun-echo:ping");
      await served;
    } finally {
      padded.kill("SIGKILL");
      short.kill("SIGKILL");
    }
  });

  test("a qbun listener on the short form is reached by Python in the short form only", async () => {
    const name = uniqueName("qshort");
    using server = UnixListener.listen({ abstract: name });
    await using py = await PyPeer.start();
    const { sock: a } = await py.call("socket", { type: "stream" });
    const refused = await py.request("connect", { sock: a, addr: pyAddr.padded(name) });
    expect(refused).toMatchObject({ ok: false, code: "ECONNREFUSED" });

    const { sock: b } = await py.call("socket", { type: "stream" });
    await py.call("connect", { sock: b, addr: pyAddr.abstract(name) });
    using conn = await server.accept();
    await conn.write(bytes("short"));
    expect((await py.call("recv", { sock: b })).text).toBe("short");
  });

  test("datagrams: a padded-bound qbun socket gets Python's datagrams sent to the padded form, and sees its padded sender", async () => {
    const name = uniqueName("dgpad");
    const pyName = uniqueName("dgpad-py");
    using sock = UnixDatagram.bound({ abstract: name, padded: true });
    await using py = await PyPeer.start();
    const { sock: s } = await py.call("socket", { type: "datagram" });
    await py.call("bind", { sock: s, addr: pyAddr.padded(pyName) });

    const wrong = await py.request("send", { sock: s, text: "lost", to: pyAddr.abstract(name) });
    expect(wrong).toMatchObject({ ok: false, code: "ECONNREFUSED" });

    await py.call("send", { sock: s, text: "padded dgram", to: pyAddr.padded(name) });
    const msg = await sock.receive();
    expect(text(msg.data)).toBe("padded dgram");
    expect(msg.from).toEqual({ kind: "abstract", name: pyName, padded: true });

    // And the reply goes back to the padded sender address.
    await sock.sendTo({ abstract: pyName, padded: true }, bytes("reply"));
    const got = await py.call("recv", { sock: s });
    expect(got.text).toBe("reply");
    expect(got.from).toEqual(pyAddr.padded(name));
  });
});

describe("reported addresses can be used again", () => {
  test("a datagram's `from` (padded, short or path) is a valid sendTo address", async () => {
    using dir = tempDir("from");
    const senders = [
      UnixDatagram.bound({ abstract: uniqueName("from-padded"), padded: true }),
      UnixDatagram.bound(`\0${uniqueName("from-short")}`),
      UnixDatagram.bound(dir.file("from.sock")),
    ];
    using receiver = UnixDatagram.bound(`\0${uniqueName("from-rx")}`);
    try {
      for (const sender of senders) {
        await sender.sendTo(receiver.localAddress(), bytes("ping"));
        const msg = await receiver.receive({ signal: AbortSignal.timeout(5000) });
        await receiver.sendTo(msg.from!, bytes("pong"));
        expect(text((await sender.receive({ signal: AbortSignal.timeout(5000) })).data)).toBe("pong");
      }
      expect(() => receiver.sendTo({ kind: "unnamed" }, bytes("x"))).toThrow(QbunArgumentError);
    } finally {
      for (const s of senders) s.close();
    }
  });
});
