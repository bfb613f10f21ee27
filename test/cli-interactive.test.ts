/**
 * `qbun` with no arguments: the interactive session, driven through a
 * pseudo-terminal (util-linux `script`) with keystrokes, against a qbun
 * server and the libqb reference server; and no prompts without a terminal.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { PassThrough } from "node:stream";
import { nextKey, QUIT } from "../cli/keys.ts";
import { QbClient } from "../src/qb/index.ts";
import { removeCBuilds } from "./helpers/peers.ts";
import { qbun, SERVER_KINDS, startServer, Terminal } from "./helpers/cli.ts";

afterAll(removeCBuilds);

describe.each(SERVER_KINDS)("the interactive session with a %s server", (kind) => {
  test("pick the service, call it, watch it, benchmark it, run doctor, then Ctrl-C exits cleanly", async () => {
    await using server = await startServer(kind);
    await using term = new Terminal();
    await term.waitFor("What now?");
    await term.type("s");
    await term.waitFor("Service (type to filter)");
    await term.type(server.service);
    await term.waitFor(server.service);
    await term.type("\r");
    await term.waitFor(`${server.service}: what now?`);

    await term.type("c");
    await term.waitFor("Request id");
    await term.type("1\r");
    await term.waitFor("Payload");
    await term.type("typed in a terminal\r");
    await term.waitFor(/response: error 0 \(ok\), 19 bytes in [\d.]+ µs/);
    await term.waitFor("typed in a terminal");

    // A bad id: the valibot message, and the prompt stays.
    await term.waitFor(`${server.service}: what now?`);
    await term.type("c");
    await term.waitFor("Request id");
    await term.type("x");
    await term.type("\r");
    await term.waitFor("a request id, a whole number from -2147483648 to 2147483647");
    await term.type("\x7f6\r"); // backspace, then WHOAMI
    await term.waitFor("Payload");
    await term.type("\r");
    await term.waitFor(/response: error 0 \(ok\), \d+ bytes/);

    await term.waitFor(`${server.service}: what now?`);
    {
      // A client of the test's own, so there is something to watch.
      await using held = await QbClient.connect(server.service);
      await held.request(1, new Uint8Array(1));
      await term.type("w");
      await term.waitFor(`Watching ${server.service}; press Enter to stop.`);
      // The watch's own probe connection is left out of the counts; its round trips are shown.
      await term.waitFor(/1 connection\(s\), 1 file set\(s\) in \/dev\/shm \([\d.]+ KiB\), not counting this probe; probe round trip [\d.]+ µs \(median [\d.]+ over \d+\)/);
      await term.type("\r");
      // On stop, a line per client connection: this test's client.
      await term.waitFor(new RegExp(`client pid ${process.pid} \\(\\S+, uid ${process.getuid!()}\\)  shm  6 file\\(s\\)`));
    }

    await term.waitFor(`${server.service}: what now?`);
    await term.type("b");
    await term.waitFor(/p50 [\d.]+ µs, p99 [\d.]+ µs, [\d.]+ requests\/s/);

    await term.waitFor(`${server.service}: what now?`);
    await term.type("q");
    await term.waitFor("What now?");
    await term.type("d");
    await term.waitFor(/doctor verdict: (OK|NOT OK)/);
    await term.waitFor("memfd and file seals: memfd_create works");
    await term.waitFor("What now?");
    await term.type("\x03");
    await term.waitFor("Cancelled: bye.");
    expect(await term.exited()).toBe(0);
  });
});

test("q quits with a goodbye and exit code 0", async () => {
  await using term = new Terminal();
  await term.waitFor("What now?");
  await term.type("q");
  await term.waitFor("Bye.");
  expect(await term.exited()).toBe(0);
});

test("clean in a terminal asks before removing: no keeps the stale directory, yes removes it", async () => {
  const gone = Bun.spawn(["true"]);
  await gone.exited;
  const service = `qbun-test-${process.pid}-tty-clean`;
  const dir = `/dev/shm/qb-${gone.pid}-${gone.pid}-9-TtyCln`;
  mkdirSync(dir);
  writeFileSync(`${dir}/qb-control-${service}`, new Uint8Array(24));
  try {
    for (const [key, remains] of [["n", true], ["y", false]] as const) {
      await using term = new Terminal(["clean", "--service", service]);
      await term.waitFor(dir);
      await term.waitFor("Remove these 1 item(s)?");
      await term.type(key); // clack's confirm takes y/n as the answer: no Enter (the process may be gone by then)
      await term.waitFor(remains ? "dry run: nothing removed" : "removed 1 of 1");
      expect(await term.exited()).toBe(0);
      expect(existsSync(dir)).toBe(remains);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("every command answers --help with its usage", async () => {
  for (const command of ["serve", "call", "ls", "doctor", "clean", "bench", "demo", "selftest"]) {
    const ran = await qbun([command, "--help"]);
    expect(ran.exitCode).toBe(0);
    expect(ran.stdout).toStartWith(`Usage: qbun ${command} [options]`);
    expect(ran.stdout).toContain("-h, --help");
  }
});

test("without a terminal, no arguments prints help and never prompts", async () => {
  const ran = await qbun([]);
  expect(ran.exitCode).toBe(0);
  expect(ran.stdout).toContain("Usage: qbun <command> [options]");
  expect(ran.stdout).toContain("Exit codes (every command):");
  for (const command of ["serve", "call", "ls", "doctor", "clean", "bench"]) expect(ran.stdout).toMatch(new RegExp(`^  ${command} `, "m"));
  expect(ran.stdout).not.toContain("What now?");
});

describe("waiting for a key", () => {
  test("resolves the key, and leaves no listener behind", async () => {
    const input = new PassThrough();
    const key = nextKey(Object.assign(input, { isRaw: false }));
    input.write("x");
    expect(await key).toBe("x");
    expect(input.listenerCount("data") + input.listenerCount("end") + input.listenerCount("close")).toBe(0);
  });

  test("input that ends (EOF) resolves as quit instead of hanging; Ctrl-D too", async () => {
    const input = new PassThrough();
    const key = nextKey(input);
    input.end();
    expect(await key).toBe(QUIT);
    expect(input.listenerCount("data") + input.listenerCount("end")).toBe(0);
    // Already ended: at once.
    expect(await nextKey(input)).toBe(QUIT);
    const other = new PassThrough();
    const ctrlD = nextKey(other);
    other.write("\u0004");
    expect(await ctrlD).toBe(QUIT);
  });
});
