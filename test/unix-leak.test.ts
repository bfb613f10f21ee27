/**
 * Leaks: thousands of connections and fd passes leave this process's fd
 * table and /dev/shm as they were. Dropped handles close via
 * FinalizationRegistry, so counts are taken after a full GC; the baseline is
 * taken after a warm-up (the reactor opens its own fds on first use).
 */
import { describe, expect, test } from "bun:test";
import { fstatSync, openSync, closeSync } from "node:fs";
import {
  UnixDatagram,
  UnixListener,
  UnixSeqpacket,
  UnixStream,
  type ReceivedMessage,
} from "../src/unix/index.ts";
import { bytes, openFdCount, settledFdCount, shmListing, text, uniqueName } from "./helpers/env.ts";

const CYCLES = 10_000;

/** Run `body` after a warm-up; expect fds and /dev/shm back at the baseline after it. */
async function expectNoLeak(warmUp: () => Promise<void>, body: () => Promise<void>): Promise<void> {
  await warmUp();
  const fdsBefore = await settledFdCount();
  const shmBefore = shmListing();
  await body();
  // At most the baseline: a warm-up message that a conservative stack scan
  // kept alive through the baseline's GC may be collected during the body.
  expect(await settledFdCount(fdsBefore)).toBeLessThanOrEqual(fdsBefore);
  expect(shmListing()).toEqual(shmBefore);
}

describe("leaks", () => {
  test(`${CYCLES} connect/send/close cycles`, async () => {
    const name = `\0${uniqueName("leak-conn")}`;
    const server = UnixListener.listen(name);
    let bytesServed = 0;
    const done = server.serve(async (conn) => {
      using c = conn;
      for await (const chunk of c) bytesServed += chunk.length;
    });
    const cycle = async (i: number) => {
      const client = await UnixStream.connect(name);
      await client.write(bytes(`message ${i % 10}`)); // 9 bytes
      client.close();
    };
    try {
      await expectNoLeak(
        async () => {
          for (let i = 0; i < 100; i++) await cycle(i);
        },
        async () => {
          for (let i = 0; i < CYCLES; i++) await cycle(i);
          // Let the server finish reading the last connections.
          for (let t = 0; t < 200 && bytesServed < (CYCLES + 100) * 9; t++) await Bun.sleep(5);
        },
      );
      expect(bytesServed).toBe((CYCLES + 100) * 9);
    } finally {
      server.close();
    }
    await done;
  });

  test("sockets dropped without close() are released once collected", async () => {
    const name = `\0${uniqueName("leak-drop")}`;
    using server = UnixListener.listen(name);
    await expectNoLeak(
      async () => {
        (await UnixStream.connect(name)).close();
        (await server.accept()).close();
      },
      async () => {
        for (let i = 0; i < 500; i++) {
          await UnixStream.connect(name); // dropped
          await server.accept(); // dropped
          UnixDatagram.pair(); // dropped
        }
        expect(openFdCount()).toBeGreaterThan(1000); // still open until collected
        // Conservative stack scanning may still see the last handles created: make them closed ones.
        for (const s of UnixSeqpacket.pair()) s.close();
      },
    );
  });

  test(`${CYCLES} fd passes over stream, seqpacket and datagram sockets`, async () => {
    const streams = UnixStream.pair();
    const seqpackets = UnixSeqpacket.pair();
    const datagrams = UnixDatagram.pair();
    const file = openSync("/dev/null", "r");
    const ino = fstatSync(file).ino;
    const pass = async (i: number) => {
      let msg: ReceivedMessage | null;
      switch (i % 3) {
        case 0:
          await streams[0].sendMessage(bytes("f"), { fds: [file] });
          msg = await streams[1].receiveMessage();
          break;
        case 1:
          await seqpackets[0].send(bytes("f"), { fds: [file, file] });
          msg = await seqpackets[1].receive();
          break;
        default:
          await datagrams[0].send(bytes("f"), { fds: [file] });
          msg = await datagrams[1].receive();
      }
      if (!msg || msg.fds.length === 0) throw new Error(`pass ${i}: no fd arrived`);
      if (i % 1000 === 0) expect(fstatSync(msg.fds[0]!.fd).ino).toBe(ino);
      // Half are disposed, half dropped for the GC to close.
      if (i % 2 === 0) msg[Symbol.dispose]();
    };
    try {
      await expectNoLeak(
        async () => {
          for (let i = 0; i < 30; i++) await pass(i);
        },
        async () => {
          for (let i = 0; i < CYCLES; i++) await pass(i);
          await pass(0); // disposed last: see the note on conservative stack scanning above
        },
      );
    } finally {
      for (const s of [...streams, ...seqpackets, ...datagrams]) s.close();
      closeSync(file);
    }
  });

  test("truncated fd messages (more fds than maxFds) leak nothing", async () => {
    const [a, b] = UnixSeqpacket.pair();
    const file = openSync("/dev/null", "r");
    const roundTrip = async () => {
      await a.send(bytes("many"), { fds: [file, file, file, file, file, file, file] });
      using msg = (await b.receive({ maxFds: 2 }))!;
      if (!msg.controlTruncated || msg.fds.length !== 2) throw new Error("expected a truncated message with 2 fds");
      return text(msg.data);
    };
    try {
      await expectNoLeak(
        async () => void (await roundTrip()),
        async () => {
          for (let i = 0; i < 1000; i++) await roundTrip();
        },
      );
    } finally {
      a.close();
      b.close();
      closeSync(file);
    }
  });
});
