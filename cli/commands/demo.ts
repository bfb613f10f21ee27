/**
 * `qbun demo`: the native layer's main job in one run. A listener on an
 * abstract name, a client that connects and passes a memfd plus its
 * credentials, and the server showing what arrived.
 * @module
 */
import * as v from "valibot";
import { helperBuild, loadNative } from "../../ffi/native.ts";
import { UnixListener, UnixStream, type Credentials } from "../../src/unix/index.ts";
import { fdTarget, memfdWithText, readWholeFile, sameFile } from "../memfd.ts";
import { defineCommand } from "./command.ts";

/** An abstract socket name: 1–107 bytes (one byte of `sun_path` is the leading NUL). */
const abstractName = v.pipe(
  v.string(),
  v.minLength(1, "the socket name is empty"),
  v.maxBytes(107, "the socket name is longer than the 107 bytes an abstract address can hold"),
  v.check((name) => !name.includes("\0"), "the socket name contains a NUL byte"),
);

const schema = v.strictObject({
  json: v.optional(v.boolean(), false),
  name: v.optional(abstractName),
});

/** Gives up on any single wait after this long, so the demo can never hang. */
const STEP_TIMEOUT_MS = 5_000;

/** What `qbun demo --json` prints. */
export interface DemoReport {
  /** Always true: a failed demo throws instead. */
  readonly ok: true;
  /** How the C helper was built: `"source"` or `"embedded"`. */
  readonly build: string;
  /** Time spent compiling and loading the helper, in milliseconds. */
  readonly compileMs: number;
  /** The abstract address, `@name`. */
  readonly address: string;
  /** The client as the server sees it (SO_PEERCRED, taken at connect). */
  readonly peerCredentials: Credentials;
  /** Credentials that came with the message (SCM_CREDENTIALS). */
  readonly messageCredentials: Credentials | null;
  /** The fd passing: the client's fd, the server's copy, and what the file holds. */
  readonly fd: {
    /** The memfd's number in the client. */
    readonly sent: number;
    /** The number the kernel gave the server's copy. */
    readonly received: number;
    /** What /proc calls the received fd, e.g. `/memfd:qbun-demo (deleted)`. */
    readonly target: string;
    /** Whether both numbers name the same file (device and inode). */
    readonly sameFile: boolean;
    /** What the server read from the received fd. */
    readonly content: string;
  };
  /** What the server answered, as the client read it. */
  readonly reply: string;
}

/** The `demo` command. */
export const demo = defineCommand({
  name: "demo",
  summary: "Pass a memfd and credentials over an abstract unix socket, and show what arrived",
  description:
    "Starts a UnixListener on an abstract name, connects a client in the same process, sends a\n" +
    "memfd (SCM_RIGHTS) with the sender's credentials (SCM_CREDENTIALS), and prints what the\n" +
    "server received. Nothing is left behind: abstract names vanish with their socket.",
  flags: {
    json: { type: "boolean", help: "Print one JSON object instead of text" },
    name: { type: "string", value: "NAME", help: "Abstract socket name (default: qbun-demo-<pid>-<random>)" },
  },
  schema,
  async run(options, io) {
    const started = performance.now();
    loadNative();
    const compileMs = Math.round(performance.now() - started);
    const build = helperBuild() ?? "unknown";
    const name = options.name ?? `qbun-demo-${process.pid}-${crypto.randomUUID().slice(0, 8)}`;
    const say = options.json ? () => {} : (who: string, text: string) => io.out(`${who.padEnd(7)} ${text}`);
    const signal = () => AbortSignal.timeout(STEP_TIMEOUT_MS);

    say("helper", `${build} build, compiled and loaded in ${compileMs} ms`);
    using listener = UnixListener.listen({ abstract: name });
    const address = `@${name}`;
    say("server", `listening on ${address} (abstract, SOCK_STREAM)`);

    const [client, conn] = await Promise.all([
      UnixStream.connect({ abstract: name }, { signal: signal() }),
      listener.accept({ signal: signal() }),
    ]);
    using _client = client;
    using _conn = conn;
    conn.passCredentials = true;
    const peer = conn.peerCredentials();
    say("server", `accepted a connection from pid ${peer.pid} (uid ${peer.uid}, gid ${peer.gid}; SO_PEERCRED)`);

    const content = `hello from pid ${process.pid}, written before the fd was sent`;
    using file = memfdWithText("qbun-demo", content);
    const payload = new TextEncoder().encode("here is a memfd");
    await client.sendMessage(payload, { fds: [file], credentials: true, signal: signal() });
    say("client", `sent "here is a memfd" with fd ${file.fd} (${fdTarget(file.fd)}) and its credentials`);

    const message = await conn.receiveMessage({ signal: signal() });
    if (message === null) throw new Error("the client closed the connection before its message arrived");
    using _message = message;
    const received = message.fds[0];
    if (message.fds.length !== 1 || received === undefined) {
      throw new Error(`expected 1 fd with the message, got ${message.fds.length}`);
    }
    const same = sameFile(file.fd, received.fd);
    const got = readWholeFile(received.fd);
    const creds = message.credentials ?? null;
    say(
      "server",
      `received "${new TextDecoder().decode(message.data)}" with 1 fd, now fd ${received.fd} in this process ` +
        `(${fdTarget(received.fd)}, ${same ? "the same file" : "a DIFFERENT file"})`,
    );
    say("server", `the file reads: "${got}"`);
    say("server", creds ? `sender credentials: pid ${creds.pid}, uid ${creds.uid}, gid ${creds.gid} (SCM_CREDENTIALS)` : "no credentials came with the message");

    await conn.write(new TextEncoder().encode("thanks"), { signal: signal() });
    const reply = new TextDecoder().decode((await client.read({ signal: signal() })) ?? new Uint8Array());
    say("client", `got the reply "${reply}"`);
    if (!same || got !== content) throw new Error("the fd that arrived does not show the file that was sent");

    if (options.json) {
      const report: DemoReport = {
        ok: true,
        build,
        compileMs,
        address,
        peerCredentials: peer,
        messageCredentials: creds,
        fd: { sent: file.fd, received: received.fd, target: fdTarget(received.fd), sameFile: same, content: got },
        reply,
      };
      io.out(JSON.stringify(report, null, 2));
    } else {
      say("done", "closing both ends and the listener; the abstract name goes with it");
    }
    return 0;
  },
});
