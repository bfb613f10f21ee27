/**
 * Peers for interop tests: processes that are not qbun (Python's `socket`
 * module, small gcc-built C programs). Every peer prints a "READY" line on
 * stdout before the test talks to it, and is killed when disposed — use
 * `await using peer = …` so that it is killed in a finally block whatever
 * the test does.
 */
import type { Subprocess } from "bun";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";

const PEERS_DIR = join(import.meta.dir, "..", "peers");

/** Splits a byte stream into lines; `next()` waits for the next one. */
type Chunk = { done: boolean; value?: Uint8Array };

class LineReader {
  readonly #read: () => Promise<Chunk>;
  readonly #decoder = new TextDecoder();
  #buffer = "";
  #ended = false;
  /** A read still in flight after a timeout: reused so no chunk is lost. */
  #pending: Promise<Chunk> | undefined;

  constructor(stream: ReadableStream<Uint8Array>) {
    const reader = stream.getReader();
    this.#read = () => reader.read();
  }

  /** The next line without its newline, or null at end of stream. */
  async next(timeoutMs: number, what: string): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        return line;
      }
      if (this.#ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      let timer: Timer | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), left);
      });
      this.#pending ??= this.#read();
      const chunk = await Promise.race([this.#pending, timeout]);
      clearTimeout(timer);
      if (chunk === "timeout") throw new Error(`timed out waiting for ${what}`);
      this.#pending = undefined;
      if (chunk.done) this.#ended = true;
      else this.#buffer += this.#decoder.decode(chunk.value!, { stream: true });
    }
  }
}

/** A running peer process whose stdout speaks in lines. */
export class Peer implements AsyncDisposable {
  readonly proc: Subprocess<"pipe", "pipe", "pipe">;
  readonly lines: LineReader;
  /** The JSON (if any) that followed "READY " on the first line. */
  ready: unknown;
  readonly #name: string;

  protected constructor(proc: Subprocess<"pipe", "pipe", "pipe">, name: string) {
    this.proc = proc;
    this.lines = new LineReader(proc.stdout);
    this.#name = name;
  }

  /** Spawn `cmd` and wait for its READY line. */
  static async spawn(cmd: string[], name = cmd.join(" ")): Promise<Peer> {
    const peer = new Peer(Bun.spawn(cmd, { stdin: "pipe", stdout: "pipe", stderr: "pipe" }), name);
    await peer.waitReady();
    return peer;
  }

  get pid(): number {
    return this.proc.pid;
  }

  protected async waitReady(): Promise<void> {
    try {
      const line = await this.lines.next(15_000, `${this.#name}: READY`);
      if (line === null || !line.startsWith("READY")) {
        throw new Error(`${this.#name} did not start (first line ${JSON.stringify(line)}): ${await this.stderr()}`);
      }
      const rest = line.slice(5).trim();
      this.ready = rest ? JSON.parse(rest) : undefined;
    } catch (error) {
      this.proc.kill("SIGKILL");
      throw error;
    }
  }

  /** The next stdout line (throws after `timeoutMs`). */
  async line(timeoutMs = 15_000): Promise<string | null> {
    return this.lines.next(timeoutMs, `${this.#name}: output`);
  }

  /** Whatever the peer wrote on stderr (only once it has exited). */
  async stderr(): Promise<string> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) return "(still running)";
    return new Response(this.proc.stderr).text();
  }

  /** Kill with SIGKILL and wait for the exit. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
    await this.proc.exited;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/** A reply from the Python peer; `ok: false` replies carry the errno. */
export interface PyReply {
  ok: boolean;
  errno?: number | null;
  code?: string;
  error?: string;
  [key: string]: any;
}

/** Error raised by {@link CommandPeer.call} when the peer reports a failure. */
export class PeerError extends Error {
  constructor(
    readonly reply: PyReply,
    what = "peer",
  ) {
    super(`${what} failed: ${reply.code} ${reply.error}`);
  }
}

/**
 * A peer driven by JSON lines: each command `{op, ...args}` on stdin is
 * answered, in order, by one JSON line on stdout.
 */
export class CommandPeer extends Peer {
  #queue: Promise<unknown> = Promise.resolve();
  readonly #name: string;
  readonly #replyMs: number;

  protected constructor(proc: Subprocess<"pipe", "pipe", "pipe">, name: string, replyMs: number) {
    super(proc, name);
    this.#name = name;
    this.#replyMs = replyMs;
  }

  /** Run one command; resolves with the reply, whether ok or not. */
  request(op: string, args: Record<string, unknown> = {}): Promise<PyReply> {
    this.proc.stdin.write(`${JSON.stringify({ op, ...args })}\n`);
    this.proc.stdin.flush();
    const reply = this.#queue.then(async () => {
      const line = await this.lines.next(this.#replyMs, `${this.#name}: reply to ${op}`);
      if (line === null) {
        await this.proc.exited;
        throw new Error(`${this.#name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before replying to ${op}: ${await this.stderr()}`);
      }
      return JSON.parse(line) as PyReply;
    });
    this.#queue = reply.catch(() => {});
    return reply;
  }

  /** Run one command; throws {@link PeerError} if the peer reports a failure. */
  async call(op: string, args: Record<string, unknown> = {}): Promise<PyReply> {
    const reply = await this.request(op, args);
    if (!reply.ok) throw new PeerError(reply, `${this.#name} ${op}`);
    return reply;
  }
}


/**
 * test/peers/unix_peer.py, driven over stdin/stdout with JSON lines.
 * Commands run one at a time in order; a blocking command (accept, recv)
 * may be sent without awaiting it, then awaited after qbun acted.
 */
export class PyPeer extends CommandPeer {
  static async start(): Promise<PyPeer> {
    const proc = Bun.spawn(["python3", "-u", join(PEERS_DIR, "unix_peer.py")], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const peer = new PyPeer(proc, "python peer", 20_000);
    await peer.waitReady();
    return peer;
  }


  /** Ask the peer to exit by itself (sockets closed, files not unlinked). */
  async exit(): Promise<void> {
    await this.request("exit");
    await this.proc.exited;
  }
}

/** Address forms for the Python peer. */
export const pyAddr = {
  path: (path: string) => ({ path }),
  /** Short abstract name: length = 1 + name length. */
  abstract: (name: string) => ({ raw: Buffer.from(`\0${name}`).toString("hex") }),
  /** libqb's padded form: the whole 108-byte sun_path. */
  padded: (name: string) => {
    const raw = Buffer.alloc(108);
    Buffer.from(name).copy(raw, 1);
    return { raw: raw.toString("hex") };
  },
};

let cBuildDir: string | undefined;
const cBuilt = new Map<string, string>();

/** Compile test/peers/<name>.c with gcc (once per process); returns the binary path. */
export async function compileC(name: string, linkArgs: readonly string[] = []): Promise<string> {
  const known = cBuilt.get(name);
  if (known) return known;
  cBuildDir ??= mkdtempSync(join(os.tmpdir(), `qbun-cpeers-${process.pid}-`));
  chmodSync(cBuildDir, 0o755); // peers may run under another uid
  const out = join(cBuildDir, name);
  const gcc = Bun.spawn(["gcc", "-O1", "-Wall", "-Werror", "-pthread", "-o", out, join(PEERS_DIR, `${name}.c`), ...linkArgs], {
    stdout: "pipe",
    stderr: "pipe",
  });
  if ((await gcc.exited) !== 0) throw new Error(`gcc ${name}.c failed: ${await new Response(gcc.stderr).text()}`);
  cBuilt.set(name, out);
  return out;
}

/** Remove the binaries built by {@link compileC} (call from afterAll). */
export function removeCBuilds(): void {
  if (cBuildDir) rmSync(cBuildDir, { recursive: true, force: true });
  cBuildDir = undefined;
  cBuilt.clear();
}
