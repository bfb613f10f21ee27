/**
 * `qbun ls`, `doctor` and `clean` against running servers (qbun serve and
 * the libqb reference server), and against leftovers made on purpose for
 * processes that are gone.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { findStale, looksLikeLibqbSocket, recheck, removeStale } from "../cli/host/stale.ts";
import { SharedMemory } from "../src/shm/index.ts";
import { UnixListener, UnixStream } from "../src/unix/index.ts";
import { paddedAbstractName, unixSockets } from "../cli/host/unix-sockets.ts";
import { QbClient } from "../src/qb/index.ts";
import { tempDir, uniqueName } from "./helpers/env.ts";
import { removeCBuilds } from "./helpers/peers.ts";
import { json, qbun, SERVER_KINDS, shmEntriesOf, startServer, Terminal } from "./helpers/cli.ts";

afterAll(removeCBuilds);

/** A process's name as the kernel has it. */
const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, "utf8").trim();

/** A pid that belonged to a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const proc = Bun.spawn(["true"]);
  await proc.exited;
  return proc.pid;
}

/** A libqb 2.x connection directory, with its six ring files, for a server and client that are gone. */
async function staleRingDir(service: string): Promise<string> {
  const pid = await deadPid();
  const dir = `/dev/shm/qb-${pid}-${pid}-9-${crypto.randomUUID().replace(/-/g, "").slice(0, 6)}`;
  mkdirSync(dir, { mode: 0o770 });
  for (const ring of ["request", "response", "event"]) {
    for (const part of ["header", "data"]) writeFileSync(join(dir, `qb-${ring}-${service}-${part}`), new Uint8Array(8192));
  }
  return dir;
}

describe("qbun ls", () => {
  test("finds a qbun server and a libqb server with their pids, connections and ring directories", async () => {
    await using qbunServer = await startServer("qbun", "shm");
    await using libqbServer = await startServer("libqb", "socket");
    await using a = await QbClient.connect(qbunServer.service);
    await using b = await QbClient.connect(libqbServer.service);
    await a.request(1, new Uint8Array(4));
    await b.request(1, new Uint8Array(4));

    const ran = await qbun(["ls", "--json"]);
    expect(ran.exitCode).toBe(0);
    const listing = json(ran);
    for (const [server, transport, files] of [[qbunServer, "shm", 6], [libqbServer, "socket", 1]] as const) {
      const service = listing.services.find((s: any) => s.name === server.service);
      expect(service).toMatchObject({ address: `@${server.service}`, connections: 1 });
      expect(service.owners.map((o: any) => o.pid)).toEqual([server.pid]);
      expect(service.owners[0]).toMatchObject({ uid: process.getuid!(), comm: comm(server.pid) });
      expect(service.rings).toHaveLength(1);
      const [ring] = service.rings;
      expect(ring).toMatchObject({ layout: "dir", serverPid: server.pid, clientPid: process.pid, service: server.service, transport, stale: false });
      expect(ring.files).toHaveLength(files);
      expect(ring.path).toStartWith(`/dev/shm/qb-${server.pid}-${process.pid}-`);
      expect(ring.allocated).toBeGreaterThan(0);
    }
    // The socket transport's datagram sockets are abstract too, but not services.
    expect(listing.services.some((s: any) => s.name.startsWith("/"))).toBe(false);

    const text = await qbun(["ls"]);
    const uid = process.getuid!();
    expect(text.stdout).toContain(`${qbunServer.service}  @${qbunServer.service}  pid ${qbunServer.pid} (${comm(qbunServer.pid)}, uid ${uid})  1 connection(s), 1 in /dev/shm`);
    expect(text.stdout).toContain(`${libqbServer.service}  @${libqbServer.service}  pid ${libqbServer.pid} (qb_server, uid ${uid})  1 connection(s), 1 in /dev/shm`);
  });

  test("a stopped server's service is gone from the list, and its files with it", async () => {
    let pid = 0;
    let service = "";
    {
      await using server = await startServer("qbun");
      ({ pid, service } = server);
      expect(json(await qbun(["ls", "--json"])).services.map((s: any) => s.name)).toContain(service);
    }
    expect(json(await qbun(["ls", "--json"])).services.map((s: any) => s.name)).not.toContain(service);
    expect(shmEntriesOf(pid)).toEqual([]);
  });
});

describe("qbun doctor and clean with a stale ring directory of a dead process", () => {
  test("doctor warns about it; clean lists it in a dry run and removes it only with --yes", async () => {
    const service = uniqueName("stale");
    const dir = await staleRingDir(service);
    try {
      const checked = await qbun(["doctor", "--json"]);
      const report = json(checked);
      expect(checked.exitCode).toBe(report.ok ? 0 : 1);
      expect(report.checks.map((c: any) => c.id)).toEqual(["memfd-seals", "abstract-sockets", "shm-space", "shm-permissions", "fd-limits", "stale-files", "libqb", "socket-mode"]);
      for (const c of report.checks) {
        expect(["ok", "warn", "fail"]).toContain(c.verdict);
        expect(c.detail.length).toBeGreaterThan(0);
        if (c.verdict !== "ok") expect(c.fix.length).toBeGreaterThan(0);
      }
      const stale = report.checks.find((c: any) => c.id === "stale-files");
      expect(stale).toMatchObject({ verdict: "warn", fix: "qbun clean lists them; qbun clean --yes removes them" });
      expect(stale.items).toContain(dir);
      expect(report.checks.find((c: any) => c.id === "memfd-seals").verdict).toBe("ok");
      expect(report.checks.find((c: any) => c.id === "abstract-sockets").verdict).toBe("ok");

      const text = await qbun(["doctor"]);
      expect(text.stdout).toMatch(/WARN  stale ring files and sockets of dead processes +\d+ left behind/);
      expect(text.stdout).toContain("fix: qbun clean lists them; qbun clean --yes removes them");

      // Dry run (stdin is not a terminal: no question asked): listed, left in place.
      const dry = await qbun(["clean", "--service", service, "--json"]);
      expect(dry.exitCode).toBe(0);
      expect(json(dry)).toMatchObject({ dryRun: true, removed: [], failed: [], stale: [{ path: dir, kind: "ring-dir", service, bytes: 6 * 8192 }] });
      const dryText = await qbun(["clean", "--service", service]);
      expect(dryText.stdout).toContain(dir);
      expect(dryText.stdout).toContain('dry run: nothing removed. Run "qbun clean --yes"');
      expect(existsSync(dir)).toBe(true);

      const removed = await qbun(["clean", "--service", service, "--yes", "--json"]);
      expect(removed.exitCode).toBe(0);
      expect(json(removed)).toMatchObject({ dryRun: false, removed: [dir], failed: [] });
      expect(existsSync(dir)).toBe(false);
      expect(json(await qbun(["clean", "--service", service, "--json"])).stale).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("old libqb's flat ring files (no directory) of a dead process are found and removed too", async () => {
    const service = uniqueName("flat");
    const pid = await deadPid();
    const files = ["request", "response", "event"].flatMap((ring) => ["header", "data"].map((part) => `/dev/shm/qb-${pid}-${pid}-7-${ring}-${service}-${part}`));
    for (const file of files) writeFileSync(file, new Uint8Array(4096));
    try {
      const dry = json(await qbun(["clean", "--service", service, "--json"]));
      expect(dry.stale.map((s: any) => [s.kind, s.path]).sort()).toEqual(files.map((f) => ["ring-file", f]).sort());
      expect(files.every((f) => existsSync(f))).toBe(true);
      const removed = json(await qbun(["clean", "--service", service, "--yes", "--json"]));
      expect(removed.removed.sort()).toEqual([...files].sort());
      expect(files.some((f) => existsSync(f))).toBe(false);
    } finally {
      for (const file of files) rmSync(file, { force: true });
    }
  });

  test.each(SERVER_KINDS)("a live %s server's connection files are never stale", async (kind) => {
    await using server = await startServer(kind);
    await using client = await QbClient.connect(server.service);
    await client.request(1, new Uint8Array(1));
    const dry = json(await qbun(["clean", "--service", server.service, "--json"]));
    expect(dry.stale).toEqual([]);
    const forced = json(await qbun(["clean", "--service", server.service, "--force", "--json"]));
    expect(forced.removed).toEqual([]);
    expect((await client.request(1, new Uint8Array([7]))).data).toEqual(new Uint8Array([7]));
  });

  test("a socket file nobody listens on is stale; a listening one is not", async () => {
    using dir = tempDir("cli-sockets");
    const dead = dir.file("dead-service");
    const bound = Bun.spawnSync(["python3", "-c", `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(dead)})`]);
    expect(bound.exitCode).toBe(0);
    using live = UnixListener.listen(dir.file("live-service"));
    const dry = json(await qbun(["clean", "--socket-dir", dir.path, "--json"]));
    const st = lstatSync(dead, { bigint: true });
    expect(dry.stale.filter((s: any) => s.kind === "socket")).toEqual([
      {
        path: dead,
        kind: "socket",
        service: "dead-service",
        bytes: 0,
        why: "no socket is bound to it (/proc/net/unix): its owner is gone",
        dev: Number(st.dev),
        ino: Number(st.ino),
        ctimeNs: String(st.ctimeNs),
        uid: Number(st.uid),
      },
    ]);
    // Judged from /proc/net/unix: clean never connected to the live listener (a connect would wait in its backlog).
    await expect(live.accept({ signal: AbortSignal.timeout(300) })).rejects.toThrow();
    expect(existsSync(dead)).toBe(true);
    const removed = json(await qbun(["clean", "--socket-dir", dir.path, "--service", "dead-service", "--yes", "--json"]));
    expect(removed.removed).toEqual([dead]);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(dir.file("live-service"))).toBe(true);
    live.close();
  });
});

describe("reading /proc/net/unix", () => {
  test("listening, connected and padded abstract rows; names with spaces; short abstract names are not libqb's", () => {
    using dir = tempDir("cli-net-unix");
    const padded = `@svc one${"@".repeat(107 - 7)}`;
    writeFileSync(
      dir.file("unix"),
      [
        "Num       RefCount Protocol Flags    Type St Inode Path",
        `0000000000000000: 00000002 00000000 00010000 0001 01 101 ${padded}`,
        `0000000000000000: 00000003 00000000 00000000 0001 03 102 ${padded}`,
        "0000000000000000: 00000002 00000000 00010000 0001 01 103 @short",
        "0000000000000000: 00000002 00000000 00000000 0002 01 104 /run/some socket",
        "0000000000000000: 00000003 00000000 00000000 0001 03 105",
      ].join("\n"),
    );
    const rows = unixSockets(dir.file("unix"));
    expect(rows).toEqual([
      { inode: 101, type: "stream", listening: true, connected: false, path: padded },
      { inode: 102, type: "stream", listening: false, connected: true, path: padded },
      { inode: 103, type: "stream", listening: true, connected: false, path: "@short" },
      { inode: 104, type: "dgram", listening: false, connected: false, path: "/run/some socket" },
      { inode: 105, type: "stream", listening: false, connected: true, path: "" },
    ]);
    expect(rows.map((r) => paddedAbstractName(r.path))).toEqual(["svc one", "svc one", undefined, undefined, undefined]);
  });
});

describe("qbun doctor verdicts", () => {
  test("a /dev/shm stand-in that is not 1777 warns with a chmod fix; a missing one fails and exits 1", async () => {
    using dir = tempDir("cli-doctor");
    chmodSync(dir.path, 0o755);
    const warned = json(await qbun(["doctor", "--shm-dir", dir.path, "--json"]));
    const permissions = warned.checks.find((c: any) => c.id === "shm-permissions");
    expect(permissions.verdict).toBe("warn");
    expect(permissions.detail).toContain("mode 755, not 1777");
    expect(permissions.fix).toContain(`chmod 1777 ${dir.path}`);

    const missing = await qbun(["doctor", "--shm-dir", dir.file("absent"), "--json"]);
    expect(missing.exitCode).toBe(1);
    const report = json(missing);
    expect(report.ok).toBe(false);
    const space = report.checks.find((c: any) => c.id === "shm-space");
    expect(space.verdict).toBe("fail");
    expect(space.detail).toContain("ENOENT");
    expect(space.fix).toContain("mount -t tmpfs");
    const text = await qbun(["doctor", "--shm-dir", dir.file("absent")]);
    expect(text.exitCode).toBe(1);
    expect(text.stdout).toMatch(/^FAIL  \/dev\/shm size and free space/m);
    expect(text.stdout).toContain("verdict: NOT OK");
  });
});

describe("usage errors", () => {
  test.each([
    [["ls", "--shm-dir", "relative"], "--shm-dir: an absolute directory path"],
    [["ls", "extra"], "'extra'"],
    [["doctor", "--socket-dir", "tmp"], "--socket-dir: an absolute directory path"],
    [["clean", "--service", "a/b"], "--service: a service name without '/'"],
    [["clean", "--yes=no"], "--yes"],
  ])("%j: exit 2, one line naming the flag", async (args, message) => {
    const ran = await qbun(args);
    expect(ran.exitCode).toBe(2);
    expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(ran.stderr).toContain(message);
  });
});

/** Binds a socket file at `path` and exits: a socket file nobody is bound to any more. */
function deadSocketFile(path: string, type: "SOCK_STREAM" | "SOCK_DGRAM" = "SOCK_STREAM"): void {
  const bound = Bun.spawnSync(["python3", "-c", `import socket; s = socket.socket(socket.AF_UNIX, socket.${type}); s.bind(${JSON.stringify(path)})`]);
  expect(bound.exitCode).toBe(0);
}

describe("clean never removes what is alive when it removes", () => {
  test("a socket file re-created by a live listener between listing and removal is kept, and the listener still answers", async () => {
    using dir = tempDir("cli-recreated");
    const path = dir.file("svc");
    deadSocketFile(path);
    const listed = await findStale({ socketDir: dir.path });
    expect(listed.map((s) => s.path)).toEqual([path]);
    // Meanwhile a server starts again under the same name (as a restarted libqb server unlinks and binds).
    rmSync(path);
    using live = UnixListener.listen(path);
    const result = removeStale(listed);
    expect(result.removed).toEqual([]);
    // Caught by the file's identity, or (should the filesystem reuse inode and time) by the kernel's table.
    expect(result.skipped).toEqual([{ path, why: expect.stringMatching(/^(replaced by another file \(or changed\) since it was listed|a socket is bound to it now)/) }]);
    expect(existsSync(path)).toBe(true);
    const [client, server] = await Promise.all([UnixStream.connect(path), live.accept()]);
    client.close();
    server.close();
  });

  test("the same socket file, bound again by the time of removal, is kept (the kernel's table is read again)", async () => {
    using dir = tempDir("cli-rebound");
    const path = dir.file("svc");
    deadSocketFile(path);
    const [item] = await findStale({ socketDir: dir.path });
    // A live socket bound to the path now (same file identity faked: only the kernel's table tells).
    rmSync(path);
    using live = UnixListener.listen(path);
    const st = lstatSync(path, { bigint: true });
    const same = { ...item!, dev: Number(st.dev), ino: Number(st.ino), ctimeNs: String(st.ctimeNs) };
    expect(recheck(same)).toBe("a socket is bound to it now (someone listens)");
    expect(removeStale([same]).removed).toEqual([]);
    expect(existsSync(path)).toBe(true);
    live.close();
  });

  test("in a terminal: the listener that appears while clean asks is not removed by the yes", async () => {
    using dir = tempDir("cli-tty-recreated");
    const path = dir.file("svc");
    deadSocketFile(path);
    await using term = new Terminal(["clean", "--socket-dir", dir.path]);
    await term.waitFor(path);
    await term.waitFor("Remove these 1 item(s)?");
    rmSync(path);
    using live = UnixListener.listen(path);
    await term.type("y");
    await term.type("\r");
    await term.waitFor("removed 0 of 1");
    await term.waitFor(`kept ${path}: `);
    expect(await term.exited()).toBe(0);
    expect(existsSync(path)).toBe(true);
    const [client, server] = await Promise.all([UnixStream.connect(path), live.accept()]);
    client.close();
    server.close();
  });

  test("a stale ring directory replaced by a live connection's directory of the same name is kept", async () => {
    using shm = tempDir("cli-ring-replaced");
    const pid = await deadPid();
    const dir = join(shm.path, `qb-${process.pid}-${pid}-9-AbCdEf`);
    const file = join(dir, "qb-request-svc-header");
    const make = () => {
      mkdirSync(dir);
      writeFileSync(file, new Uint8Array(4096));
      const old = new Date(Date.now() - 60_000);
      utimesSync(file, old, old);
      utimesSync(dir, old, old);
    };
    make();
    const listed = await findStale({ shmDir: shm.path });
    expect(listed).toMatchObject([{ path: dir, kind: "ring-dir", service: "svc", serverPid: process.pid, clientPid: pid }]);
    rmSync(dir, { recursive: true });
    make();
    using mem = SharedMemory.openFile({ path: file });
    using _map = mem.map();
    const result = removeStale(listed);
    expect(result.removed).toEqual([]);
    expect(result.skipped.map((k) => k.path)).toEqual([dir]);
    expect(existsSync(file)).toBe(true);
  });

  test("a ring directory a live process maps by the time of removal is kept", async () => {
    using shm = tempDir("cli-ring-in-use");
    const pid = await deadPid();
    const dir = join(shm.path, `qb-${process.pid}-${pid}-9-GhIjKl`);
    mkdirSync(dir);
    const file = join(dir, "qb-request-svc-header");
    writeFileSync(file, new Uint8Array(4096));
    // Old enough that an idle live server pid does not count as "creating it".
    const old = new Date(Date.now() - 60_000);
    utimesSync(file, old, old);
    utimesSync(dir, old, old);
    const listed = await findStale({ shmDir: shm.path });
    expect(listed.map((s) => s.path)).toEqual([dir]);
    // This process (the server pid in the name) maps a file of it now.
    using mem = SharedMemory.openFile({ path: file });
    using _map = mem.map();
    expect(recheck(listed[0]!)).toStartWith("in use now (server");
    expect(removeStale(listed).removed).toEqual([]);
    expect(existsSync(dir)).toBe(true);
  });
});

describe("which socket files clean looks at", () => {
  test("in libqb's own directory only libqb-named files; in a directory the user names, every socket file", async () => {
    using dir = tempDir("cli-socket-names");
    const names = ["qb-svc-10-11-12-request", "qb-svc-10-11-12-event-tx", "svc", "other.sock", ".s.PGSQL.5432"];
    for (const name of names) deadSocketFile(dir.file(name), name.startsWith("qb-") ? "SOCK_DGRAM" : "SOCK_STREAM");
    const implicit = await findStale({ socketDir: dir.path, onlyLibqbNames: true });
    // "svc" counts: a connection socket names the service. Other programs' sockets are not libqb's business.
    expect(implicit.map((s) => basename(s.path)).sort()).toEqual(["qb-svc-10-11-12-event-tx", "qb-svc-10-11-12-request", "svc"]);
    expect(implicit.every((s) => s.service === "svc")).toBe(true);
    const named = await findStale({ socketDir: dir.path });
    expect(named.map((s) => basename(s.path)).sort()).toEqual([...names].sort());
    expect(looksLikeLibqbSocket("qb-x-1-2-3-response", new Set())).toBe(true);
    expect(looksLikeLibqbSocket("x", new Set())).toBe(false);
    expect(looksLikeLibqbSocket("x", new Set(["x"]))).toBe(true);
  });

  test("a bound datagram socket (libqb's socket transport) is alive", async () => {
    using dir = tempDir("cli-dgram-alive");
    const path = dir.file("qb-svc-1-2-3-request");
    const holder = Bun.spawn(["python3", "-c", `import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(${JSON.stringify(path)}); print("bound", flush=True); sys.stdin.read()`], { stdin: "pipe", stdout: "pipe" });
    try {
      const reader = holder.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain("bound");
      expect(await findStale({ socketDir: dir.path })).toEqual([]);
    } finally {
      holder.stdin.end();
      await holder.exited;
    }
    expect((await findStale({ socketDir: dir.path })).map((s) => s.path)).toEqual([path]);
  });
});

describe("liveness when the bound path is spelled differently", () => {
  test("a listener bound through a symlinked directory, or by a relative path, is alive", async () => {
    using dir = tempDir("cli-spelling");
    const real = dir.file("real");
    mkdirSync(real);
    const link = dir.file("link");
    symlinkSync(real, link);
    // Bound as <link>/via-link: the kernel's table says so, the file lives in <real>.
    using viaLink = UnixListener.listen(join(link, "via-link"));
    // Bound as "relative" from inside <real> by another process.
    const holder = Bun.spawn(["python3", "-c", 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind("relative"); s.listen(1); print("bound", flush=True); sys.stdin.read()'], { cwd: real, stdin: "pipe", stdout: "pipe" });
    try {
      const reader = holder.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain("bound");
      deadSocketFile(join(real, "dead"));
      expect((await findStale({ socketDir: real })).map((s) => basename(s.path))).toEqual(["dead"]);
      expect((await findStale({ socketDir: link })).map((s) => basename(s.path))).toEqual(["dead"]);
    } finally {
      holder.stdin.end();
      await holder.exited;
      viaLink.close();
    }
  });
});

describe("qbun ls directories", () => {
  test("--shm-dir is the directory the text names, and --socket-dir is accepted", async () => {
    await using server = await startServer("qbun");
    await using client = await QbClient.connect(server.service);
    await client.request(1, new Uint8Array(1));
    using shm = tempDir("cli-ls-shm");
    const ran = await qbun(["ls", "--shm-dir", shm.path, "--socket-dir", shm.path]);
    expect(ran.exitCode).toBe(0);
    expect(ran.stdout).toContain(`${server.service}  @${server.service}`);
    expect(ran.stdout).toContain(`1 connection(s), 0 in ${shm.path} (0 B)`);
    const listing = json(await qbun(["ls", "--shm-dir", shm.path, "--socket-dir", shm.path, "--json"]));
    expect(listing).toMatchObject({ shmDir: shm.path, socketDir: shm.path });
    expect((await qbun(["ls", "--socket-dir", "rel"])).stderr).toContain('--socket-dir: an absolute directory path (got "rel")');
  });
});
