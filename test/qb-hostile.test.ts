/**
 * Untrusted clients: garbage handshakes, corrupted rings written by a
 * hostile client (this test, writing raw bytes into the shared files) and
 * malformed request datagrams on the socket transport. The
 * server drops the offender, logs why, removes its files, and keeps serving
 * a real libqb client.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { QbClient, QbServer, RingCorruptError, interopHandler, type QbConnection } from "../src/qb/index.ts";
import { libqbAbstract } from "../src/qb/socket-names.ts";
import { Semaphore, SharedMemory } from "../src/shm/index.ts";
import { UnixDatagram, UnixStream } from "../src/unix/index.ts";
import { shmListing, uniqueName } from "./helpers/env.ts";
import { compileC, removeCBuilds } from "./helpers/peers.ts";

let client = "";
let server: QbServer;
const errors: unknown[] = [];
const disconnected: QbConnection[] = [];
let shmBefore: string[];

beforeAll(async () => {
  client = await compileC("qb_client", ["-lqb"]);
  shmBefore = shmListing();
  server = await QbServer.listen({
    name: uniqueName("hostile"),
    handler: interopHandler,
    handshakeTimeout: 300,
    onError: (error) => errors.push(error),
    onDisconnect: (c) => disconnected.push(c),
  });
});

afterAll(async () => {
  await server.stop();
  removeCBuilds();
  expect(shmListing()).toEqual(shmBefore);
});

const address = () => ({ abstract: server.name, padded: true });

async function libqbStillServed(): Promise<void> {
  const proc = Bun.spawn([client, server.name, "echo", "300", "100"], { stdout: "pipe" });
  expect(await proc.exited).toBe(0);
}

async function eventually(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(5);
  }
}

/** Handshake by hand; returns the setup socket and the request ring's files mapped read-write. */
async function attach() {
  const setup = await UnixStream.connect(address());
  const request = new Uint8Array(24);
  const view = new DataView(request.buffer);
  view.setInt32(0, -1, true);
  view.setInt32(8, 24, true);
  view.setUint32(16, 12328, true);
  await setup.write(request);
  const response = await setup.readExactly(12328);
  const rv = new DataView(response.buffer);
  expect(rv.getInt32(16, true)).toBe(0);
  const prefixEnd = response.indexOf(0, 40);
  const prefix = new TextDecoder().decode(response.subarray(40, prefixEnd));
  const header = SharedMemory.openFile({ path: `${prefix}-header` });
  const data = SharedMemory.openFile({ path: `${prefix}-data` });
  const headerMap = header.map({ guard: true }); // this hostile client truncates files itself
  const dataMap = data.map({ guard: true });
  header.close();
  data.close();
  const h = new DataView(headerMap.bytes.buffer, headerMap.bytes.byteOffset, headerMap.length);
  const d = new DataView(dataMap.bytes.buffer, dataMap.bytes.byteOffset, dataMap.length);
  const sem = Semaphore.open(headerMap, 8208);
  return {
    setup,
    prefix,
    h,
    d,
    /** Commit a chunk at write_pt with this length word, magic and payload, then notify. */
    async commit(lengthWord: number, magic: number, payload: Uint8Array = new Uint8Array(0)) {
      const w = h.getUint32(0, true);
      d.setUint32(w * 4, lengthWord, true);
      new Uint8Array(d.buffer, d.byteOffset + (w + 2) * 4, payload.length).set(payload);
      d.setUint32((w + 1) * 4, magic, true);
      h.setUint32(0, w + 2 + Math.ceil(payload.length / 4), true);
      sem.post();
      await setup.write(new Uint8Array([1]));
    },
    close() {
      setup.close();
      headerMap.close();
      dataMap.close();
    },
  };
}

function requestBytes(id: number, size: number, payloadLength: number): Uint8Array {
  const bytes = new Uint8Array(16 + payloadLength);
  const v = new DataView(bytes.buffer);
  v.setInt32(0, id, true);
  v.setInt32(8, size, true);
  return bytes;
}

describe("garbage handshakes", () => {
  test("a wrong connection-request id is closed without an answer", async () => {
    await using setup = await UnixStream.connect(address());
    await setup.write(new Uint8Array(24).fill(0x41));
    expect(await setup.read({ signal: AbortSignal.timeout(3000) })).toBeNull();
    await libqbStillServed();
  });

  test("a client that sends a partial request and goes away leaves nothing behind", async () => {
    const setup = await UnixStream.connect(address());
    await setup.write(new Uint8Array(5));
    setup.close();
    await libqbStillServed();
    await eventually(() => server.stats().activeConnections === 0);
    await eventually(() => shmListing().length === shmBefore.length);
    expect(shmListing()).toEqual(shmBefore);
  });

  test("a client that never sends its request is dropped after the handshake timeout", async () => {
    await using setup = await UnixStream.connect(address());
    const started = performance.now();
    expect(await setup.read({ signal: AbortSignal.timeout(3000) })).toBeNull();
    expect(performance.now() - started).toBeLessThan(2000);
    await libqbStillServed();
  });
});

describe("a client flooding its setup socket", () => {
  test.each(["shm", "socket"] as const)("with bytes and no requests does not starve the other connections (%s transport)", async (transport) => {
    // SHM reads these bytes as wake-ups; the socket transport only watches the stream for its end.
    await using target = transport === "shm" ? undefined : await QbServer.listen({ name: uniqueName("flood-sock"), transport, handler: interopHandler });
    const name = target?.name ?? server.name;
    // Another process, so that it floods while this one serves: libqb's
    // handshake by hand, then 64 KiB writes of notification bytes for ever,
    // through a send buffer so large that the server never drains it.
    const script = [
      "import socket, struct, sys",
      "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
      "s.connect(('\\0' + sys.argv[1]).encode().ljust(108, b'\\0'))",
      "try:",
      "    s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE (root): never short of bytes to send",
      "except PermissionError:",
      "    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)",
      "s.sendall(struct.pack('<iiiiII', -1, 0, 24, 0, 12328, 0))",
      "got = 0",
      "while got < 12328:",
      "    got += len(s.recv(12328 - got))",
      "print('READY', flush=True)",
      "junk = b'\\1' * 65536",
      "while True:",
      "    s.sendall(junk)",
    ].join("\n");
    const flood = Bun.spawn(["python3", "-c", script, name], { stdout: "pipe", stderr: "inherit" });
    const reader = flood.stdout.getReader();
    try {
      let said = "";
      while (!said.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        said += new TextDecoder().decode(value);
      }
      expect(said).toBe("READY\n");
      await Bun.sleep(100); // flooding by now
      const started = performance.now();
      const echoes = Bun.spawn([client, name, "echo", "300", "100"], { stdout: "pipe" }); // on another connection
      expect(await echoes.exited).toBe(0);
      expect(performance.now() - started).toBeLessThan(5000);
    } finally {
      flood.kill();
      await flood.exited;
      await reader.cancel(); // its pipe's fd closes now, not at some later collection
    }
    await eventually(() => (target ?? server).stats().activeConnections === 0);
  });
});

describe("a hostile client corrupting its request ring is dropped; others carry on", () => {
  const cases: [string, (c: Awaited<ReturnType<typeof attach>>) => Promise<void>][] = [
    ["bad magic", (c) => c.commit(16, 0x12345678, requestBytes(1, 16, 0))],
    ["a length beyond the ring", (c) => c.commit(0xffffff00, 0xa1a1a1a1)],
    ["a read pointer outside the ring", async (c) => {
      c.h.setUint32(4, 0x0fffffff, true);
      await c.commit(16, 0xa1a1a1a1, requestBytes(1, 16, 0));
    }],
    ["a chunk too short for a request header", (c) => c.commit(3, 0xa1a1a1a1, new Uint8Array(3))],
  ];

  cases.push([
    "truncating its request ring's data file (SIGBUS for an unguarded server)",
    async (c) => {
      const data = SharedMemory.openFile({ path: `${c.prefix}-data` });
      data.resize(0);
      data.close();
      await c.commit(16, 0xa1a1a1a1, requestBytes(1, 16, 0));
    },
  ]);
  cases.push([
    "truncating its response ring's files before the response is written",
    async (c) => {
      for (const suffix of ["data", "header"]) {
        const file = SharedMemory.openFile({ path: `${c.prefix.replace("qb-request-", "qb-response-")}-${suffix}` });
        file.resize(0);
        file.close();
      }
      await c.commit(20, 0xa1a1a1a1, requestBytes(1, 20, 4));
    },
  ]);

  test.each(cases)("%s", async (_what, corrupt) => {
    const before = disconnected.length;
    const errorsBefore = errors.length;
    const hostile = await attach();
    try {
      await corrupt(hostile);
      // Other tests' clients may disconnect meanwhile: wait for this one's report.
      await eventually(() => errors.slice(errorsBefore).some((e) => e instanceof RingCorruptError));
      expect(disconnected.length).toBeGreaterThan(before);
      expect(await hostile.setup.read({ signal: AbortSignal.timeout(3000) })).toBeNull(); // server hung up
    } finally {
      hostile.close();
    }
    await libqbStillServed();
    await eventually(() => server.stats().activeConnections === 0);
    await eventually(() => shmListing().length === shmBefore.length);
    expect(shmListing()).toEqual(shmBefore);
  });
});

describe("malformed requests are refused, the connection stays usable", () => {
  test("a header size larger than the chunk → -EBADMSG; a chunk above the negotiated size → -EMSGSIZE", async () => {
    const c = await attach();
    try {
      await c.commit(16, 0xa1a1a1a1, requestBytes(1, 4000, 0)); // claims 4000 bytes, has 16
      const oversized = requestBytes(1, 12400, 12400 - 16); // fits the 16 KiB ring, exceeds the 12328 maximum
      await c.commit(oversized.length, 0xa1a1a1a1, oversized);
      await c.commit(20, 0xa1a1a1a1, requestBytes(1, 20, 4)); // a good echo
      const connection = server.connections().at(-1)!;
      await eventually(() => connection.stats().responses === 3);
      expect(connection.closed).toBe(false);
      // Read the three responses straight from the response ring's data file.
      const data = SharedMemory.openFile({ path: `${responsePrefix(connection)}-data`, readOnly: true });
      using map = data.map();
      data.close();
      const errorsSeen: number[] = [];
      let word = 0;
      for (let i = 0; i < 3; i++) {
        const len = map.view.readUint32(word * 4);
        expect(map.view.readUint32((word + 1) * 4)).toBe(0xa1a1a1a1);
        errorsSeen.push(map.view.readInt32((word + 2) * 4 + 16));
        word += 2 + Math.ceil(len / 4);
      }
      expect(errorsSeen).toEqual([-74, -90, 0]); // EBADMSG, EMSGSIZE, then the echo
    } finally {
      c.close();
    }
  });
});

describe("socket transport: malformed request datagrams are refused, the connection stays usable", () => {
  test("above the negotiated size → -EMSGSIZE; a header size beyond the datagram → -EBADMSG", async () => {
    await using socketServer = await QbServer.listen({ name: uniqueName("hostile-sock"), transport: "socket", handler: interopHandler });
    await using qb = await QbClient.connect(socketServer.name);
    // The server's request socket takes datagrams from anyone until it first
    // answers (libqb's behaviour too): send raw ones from a socket of our own.
    const dir = shmListing().find((d) => d.startsWith(`qb-${process.pid}-${process.pid}-`) && existsSync(`/dev/shm/${d}/qb-control-${socketServer.name}`));
    expect(dir).toBeDefined();
    using raw = UnixDatagram.unbound();
    const to = libqbAbstract(`/dev/shm/${dir}/qb-${socketServer.name}-request`);
    const header = (id: number, size: number, payload: number) => {
      const bytes = new Uint8Array(16 + payload);
      const view = new DataView(bytes.buffer);
      view.setInt32(0, id, true);
      view.setInt32(8, size, true);
      return bytes;
    };
    await raw.sendTo(to, header(1, qb.maxMessageSize + 100, qb.maxMessageSize + 100 - 16)); // larger than negotiated
    await raw.sendTo(to, header(1, 4000, 8)); // claims 4000 bytes, has 24
    const connection = socketServer.connections()[0]!;
    await eventually(() => connection.stats().responses === 2);
    expect(connection.closed).toBe(false);
    // The answers went to the connection's client, in order, ahead of its own
    // request's: a client reading three responses gets them first.
    for (let i = 0; i < 3; i++) await qb.send(1, new TextEncoder().encode("still served"));
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await qb.receive({ timeout: 3000 }));
    expect(answers.map((a) => a.error)).toEqual([-90, -74, 0]); // EMSGSIZE, EBADMSG, then the echo
    expect(new TextDecoder().decode(answers[2]!.data)).toBe("still served");
  });
});

/** The response ring prefix of a connection, from its directory in /dev/shm. */
function responsePrefix(connection: QbConnection): string {
  const dir = shmListing().find((d) => d.startsWith(`qb-${process.pid}-${connection.info.pid}-`));
  if (!dir) throw new Error("the connection's directory is missing");
  return `/dev/shm/${dir}/qb-response-${server.name}`;
}
