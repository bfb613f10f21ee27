/**
 * What the CLI tests share: running `qbun` from source, and the two kinds
 * of server every command is tried against: `qbun serve` (a Bun child) and
 * the libqb reference server (test/peers/qb_server.c, linked with libqb).
 */
import type { Subprocess } from "bun";
import { join, resolve } from "node:path";
import { uniqueName } from "./env.ts";
import { readdirSync } from "node:fs";
import { compileC } from "./peers.ts";

export const root = resolve(import.meta.dir, "..", "..");
export const cliMain = join(root, "cli", "main.ts");

/** What a finished `qbun` run said. */
export interface Ran {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `bun cli/main.ts ...args` to completion (asynchronously: servers in this process keep running). */
export async function qbun(args: string[], options: { cwd?: string; command?: string[] } = {}): Promise<Ran> {
  const proc = Bun.spawn([...(options.command ?? [process.execPath, cliMain]), ...args], { cwd: options.cwd ?? root, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { exitCode: await proc.exited, stdout, stderr };
}

/** Parses what a command printed as JSON; on failure the error shows everything it said. */
export function json<T = any>(ran: Ran): T {
  try {
    return JSON.parse(ran.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${ran.exitCode}):\n${ran.stdout}\n--- stderr:\n${ran.stderr}`);
  }
}

/** A running server: its service name and process. */
export interface TestServer extends AsyncDisposable {
  readonly kind: "qbun" | "libqb";
  readonly service: string;
  readonly pid: number;
}

/** Starts `qbun serve` or the libqb reference server under a unique service name, on the given transport. */
export async function startServer(kind: "qbun" | "libqb", transport: "shm" | "socket" = "shm", extra: string[] = []): Promise<TestServer> {
  const service = uniqueName(`cli-${kind}-${transport}`);
  const cmd =
    kind === "qbun"
      ? [process.execPath, cliMain, "serve", "--service", service, "--transport", transport, ...extra]
      : [await compileC("qb_server", ["-lqb"]), service, transport, ...extra];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const reader = proc.stdout.getReader();
  let first = "";
  const decoder = new TextDecoder();
  while (!first.includes("\n")) {
    const chunk = await reader.read();
    if (chunk.done) break;
    first += decoder.decode(chunk.value, { stream: true });
  }
  reader.releaseLock();
  if (!first.startsWith("READY")) {
    proc.kill("SIGKILL");
    throw new Error(`${kind} server did not start (said ${JSON.stringify(first)}): ${await new Response(proc.stderr).text()}`);
  }
  return {
    kind,
    service,
    pid: proc.pid,
    async [Symbol.asyncDispose]() {
      // SIGTERM: both servers remove their connections' files on the way out.
      proc.kill("SIGTERM");
      if ((await Promise.race([proc.exited, Bun.sleep(10_000)])) === undefined) proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** Entries of /dev/shm that name `pid` as the server or client of a libqb connection. */
export function shmEntriesOf(pid: number): string[] {
  return readdirSync("/dev/shm").filter((name) => name.startsWith(`qb-${pid}-`) || new RegExp(`^qb-\\d+-${pid}-`).test(name));
}

/** The server kinds every command is run against. */
export const SERVER_KINDS = ["qbun", "libqb"] as const;

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** `qbun` in a pseudo-terminal: type keys, wait for text on the screen. */
export class Terminal implements AsyncDisposable {
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

