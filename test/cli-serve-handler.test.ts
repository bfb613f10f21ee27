/**
 * `qbun serve --handler FILE`: a user's TypeScript module served to qbun's
 * client (`qbun call`) and to a real libqb client; the module's shape is
 * checked with a clear usage error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { HandlerImportError, loadHandlerModule } from "../cli/handler-module.ts";
import { tempDir, uniqueName } from "./helpers/env.ts";
import { compileC, removeCBuilds } from "./helpers/peers.ts";
import { cliMain, json, qbun, shmEntriesOf } from "./helpers/cli.ts";

let libqbClient = "";
beforeAll(async () => {
  libqbClient = await compileC("qb_client", ["-lqb"]);
});
afterAll(removeCBuilds);

/** A handler in the documented shape: id 1 upper-cases text, id 2 tells the connection count; uid 65534 is refused. */
const HANDLER_SOURCE = `
import type { QbRequest } from "qbun-types-are-erased";
let connected = 0;
export default {
  onRequest(request: QbRequest, ctx: { server: { stats(): { activeConnections: number } } }) {
    if (request.id === 1) return { data: new TextEncoder().encode(new TextDecoder().decode(request.payload).toUpperCase()) };
    if (request.id === 2) return { data: new TextEncoder().encode(JSON.stringify({ connected, active: ctx.server.stats().activeConnections })) };
    return { error: -22 };
  },
  authenticate(peer: { uid: number }) {
    return peer.uid === 65534 ? "reject" : "read-write";
  },
  onConnect() { connected++; },
};
`;

describe("qbun serve --handler", () => {
  test.each(["shm", "socket"])("a TypeScript handler module answers qbun's client and a libqb client (%s)", async (transport) => {
    using dir = tempDir("cli-handler");
    const file = dir.file("upper.ts");
    writeFileSync(file, HANDLER_SOURCE);
    const service = uniqueName("handler");
    const proc = Bun.spawn([process.execPath, cliMain, "serve", "--service", service, "--handler", file, "--transport", transport], { stdout: "pipe", stderr: "pipe" });
    try {
      const reader = proc.stdout.getReader();
      expect(new TextDecoder().decode((await reader.read()).value).trim()).toBe(`READY ${service}`);
      reader.releaseLock();
      expect(json(await qbun(["call", service, "1", "hello handler", "--json"]))).toMatchObject({ error: 0, data: "HELLO HANDLER", encoding: "utf8" });
      expect(json(await qbun(["call", service, "9", "--json"]))).toMatchObject({ error: -22, size: 0 });
      const stats = JSON.parse(json(await qbun(["call", service, "2", "--json"])).data);
      expect(stats).toEqual({ connected: 3, active: 1 });

      const raw = Bun.spawnSync([libqbClient, service, "raw", "1", Buffer.from("from c").toString("hex")], { stdout: "pipe" });
      expect(JSON.parse(raw.stdout.toString().trim().split("\n").at(-1)!)).toMatchObject({ ok: true, error: 0, size: 24 + 6 }); // libqb counts the 24-byte header
      const refused = Bun.spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", libqbClient, service, "info"], { stdout: "pipe" });
      expect(JSON.parse(refused.stdout.toString().trim().split("\n").at(-1)!)).toMatchObject({ ok: false, what: "connect", rc: -13 });
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
    expect(shmEntriesOf(proc.pid)).toEqual([]);
  });

  test("a module of the wrong shape, a missing file, or --deny-uid with --handler: exit 2 with one line", async () => {
    using dir = tempDir("cli-handler-bad");
    const wrong = dir.file("wrong.ts");
    writeFileSync(wrong, "export default { handle() { return {}; } };\n");
    const service = uniqueName("bad-handler");
    for (const [args, message] of [
      [["--handler", wrong], "does not export a handler (onRequest must be a function, found undefined)"],
      [["--handler", dir.file("missing.ts")], "--handler: no such file"],
      [["--handler", wrong, "--deny-uid", "1"], "--deny-uid applies to the interop service"],
    ] as const) {
      const ran = await qbun(["serve", "--service", service, ...args]);
      expect(ran.exitCode).toBe(2);
      expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(ran.stderr).toContain(message);
    }
  });

  test("a module that throws while loading: exit 1 with its message", async () => {
    using dir = tempDir("cli-handler-throws");
    const file = dir.file("throws.ts");
    writeFileSync(file, 'throw new Error("no config here");\nexport default {};\n');
    const ran = await qbun(["serve", "--service", uniqueName("throws"), "--handler", file]);
    expect(ran.exitCode).toBe(1);
    expect(ran.stderr).toContain("no config here");
    expect(ran.stderr).toContain(`--handler: could not import ${file}: no config here.`);
  });

  test("a module with a syntax error or an import it cannot resolve: one line with the file, the reason and what to try", async () => {
    using dir = tempDir("cli-handler-broken");
    for (const [name, source, reason] of [
      ["syntax.ts", "export default { onRequest( {\n", /could not import .*syntax\.ts: .+\. Check that it is valid TypeScript\/JavaScript/],
      ["unresolved.ts", 'import "./not-there.ts";\nexport default { onRequest() { return {}; } };\n', /could not import .*unresolved\.ts: .*not-there/],
    ] as const) {
      const file = dir.file(name);
      writeFileSync(file, source);
      const ran = await qbun(["serve", "--service", uniqueName("broken"), "--handler", file]);
      expect(ran.exitCode).toBe(1);
      expect(ran.stdout).toBe("");
      expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(ran.stderr).toMatch(reason);
      expect(ran.stderr).toContain(`running "bun ${file}" shows the full error`);
    }
  });

  test("HandlerImportError is typed: code, file and reason", async () => {
    using dir = tempDir("cli-handler-typed");
    const file = dir.file("throws.ts");
    writeFileSync(file, 'throw new Error("boom at load");\n');
    const error = await loadHandlerModule(file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HandlerImportError);
    expect(error).toMatchObject({ code: "ERR_QBUN_HANDLER_IMPORT", file, reason: "boom at load" });
  });
});

