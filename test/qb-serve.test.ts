/**
 * `qbun serve`: the interop service as a process, from source and as the
 * compiled single binary, driven by a real libqb client.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { shmListing, uniqueName } from "./helpers/env.ts";
import { compileC, removeCBuilds } from "./helpers/peers.ts";

const root = resolve(import.meta.dir, "..");
let client = "";
let binaryDir = "";
let binary = "";

beforeAll(async () => {
  client = await compileC("qb_client", ["-lqb"]);
  binaryDir = mkdtempSync(join(tmpdir(), "qbun-serve-bin-"));
  binary = join(binaryDir, "qbun");
  const built = Bun.spawnSync([process.execPath, join(root, "scripts", "build-binary.ts"), "--outfile", binary], { stderr: "pipe" });
  if (built.exitCode !== 0) throw new Error(`build-binary failed: ${built.stderr}`);
});

afterAll(() => {
  removeCBuilds();
  if (binaryDir) rmSync(binaryDir, { recursive: true, force: true });
});

/** Start `qbun serve` and wait for its READY line. */
async function startServe(command: string[], service: string, extra: string[] = []) {
  const proc = Bun.spawn([...command, "serve", "--service", service, ...extra], { stdout: "pipe", stderr: "pipe", cwd: tmpdir() });
  const reader = proc.stdout.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  reader.releaseLock();
  expect(first.trim()).toBe(`READY ${service}`);
  return proc;
}

async function libqb(args: string[], uid?: number): Promise<any> {
  const cmd = uid === undefined ? [client, ...args] : ["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", client, ...args];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

describe.each([
  ["from source", () => [process.execPath, join(root, "cli", "main.ts")]],
  ["as the compiled binary", () => [binary]],
] as const)("qbun serve %s", (_label, command) => {
  test.each(["shm", "socket"])("%s transport: libqb client served; SIGTERM exits 0 leaving /dev/shm as it was", async (transport) => {
    const before = shmListing();
    const service = uniqueName(`serve-${transport}`);
    const server = await startServe(command(), service, ["--transport", transport]);
    try {
      expect(await libqb([service, "echo", "1000", "200"])).toMatchObject({ ok: true, count: 200 });
      expect(await libqb([service, "events", "20", "100"])).toMatchObject({ ok: true, events: 20 });
      expect((await libqb([service, "whoami"])).whoami).toMatchObject({ uid: 0, readOnly: false });
    } finally {
      server.kill("SIGTERM");
    }
    expect(await server.exited).toBe(0);
    expect(await new Response(server.stderr).text()).toBe("");
    expect(shmListing()).toEqual(before);
  });

  test("--deny-uid and --ro-uid", async () => {
    const service = uniqueName("serve-auth");
    const server = await startServe(command(), service, ["--deny-uid", "65534", "--ro-uid", "0"]);
    try {
      expect(await libqb([service, "info"], 65534)).toMatchObject({ ok: false, what: "connect", rc: -13 });
      expect((await libqb([service, "whoami"])).whoami).toMatchObject({ uid: 0, readOnly: true });
    } finally {
      server.kill("SIGINT");
    }
    expect(await server.exited).toBe(0);
  });
});

test("serve refuses bad flags with a usage error", () => {
  const cli = [process.execPath, join(root, "cli", "main.ts"), "serve"];
  for (const args of [[], ["--service", "a/b"], ["--service", "x", "--transport", "pipe"], ["--service", "x", "--deny-uid", "root"]]) {
    const ran = Bun.spawnSync([...cli, ...args], { stderr: "pipe" });
    expect(ran.exitCode).toBe(2);
    expect(ran.stderr.toString()).toContain("qbun serve:");
  }
});
