/**
 * qbun's libqb-compatible client against real servers: a libqb 2.0.6 server
 * (test/peers/qb_server.c, linked with Debian's libqb) and qbun's own server
 * (`qbun serve`), both transports, plus corosync's quorum service.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { Reactor } from "../ffi/reactor.ts";
import { QbClient, QbDisconnectedError, QbServer, interopHandler, type QbMessage } from "../src/qb/index.ts";
import { canForceFilesystemSockets, openFdCount, settlesWithin, shmListing, uniqueName, withFilesystemSockets } from "./helpers/env.ts";
import { compileC, removeCBuilds } from "./helpers/peers.ts";

const root = resolve(import.meta.dir, "..");
let libqbServer = "";
const u32 = (...values: number[]) => new Uint8Array(new Uint32Array(values).buffer);
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

beforeAll(async () => {
  libqbServer = await compileC("qb_server", ["-lqb"]);
  await Reactor.get();
});
afterAll(removeCBuilds);

interface RunningServer {
  name: string;
  pid: number;
  signal(sig: NodeJS.Signals): void;
  stop(): Promise<void>;
}

async function startProcess(cmd: string[], name: string, expectLine: string): Promise<RunningServer> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const reader = proc.stdout.getReader();
  const first = new TextDecoder().decode((await reader.read()).value).trim();
  if (first !== expectLine) throw new Error(`server said ${JSON.stringify(first)}: ${await new Response(proc.stderr).text()}`);
  reader.releaseLock();
  return {
    name,
    pid: proc.pid,
    signal: (sig) => proc.kill(sig),
    stop: async () => {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

const servers = {
  libqb: (transport: string, extra: string[] = []) => {
    const name = uniqueName(`libqb-${transport}`);
    return startProcess([libqbServer, name, transport, ...extra], name, "READY");
  },
  qbun: (transport: string, extra: string[] = []) => {
    const name = uniqueName(`qbun-${transport}`);
    return startProcess([process.execPath, join(root, "cli", "main.ts"), "serve", "--service", name, "--transport", transport, ...extra], name, `READY ${name}`);
  },
};

async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(5);
  }
}

describe.each([
  ["libqb", "shm"],
  ["libqb", "socket"],
  ["qbun", "shm"],
  ["qbun", "socket"],
] as const)("qbun client against a %s server, %s transport", (kind, transport) => {
  let server: RunningServer;
  let fdsBefore: number;

  beforeAll(async () => {
    Bun.gc(true);
    fdsBefore = openFdCount();
    server = await servers[kind](transport);
  });

  afterAll(async () => {
    await server?.stop();
    await Bun.sleep(20);
    Bun.gc(true);
    expect(shmListing().filter((entry) => entry.startsWith(`qb-${server.pid}-`))).toEqual([]);
    expect(openFdCount()).toBe(fdsBefore);
  });

  test("connect: transport, negotiated size, the server's credentials", async () => {
    await using client = await QbClient.connect(server.name, { maxMessageSize: 100_000 });
    expect(client.transport).toBe(transport);
    expect(client.maxMessageSize).toBe(100_000);
    expect(client.server?.pid).toBe(server.pid);
    expect(client.connected).toBe(true);
  });

  test("every interop id", async () => {
    await using client = await QbClient.connect(server.name);
    const echo = await client.request(1, new TextEncoder().encode("hello"));
    expect([echo.id, echo.error, text(echo.data)]).toEqual([1, 0, "hello"]);
    const sized = await client.request(3, u32(5000));
    expect(sized.data.length).toBe(5000);
    expect(sized.data.every((b, i) => b === (i & 0xff))).toBe(true);
    expect((await client.request(4, u32(-42 >>> 0))).error).toBe(-42);
    const started = performance.now();
    expect((await client.request(5, u32(50))).error).toBe(0);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    expect(JSON.parse(text((await client.request(6)).data)).pid).toBe(process.pid);
    expect((await client.request(77)).error).toBe(-22);
  });

  test("sizes 0 … the maximum, and wrap-around with odd sizes", async () => {
    const max = 1 << 20;
    await using client = await QbClient.connect(server.name, { maxMessageSize: max });
    for (const size of [0, 1, 7, 8, 4095, 4096, 4097, 65536, max - 24]) {
      const payload = new Uint8Array(size).map((_, i) => (i * 7 + size) & 0xff);
      const reply = await client.request(1, payload);
      expect(reply.data.length).toBe(size);
      expect(Buffer.compare(reply.data, payload)).toBe(0);
    }
    for (let i = 0; i < 2000; i++) {
      const payload = new Uint8Array(4093).fill(i & 0xff);
      const reply = await client.request(1, payload);
      if (reply.data.length !== 4093 || reply.data[4092] !== (i & 0xff)) throw new Error(`echo ${i} came back wrong`);
    }
  });

  test("pipelining: 200 requests in flight, answered in order; send/receive", async () => {
    await using client = await QbClient.connect(server.name);
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => client.request(3, u32(i))));
    expect(replies.map((r) => r.data.length)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    for (let i = 0; i < 10; i++) await client.send(3, u32(i + 1));
    const received: number[] = [];
    for (let i = 0; i < 10; i++) received.push((await client.receive({ timeout: 5000 })).data.length);
    expect(received).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  // The server on one CPU and this client's JS thread on the other: the SHM
  // client then refills its window response by response (it measures that
  // the server answers while it runs). Every response must still reach its
  // own request, with send()/receive() mixed in.
  test.skipIf(os.availableParallelism() < 2)("16 in flight with the server on another CPU: every response to its own request", async () => {
    // (Bun.spawnSync would open a private event loop's fds for good: the fd count below would see them.)
    const pin = (pid: number, cpu: string) => Bun.spawn(["taskset", "-p", "-c", cpu, String(pid)], { stdout: "ignore" }).exited;
    const all = `0-${os.availableParallelism() - 1}`;
    expect(await pin(server.pid, "0")).toBe(0);
    expect(await pin(process.pid, "1")).toBe(0); // this process's main thread: the one running the client
    try {
      await using client = await QbClient.connect(server.name);
      let next = 0;
      const lane = async () => {
        for (let i = next++; i < 3000; i = next++) {
          const payload = u32(i, i * 7);
          const reply = await client.request(1, payload);
          expect(Buffer.from(reply.data).equals(Buffer.from(payload))).toBe(true);
          if (i % 500 === 0) {
            await client.send(3, u32(i % 64));
            expect((await client.receive({ timeout: 5000 })).data.length).toBe(i % 64);
          }
        }
      };
      await Promise.all(Array.from({ length: 16 }, lane));
    } finally {
      await pin(process.pid, all);
      await pin(server.pid, all);
    }
  });

  test("events: as an async iterator and as a callback", async () => {
    await using client = await QbClient.connect(server.name);
    const seen: QbMessage[] = [];
    const stop = client.onEvent((event) => seen.push(event));
    await client.request(2, u32(30, 300));
    await eventually(() => seen.length === 30);
    stop();
    seen.forEach((event, k) => {
      expect([event.id, event.data.length, event.data[0], event.data[299]]).toEqual([2, 300, k & 0xff, (299 + k) & 0xff]);
    });
    await using other = await QbClient.connect(server.name);
    const iterated: number[] = [];
    const reading = (async () => {
      for await (const event of other.events()) {
        iterated.push(event.data[0]!);
        if (iterated.length === 5) break;
      }
    })();
    await other.request(2, u32(5, 1));
    await reading;
    expect(iterated).toEqual([0, 1, 2, 3, 4]);
  });

  test("timeouts: the late response is discarded and the next request matches its own", async () => {
    await using client = await QbClient.connect(server.name);
    await expect(client.request(5, u32(300), { timeout: 50 })).rejects.toMatchObject({ code: "ETIMEDOUT" });
    const echo = await client.request(1, new TextEncoder().encode("after"));
    expect(text(echo.data)).toBe("after");
    const aborted = client.request(5, u32(200), { signal: AbortSignal.timeout(20) });
    await expect(aborted).rejects.toThrow();
    expect(text((await client.request(1, new TextEncoder().encode("still in order"))).data)).toBe("still in order");
  });

  test("into: a payload that fits lands in the caller's buffer, a larger one gets its own", async () => {
    await using client = await QbClient.connect(server.name, { maxMessageSize: 300_000 });
    const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
    const into = new Uint8Array(70_000);
    for (const [n, seed] of [[1000, 1], [70_000, 2], [0, 3]] as const) {
      const reply = await client.request(1, pattern(n, seed), { into });
      expect(reply.data.buffer).toBe(into.buffer);
      expect(reply.data.byteOffset).toBe(0);
      expect(Buffer.from(reply.data).equals(Buffer.from(pattern(n, seed)))).toBe(true);
    }
    // Too big for the buffer (on the socket transport, also above the 64 KiB reused receive buffer).
    const big = await client.request(1, pattern(100_000, 4), { into });
    expect(big.data.buffer).not.toBe(into.buffer);
    expect(Buffer.from(big.data).equals(Buffer.from(pattern(100_000, 4)))).toBe(true);
    expect(Buffer.from(into).equals(Buffer.from(pattern(70_000, 2)))).toBe(true); // untouched since the 70,000-byte reply
    // In flight together, each response goes to its own request's buffer.
    const buffers = Array.from({ length: 8 }, () => new Uint8Array(4096));
    const replies = await Promise.all(buffers.map((buffer, k) => client.request(1, pattern(3000 + k, k), { into: buffer })));
    replies.forEach((reply, k) => {
      expect(reply.data.buffer).toBe(buffers[k]!.buffer);
      expect(Buffer.from(reply.data).equals(Buffer.from(pattern(3000 + k, k)))).toBe(true);
    });
  });

  test("a request above the negotiated size is refused before anything is sent", async () => {
    await using client = await QbClient.connect(server.name);
    await expect(client.request(1, new Uint8Array(client.maxMessageSize))).rejects.toMatchObject({ code: "EMSGSIZE" });
    expect((await client.request(1, new Uint8Array(10))).data.length).toBe(10);
  });
});

describe.each([
  ["libqb", "shm"],
  ["libqb", "socket"],
  ["qbun", "shm"],
  ["qbun", "socket"],
] as const)("a %s server (%s) that dies or refuses", (kind, transport) => {
  test("killed mid-request: pending requests fail at once, iterators end, nothing is left", async () => {
    const server = await servers[kind](transport);
    const filesOfServer = () => shmListing().filter((entry) => entry.startsWith(`qb-${server.pid}-`));
    const client = await QbClient.connect(server.name);
    const slow = client.request(5, u32(10_000));
    const events = (async () => {
      const got: QbMessage[] = [];
      for await (const event of client.events()) got.push(event);
      return got;
    })();
    await Bun.sleep(50);
    server.signal("SIGKILL");
    const started = performance.now();
    const failure = await slow.catch((error) => error);
    expect(failure).toBeInstanceOf(QbDisconnectedError);
    expect(failure.code).toBe("ENOTCONN");
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await events).toEqual([]);
    expect(client.connected).toBe(false);
    await expect(client.request(1)).rejects.toBeInstanceOf(QbDisconnectedError);
    await client.close();
    await server.stop();
    expect(filesOfServer()).toEqual([]); // the dead server's files were removed by the client
  });

  test("auth refused: connect fails with the server's EACCES", async () => {
    const server = await servers[kind](transport, ["--deny-uid", String(process.getuid!())]);
    try {
      await expect(QbClient.connect(server.name)).rejects.toMatchObject({ code: "EACCES", syscall: "qb_ipcc_connect" });
    } finally {
      await server.stop();
    }
  });
});

describe("a long-lived connection", () => {
  test.each(["shm", "socket"])("keeps no response alive after it was delivered (%s)", async (transport) => {
    const server = await servers.libqb(transport);
    try {
      await using client = await QbClient.connect(server.name, { maxMessageSize: 200_000 });
      const payload = new Uint8Array(100_000);
      for (let i = 0; i < 100; i++) await client.request(1, payload);
      Bun.gc(true);
      const before = process.memoryUsage().heapUsed;
      for (let i = 0; i < 1500; i++) await client.request(1, payload); // 150 MB through the client
      Bun.gc(true);
      expect(process.memoryUsage().heapUsed - before).toBeLessThan(20 * 1024 * 1024);
    } finally {
      await server.stop();
    }
  });
});

describe("requests sent just before close", () => {
  test.each(["shm", "socket"] as const)("reach the server when their send() resolved (%s)", async (transport) => {
    const seen: number[] = [];
    const server = await QbServer.listen({
      name: uniqueName(`close-${transport}`),
      transport,
      handler: (request) => {
        seen.push(request.id);
        return {};
      },
    });
    try {
      const client = await QbClient.connect(server.name);
      // Sent in one turn of the event loop: the shm transport batches their notification.
      const sends = [client.send(11), client.send(12), client.send(13)];
      await client.close();
      const outcomes = await Promise.allSettled(sends);
      const sent = [11, 12, 13].filter((_, i) => outcomes[i]!.status === "fulfilled");
      // SHM writes all three at once (their notification is batched); the
      // socket transport sends the first and queues the others, which close()
      // then refuses: their send() rejects, so the caller knows.
      if (transport === "shm") expect(sent).toEqual([11, 12, 13]);
      for (const outcome of outcomes) if (outcome.status === "rejected") expect(outcome.reason).toBeInstanceOf(QbDisconnectedError);
      const deadline = Date.now() + 5_000;
      while (seen.length < sent.length && Date.now() < deadline) await Bun.sleep(10);
      await Bun.sleep(50); // nothing more arrives
      expect(seen).toEqual(sent);
    } finally {
      await server.stop();
    }
  });
});

describe("flow control", () => {
  test.each(["shm", "socket"])("a libqb server's rate limit OFF holds requests back until NORMAL (%s)", async (transport) => {
    const server = await servers.libqb(transport);
    try {
      await using client = await QbClient.connect(server.name);
      expect((await client.request(1, u32(1))).error).toBe(0);
      server.signal("SIGUSR1"); // QB_IPCS_RATE_OFF: flow control 1
      await Bun.sleep(50);
      let done = false;
      const held = client.request(1, u32(2)).then((r) => ((done = true), r));
      await Bun.sleep(150);
      expect(done).toBe(false); // backing off, as libqb's client would (EAGAIN)
      server.signal("SIGUSR2"); // QB_IPCS_RATE_NORMAL
      expect((await held).data).toEqual(u32(2));
    } finally {
      await server.stop();
    }
  });

  test.each(["libqb", "qbun"] as const)("flow control 2 (%s server, rate limit OFF_2) holds back only a client whose fcEnableMax is 2", async (kind) => {
    // libqb's qb_ipcc_fc_enable_max_set: a client backs off (qb_ipcc_send:
    // EAGAIN) while 0 < fc <= its max. The server handles nothing until
    // NORMAL either way; the difference is whether the request is sent.
    const libqb = kind === "libqb" ? await servers.libqb("shm") : undefined;
    const qbun = kind === "qbun" ? await QbServer.listen({ name: uniqueName("fc2"), handler: interopHandler }) : undefined;
    const name = libqb?.name ?? qbun!.name;
    try {
      await using plain = await QbClient.connect(name);
      await using careful = await QbClient.connect(name);
      careful.fcEnableMax = 2;
      expect((await plain.request(1, u32(1))).error).toBe(0);
      expect((await careful.request(1, u32(1))).error).toBe(0);
      if (libqb) libqb.signal("SIGWINCH");
      else qbun!.setRateLimit("off2");
      await Bun.sleep(50);
      expect(await settlesWithin(plain.send(1, u32(2)), 1000)).toBeUndefined(); // 2 > its max of 1: sent
      let sent = false;
      const held = careful.send(1, u32(3)).then(() => (sent = true));
      await Bun.sleep(150);
      expect(sent).toBe(false); // backing off
      if (libqb) libqb.signal("SIGUSR2");
      else qbun!.setRateLimit("normal");
      await held;
      expect((await plain.receive()).data).toEqual(u32(2));
      expect((await careful.receive()).data).toEqual(u32(3));
    } finally {
      await libqb?.stop();
      await qbun?.stop();
    }
  });

  test("a qbun server's rate limit OFF holds an existing connection's requests back until NORMAL", async () => {
    const server = await QbServer.listen({ name: uniqueName("fc"), handler: interopHandler });
    try {
      await using client = await QbClient.connect(server.name);
      await client.request(1);
      server.setRateLimit("off");
      let done = false;
      const held = client.request(1, u32(7)).then((r) => ((done = true), r));
      await Bun.sleep(100);
      expect(done).toBe(false);
      server.setRateLimit("normal");
      expect((await held).data).toEqual(u32(7));
    } finally {
      await server.stop();
    }
  });
});

describe("filesystem-socket mode", () => {
  test.skipIf(!canForceFilesystemSockets)("with /etc/libqb/force-filesystem-sockets the client finds a libqb server at /tmp/NAME", async () => {
    await withFilesystemSockets(async () => {
      for (const transport of ["shm", "socket"] as const) {
        const server = await servers.libqb(transport);
        try {
          expect(existsSync(`/tmp/${server.name}`)).toBe(true); // libqb listens there, not on the abstract name
          await using client = await QbClient.connect(server.name);
          expect(client.transport).toBe(transport);
          expect((await client.request(1, u32(5))).data).toEqual(u32(5));
        } finally {
          await server.stop();
        }
      }
    });
  });

  test("filesystemSocket and socketDir reach a server listening on that path", async () => {
    const { mkdtempSync, rmSync } = await import("node:fs");
    const dir = mkdtempSync(join(os.tmpdir(), "qbun-fs-"));
    const server = await QbServer.listen({ name: uniqueName("fs"), handler: interopHandler, filesystemSocket: true, socketDir: dir });
    try {
      expect(server.address).toBe(join(dir, server.name));
      await expect(QbClient.connect(server.name, { filesystemSocket: false })).rejects.toMatchObject({ code: "ECONNREFUSED" });
      await using client = await QbClient.connect(server.name, { filesystemSocket: true, socketDir: dir });
      expect((await client.request(1, u32(6))).data).toEqual(u32(6));
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const corosyncBinary = "/usr/sbin/corosync";
describe.skipIf(!existsSync(corosyncBinary) || process.getuid?.() !== 0)("corosync 3 (a real libqb server in production use)", () => {
  let started: ReturnType<typeof Bun.spawn> | undefined;

  beforeAll(async () => {
    const ready = () => Bun.file("/proc/net/unix").text().then((t) => t.includes("@quorum@"));
    // Use a running corosync (its quorum socket is there), or start one: single node on loopback.
    if (!(await ready())) started = Bun.spawn([corosyncBinary, "-f"], { stdout: "ignore", stderr: "pipe" });
    const deadline = Date.now() + 20_000;
    while (!(await ready())) {
      if (Date.now() > deadline) {
        started?.kill("SIGKILL");
        const said = started ? await new Response(started.stderr as ReadableStream).text() : "";
        throw new Error(`corosync did not offer its quorum service: ${said}`);
      }
      await Bun.sleep(100);
    }
  });

  afterAll(async () => {
    if (started) {
      started.kill("SIGTERM");
      await started.exited;
    }
  });

  test("quorum: getquorate, gettype, and the tracking notification as an event", async () => {
    const CS_OK = 1;
    await using quorum = await QbClient.connect("quorum");
    const deadline = Date.now() + 15_000;
    let quorate: QbMessage;
    for (;;) {
      quorate = await quorum.request(0 /* MESSAGE_REQ_QUORUM_GETQUORATE */, [], { timeout: 5000 });
      if (new DataView(quorate.data.buffer, quorate.data.byteOffset).getUint32(0, true) === 1 || Date.now() > deadline) break;
      await Bun.sleep(200); // a just-started single node becomes quorate after its first membership
    }
    expect(quorate.error).toBe(CS_OK);
    expect(new DataView(quorate.data.buffer, quorate.data.byteOffset).getUint32(0, true)).toBe(1);
    const type = await quorum.request(3 /* MESSAGE_REQ_QUORUM_GETTYPE */, [], { timeout: 5000 });
    expect(type.error).toBe(CS_OK);
    const events = quorum.events();
    const track = await quorum.request(1 /* MESSAGE_REQ_QUORUM_TRACKSTART */, u32(1 /* CS_TRACK_CURRENT */), { timeout: 5000 });
    expect(track.error).toBe(CS_OK);
    const { value: notification } = await events.next();
    expect(notification!.id).toBe(3); // MESSAGE_RES_QUORUM_NOTIFICATION
    const view = new DataView(notification!.data.buffer, notification!.data.byteOffset, notification!.data.byteLength);
    expect(view.getInt32(0, true)).toBe(1); // quorate
    expect(view.getUint32(16, true)).toBe(1); // one node in the view
  });
});
