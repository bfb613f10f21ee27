/**
 * The CLI from source, the standalone executable built by
 * scripts/build-binary.ts, and that executable on a machine without
 * libc6-dev (simulated with a private mount namespace).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { HIDE_SCRIPT, libcLinkScripts, namespaceUnavailable } from "./helpers/no-headers.ts";

const root = resolve(import.meta.dir, "..");
const cliMain = join(root, "cli", "main.ts");
const buildScript = join(root, "scripts", "build-binary.ts");
const bun = process.execPath;

interface Ran {
  exitCode: number | null;
  signalCode: string | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Ran {
  const proc = Bun.spawnSync(cmd, {
    cwd: options.cwd ?? root,
    env: { ...process.env, ...options.env },
    stdout: "pipe",
    stderr: "pipe",
  });
  return {
    exitCode: proc.exitCode,
    signalCode: proc.signalCode == null ? null : String(proc.signalCode),
    stdout: proc.stdout.toString(),
    stderr: proc.stderr.toString(),
  };
}

/** Parses the JSON a command printed; on failure the error shows everything it said. */
function json<T = any>(ran: Ran): T {
  try {
    return JSON.parse(ran.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${ran.exitCode}, signal ${ran.signalCode}):\n${ran.stdout}\n--- stderr:\n${ran.stderr}`);
  }
}

interface SelftestJson {
  ok: boolean;
  build: string | null;
  checks: { id: string; status: string; detail: string }[];
}

const hasLibcHeaders = existsSync("/usr/include/stdio.h");

/** The shared-memory checks (cli/selftest/shm.ts), in the order they run. */
const SHM_CHECKS = ["shm-memfd-seals", "shm-readonly-fd", "shm-circular", "shm-semaphore"];

/** Every selftest check, in the order they run. */
const ALL_CHECKS = ["helper", "reactor", "fd-passing", "peercred", ...SHM_CHECKS];

/**
 * Expects every check of `report` to have passed, in the usual order; a
 * failure shows the detail of each check that did not pass.
 */
function expectAllPassed(report: SelftestJson): void {
  const outcome = (c: SelftestJson["checks"][number]) => [c.id, c.status === "pass" ? "pass" : `${c.status}: ${c.detail}`];
  expect(report.checks.map(outcome)).toEqual(ALL_CHECKS.map((id) => [id, "pass"]));
  expect(report.ok).toBe(true);
}

/** What `demo --json` must report wherever it runs (the build aside). */
function expectDemoReport(report: any): void {
  expect(report).toMatchObject({
    ok: true,
    reply: "thanks",
    fd: {
      sameFile: true,
      readOnly: true,
      seals: ["shrink", "grow", "write"],
      writableMapping: "EACCES",
      reopened: { step: "mmap", code: "EPERM" },
    },
    afterClose: "ECONNREFUSED",
  });
  expect(report.fd.target).toMatch(/^\/memfd:qbun-demo/);
  expect(report.fd.content).toMatch(/^hello from pid \d+, written and sealed before the fd was sent$/);
  expect(report.messageCredentials.pid).toBe(report.peerCredentials.pid);
}

describe("qbun from source (bun cli/main.ts)", () => {
  test.skipIf(!hasLibcHeaders)("selftest passes and reports the source build", () => {
    const ran = run([bun, cliMain, "selftest", "--json"]);
    const report = json<SelftestJson>(ran);
    expect(report.build).toBe("source");
    expectAllPassed(report);
    expect(ran.exitCode).toBe(0);
  });

  test.skipIf(!hasLibcHeaders)("selftest text lists the shared-memory checks and the verdict", () => {
    const ran = run([bun, cliMain, "selftest"]);
    expect(ran.exitCode).toBe(0);
    for (const title of [
      "memfd: seals refuse grow/shrink/write",
      "read-only fd cannot be mapped writable",
      "circular mapping mirrors its halves",
      "semaphore: post wakes an async wait",
    ]) {
      expect(ran.stdout).toContain(`PASS  ${title}`);
    }
    expect(ran.stdout).toContain(`verdict: OK (${ALL_CHECKS.length} of ${ALL_CHECKS.length} checks passed)`);
  });

  test.skipIf(!hasLibcHeaders)("demo --json passes a sealed memfd read-only", () => {
    const ran = run([bun, cliMain, "demo", "--json"]);
    const report = json(ran);
    expect(report.build).toBe("source");
    expectDemoReport(report);
    expect(ran.exitCode).toBe(0);
  });

  test("--help, --version and usage errors", () => {
    const helpRun = run([bun, cliMain, "--help"]);
    expect(helpRun.exitCode).toBe(0);
    expect(helpRun.stdout).toContain("Usage: qbun <command>");
    expect(helpRun.stdout).toContain("selftest");
    expect(run([bun, cliMain, "help", "demo"]).stdout).toContain("--name NAME");

    const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
    expect(run([bun, cliMain, "--version"]).stdout.trim()).toBe(`qbun ${version}`);

    const unknown = run([bun, cliMain, "frobnicate"]);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    const badFlag = run([bun, cliMain, "selftest", "--verbose"]);
    expect(badFlag.exitCode).toBe(2);
    expect(badFlag.stderr).toContain("--verbose");
    const badName = run([bun, cliMain, "demo", "--name", "x".repeat(120)]);
    expect(badName.exitCode).toBe(2);
    expect(badName.stderr).toContain("--name");
  });
});

describe("the standalone executable", () => {
  let dir = "";
  let qbun = "";

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "qbun-binary-"));
    qbun = join(dir, "qbun");
    const built = run([bun, buildScript, "--outfile", qbun]);
    if (built.exitCode !== 0) throw new Error(`build-binary failed:\n${built.stdout}\n${built.stderr}`);
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("is built", () => {
    expect(statSync(qbun).mode & 0o111).not.toBe(0);
  });

  test("selftest passes with the embedded helper, run away from the repository", () => {
    const ran = run([qbun, "selftest", "--json"], { cwd: dir });
    const report = json<SelftestJson>(ran);
    expect(report.build).toBe("embedded");
    expectAllPassed(report);
    expect(ran.exitCode).toBe(0);
  });

  test("demo passes a sealed memfd read-only, with credentials, and says so", () => {
    const ran = run([qbun, "demo"], { cwd: dir });
    expect(ran.stderr).toBe("");
    expect(ran.exitCode).toBe(0);
    expect(ran.stdout).toContain("embedded build");
    expect(ran.stdout).toMatch(/listening on @qbun-demo-/);
    expect(ran.stdout).toMatch(/accepted a connection from pid \d+ .*SO_PEERCRED\)/);
    expect(ran.stdout).toContain("sealed it: shrink, grow, write");
    expect(ran.stdout).toMatch(/sent "here is a memfd" with a read-only fd for it \(fd \d+\)/);
    expect(ran.stdout).toMatch(/received "here is a memfd" with 1 fd, .*the same file, open read-only\)/);
    expect(ran.stdout).toContain("(SCM_CREDENTIALS)");
    expect(ran.stdout).toContain('mapped it read-only; the file reads: "hello from pid');
    expect(ran.stdout).toContain("mapping it writable fails with EACCES: the fd is read-only");
    expect(ran.stdout).toContain("even reopened read-write via /proc, a writable mapping fails with EPERM");
    expect(ran.stdout).toContain('got the reply "thanks"');
    expect(ran.stdout).toMatch(/connecting to @qbun-demo-\S+ now fails with ECONNREFUSED/);
  });

  test("demo --json", () => {
    const ran = run([qbun, "demo", "--json"], { cwd: dir });
    const report = json(ran);
    expect(report.build).toBe("embedded");
    expectDemoReport(report);
    expect(ran.exitCode).toBe(0);
  });

  test("serve --handler imports a TypeScript module by path; call and ls see it", async () => {
    const handler = join(dir, "reverse.ts");
    writeFileSync(handler, 'export default { onRequest(r: { payload: Uint8Array }) { return { data: r.payload.slice().reverse() }; } };\n');
    const service = `qbun-test-${process.pid}-binary-handler`;
    const proc = Bun.spawn([qbun, "serve", "--service", service, "--handler", "reverse.ts"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
    try {
      const reader = proc.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value).trim()).toBe(`READY ${service}`);
      reader.releaseLock();
      const called = await runAsync([qbun, "call", service, "1", "abc", "--json"]);
      expect(json(called)).toMatchObject({ error: 0, data: "cba" });
      const listed = json(await runAsync([qbun, "ls", "--json"]));
      expect(listed.services.find((s: { name: string }) => s.name === service)?.owners[0].pid).toBe(proc.pid);
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
  });

  describe("on a machine without libc6-dev (mount namespace hiding /usr/include and libc.so)", () => {
    const why = namespaceUnavailable();
    let emptyFile = "";
    let linkScripts: string[] = [];
    let hide: (cmd: string[]) => Ran = () => {
      throw new Error("not set up");
    };

    beforeAll(() => {
      if (why) return;
      emptyFile = join(dir, "empty");
      writeFileSync(emptyFile, "");
      linkScripts = libcLinkScripts();
      hide = (cmd) =>
        run(["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_SCRIPT, "hide", ...cmd], {
          env: { QBUN_EMPTY_FILE: emptyFile, QBUN_HIDE: linkScripts.join(":") },
        });
    });

    test.skipIf(why !== undefined)(`the executable's selftest passes${why ? ` (skipped: ${why})` : ""}`, () => {
      // With libc6-dev installed, there is a link script to hide (else the test proves less than it says).
      if (hasLibcHeaders) expect(linkScripts.length).toBeGreaterThan(0);
      const ran = hide([qbun, "selftest", "--json"]);
      expect(ran.stderr).toContain("hidden: /usr/include has no stdio.h");
      const report = json<SelftestJson>(ran);
      expect(report.build).toBe("embedded");
      expectAllPassed(report);
      expect(ran.exitCode).toBe(0);
    });

    test.skipIf(why !== undefined)(`the executable's demo passes${why ? ` (skipped: ${why})` : ""}`, () => {
      const ran = hide([qbun, "demo", "--json"]);
      expect(ran.stderr).toContain("hidden: /usr/include has no stdio.h");
      const report = json(ran);
      expect(report.build).toBe("embedded");
      expectDemoReport(report);
      expect(ran.exitCode).toBe(0);
    });

    test.skipIf(why !== undefined)(`the executable's call and doctor --json work${why ? ` (skipped: ${why})` : ""}`, async () => {
      await using server = await serveFromSource();
      const called = hide([qbun, "call", server.service, "1", "no headers here", "--json"]);
      expect(called.stderr).toContain("hidden: /usr/include has no stdio.h");
      expect(json(called)).toMatchObject({ error: 0, size: 15, data: "no headers here", encoding: "utf8" });
      expect(called.exitCode).toBe(0);

      const checked = hide([qbun, "doctor", "--json"]);
      const report = json(checked);
      for (const id of ["memfd-seals", "abstract-sockets", "shm-permissions"]) {
        expect(report.checks.find((c: { id: string }) => c.id === id)).toMatchObject({ verdict: "ok" });
      }
      expect(checked.exitCode).toBe(report.ok ? 0 : 1);
    });

    test.skipIf(why !== undefined)("from source, selftest fails with a clear message, not a crash", () => {
      const ran = hide([bun, cliMain, "selftest", "--json"]);
      expect(ran.stderr).toContain("hidden: /usr/include has no stdio.h");
      expect(ran.signalCode).toBeNull();
      expect(ran.exitCode).toBe(1);
      const report = json<SelftestJson>(ran);
      expect(report.ok).toBe(false);
      expect(report.build).toBeNull();
      const [helper, ...rest] = report.checks;
      expect(helper?.status).toBe("fail");
      expect(helper?.detail).toContain("could not compile the C helper");
      expect(helper?.detail).toContain("libc6-dev");
      expect(helper?.detail).toMatch(/include file '.*' not found/);
      expect(rest.map((c) => [c.id, c.status, c.detail])).toEqual(ALL_CHECKS.slice(1).map((id) => [id, "skip", "needs helper"]));
    });
  });
});

/** {@link run}, without blocking this process's event loop. */
async function runAsync(cmd: string[]): Promise<Ran> {
  const proc = Bun.spawn(cmd, { cwd: root, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const exitCode = await proc.exited;
  return { exitCode, signalCode: proc.signalCode == null ? null : String(proc.signalCode), stdout, stderr };
}

/** `qbun serve` from source in a child process (so a blocking spawnSync here cannot stall it), stopped on dispose. */
async function serveFromSource(): Promise<AsyncDisposable & { service: string }> {
  const service = `qbun-test-${process.pid}-binary-call`;
  const proc = Bun.spawn([bun, cliMain, "serve", "--service", service], { stdout: "pipe", stderr: "pipe" });
  const reader = proc.stdout.getReader();
  const first = new TextDecoder().decode((await reader.read()).value).trim();
  reader.releaseLock();
  if (first !== `READY ${service}`) throw new Error(`serve said ${JSON.stringify(first)}`);
  return {
    service,
    async [Symbol.asyncDispose]() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

