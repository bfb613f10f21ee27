/**
 * Self-test checks for the C helper and the unix-socket layer on top of it:
 * it compiles and loads, the reactor wakes a waiting read, an fd crosses a
 * socketpair, SO_PEERCRED works.
 * @module
 */
import { helperBuild, loadNative } from "../../ffi/native.ts";
import { Reactor } from "../../ffi/reactor.ts";
import { SharedMemory } from "../../src/shm/index.ts";
import { UnixStream } from "../../src/unix/index.ts";
import type { Check } from "./check.ts";

/** How long the round trip may wait for its message. */
const TIMEOUT_MS = 5_000;

/** Checks of the native helper, in the order they run. */
export const nativeChecks: readonly Check[] = [
  {
    id: "helper",
    title: "C helper compiles and loads",
    run() {
      loadNative();
      const build = helperBuild();
      return build === "embedded"
        ? "embedded build: header-free text compiled by TinyCC against the running libc.so.6"
        : `${build} build: ffi/qbun.c compiled by TinyCC`;
    },
  },
  {
    id: "reactor",
    title: "event-loop wake-ups (reactor)",
    needs: ["helper"],
    async run() {
      const reactor = await Reactor.get();
      const [a, b] = UnixStream.pair();
      using _a = a;
      using _b = b;
      // The read finds nothing and must be woken by the reactor when data arrives.
      const pending = a.read({ signal: AbortSignal.timeout(TIMEOUT_MS) });
      setTimeout(() => void b.write(new Uint8Array([42])), 10);
      const got = await pending;
      if (got?.[0] !== 42) throw new Error(`a waiting read resolved with ${got === null ? "end of stream" : `[${got}]`}, expected [42]`);
      return reactor.backend === "io_uring"
        ? "io_uring backend: a waiting read was woken through Bun's own event loop"
        : "epoll-thread backend (io_uring unavailable or QBUN_REACTOR=epoll): a waiting read was woken";
    },
  },
  {
    id: "fd-passing",
    title: "socketpair round trip with an fd",
    needs: ["helper"],
    async run() {
      const [a, b] = UnixStream.pair();
      using _a = a;
      using _b = b;
      b.passCredentials = true;
      const content = `qbun selftest ${process.pid}`;
      const bytes = new TextEncoder().encode(content);
      using file = SharedMemory.memfd({ size: bytes.length, name: "qbun-selftest" });
      using written = file.map();
      written.bytes.set(bytes);
      await a.sendMessage(new TextEncoder().encode("ping"), { fds: [file.fd], credentials: true });
      const message = await b.receiveMessage({ signal: AbortSignal.timeout(TIMEOUT_MS) });
      if (message === null) throw new Error("end of stream instead of the message");
      using _message = message;
      const text = new TextDecoder().decode(message.data);
      if (text !== "ping") throw new Error(`payload "${text}", expected "ping"`);
      const fd = message.fds[0];
      if (message.fds.length !== 1 || fd === undefined) throw new Error(`${message.fds.length} fds arrived, expected 1`);
      using received = SharedMemory.fromFd(fd);
      using mapped = received.map({ access: "read-only" });
      const got = mapped.view.text();
      if (got !== content) throw new Error(`the passed memfd reads "${got}", expected "${content}"`);
      // A write made after passing shows through the received fd only if both name the same memory.
      written.bytes[0] = 0x51; // "Q"
      if (mapped.view.at(0) !== 0x51) throw new Error("a write made after sending the memfd does not show through the fd that arrived: not the same memory");
      const creds = message.credentials;
      if (!creds) throw new Error("no SCM_CREDENTIALS arrived although SO_PASSCRED is on");
      if (creds.pid !== process.pid) throw new Error(`SCM_CREDENTIALS pid ${creds.pid}, expected ${process.pid}`);
      return `payload, 1 memfd (same content; later writes show through: the same memory) and SCM_CREDENTIALS (pid ${creds.pid}) arrived`;
    },
  },
  {
    id: "peercred",
    title: "SO_PEERCRED",
    needs: ["helper"],
    run() {
      const [a, b] = UnixStream.pair();
      using _a = a;
      using _b = b;
      const creds = b.peerCredentials();
      const uid = process.getuid?.();
      const gid = process.getgid?.();
      if (creds.pid !== process.pid || creds.uid !== uid || creds.gid !== gid) {
        throw new Error(`peer is pid ${creds.pid} uid ${creds.uid} gid ${creds.gid}; expected pid ${process.pid} uid ${uid} gid ${gid}`);
      }
      return `peer is this process: pid ${creds.pid}, uid ${creds.uid}, gid ${creds.gid}`;
    },
  },
];
