/**
 * qbun as someone else's dependency: `bun pm pack` (prepack writes the
 * header-free helper), `bun add <tarball>` into a fresh project under the
 * system temp dir, then the consumer program in test/fixtures/consumer runs
 * from node_modules, type-checks with `strict`, compiles with `bun build
 * --compile`, and keeps working with libc6-dev hidden. The README's code
 * blocks are the fixture files under readme/ and run there too.
 *
 * The repository is never packed in place: its package files are copied to
 * a staging dir first, so the transient ffi/qbun.i never appears in the
 * working tree other tests use. Pack and install happen once per file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { detectLibc, platformProblem } from "../ffi/platform.ts";
import { HIDE_SCRIPT, libcLinkScripts, namespaceUnavailable } from "./helpers/no-headers.ts";

const root = resolve(import.meta.dir, "..");
const fixtures = join(import.meta.dir, "fixtures", "consumer");
const bun = process.execPath;
const repoPackage = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
/** Without libc6-dev here, only the header-free helper can load (and a compiled program needs qbun.i embedded). */
const hasLibcHeaders = existsSync("/usr/include/stdio.h");

interface Ran {
  exitCode: number | null;
  signalCode: string | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string[], options: { cwd: string; env?: Record<string, string | undefined> }): Ran {
  const proc = Bun.spawnSync(cmd, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdout: "pipe", stderr: "pipe" });
  return {
    exitCode: proc.exitCode,
    signalCode: proc.signalCode == null ? null : String(proc.signalCode),
    stdout: proc.stdout.toString(),
    stderr: proc.stderr.toString(),
  };
}

/** Runs a command that must succeed; otherwise throws with everything it said. */
function ok(cmd: string[], options: { cwd: string; env?: Record<string, string | undefined> }): Ran {
  const ran = run(cmd, options);
  if (ran.exitCode !== 0) {
    throw new Error(`${cmd.join(" ")} failed (exit ${ran.exitCode}, signal ${ran.signalCode}):\n${ran.stdout}\n--- stderr:\n${ran.stderr}`);
  }
  return ran;
}

function json<T = any>(ran: Ran): T {
  try {
    return JSON.parse(ran.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${ran.exitCode}, signal ${ran.signalCode}):\n${ran.stdout}\n--- stderr:\n${ran.stderr}`);
  }
}

/** Every file under `dir` (relative to `base`), recursively. */
function walk(dir: string, base: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(path, base));
    else out.push(relative(base, path));
  }
  return out;
}

/** What the consumer program must report wherever it runs. */
function expectConsumerReport(report: any): void {
  expect(report).toEqual({
    barrel: true,
    unix: "memfd: hello",
    "qb-shm": { error: 0, data: "42:PING", transport: "shm" },
    "qb-socket": { error: 0, data: "42:PING", transport: "socket" },
    blob: { text: "blob payload", released: "released", left: 0 },
    lease: { text: "leased", consistent: true },
  });
}

/** /dev/shm entries a consumer process may have made (its qb services: qbun-consumer-<pid>-…, the README's my-service-<pid>). */
const consumerShm = () => readdirSync("/dev/shm").filter((name) => name.includes("qbun-consumer-") || name.includes("my-service-"));

let work = "";
let stage = "";
let tarball = "";
let consumer = "";
let elsewhere = "";
let packOutput = "";
let packed: string[] = [];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "qbun-package-"));
  stage = join(work, "stage");
  consumer = join(work, "consumer");
  elsewhere = join(work, "elsewhere");
  for (const dir of [stage, consumer, elsewhere]) mkdirSync(dir);

  // Stage: package.json, the top-level entries its "files" name, and scripts/ (prepack runs from there).
  const tops = new Set<string>(["package.json", "scripts", ...repoPackage.files.map((f: string) => f.split("/")[0])]);
  for (const top of tops) {
    if (existsSync(join(root, top))) cpSync(join(root, top), join(stage, top), { recursive: true });
  }
  rmSync(join(stage, "ffi", "qbun.i"), { force: true }); // only prepack may make it
  rmSync(join(stage, "docs", "API.md"), { force: true }); // prepack regenerates it too
  symlinkSync(join(root, "node_modules"), join(stage, "node_modules")); // prepack's api-docs uses typescript
  packOutput = ok([bun, "pm", "pack", "--destination", join(work, "out")], { cwd: stage }).stdout;
  const [name] = readdirSync(join(work, "out")).filter((f) => f.endsWith(".tgz"));
  if (!name) throw new Error(`bun pm pack wrote no tarball:\n${packOutput}`);
  tarball = join(work, "out", name);
  packed = ok(["tar", "-tzf", tarball], { cwd: work }).stdout.trim().split("\n").sort();

  // A fresh project: the tarball, and the type checker at this repository's versions.
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "qbun-consumer", private: true, type: "module" }));
  cpSync(fixtures, consumer, { recursive: true });
  const dev = repoPackage.devDependencies;
  ok([bun, "add", "--prefer-offline", tarball, `typescript@${dev.typescript}`, `@types/bun@${dev["@types/bun"]}`], { cwd: consumer });
}, 120_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("bun pm pack", () => {
  test("packs exactly the sources, the C helper (also header-free), README, LICENSE and API docs", () => {
    const runtime = [
      ...walk(join(root, "src"), root),
      ...walk(join(root, "cli"), root),
      ...readdirSync(join(root, "ffi")).filter((f) => f.endsWith(".ts")).map((f) => `ffi/${f}`),
      "ffi/qbun.c",
      "ffi/qbun.i",
      "docs/API.md",
      "README.md",
      "LICENSE",
      "package.json",
    ];
    expect(packed).toEqual(runtime.map((f) => `package/${f}`).sort());
    for (const entry of packed) expect(entry).not.toMatch(/(^|\/)(test|tests|fixtures|bench|scripts|node_modules|build)\/|\.test\.ts$|\.tgz$/);
  });

  test("the packed helper is this qbun.c, and its header-free copy was made from it at pack time", () => {
    const unpacked = join(work, "unpacked");
    mkdirSync(unpacked, { recursive: true });
    ok(["tar", "-xzf", tarball, "-C", unpacked], { cwd: work });
    expect(readFileSync(join(unpacked, "package", "ffi", "qbun.c"), "utf8")).toBe(readFileSync(join(stage, "ffi", "qbun.c"), "utf8"));
    const preprocessed = readFileSync(join(unpacked, "package", "ffi", "qbun.i"), "utf8");
    expect(preprocessed).toStartWith("/* Generated from qbun.c by scripts/preprocess-helper.ts");
    expect(preprocessed).not.toContain("#include");
    expect(preprocessed).toContain("qbn_reactor_create");
    // postpack removed it again: a pack leaves the tree as it found it.
    expect(existsSync(join(stage, "ffi", "qbun.i"))).toBe(false);
    expect(packOutput).toContain("preprocess-helper: wrote ffi/qbun.i");
    // The API reference was regenerated from the packed sources' TSDoc.
    expect(packOutput).toContain("api-docs: wrote docs/API.md");
    expect(readFileSync(join(unpacked, "package", "docs", "API.md"), "utf8")).toContain("## `qbun/lease`");
  });

  test("the packed package.json has no install scripts and keeps the public exports", () => {
    const manifest = JSON.parse(readFileSync(join(consumer, "node_modules", "qbun", "package.json"), "utf8"));
    for (const hook of ["preinstall", "install", "postinstall", "prepare"]) expect(manifest.scripts?.[hook]).toBeUndefined();
    expect(Object.keys(manifest.exports).sort()).toEqual([".", "./blob", "./lease", "./qb", "./shm", "./unix"]);
    expect(manifest.os).toEqual(["linux"]);
    expect(manifest.cpu).toEqual(["x64"]);
  });
});

describe("in a project that ran `bun add <tarball>`", () => {
  test("every entry point resolves inside node_modules/qbun; internals do not resolve", () => {
    const { resolved, blocked } = json(ok([bun, "internals.ts"], { cwd: consumer }));
    const installed = realpathSync(join(consumer, "node_modules", "qbun"));
    for (const [specifier, path] of Object.entries<string>(resolved)) {
      expect([specifier, realpathSync(path).startsWith(`${installed}/src/`)]).toEqual([specifier, true]);
    }
    expect(Object.keys(resolved)).toHaveLength(6);
    for (const [specifier, outcome] of Object.entries<string>(blocked)) {
      expect([specifier, outcome]).not.toEqual([specifier, "imported"]);
      expect(outcome).toContain("Cannot find package 'qbun'");
    }
    expect(Object.keys(blocked)).toHaveLength(5);
  });

  test("the consumer program does real work: fd passing, qb server and client, a blob, a lease", () => {
    const before = consumerShm();
    // Run from an unrelated directory: the helper is found from the module's location, not the cwd.
    const ran = ok([bun, join(consumer, "main.ts")], { cwd: elsewhere });
    expectConsumerReport(json(ran));
    expect(ran.stderr).toBe("");
    expect(consumerShm()).toEqual(before);
  });

  test("the qbun command is installed as a bin", () => {
    const ran = ok([join(consumer, "node_modules", ".bin", "qbun"), "--version"], { cwd: elsewhere });
    expect(ran.stdout.trim()).toBe(`qbun ${repoPackage.version}`);
  });

  test("tsc --noEmit with strict passes on the consumer project", () => {
    const tsconfig = JSON.parse(readFileSync(join(consumer, "tsconfig.json"), "utf8"));
    expect(tsconfig.compilerOptions.strict).toBe(true);
    // tsc's bin starts with `#!/usr/bin/env node`: run it with Bun, which needs no Node.js.
    const ran = run([process.execPath, join(consumer, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", consumer], { cwd: consumer });
    expect(`${ran.stdout}${ran.stderr}`).toBe("");
    expect(ran.exitCode).toBe(0);
  }, 60_000);

  test.skipIf(!hasLibcHeaders)(`bun build --compile of the consumer program runs away from the project${hasLibcHeaders ? "" : " (skipped: no libc6-dev here, so only a build that embeds qbun.i can run; tested below)"}`, () => {
    const app = join(work, "app");
    ok([bun, "build", "--compile", "main.ts", "--outfile", app], { cwd: consumer });
    const ran = ok([app], { cwd: "/" });
    expectConsumerReport(json(ran));
  });

  test("the README's code blocks are the fixture examples, and each runs", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
    const examples = readdirSync(join(fixtures, "readme")).sort();
    const texts = new Map(examples.map((f) => [f, readFileSync(join(fixtures, "readme", f), "utf8")]));
    // Every TypeScript block in the README is one of the examples, verbatim, and every example is in the README.
    for (const block of blocks) expect([...texts.values()]).toContain(block);
    for (const [file, text] of texts) expect([file, blocks.includes(text)]).toEqual([file, true]);

    const expected: Record<string, RegExp> = {
      "qb.ts": /^0 request 7 from uid \d+\ntrue\n100 hello\n1 3\n$/,
      "unix.ts": /^got 1 fd\(s\) from pid \d+\n\{[\s\S]*pid: \d+[\s\S]*\}\nUint8Array\(3\) \[ 1, 2, 3 \]\n$/,
      "shm.ts": /^payload\ntrue\n$/,
      "blob.ts": /^frame 1\nreleased\n$/,
      "lease.ts": /^v1 true\ntrue\n$/,
    };
    expect(examples).toEqual([...Object.keys(expected), "handler.ts"].sort());
    const before = consumerShm();
    for (const file of Object.keys(expected)) {
      const ran = run([bun, join("readme", file)], { cwd: consumer, env: { TMPDIR: work } });
      expect([file, ran.exitCode, ran.stderr]).toEqual([file, 0, ""]);
      expect(ran.stdout).toMatch(expected[file]!);
    }
    expect(consumerShm()).toEqual(before);
    expect(readdirSync(work).filter((name) => name.endsWith(".sock"))).toEqual([]);
  });

  test("the README's handler module serves requests under the installed `qbun serve`", async () => {
    const qbun = join(consumer, "node_modules", ".bin", "qbun");
    const service = `qbun-consumer-${process.pid}-handler`;
    const proc = Bun.spawn([qbun, "serve", "--service", service, "--handler", "readme/handler.ts"], { cwd: consumer, stdout: "pipe", stderr: "pipe" });
    try {
      const reader = proc.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value).trim()).toBe(`READY ${service}`);
      reader.releaseLock();
      const call = Bun.spawn([qbun, "call", service, "1", "echo me", "--json"], { cwd: elsewhere, stdout: "pipe", stderr: "pipe" });
      const [stdout, exitCode] = await Promise.all([new Response(call.stdout).text(), call.exited]);
      expect(exitCode).toBe(0);
      expect(JSON.parse(stdout)).toMatchObject({ error: 0, data: "echo me" });
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
  });

  describe("on a machine without libc6-dev (mount namespace hiding /usr/include and libc.so)", () => {
    const why = namespaceUnavailable();
    const skip = why !== undefined;
    const note = why ? ` (skipped: ${why})` : "";
    const hide = (cmd: string[]) => {
      const empty = join(work, "empty");
      writeFileSync(empty, "");
      return run(["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_SCRIPT, "hide", ...cmd], {
        cwd: elsewhere,
        env: { QBUN_EMPTY_FILE: empty, QBUN_HIDE: libcLinkScripts().join(":") },
      });
    };

    test.skipIf(skip)(`the helper loads from node_modules/qbun/ffi/qbun.i and the program works${note}`, () => {
      const probe = `import { helperBuild, loadNative } from ${JSON.stringify(join(consumer, "node_modules", "qbun", "ffi", "native.ts"))}; loadNative(); console.log(helperBuild());`;
      expect(ok([bun, "-e", probe], { cwd: elsewhere }).stdout.trim()).toBe(hasLibcHeaders ? "source" : "embedded");
      const hidden = hide([bun, "-e", probe]);
      expect(hidden.stderr).toContain("hidden: /usr/include has no stdio.h");
      expect([hidden.exitCode, hidden.stdout.trim()]).toEqual([0, "embedded"]);

      const ran = hide([bun, join(consumer, "main.ts")]);
      expect(ran.exitCode).toBe(0);
      expectConsumerReport(json(ran));
    });

    test.skipIf(skip)(`a compiled consumer runs when it embeds qbun.i, and says how when it does not${note}`, () => {
      const withCopy = join(work, "app-with-qbun-i");
      ok([bun, "build", "--compile", "main.ts", "node_modules/qbun/ffi/qbun.i", "--outfile", withCopy], { cwd: consumer });
      const ran = hide([withCopy]);
      expect(ran.exitCode).toBe(0);
      expectConsumerReport(json(ran));

      const without = join(work, "app");
      if (!existsSync(without)) ok([bun, "build", "--compile", "main.ts", "--outfile", without], { cwd: consumer });
      const failed = hide([without]);
      expect(failed.signalCode).toBeNull();
      expect(failed.exitCode).toBe(1);
      expect(failed.stderr).toContain("could not compile the C helper");
      expect(failed.stderr).toContain("add node_modules/qbun/ffi/qbun.i as an extra entry point");
    });
  });
});

describe("on an unsupported platform, importing qbun throws a clear error", () => {
  for (const [platform, arch, words] of [
    ["darwin", "arm64", "darwin/arm64"],
    ["win32", "x64", "win32/x64"],
    ["linux", "arm64", "linux/arm64 (glibc C library)"],
  ] as const) {
    test(`${platform}/${arch} (simulated in a child process)`, () => {
      const ran = run([bun, "--preload", "./fake-platform.ts", "-e", 'await import("qbun/unix"); console.log("imported")'], {
        cwd: consumer,
        env: { QBUN_FAKE_PLATFORM: `${platform}/${arch}` },
      });
      expect(ran.signalCode).toBeNull();
      expect(ran.exitCode).toBe(1);
      expect(ran.stdout).not.toContain("imported");
      expect(ran.stderr).toContain("UnsupportedPlatformError");
      expect(ran.stderr).toContain(`qbun supports Linux on x86_64 with glibc; this is ${words}`);
      expect(ran.stderr).toContain("ERR_QBUN_UNSUPPORTED_PLATFORM");
    });
  }

  test("platformProblem names each unsupported case and accepts Linux x86_64 glibc", () => {
    expect(platformProblem({ platform: "linux", arch: "x64", libc: "glibc" })).toBeUndefined();
    expect(platformProblem({ platform: "darwin", arch: "x64", libc: "unknown" })).toContain("Linux-only system calls");
    expect(platformProblem({ platform: "linux", arch: "arm64", libc: "glibc" })).toContain("x86_64 instructions");
    expect(platformProblem({ platform: "linux", arch: "x64", libc: "musl" })).toContain("glibc-based distribution");
    expect(detectLibc("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")).toBe("glibc");
    expect(detectLibc("7f00-7f01 r-xp 0 08:01 1 /lib/ld-musl-x86_64.so.1\n")).toBe("musl");
    expect(detectLibc()).toBe("glibc");
  });
});

