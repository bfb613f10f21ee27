/**
 * `qbun` with no arguments: the interactive session, driven through a
 * pseudo-terminal (util-linux `script`) with keystrokes, against a qbun
 * server and the libqb reference server; and no prompts without a terminal.
 */
import type { Subprocess } from "bun";
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { QbClient } from "../src/qb/index.ts";
import { removeCBuilds } from "./helpers/peers.ts";
import { cliMain, qbun, SERVER_KINDS, startServer } from "./cli-support.ts";

afterAll(removeCBuilds);

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** `qbun` in a pseudo-terminal: type keys, wait for text on the screen. */
class Terminal implements AsyncDisposable {
  readonly proc: Subprocess<"pipe", "pipe", "pipe">;
  /** Everything shown so far, escape sequences removed. */
  screen = "";
  #seen = 0;
  #waiters: (() => void)[] = [];
  readonly #reading: Promise<void>;

  /** Runs `qbun ...args` (no arguments: the interactive session). */
  constructor(args: string[] = []) {
    const command = [process.execPath, cliMain, ...args].map((word) => `'${word}'`).join(" ");
    const proc = Bun.spawn(["script", "-qfec", `stty cols 160 rows 50; exec ${command}`, "/dev/null"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    this.proc = proc;
    this.#reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stdout) {
        this.screen += decoder.decode(chunk, { stream: true }).replace(ANSI, "");
        for (const wake of this.#waiters.splice(0)) wake();
      }
      for (const wake of this.#waiters.splice(0)) wake();
    })();
  }

  /** Waits until `text` appears after what earlier waits consumed; fails with the screen after `ms`. */
  async waitFor(text: string | RegExp, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      const rest = this.screen.slice(this.#seen);
      const at = typeof text === "string" ? rest.indexOf(text) : rest.search(text);
      if (at >= 0) {
        this.#seen += at;
        return;
      }
      if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`never saw ${text}; the screen:\n${this.screen}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Types keys (clack reads them one keypress at a time). */
  async type(keys: string): Promise<void> {
    for (const key of keys.match(/\x1b\[[A-D]|[\s\S]/g) ?? []) {
      this.proc.stdin.write(key);
      this.proc.stdin.flush();
      await Bun.sleep(15);
    }
  }

  async exited(): Promise<number> {
    const code = await this.proc.exited;
    await this.#reading;
    return code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
    await this.proc.exited;
  }
}

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
      await term.waitFor(/1 connection\(s\), 1 file set\(s\) in \/dev\/shm \([\d.]+ KiB\)/);
      await term.type("\r");
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
      await term.type(key);
      await term.type("\r");
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
