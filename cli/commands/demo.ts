/**
 * `qbun demo`: the native layer's main job in one run. A listener on an
 * abstract name; a client that writes a memfd, seals it, and passes a
 * read-only fd for it plus its credentials; the server showing what arrived
 * and that it cannot change the file. Every line printed states something
 * the demo checked.
 * @module
 */
import { fstatSync, openSync, readlinkSync } from "node:fs";
import * as v from "valibot";
import { helperBuild, loadNative } from "../../ffi/native.ts";
import { OwnedFd, QbunSystemError, SharedMemory, type Seal } from "../../src/shm/index.ts";
import { UnixListener, UnixStream, type Credentials } from "../../src/unix/index.ts";
import { errorMessage } from "../io.ts";
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

/** What the client seals the file against before passing it. */
const SEALS: readonly Seal[] = ["shrink", "grow", "write"];

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
  /** The fd passing: the client's read-only fd, the server's copy, and what the server found. */
  readonly fd: {
    /** The number of the read-only fd the client sent. */
    readonly sent: number;
    /** The number the kernel gave the server's copy. */
    readonly received: number;
    /** What /proc calls the received fd, e.g. `/memfd:qbun-demo (deleted)`. */
    readonly target: string;
    /** Whether the received fd names the client's memfd (same device and inode). */
    readonly sameFile: boolean;
    /** Whether the received fd is open read-only (F_GETFL). */
    readonly readOnly: boolean;
    /** The seals the server found on the file (F_GET_SEALS). */
    readonly seals: readonly Seal[];
    /** What the server read through its read-only mapping. */
    readonly content: string;
    /** The errno code that refused a writable mapping of the received fd (`EACCES`). */
    readonly writableMapping: string;
    /**
     * The server reopened the file read-write through /proc and tried again:
     * the step that was refused and its errno code (`mmap`, `EPERM`: the write seal).
     */
    readonly reopened: { readonly step: "open" | "mmap"; readonly code: string };
  };
  /** What the server answered, as the client read it. */
  readonly reply: string;
  /** What connecting to the address gave once everything was closed: `ECONNREFUSED`, another errno code, or `connected`. */
  readonly afterClose: string;
}

/** Whether two fds name the same file (same device and inode). */
function sameFile(a: number, b: number): boolean {
  const x = fstatSync(a);
  const y = fstatSync(b);
  return x.dev === y.dev && x.ino === y.ino;
}

/** What the kernel calls the file behind `fd`, e.g. `/memfd:qbun-demo (deleted)`. */
function fdTarget(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return "?";
  }
}

/** The errno code that refuses a writable mapping of `mem`, or null when mapping succeeded (it is unmapped again). */
function writableMappingError(mem: SharedMemory): string | null {
  try {
    mem.map({ access: "read-write" }).close();
    return null;
  } catch (error) {
    if (error instanceof QbunSystemError) return error.code;
    throw error;
  }
}

/**
 * Reopens `fd` read-write through /proc (what any receiver of a read-only fd
 * can try) and maps that writable. Returns the step that was refused and its
 * errno code, or null when the writable mapping succeeded.
 */
function reopenReadWrite(fd: number): { step: "open" | "mmap"; code: string } | null {
  let raw: number;
  try {
    raw = openSync(`/proc/self/fd/${fd}`, "r+");
  } catch (error) {
    return { step: "open", code: String((error as { code?: unknown }).code ?? errorMessage(error)) };
  }
  using reopened = SharedMemory.fromFd(new OwnedFd(raw));
  const code = writableMappingError(reopened);
  return code === null ? null : { step: "mmap", code };
}

/** The `demo` command. */
export const demo = defineCommand({
  name: "demo",
  summary: "Pass a sealed memfd read-only, with credentials, over an abstract unix socket",
  description:
    "Starts a UnixListener on an abstract name and connects a client in the same process. The\n" +
    "client writes a memfd, seals it (shrink, grow, write) and sends a read-only fd for it\n" +
    "(SCM_RIGHTS) with its credentials (SCM_CREDENTIALS). The server maps the file read-only,\n" +
    "reads it, and shows that it cannot map it writable. Every line printed was checked.\n" +
    "Nothing is left behind: abstract names vanish with their socket.",
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
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();

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

    // Client: write the file, seal it, pass a read-only fd for it.
    const content = `hello from pid ${process.pid}, written and sealed before the fd was sent`;
    const bytes = encoder.encode(content);
    using file = SharedMemory.memfd({ size: bytes.length, name: "qbun-demo" });
    {
      using map = file.map();
      map.bytes.set(bytes);
    } // F_SEAL_WRITE is refused while a writable mapping exists
    file.addSeals(SEALS);
    say("client", `wrote ${bytes.length} bytes into a memfd and sealed it: ${file.seals.join(", ")}`);
    using readOnlyFd = file.readOnlyFd();
    const sent = readOnlyFd.fd;
    await client.sendMessage(encoder.encode("here is a memfd"), { fds: [readOnlyFd], credentials: true, signal: signal() });
    say("client", `sent "here is a memfd" with a read-only fd for it (fd ${sent}) and its credentials`);

    // Server: check what arrived, read it, try to change it.
    const message = await conn.receiveMessage({ signal: signal() });
    if (message === null) throw new Error("the client closed the connection before its message arrived");
    using _message = message;
    const arrived = message.fds[0];
    if (message.fds.length !== 1 || arrived === undefined) {
      throw new Error(`expected 1 fd with the message, got ${message.fds.length}`);
    }
    const received = arrived.fd;
    const target = fdTarget(received);
    const same = sameFile(file.fd, received);
    if (!same) throw new Error(`the fd that arrived (${target}) is not the memfd that was sent`);
    using shared = SharedMemory.fromFd(arrived);
    if (!shared.readOnly) throw new Error("the fd that arrived is open for writing, although a read-only fd was sent");
    say(
      "server",
      `received "${decoder.decode(message.data)}" with 1 fd, now fd ${received} in this process ` +
        `(${target}, the same file, open read-only)`,
    );
    const creds = message.credentials ?? null;
    if (creds === null) throw new Error("no credentials came with the message, although the client sent them");
    say("server", `sender credentials: pid ${creds.pid}, uid ${creds.uid}, gid ${creds.gid} (SCM_CREDENTIALS)`);

    using view = shared.map();
    if (view.access !== "read-only") throw new Error(`the read-only fd was mapped ${view.access}`);
    const got = view.view.text();
    if (got !== content) throw new Error(`the file reads "${got}", not what the client wrote`);
    say("server", `mapped it read-only; the file reads: "${got}"`);

    const writableMapping = writableMappingError(shared);
    if (writableMapping !== "EACCES") {
      throw new Error(`mapping the read-only fd writable ${writableMapping === null ? "succeeded" : `failed with ${writableMapping}`}; expected EACCES`);
    }
    say("server", "mapping it writable fails with EACCES: the fd is read-only");

    const seals = shared.seals;
    const missing = SEALS.filter((seal) => !seals.includes(seal));
    if (missing.length > 0) throw new Error(`the file arrived without the seal(s) ${missing.join(", ")}`);
    const reopened = reopenReadWrite(received);
    if (reopened === null) throw new Error("reopened read-write through /proc, the sealed file could be mapped writable");
    say(
      "server",
      `sealed (F_GET_SEALS: ${seals.join(", ")}): even reopened read-write via /proc, ` +
        (reopened.step === "open" ? `it cannot be opened (${reopened.code})` : `a writable mapping fails with ${reopened.code}`),
    );

    await conn.write(encoder.encode("thanks"), { signal: signal() });
    const reply = decoder.decode((await client.read({ signal: signal() })) ?? new Uint8Array());
    if (reply !== "thanks") throw new Error(`the client read "${reply}", expected "thanks"`);
    say("client", `got the reply "${reply}"`);

    // Close everything; the abstract name goes with the listener.
    client.close();
    conn.close();
    listener.close();
    const afterClose = await UnixStream.connect({ abstract: name }, { signal: signal() }).then(
      (again) => {
        again.close();
        return "connected";
      },
      (error: unknown) => {
        if (error instanceof QbunSystemError) return error.code;
        throw error;
      },
    );
    say(
      "done",
      afterClose === "ECONNREFUSED"
        ? `closed both ends and the listener; connecting to ${address} now fails with ECONNREFUSED`
        : `closed both ends and the listener; connecting to ${address} again gives ${afterClose === "connected" ? "a connection (another socket listens there)" : afterClose}`,
    );

    if (options.json) {
      const report: DemoReport = {
        ok: true,
        build,
        compileMs,
        address,
        peerCredentials: peer,
        messageCredentials: creds,
        fd: { sent, received, target, sameFile: same, readOnly: shared.readOnly, seals, content: got, writableMapping, reopened },
        reply,
        afterClose,
      };
      io.out(JSON.stringify(report, null, 2));
    }
    return 0;
  },
});
