/**
 * qbun's libqb-compatible server against a real libqb 2.0.6 client
 * (test/peers/qb_client.c, linked with Debian's libqb), on both transports.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { QbServer, interopAuthenticate, interopHandler, type QbConnection, type QbServerOptions } from "../src/qb/index.ts";
import { Reactor } from "../ffi/reactor.ts";
import { canForceFilesystemSockets, openFdCount, shmListing, uniqueName, withFilesystemSockets } from "./helpers/env.ts";
import { compileC, removeCBuilds } from "./helpers/peers.ts";

let client: string;
const NOBODY = 65534;

beforeAll(async () => {
  client = await compileC("qb_client", ["-lqb"]);
});
afterAll(removeCBuilds);

interface Run {
  code: number;
  lines: any[];
  stderr: string;
}

/** Run the libqb client to completion; parse its JSON lines. */
async function runClient(args: string[], options: { uid?: number; timeoutMs?: number } = {}): Promise<Run> {
  const cmd = options.uid === undefined
    ? [client, ...args]
    : ["setpriv", `--reuid=${options.uid}`, `--regid=${options.uid}`, "--clear-groups", client, ...args];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill(9), options.timeoutMs ?? 30_000);
  const [out, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const lines = out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  return { code, lines, stderr };
}

async function expectOk(args: string[], options?: { uid?: number }): Promise<any> {
  const run = await runClient(args, options);
  if (run.code !== 0) throw new Error(`qb_client ${args.join(" ")} exited ${run.code}: ${JSON.stringify(run.lines)} ${run.stderr}`);
  expect(run.lines.at(-1)?.ok).toBe(true);
  return run.lines.at(-1);
}

const servers: QbServer[] = [];
const errors: unknown[] = [];

async function startServer(transport: "shm" | "socket", extra: Partial<QbServerOptions> = {}): Promise<QbServer> {
  const server = await QbServer.listen({
    name: uniqueName(`qb-${transport}`),
    transport,
    handler: interopHandler,
    onError: (error) => errors.push(error),
    ...extra,
  });
  servers.push(server);
  return server;
}

/** Lines of a child's stdout, one at a time. */
function holderLines(stream: ReadableStream<Uint8Array>) {
  const reader = stream.getReader();
  let buffered = "";
  return {
    async next(): Promise<string | undefined> {
      for (;;) {
        const newline = buffered.indexOf("\n");
        if (newline >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          return line;
        }
        const { value, done } = await reader.read();
        if (done) return undefined;
        buffered += new TextDecoder().decode(value);
      }
    },
  };
}

/** Wait (event-free polling is fine in a test) until `check` holds or time runs out. */
async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(10);
  }
}

let shmBefore: string[];
let fdsBefore: number;

describe.each(["shm", "socket"] as const)("qbun server, %s transport, real libqb client", (transport) => {
  beforeAll(async () => {
    await Reactor.get(); // its fds exist for the whole process: count after them
    await Bun.sleep(20);
    Bun.gc(true);
    shmBefore = shmListing();
    fdsBefore = openFdCount();
  });

  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop();
    expect(shmListing()).toEqual(shmBefore); // every connection's files removed
  });

  afterAll(async () => {
    await Bun.sleep(50);
    Bun.gc(true);
    expect(openFdCount()).toBe(fdsBefore);
  });

  test("connect: buffer size negotiated, server credentials via SCM_CREDENTIALS", async () => {
    const server = await startServer(transport);
    const info = await expectOk([server.name, "info"]);
    expect(info.bufferSize).toBe(12328);
    expect(info.serverPid).toBe(process.pid);
    expect(info.serverUid).toBe(process.getuid!());
    const big = await expectOk([server.name, "--max", "100000", "info"]);
    expect(big.bufferSize).toBe(100000);
    const enforced = await startServer(transport, { maxMessageSize: 70000 });
    expect((await expectOk([enforced.name, "info"])).bufferSize).toBe(70000);
  });

  test("every interop id: ECHO, EVENTS, SIZED, ERROR, SLOW, WHOAMI, unknown → -EINVAL", async () => {
    const server = await startServer(transport);
    await expectOk([server.name, "echo", "100", "10"]);
    expect((await expectOk([server.name, "events", "5", "300"])).events).toBe(5);
    await expectOk([server.name, "sized", "9000"]);
    expect((await expectOk([server.name, "error", "-42"])).error).toBe(-42);
    expect((await expectOk([server.name, "slow", "30"])).ms).toBeGreaterThanOrEqual(29);
    const who = (await expectOk([server.name, "whoami"])).whoami;
    expect(who).toMatchObject({ uid: process.getuid!(), gid: process.getgid!(), readOnly: false });
    expect((await expectOk([server.name, "raw", "99", ""])).error).toBe(-22);
    expect((await expectOk([server.name, "raw", "3", "0100"])).error).toBe(-22); // SIZED with a short payload
  });

  test("payload sizes 0, 1, 7, 8, 4095-4097, 65536 and the maximum", async () => {
    const server = await startServer(transport);
    const max = transport === "shm" ? 1048576 : 200000; // datagrams are bounded by the socket buffer
    const largest = max - 24; // the response header must fit too
    await expectOk([server.name, "--max", String(max), "echo-sizes", `0,1,7,8,4095,4096,4097,65536,${largest}`]);
    await expectOk([server.name, "--max", String(max), "echo", String(largest), "20"]);
  });

  test("ring wrap-around: thousands of odd-sized messages", async () => {
    const server = await startServer(transport);
    await expectOk([server.name, "echo", "4093", "3000"]);
    await expectOk([server.name, "echo", "777", "3000"]);
  });

  test("pipelined requests are answered in order", async () => {
    const server = await startServer(transport);
    await expectOk([server.name, "pipeline", "1001", "3000", "16"]);
  });

  test("events beyond the ring's capacity are queued, never dropped; byte accounting exact", async () => {
    const server = await startServer(transport);
    // 200 events of 4000 bytes: far more than a 16 KiB event ring holds at once.
    expect((await expectOk([server.name, "events", "200", "4000"])).events).toBe(200);
  });

  test("a slow handler on one connection does not delay another", async () => {
    const server = await startServer(transport);
    const slow = runClient([server.name, "slow", "1500"]);
    await Bun.sleep(100);
    const started = performance.now();
    await expectOk([server.name, "echo", "64", "50"]);
    expect(performance.now() - started).toBeLessThan(1000);
    expect((await slow).code).toBe(0);
  });

  test("concurrency: 20 libqb clients at once", async () => {
    const server = await startServer(transport);
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => runClient([server.name, "echo", String(100 + i), "200"])));
    for (const run of runs) expect(run.code).toBe(0);
    await eventually(() => server.stats().closedConnections === 20);
  });

  test("authentication: a denied uid is refused with EACCES, a read-only uid is told so", async () => {
    const server = await startServer(transport, { authenticate: interopAuthenticate({ denyUid: NOBODY }) });
    const denied = await runClient([server.name, "info"], { uid: NOBODY });
    expect(denied.code).toBe(1);
    expect(denied.lines[0]).toMatchObject({ what: "connect", rc: -13 });
    const ro = await startServer(transport, { authenticate: interopAuthenticate({ readOnlyUid: NOBODY }) });
    const who = (await expectOk([ro.name, "whoami"], { uid: NOBODY })).whoami;
    expect(who).toMatchObject({ uid: NOBODY, gid: NOBODY, readOnly: true });
  });

  test("authentication: a thenable's answer is honoured; an answer that is no decision refuses the client", async () => {
    const reported: unknown[] = [];
    const thenable = await startServer(transport, {
      authenticate: () => ({ then: (resolve: (d: string) => void) => resolve("reject") }) as unknown as Promise<"reject">,
    });
    expect((await runClient([thenable.name, "info"])).lines[0]).toMatchObject({ what: "connect", rc: -13 });
    const garbage = await startServer(transport, {
      authenticate: () => "admin" as unknown as "read-write",
      onError: (error) => reported.push(error),
    });
    expect((await runClient([garbage.name, "info"])).lines[0]).toMatchObject({ what: "connect", rc: -13 });
    expect(String(reported[0])).toContain('authenticate answered admin');
  });

  test("a full file system: the client is refused with ENOSPC and nothing is left in it", async () => {
    const mount = `/tmp/${uniqueName("qb-full")}`;
    mkdirSync(mount);
    // Bun.spawn, not spawnSync: the latter keeps fds of its own, which the fd count would see.
    expect(await Bun.spawn(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount]).exited).toBe(0);
    try {
      writeFileSync(`${mount}/filler`, new Uint8Array(64 * 1024)); // full: no page left for a ring or a control file
      const reported: unknown[] = [];
      const server = await startServer(transport, { shmDir: mount, onError: (error) => reported.push(error) });
      expect((await runClient([server.name, "info"])).lines[0]).toMatchObject({ what: "connect", rc: -28 });
      await eventually(() => readdirSync(mount).length === 1);
      expect(readdirSync(mount)).toEqual(["filler"]);
      expect(reported.some((error) => (error as { code?: string }).code === "ENOSPC")).toBe(true);
    } finally {
      await Bun.spawn(["umount", mount]).exited;
      rmdirSync(mount);
    }
  });

  test("the connection's files belong to the client and have libqb's modes", async () => {
    const server = await startServer(transport);
    const seen: { dirMode: number; dirUid: number; files: { name: string; mode: number; uid: number }[] }[] = [];
    const holder = Bun.spawn(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", client, server.name, "hold"], {
      stdin: "pipe",
      stdout: "pipe",
    });
    try {
      const reader = holder.stdout.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      expect(first).toContain("READY");
      const dirs = shmListing().filter((d) => !shmBefore.includes(d) && d.startsWith(`qb-${process.pid}-`));
      expect(dirs.length).toBe(1);
      const dir = `/dev/shm/${dirs[0]}`;
      const st = statSync(dir);
      seen.push({
        dirMode: st.mode & 0o777,
        dirUid: st.uid,
        files: readdirSync(dir).map((name) => {
          const f = statSync(`${dir}/${name}`);
          return { name, mode: f.mode & 0o777, uid: f.uid };
        }),
      });
      holder.stdin.end();
      expect(await holder.exited).toBe(0);
    } finally {
      holder.kill();
    }
    const [{ dirMode, dirUid, files }] = seen as [(typeof seen)[0]];
    expect(dirMode).toBe(0o770);
    expect(dirUid).toBe(NOBODY);
    const names = files.map((f) => f.name).sort();
    if (transport === "shm") {
      expect(names).toEqual(
        ["event", "request", "response"].flatMap((r) => [`qb-${r}-${server.name}-data`, `qb-${r}-${server.name}-header`]).sort(),
      );
    } else {
      expect(names).toEqual([`qb-control-${server.name}`]);
    }
    for (const f of files) expect([f.mode, f.uid]).toEqual([0o600, NOBODY]);
    await eventually(() => server.stats().activeConnections === 0);
  });

  test("a SIGKILLed client is detected at once; its files go, other clients carry on", async () => {
    let connected: QbConnection | undefined;
    const server = await startServer(transport, { onConnect: (c) => (connected = c) });
    const victim = Bun.spawn([client, server.name, "hold"], { stdin: "pipe", stdout: "pipe" });
    const reader = victim.stdout.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain("READY");
    await eventually(() => connected !== undefined);
    const other = runClient([server.name, "echo", "512", "500"]);
    victim.kill(9);
    await victim.exited;
    await eventually(() => connected!.closed, 2000);
    expect((await other).code).toBe(0);
    await eventually(() => server.stats().activeConnections === 0);
    expect(shmListing()).toEqual(shmBefore);
  });

  test("flow control: the rate limit 'off' makes libqb clients back off with EAGAIN, 'normal' reopens", async () => {
    let connection: QbConnection | undefined;
    const server = await startServer(transport, { onConnect: (c) => (connection ??= c) });
    const holder = Bun.spawn([client, server.name, "hold"], { stdin: "pipe", stdout: "pipe" });
    const lines = holderLines(holder.stdout);
    try {
      expect(await lines.next()).toBe("READY");
      await eventually(() => connection !== undefined);
      const echo = async () => {
        holder.stdin.write("echo\n");
        holder.stdin.flush();
        return JSON.parse((await lines.next())!);
      };
      expect(await echo()).toEqual({ ok: true, rc: 32 });
      server.setRateLimit("off");
      expect(connection!.stats().flowControlState).toBe(1);
      expect(await echo()).toEqual({ ok: false, rc: -11 }); // libqb's client backs off: EAGAIN, nothing sent
      // A connection made while "off" starts open, as with libqb.
      await expectOk([server.name, "echo", "10", "3"]);
      server.setRateLimit("normal");
      expect(connection!.stats().flowControlState).toBe(0);
      expect(connection!.stats().flowControlCount).toBe(2);
      expect(await echo()).toEqual({ ok: true, rc: 32 });
    } finally {
      holder.stdin.end();
      await holder.exited;
    }
  });

  test("flow control from unanswered requests: a pipelining libqb client backs off at the high-water mark and every request is answered once it reopens", async () => {
    let connection: QbConnection | undefined;
    let deferred = 0;
    const server = await startServer(transport, {
      flowControlHighWater: 4,
      onConnect: (c) => (connection ??= c),
      // Replies come later, so unanswered requests pile up past the mark.
      handler: (request) => {
        deferred++;
        return Bun.sleep(1).then(() => ({ data: request.payload }));
      },
    });
    const run = await expectOk([server.name, "pipeline", "64", "300", "32"]);
    expect(run).toMatchObject({ ok: true });
    expect(deferred).toBe(300);
    const stats = connection!.stats();
    expect(stats.flowControlCount).toBeGreaterThanOrEqual(2); // closed, then reopened, at least once
    expect(stats.flowControlState).toBe(0);
    expect(stats.responses).toBe(300);
  });

  test("while flow control holds queued requests back, the server does not spin on them", async () => {
    let connection: QbConnection | undefined;
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const server = await startServer(transport, {
      flowControlHighWater: 4,
      onConnect: (c) => (connection ??= c),
      handler: (request) => gate.then(() => ({ data: request.payload })),
    });
    const run = runClient([server.name, "pipeline", "64", "40", "32"]);
    await eventually(() => connection?.stats().flowControlState === 1);
    await Bun.sleep(50); // the client has sent what it will before backing off
    const before = process.cpuUsage();
    await Bun.sleep(300);
    const used = process.cpuUsage(before);
    // Waiting for readable requests it does not take would keep this process busy.
    expect((used.user + used.system) / 1000).toBeLessThan(60);
    expect(connection!.stats().requests).toBeLessThan(40); // requests really are held back
    openGate();
    const done = await run;
    expect(done.code).toBe(0);
    expect(done.lines.at(-1)).toMatchObject({ ok: true });
    expect(connection!.stats().responses).toBe(40);
  });

  test("broadcast: events from outside any request reach every connection", async () => {
    const server = await startServer(transport);
    const listeners = Array.from({ length: 3 }, () => Bun.spawn([client, server.name, "listen", "50"], { stdout: "pipe" }));
    const lines = listeners.map((l) => holderLines(l.stdout));
    for (const l of lines) expect(await l.next()).toBe("READY");
    await eventually(() => server.stats().activeConnections === 3);
    for (let i = 0; i < 50; i++) expect(server.broadcast(9, new Uint8Array(1000).fill(i))).toBe(3);
    for (const l of lines) expect(JSON.parse((await l.next())!)).toEqual({ ok: true, events: 50, bytes: 50 * 1024 });
    for (const l of listeners) expect(await l.exited).toBe(0);
  });

  test("a client that does not read: events queue up to the bound the application set, then QueueFullError", async () => {
    let connection: QbConnection | undefined;
    const server = await startServer(transport, { maxQueued: 8, onConnect: (c) => (connection = c) });
    const holder = Bun.spawn([client, server.name, "hold"], { stdin: "pipe", stdout: "pipe" });
    try {
      expect(await holderLines(holder.stdout).next()).toBe("READY");
      await eventually(() => connection !== undefined);
      let sent = 0;
      let refusal: unknown;
      for (let i = 0; i < 10_000 && !refusal; i++) {
        try {
          connection!.sendEvent(3, new Uint8Array(4000));
          sent++;
        } catch (error) {
          refusal = error;
        }
        await new Promise((resolve) => setImmediate(resolve)); // let the socket transport write
      }
      expect(refusal).toMatchObject({ code: "ERR_QBUN_QUEUE_FULL" });
      expect(connection!.stats().queued).toBe(8);
      expect(sent).toBeGreaterThan(8); // the rest went into the client's ring or socket buffer
    } finally {
      holder.stdin.end();
      await holder.exited;
    }
  });

  test("a QB_IPC_MSG_DISCONNECT request (id -3) ends the connection", async () => {
    const closedBy: unknown[] = [];
    const server = await startServer(transport, { onDisconnect: (_c, reason) => closedBy.push(reason) });
    const run = await runClient([server.name, "raw", "-3", ""], { timeoutMs: 15_000 });
    expect(run.lines[0]).toMatchObject({ ok: false, what: "raw" });
    await eventually(() => closedBy.length === 1);
    expect(closedBy[0]).toBeUndefined(); // an orderly end, not an error
  });

  test("statistics count requests, responses, events and bytes", async () => {
    const stats: any[] = [];
    const server = await startServer(transport, { onDisconnect: (c) => stats.push(c.stats()) });
    await expectOk([server.name, "echo", "100", "10"]);
    await expectOk([server.name, "events", "3", "10"]);
    await eventually(() => stats.length === 2);
    expect(stats[0]).toMatchObject({ requests: 10, responses: 10, events: 0, bytesIn: 10 * 116, bytesOut: 10 * 124 });
    expect(stats[1]).toMatchObject({ requests: 1, responses: 1, events: 3 });
    expect(server.stats()).toEqual({ activeConnections: 0, closedConnections: 2 });
  });
});

describe("handlers", () => {
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop();
  });

  test("a response larger than negotiated is an error for the application and -EMSGSIZE for the client", async () => {
    const reported: unknown[] = [];
    const server = await startServer("shm", {
      handler: ({ id }) => (id === 7 ? { data: new Uint8Array(20000) } : { data: new Uint8Array(4) }),
      onError: (error) => reported.push(error),
    });
    expect(await expectOk([server.name, "raw", "7", ""])).toMatchObject({ error: -90, size: 24 });
    expect(String(reported[0])).toContain("exceeds the connection's 12328-byte maximum");
    expect(await expectOk([server.name, "raw", "8", ""])).toMatchObject({ error: 0, size: 28 }); // still usable
  });

  test("a handler that throws answers -EIO and reports the error; the connection stays usable", async () => {
    const reported: unknown[] = [];
    const server = await startServer("socket", {
      handler: ({ id }) => {
        if (id === 1) throw new Error("handler bug");
        return id === 2 ? Promise.reject(new Error("async handler bug")) : {};
      },
      onError: (error) => reported.push(error),
    });
    expect(await expectOk([server.name, "raw", "1", ""])).toMatchObject({ error: -5 });
    expect(await expectOk([server.name, "raw", "2", ""])).toMatchObject({ error: -5 });
    expect(await expectOk([server.name, "raw", "3", ""])).toMatchObject({ error: 0 });
    expect(reported.map(String)).toEqual(["Error: handler bug", "Error: async handler bug"]);
  });

  test.each(["shm", "socket"] as const)("zero-copy requests (%s): payloads read in place (ring chunk or receive buffer), echoed correctly under wrap-around and pipelining", async (transport) => {
    const server = await startServer(transport, { zeroCopyRequests: true });
    await expectOk([server.name, "echo", "4093", "2000"]);
    await expectOk([server.name, "pipeline", "1001", "2000", "16"]);
    await expectOk([server.name, "--max", "1048576", "echo", "1048552", "10"]);
  });

  test.each(["shm", "socket"] as const)("an asynchronous handler (%s) gets its own copy of each payload while later requests arrive", async (transport) => {
    // Requests are read into memory the transport reuses: the next request
    // must not overwrite a payload a pending handler still holds.
    const server = await startServer(transport, {
      handler: async (request) => {
        await Bun.sleep(1);
        return { data: request.payload };
      },
    });
    await expectOk([server.name, "pipeline", "1001", "300", "16"]);
    await expectOk([server.name, "pipeline", "5000", "300", "16"]); // above the socket transport's copy threshold: in place
  });

  test("socket transport: clients of different maximum sizes at once each get their own payloads back", async () => {
    // Requests are read into one buffer shared by the connections and lent
    // to a request handled in place; a maximum above 1 MiB gets a buffer of its own.
    const server = await startServer("socket", { zeroCopyRequests: true });
    await Promise.all([
      expectOk([server.name, "pipeline", "3000", "600", "16"]),
      expectOk([server.name, "pipeline", "9000", "600", "16"]),
      expectOk([server.name, "--max", "1048576", "pipeline", "70000", "150", "8"]),
      expectOk([server.name, "--max", "2097152", "pipeline", "1500000", "12", "4"]),
    ]);
  });
});

describe("server lifecycle", () => {
  test("a second server with the same name gets EADDRINUSE", async () => {
    const name = uniqueName("dup");
    const first = await QbServer.listen({ name, handler: interopHandler });
    try {
      await expect(QbServer.listen({ name, handler: interopHandler })).rejects.toMatchObject({ code: "EADDRINUSE" });
    } finally {
      await first.stop();
    }
  });

  test("stop() answers requests in flight, then removes everything", async () => {
    const before = shmListing();
    const server = await QbServer.listen({ name: uniqueName("stop"), handler: interopHandler });
    const slow = runClient([server.name, "slow", "300"]);
    await Bun.sleep(100);
    await server.stop();
    expect((await slow).code).toBe(0);
    expect(shmListing()).toEqual(before);
    expect((await runClient([server.name, "info"])).lines[0]).toMatchObject({ what: "connect", rc: -111 });
  });

  test("bad options are refused before anything is created", async () => {
    await expect(QbServer.listen({ name: "", handler: interopHandler })).rejects.toThrow("service name");
    await expect(QbServer.listen({ name: "a/b", handler: interopHandler })).rejects.toThrow("service name");
    await expect(QbServer.listen({ name: "x", handler: interopHandler, transport: "pipe" as never })).rejects.toThrow("transport");
  });
});

describe("scale", () => {
  test("Bun raises the soft fd limit to the hard one at start, so a server holds 1,000 clients (2-3 fds each) without configuration", async () => {
    const script = `const l = require("fs").readFileSync("/proc/self/limits", "utf8").split("\\n").find((x) => x.startsWith("Max open files")).split(/ +/); console.log(l[3], l[4]);`;
    const proc = Bun.spawn(["sh", "-c", `ulimit -Sn 256 && exec "$0" -e "$1"`, process.execPath, script], { stdout: "pipe", stderr: "pipe" });
    const [soft, hard] = (await new Response(proc.stdout).text()).trim().split(" ").map(Number);
    expect(await proc.exited).toBe(0);
    expect(hard).toBeGreaterThan(256);
    expect(soft).toBe(hard!);
  });

  test.each(["shm", "socket"] as const)("1,000 concurrent libqb connections on one %s server", async (transport) => {
    const before = shmListing();
    const server = await QbServer.listen({ name: uniqueName(`scale-${transport}`), transport, handler: interopHandler });
    const many = Bun.spawn([client, server.name, "many", "999"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    try {
      const lines = holderLines(many.stdout);
      const ready = await lines.next();
      if (ready !== "READY 1000") throw new Error(`client said ${ready}: ${await new Response(many.stderr).text()}`);
      expect(server.stats().activeConnections).toBe(1000);
      const dirs = shmListing().filter((d) => !before.includes(d));
      expect(dirs.length).toBe(1000);
      // What 1,000 connections take in /dev/shm (libqb's sizes: three 16 KiB rings + headers each, or a control file).
      const du = Bun.spawnSync(["du", "-sk", ...dirs.map((d) => `/dev/shm/${d}`)]).stdout.toString();
      const kib = du.trim().split("\n").reduce((sum, line) => sum + Number(line.split("\t")[0]), 0);
      console.log(`${transport}: 1,000 connections use ${(kib / 1024).toFixed(1)} MiB of /dev/shm`);
      expect(kib).toBeLessThan(transport === "shm" ? 1000 * 100 : 1000 * 8);
      many.stdin.end();
      expect(JSON.parse((await lines.next())!)).toEqual({ ok: true, connections: 1000 });
      expect(await many.exited).toBe(0);
      await eventually(() => server.stats().activeConnections === 0, 10_000);
    } finally {
      many.kill();
      await server.stop();
    }
    expect(shmListing()).toEqual(before);
  });
});

describe("filesystem-socket mode", () => {
  test.skipIf(!canForceFilesystemSockets)("with /etc/libqb/force-filesystem-sockets the server listens on /tmp/NAME, like libqb, and libqb clients find it", async () => {
    await withFilesystemSockets(async () => {
      const server = await QbServer.listen({ name: uniqueName("fsmode"), handler: interopHandler });
      try {
        expect(server.address).toBe(`/tmp/${server.name}`);
        expect(statSync(server.address).isSocket()).toBe(true);
        expect(statSync(server.address).mode & 0o777).toBe(0o777);
        await expectOk([server.name, "echo", "100", "20"]);
      } finally {
        await server.stop();
      }
      expect(existsSync(`/tmp/${server.name}`)).toBe(false);
    });
  });
});
