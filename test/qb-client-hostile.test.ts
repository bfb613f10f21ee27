/**
 * qbun's libqb client treats the server as untrusted. A server that sends
 * malformed responses or events, or corrupts the shared-memory ring it
 * writes responses into, makes the client fail cleanly: pending requests
 * reject with RingCorruptError, the connection ends (`connected` false, the
 * setup socket closed), nothing crashes or hangs, and once the client is
 * closed and the server's files are gone this process holds no more fds and
 * /dev/shm no more entries than before.
 *
 * - Socket transport: a fake libqb server built here from qbun's own
 *   primitives, sending raw datagrams.
 * - SHM transport: qbun's real QbServer, whose handler scribbles on the
 *   connection's response ring (as a hostile server process could) before
 *   it answers; the server keeps serving afterwards.
 *
 * Each case checks the error's message too, so that it fails if the one
 * check it targets were removed (another check catching the bytes later
 * would report something else).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { Reactor } from "../ffi/reactor.ts";
import { QbClient, QbServer, RingCorruptError, type QbRequest } from "../src/qb/index.ts";
import { ChunkMagic, Ring, ringDataSize, RingHeader, ringFiles, type RingFiles } from "../src/qb/ring.ts";
import { CONTROL_SIZE, libqbAbstract } from "../src/qb/socket-names.ts";
import {
  CONNECTION_REQUEST_SIZE,
  ConnectionType,
  encodeConnectionResponse,
  MIN_MAX_MSG_SIZE,
  parseConnectionRequest,
  putResponseHeader,
  RESPONSE_HEADER_SIZE,
} from "../src/qb/wire.ts";
import { Semaphore, SharedMemory } from "../src/shm/index.ts";
import { UnixDatagram, UnixListener, type UnixStream } from "../src/unix/index.ts";
import { bytes, openFds, settledFdCount, settlesWithin, shmListing, uniqueName } from "./helpers/env.ts";

/** How long any single step may take before the test calls it a hang. */
const STEP_MS = 5000;

beforeAll(async () => {
  // The reactor opens its own fds once per process: not a leak of any test.
  await Reactor.get();
});

/** A response datagram or chunk: header (id, size, error) then payload. */
function response(id: number, payload: Uint8Array, options: { claimedSize?: number; totalSize?: number } = {}): Uint8Array {
  const total = options.totalSize ?? RESPONSE_HEADER_SIZE + payload.byteLength;
  const out = new Uint8Array(total);
  putResponseHeader(new DataView(out.buffer), 0, id, options.claimedSize ?? total, 0);
  out.set(payload.subarray(0, total - RESPONSE_HEADER_SIZE), RESPONSE_HEADER_SIZE);
  return out;
}

/** What a promise settled with: its error, or "resolved", or "timeout" for a hang. */
function outcome(promise: Promise<unknown>): Promise<unknown> {
  return settlesWithin(
    promise.then(
      () => "resolved",
      (error: unknown) => error,
    ),
    STEP_MS,
  );
}

/**
 * This process's entries in /dev/shm: the fake servers' directories and
 * QbServer's per-connection ones (others' test runs may come and go meanwhile).
 */
function shmOfThisProcess(): string[] {
  return shmListing().filter((entry) => entry.startsWith(`qb-${process.pid}-`) || entry.startsWith(`qbun-test-${process.pid}-`));
}

async function eventually(check: () => boolean, ms = STEP_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(5);
  }
}

// ---------------------------------------------------------------------------
// Socket transport: a fake server
// ---------------------------------------------------------------------------

/**
 * A libqb server on the socket transport that does the handshake properly,
 * then sends whatever datagrams the test gives it. Its files live in a
 * fresh directory under /dev/shm, as a real server's do.
 */
class FakeSocketServer {
  readonly service = uniqueName("fake-sock");
  readonly dir: string;
  readonly controlPath: string;
  /** The sockets' base name (an absolute path, as libqb's clients require). */
  readonly base: string;
  readonly #listener: UnixListener;
  /** `<base>-request`: receives requests, sends responses. */
  readonly #requests: UnixDatagram;
  /** `<base>-event-tx`: sends events. */
  readonly #events: UnixDatagram;
  #setup: UnixStream | undefined;

  /** `controlPath`: name this file as the control file instead of making one (a hostile server's choice). */
  constructor(readonly maxMessageSize = MIN_MAX_MSG_SIZE, controlPath?: string) {
    this.dir = mkdtempSync(`/dev/shm/${this.service}-`);
    this.controlPath = controlPath ?? `${this.dir}/control`;
    // The client maps the 24-byte control file; this server never reads it.
    if (!controlPath) SharedMemory.openFile({ path: this.controlPath, create: true, size: CONTROL_SIZE }).close();
    this.base = `${this.dir}/qb`;
    // Bound before answering: the client connects to both as soon as it has the response.
    this.#requests = UnixDatagram.bound(libqbAbstract(`${this.base}-request`));
    this.#events = UnixDatagram.bound(libqbAbstract(`${this.base}-event-tx`));
    this.#listener = UnixListener.listen(libqbAbstract(this.service), { backlog: 4 });
  }

  /**
   * Accept the client's setup connection, read its 24-byte request, answer.
   * `smuggle`: send the answer in two pieces, each carrying fds (SCM_RIGHTS)
   * of this server's own sockets.
   */
  async handshake(options: { smuggle?: boolean } = {}): Promise<void> {
    const signal = AbortSignal.timeout(STEP_MS);
    const setup = await this.#listener.accept({ signal });
    this.#setup = setup;
    const request = parseConnectionRequest(await setup.readExactly(CONNECTION_REQUEST_SIZE, { signal }));
    expect(request).not.toBeNull();
    const answer = encodeConnectionResponse({
      error: 0,
      connectionType: ConnectionType.SOCKET,
      maxMessageSize: this.maxMessageSize,
      request: this.controlPath,
      response: this.base,
      event: "",
    });
    if (!options.smuggle) return void (await setup.write(answer));
    const fds = [this.#requests.fd, this.#events.fd, this.#listener.fd];
    await setup.sendMessage(answer.subarray(0, 100), { fds, signal });
    await setup.sendMessage(answer.subarray(100), { fds, signal });
  }

  /** How many fds of this process refer to the server's request socket (1: only its own). */
  requestSocketFdCount(): number {
    const target = readlinkSync(`/proc/self/fd/${this.#requests.fd}`);
    return openFds().filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === target;
      } catch {
        return false; // closed meanwhile (the readdir's own fd)
      }
    }).length;
  }

  /**
   * The client's next request datagram. Once one came, the client's own
   * sockets (`<base>-response`, `<base>-event`) are bound: no retry needed
   * to connect to them.
   */
  async nextRequest(): Promise<Uint8Array> {
    return (await this.#requests.receive({ signal: AbortSignal.timeout(STEP_MS) })).data;
  }

  #connected = new Set<UnixDatagram>();

  /** Send one raw datagram to the client's response socket. */
  sendResponse(datagram: Uint8Array): Promise<void> {
    return this.#send(this.#requests, `${this.base}-response`, datagram);
  }

  /** Send one raw datagram to the client's event socket. */
  sendEvent(datagram: Uint8Array): Promise<void> {
    return this.#send(this.#events, `${this.base}-event`, datagram);
  }

  async #send(socket: UnixDatagram, peer: string, datagram: Uint8Array): Promise<void> {
    if (!this.#connected.has(socket)) {
      socket.connect(libqbAbstract(peer));
      this.#connected.add(socket);
    }
    await socket.send(datagram, { signal: AbortSignal.timeout(STEP_MS) });
  }

  /** Whether the client closed its setup connection (how a libqb client says it left). */
  async clientHungUp(): Promise<boolean> {
    return (await this.#setup!.read({ signal: AbortSignal.timeout(STEP_MS) })) === null;
  }

  /** Close every socket and remove the directory (the client may have removed its control file already). */
  close(): void {
    this.#setup?.close();
    this.#listener.close();
    this.#requests.close();
    this.#events.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Connect a client to a fresh fake server, run `scenario`, then close both
 * and check that this process's fds and /dev/shm are back where they were.
 */
async function withFakeServer(
  maxMessageSize: number,
  scenario: (fake: FakeSocketServer, client: QbClient) => Promise<void>,
  handshake: { smuggle?: boolean } = {},
): Promise<void> {
  const fdsBefore = await settledFdCount();
  const shmBefore = shmOfThisProcess();
  const fake = new FakeSocketServer(maxMessageSize);
  let client: QbClient | undefined;
  try {
    const connecting = QbClient.connect(fake.service, { timeout: STEP_MS });
    await fake.handshake(handshake);
    client = await connecting;
    expect(client.transport).toBe("socket");
    expect(client.maxMessageSize).toBe(maxMessageSize);
    await scenario(fake, client);
  } finally {
    await client?.close();
    fake.close();
  }
  expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
  expect(shmOfThisProcess()).toEqual(shmBefore);
}

/** Send a request, answer it with `datagram`, and return what the request settled with. */
async function answerWith(fake: FakeSocketServer, client: QbClient, datagram: Uint8Array): Promise<unknown> {
  const pending = client.request(1, bytes("hello"));
  await fake.nextRequest();
  await fake.sendResponse(datagram);
  return outcome(pending);
}

/** The client failed with a RingCorruptError matching `why`, and dropped the connection. */
async function expectCorruptionDetected(failure: unknown, why: RegExp, fake: FakeSocketServer, client: QbClient): Promise<void> {
  expect(failure).toBeInstanceOf(RingCorruptError);
  expect((failure as RingCorruptError).code).toBe("ERR_QBUN_RING_CORRUPT");
  expect((failure as Error).message).toMatch(why);
  expect(client.connected).toBe(false);
  expect(await fake.clientHungUp()).toBe(true);
  // Later calls fail at once with the same error rather than hang.
  expect(await outcome(client.request(1))).toBe(failure);
}

describe("socket transport: a fake server sending malformed datagrams", () => {
  test("control: a well-formed response from the fake server is delivered", async () => {
    await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
      const reply = await answerWith(fake, client, response(1, bytes("fine")));
      expect(reply).toBe("resolved");
      expect(client.connected).toBe(true);
    });
  });

  test("fds sent along with the connection response are closed at once", async () => {
    await withFakeServer(
      MIN_MAX_MSG_SIZE,
      async (fake, client) => {
        // Checked before any GC could close them: the client never took ownership.
        expect(fake.requestSocketFdCount()).toBe(1);
        expect(await answerWith(fake, client, response(1, bytes("fine")))).toBe("resolved");
      },
      { smuggle: true },
    );
  });

  test("a datagram shorter than the 24-byte response header", async () => {
    await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
      // 23 bytes: one short of a header (id, size, error)
      const failure = await answerWith(fake, client, response(1, new Uint8Array(0)).subarray(0, RESPONSE_HEADER_SIZE - 1));
      await expectCorruptionDetected(failure, /no room for its header/, fake, client);
    });
  });

  // Both read paths: small connections read into one reusable buffer, large
  // ones (above 64 KiB) ask the datagram's size first.
  test.each([
    ["the reusable buffer", MIN_MAX_MSG_SIZE],
    ["a buffer sized per datagram", 80_000],
  ])("a datagram larger than the negotiated size (%s)", async (_path, max) => {
    await withFakeServer(max, async (fake, client) => {
      // An honest header for its own length: only the size limit rejects it.
      const oversized = response(1, new Uint8Array(max + 100 - RESPONSE_HEADER_SIZE).fill(7));
      const failure = await answerWith(fake, client, oversized);
      await expectCorruptionDetected(failure, /above the negotiated/, fake, client);
    });
  });

  test("a header whose size field claims more bytes than the datagram has", async () => {
    await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
      // 29 bytes sent, the header at offset 8 says 4000: reading on would run past the datagram.
      const failure = await answerWith(fake, client, response(1, bytes("hello"), { claimedSize: 4000 }));
      await expectCorruptionDetected(failure, /header claims 4000 bytes of 29/, fake, client);
    });
  });

  test("a header whose size field is smaller than the header itself", async () => {
    await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
      const failure = await answerWith(fake, client, response(1, bytes("hello"), { claimedSize: -8 }));
      await expectCorruptionDetected(failure, /header claims -8 bytes/, fake, client);
    });
  });

  test("a malformed event ends the connection: pending requests reject, iterators end", async () => {
    await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
      const events = (async () => {
        let count = 0;
        for await (const _event of client.events()) count++;
        return count;
      })();
      const pending = client.request(1);
      await fake.nextRequest();
      await fake.sendEvent(new Uint8Array(10)); // an event with no room for its header
      await expectCorruptionDetected(await outcome(pending), /10-byte event has no room/, fake, client);
      expect(await settlesWithin(events, STEP_MS)).toBe(0);
    });
  });
});

// ---------------------------------------------------------------------------
// SHM transport: qbun's server, its response ring corrupted under the client
// ---------------------------------------------------------------------------

/** The request id whose handler corrupts the response ring before answering. */
const CORRUPT_ID = 66;

/** The response ring's files, mapped here read-write, as a hostile server process would. */
interface ResponseRingAccess {
  readonly files: RingFiles;
  readonly header: DataView;
  /** The data area, mapped twice back to back (a chunk may wrap). */
  readonly data: DataView;
  readonly sem: Semaphore;
}

describe("socket transport: the control file a server names", () => {
  // The client writes counters into the control file and removes it at the
  // end, as libqb's does: a server must not be able to point it at anything else.
  const victimContent = "A".repeat(CONTROL_SIZE);

  async function connectWithControl(controlPath: string): Promise<unknown> {
    const fdsBefore = await settledFdCount();
    const fake = new FakeSocketServer(MIN_MAX_MSG_SIZE, controlPath);
    try {
      const connecting = outcome(QbClient.connect(fake.service, { timeout: STEP_MS }));
      await fake.handshake();
      return await connecting;
    } finally {
      fake.close();
      expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    }
  }

  test("a symbolic link, a file of another size, another user's file: refused, and left as they were", async () => {
    const dir = mkdtempSync("/dev/shm/qbun-victim-");
    try {
      const victim = `${dir}/victim`;
      writeFileSync(victim, victimContent);
      symlinkSync(victim, `${dir}/link`);
      const bigger = `${dir}/bigger`;
      writeFileSync(bigger, "B".repeat(40));
      const foreign = `${dir}/foreign`;
      writeFileSync(foreign, victimContent);
      chownSync(foreign, 54321, 54321);

      const viaLink = await connectWithControl(`${dir}/link`);
      expect((viaLink as { code?: string }).code).toBe("ELOOP");
      const wrongSize = await connectWithControl(bigger);
      expect(wrongSize).toBeInstanceOf(RingCorruptError);
      expect((wrongSize as Error).message).toMatch(/not a regular file of 24 bytes/);
      const otherUser = await connectWithControl(foreign);
      expect(otherUser).toBeInstanceOf(RingCorruptError);
      expect((otherUser as Error).message).toMatch(/belongs to uid 54321/);

      expect(readFileSync(victim, "utf8")).toBe(victimContent);
      expect(readFileSync(bigger, "utf8")).toBe("B".repeat(40));
      expect(readFileSync(foreign, "utf8")).toBe(victimContent);
      expect(existsSync(`${dir}/link`)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a control file swapped for another after connect is not removed at close", async () => {
    const elsewhere = mkdtempSync("/dev/shm/qbun-victim-");
    try {
      await withFakeServer(MIN_MAX_MSG_SIZE, async (fake, client) => {
        expect(await answerWith(fake, client, response(1, bytes("fine")))).toBe("resolved");
        // The server renames another 24-byte file of the client's over the checked one.
        const other = `${elsewhere}/other`;
        writeFileSync(other, victimContent);
        renameSync(other, fake.controlPath);
        await client.close();
        expect(readFileSync(fake.controlPath, "utf8")).toBe(victimContent);
      });
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});

describe("shm transport: a ring header file too short for libqb's flow-control int", () => {
  test("is refused with RingCorruptError, not a RangeError", () => {
    const dir = mkdtempSync("/dev/shm/qbun-short-header-");
    try {
      const files = ringFiles(`${dir}/qb-response-x`);
      // 8248 bytes: the header struct without the int behind it (libqb's are a page).
      SharedMemory.openFile({ path: files.headerPath, create: true, size: RingHeader.SIZE }).close();
      SharedMemory.openFile({ path: files.dataPath, create: true, size: 1 << 16 }).close();
      let failure: unknown;
      try {
        Ring.open(files, MIN_MAX_MSG_SIZE).close(false);
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(RingCorruptError);
      expect((failure as Error).message).toMatch(/header file is 8248 bytes, not at least 8252/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("shm transport: a server that corrupts its response ring", () => {
  let server: QbServer;
  const serverErrors: unknown[] = [];
  /** What the next CORRUPT_ID request does to the ring. */
  let corrupt: ((ring: ResponseRingAccess) => void) | undefined;

  /** The response ring of the server's only connection. */
  function responseRingFiles() {
    const prefixes = readdirSync("/dev/shm")
      .filter((entry) => entry.startsWith(`qb-${process.pid}-`))
      .map((dir) => ringFiles(`/dev/shm/${dir}/qb-response-${server.name}`))
      .filter((files) => existsSync(files.headerPath));
    if (prefixes.length !== 1) throw new Error(`expected one connection's response ring, found ${prefixes.length}`);
    return prefixes[0]!;
  }

  function withResponseRing(maxMessageSize: number, change: (ring: ResponseRingAccess) => void): void {
    const files = responseRingFiles();
    const headerFile = SharedMemory.openFile({ path: files.headerPath });
    const dataFile = SharedMemory.openFile({ path: files.dataPath });
    expect(dataFile.size).toBe(ringDataSize(maxMessageSize)); // 16384 for the 12328 bytes negotiated
    const headerMap = headerFile.map();
    const dataMap = dataFile.mapCircular();
    headerFile.close(); // the mappings keep the memory
    dataFile.close();
    try {
      change({
        files,
        header: new DataView(headerMap.bytes.buffer, headerMap.bytes.byteOffset, headerMap.bytes.byteLength),
        data: new DataView(dataMap.bytes.buffer, dataMap.bytes.byteOffset, dataMap.bytes.byteLength),
        sem: Semaphore.open(headerMap, RingHeader.SEM),
      });
    } finally {
      headerMap.close(); // detaches the semaphore too
      dataMap.close();
    }
  }

  async function handler(request: QbRequest) {
    if (request.id === CORRUPT_ID && corrupt) {
      withResponseRing(request.connection.info.maxMessageSize, corrupt);
      // Answer only once the client has gone: a real response written now
      // would land on the corrupt chunk (the server writes at its own write
      // pointer) before the client, in this same process, got to read it.
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, 2 * STEP_MS); // never hold the server forever
      request.signal.addEventListener("abort", () => resolve(), { once: true });
      if (request.signal.aborted) resolve();
      await promise;
      clearTimeout(timer);
    }
    return { data: request.payload };
  }

  /** A fresh client gets its echo: the server survived. */
  async function serverStillServes(): Promise<void> {
    const client = await QbClient.connect(server.name, { timeout: STEP_MS });
    try {
      expect(client.transport).toBe("shm");
      const reply = await client.request(1, bytes("still here"), { timeout: STEP_MS });
      expect(new TextDecoder().decode(reply.data)).toBe("still here");
    } finally {
      await client.close();
    }
    await eventually(() => server.stats().activeConnections === 0);
  }

  beforeAll(async () => {
    server = await QbServer.listen({
      name: uniqueName("hostile-shm-server"),
      transport: "shm",
      handler,
      onError: (error) => serverErrors.push(error),
    });
    // Warm up: the first connection's lazily created resources (semaphore waiters) are not a leak.
    await serverStillServes();
  });

  afterAll(async () => {
    await server.stop();
  });

  /** Write a chunk header (length word, magic) and `payload` at the ring's write pointer. */
  function chunk(length: number, magic: number, payload: Uint8Array) {
    return (ring: ResponseRingAccess) => {
      const w = ring.header.getUint32(RingHeader.WRITE_PT, true);
      // The client read everything before: it reads next exactly here.
      expect(ring.header.getUint32(RingHeader.READ_PT, true)).toBe(w);
      ring.data.setUint32(w * 4, length, true);
      new Uint8Array(ring.data.buffer, ring.data.byteOffset + (w + 2) * 4, payload.byteLength).set(payload);
      ring.data.setUint32((w + 1) * 4, magic, true);
      ring.sem.post(); // wake the client
    };
  }

  const reply = (options?: { claimedSize?: number; totalSize?: number }) => response(CORRUPT_ID, bytes("evil"), options);
  const cases: [string, (ring: ResponseRingAccess) => void, RegExp][] = [
    // A well-formed response in a chunk the writer never committed.
    ["a chunk with a wrong magic", chunk(reply().byteLength, ChunkMagic.ALLOCATED, reply()), /has magic 0xa110ced0, not committed/],
    // A length the client would read far past the ring with (wrapping to -16 as an int32).
    ["a chunk length larger than the ring", chunk(0xffff_fff0, ChunkMagic.COMMITTED, reply()), /claims 4294967280 bytes in a 16384-byte ring/],
    // Fits the 16 KiB ring, but exceeds the 12328 bytes negotiated.
    [
      "a chunk length above the negotiated size",
      chunk(16_000, ChunkMagic.COMMITTED, reply({ totalSize: 16_000 })),
      /16000-byte response exceeds the negotiated size/,
    ],
    ["a response header claiming more than its chunk", chunk(28, ChunkMagic.COMMITTED, reply({ claimedSize: 5000 })), /header claims 5000 bytes of 28/],
    [
      "a read pointer outside the ring",
      (ring) => {
        ring.header.setUint32(RingHeader.READ_PT, 0x0fff_ffff, true);
        ring.sem.post();
      },
      /read pointer 268435455 outside the 4096-word ring/,
    ],
    [
      // An unguarded mapping would take SIGBUS here and kill the whole process.
      "the data file truncated under the client",
      (ring) => {
        const data = SharedMemory.openFile({ path: ring.files.dataPath });
        data.resize(0);
        data.close();
        ring.sem.post();
      },
      /has magic 0x0, not committed/,
    ],
  ];

  test.each(cases)("%s: the pending request rejects, the server serves on", async (_what, change, why) => {
    const fdsBefore = await settledFdCount();
    const shmBefore = shmOfThisProcess();
    const errorsBefore = serverErrors.length;
    const client = await QbClient.connect(server.name, { timeout: STEP_MS });
    try {
      expect(client.transport).toBe("shm");
      // Move the pointers off 0 first: the corruption lands mid-ring.
      expect((await client.request(1, bytes("warm"), { timeout: STEP_MS })).data).toEqual(bytes("warm"));
      corrupt = change;
      const failure = await outcome(client.request(CORRUPT_ID, bytes("please")));
      expect(failure).toBeInstanceOf(RingCorruptError);
      expect((failure as Error).message).toMatch(why);
      expect(client.connected).toBe(false);
      expect(await outcome(client.request(1))).toBe(failure);
    } finally {
      corrupt = undefined;
      await client.close();
    }
    // The client hung up: the server closes the connection and removes its files.
    await eventually(() => server.stats().activeConnections === 0);
    await eventually(() => shmOfThisProcess().length === shmBefore.length);
    expect(shmOfThisProcess()).toEqual(shmBefore);
    expect(serverErrors.slice(errorsBefore)).toEqual([]); // to the server, the client just left
    await serverStillServes();
    expect(await settledFdCount(fdsBefore)).toBe(fdsBefore);
    expect(shmOfThisProcess()).toEqual(shmBefore);
  });
});
