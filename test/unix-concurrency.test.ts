/**
 * Many clients at once against one qbun server: 100 qbun clients (stream,
 * seqpacket, datagram) and 100 threads of a gcc-built C client.
 */
import { afterAll, describe, expect, test } from "bun:test";
import {
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
} from "../src/unix/index.ts";
import { bytes, settlesWithin, tempDir, text, uniqueName } from "./helpers/env.ts";
import { compileC, removeCBuilds, Peer } from "./helpers/peers.ts";

afterAll(removeCBuilds);

const N = 100;

/** A line-echo stream server: reads up to "\n", answers "echo:" + line, closes. */
function lineEchoServer(server: UnixListener) {
  let served = 0;
  const done = server.serve(async (conn) => {
    using c = conn;
    let line = "";
    for await (const chunk of c) {
      line += text(chunk);
      if (line.endsWith("\n")) break;
    }
    await c.write(bytes(`echo:${line}`));
    served++;
  });
  return { done, served: () => served };
}

describe("100 concurrent clients against one qbun server", () => {
  test("stream: qbun clients, each gets its own answer", async () => {
    using dir = tempDir("conc");
    const path = dir.file("s.sock");
    const server = UnixListener.listen(path);
    const echo = lineEchoServer(server);
    try {
      const clients = await Promise.all(Array.from({ length: N }, () => UnixStream.connect(path)));
      const replies = await Promise.all(
        clients.map(async (c, i) => {
          using conn = c;
          await conn.write(bytes(`client-${i}\n`));
          let all = "";
          for await (const chunk of conn) all += text(chunk);
          return all;
        }),
      );
      expect(replies).toEqual(Array.from({ length: N }, (_, i) => `echo:client-${i}\n`));
      expect(echo.served()).toBe(N);
    } finally {
      server.close();
    }
    await echo.done;
  });

  test("stream: connections are served concurrently, not one after another", async () => {
    // Client i sends only after client i+1 got its answer, the last one first:
    // a server that finished one connection before accepting the next would
    // wait on client 0 forever.
    const name = `\0${uniqueName("chain")}`;
    const server = UnixListener.listen(name);
    const echo = lineEchoServer(server);
    try {
      const clients = [];
      for (let i = 0; i < N; i++) clients.push(await UnixStream.connect(name));
      const answers: string[] = [];
      const chain = (async () => {
        for (let i = N - 1; i >= 0; i--) {
          using c = clients[i]!;
          await c.write(bytes(`client-${i}\n`));
          answers.push(text(await c.read())!);
        }
      })();
      expect(await settlesWithin(chain, 10_000)).toBeUndefined();
      expect(answers[0]).toBe(`echo:client-${N - 1}\n`);
      expect(answers[N - 1]).toBe("echo:client-0\n");
      expect(echo.served()).toBe(N);
    } finally {
      server.close();
    }
  });

  test("stream: a C program opening 100 connections from 100 threads", async () => {
    using dir = tempDir("conc-c");
    const path = dir.file("s.sock");
    const server = UnixListener.listen(path);
    const echo = lineEchoServer(server);
    try {
      await using peer = await Peer.spawn([await compileC("unix_c_peer"), "many", path, String(N)]);
      expect(await peer.line(20_000)).toBe(`OK ${N}`);
      expect(await settlesWithin(peer.proc.exited, 5000)).toBe(0);
      expect(echo.served()).toBe(N);
    } finally {
      server.close();
    }
    await echo.done;
  });

  test("seqpacket: 100 clients each exchange several messages", async () => {
    const name = `\0${uniqueName("conc-seq")}`;
    const server = UnixListener.listen(name, { type: "seqpacket" });
    const done = server.serve(async (conn) => {
      using c = conn;
      for await (const msg of c) {
        using m = msg;
        await c.send(bytes(`re:${text(m.data)}`));
      }
    });
    try {
      const results = await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          using c = await UnixSeqpacket.connect(name);
          const got: string[] = [];
          for (let k = 0; k < 3; k++) {
            await c.send(bytes(`${i}/${k}`));
            got.push(text((await c.receive())!.data)!);
          }
          return got;
        }),
      );
      results.forEach((got, i) => expect(got).toEqual([`re:${i}/0`, `re:${i}/1`, `re:${i}/2`]));
    } finally {
      server.close();
    }
    await done;
  });

  test("datagram: 100 bound clients, the server answers each sender address", async () => {
    const name = uniqueName("conc-dg");
    using server = UnixDatagram.bound({ abstract: name });
    const serving = (async () => {
      for (let i = 0; i < N; i++) {
        using msg = await server.receive();
        if (msg.from?.kind !== "abstract") throw new Error(`unexpected sender ${JSON.stringify(msg.from)}`);
        await server.sendTo({ abstract: msg.from.name }, bytes(`re:${text(msg.data)}`));
      }
    })();
    const replies = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        using c = UnixDatagram.bound({ abstract: `${name}-c${i}` });
        await c.sendTo({ abstract: name }, bytes(`dg ${i}`));
        using reply = await c.receive();
        return text(reply.data);
      }),
    );
    await serving;
    expect(replies).toEqual(Array.from({ length: N }, (_, i) => `re:dg ${i}`));
  });
});

describe("a socket that never runs dry does not keep the event loop to itself", () => {
  // Each receive that finds data resolves at once (in a microtask): a loop of
  // them would otherwise run until the data ends, and a flooding peer's data
  // need not end. The loop must let a pending setImmediate run within 64.
  async function receivesBeforeATurn(receiveOne: () => Promise<unknown>, total: number): Promise<number> {
    let done = 0;
    let atTurn = -1;
    setImmediate(() => (atTurn = done));
    for (; done < total; done++) await receiveOne();
    return atTurn;
  }

  test("stream reads and readInto", async () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    await b.write(new Uint8Array(64 * 1024));
    const into = new Uint8Array(16);
    const reads = await receivesBeforeATurn(() => a.read({ maxBytes: 16 }), 1000);
    expect(reads).toBeGreaterThanOrEqual(0);
    expect(reads).toBeLessThanOrEqual(64);
    const intos = await receivesBeforeATurn(() => a.readInto(into), 1000);
    expect(intos).toBeGreaterThanOrEqual(0);
    expect(intos).toBeLessThanOrEqual(64);
  });

  test("seqpacket and datagram receives", async () => {
    const [a, b] = UnixSeqpacket.pair();
    using _a = a;
    using _b = b;
    for (let i = 0; i < 150; i++) await b.send(bytes(`m${i}`));
    const seq = await receivesBeforeATurn(() => a.receive(), 150);
    expect(seq).toBeGreaterThanOrEqual(0);
    expect(seq).toBeLessThanOrEqual(64);

    // A pair: a datagram socket's queue is not capped at net.unix.max_dgram_qlen for its own peer.
    const [server, sender] = UnixDatagram.pair();
    using _server = server;
    using _sender = sender;
    let sent = 0;
    while (sent < 150 && sender.trySend(bytes(`d${sent}`))) sent++;
    const dgrams = await receivesBeforeATurn(() => server.receive(), sent);
    expect(sent).toBeGreaterThan(64);
    expect(dgrams).toBeGreaterThanOrEqual(0);
    expect(dgrams).toBeLessThanOrEqual(64);
  });
});
