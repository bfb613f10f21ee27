import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadNative } from "../ffi/native.ts";
import { Events, Reactor } from "../ffi/reactor.ts";
import { UnixStream } from "../src/unix/index.ts";

const native = loadNative();

function readyPair(): [number, number] {
  const fds = new Int32Array(2);
  expect(native.qbn_socketpair(1, fds)).toBe(0);
  expect(native.qbn_send(fds[1]!, new Uint8Array([1]), 1, 0)).toBe(1);
  return [fds[0]!, fds[1]!];
}

/** user+system CPU time of this process, in ms (from /proc/self/stat, clock ticks of 10 ms). */
function cpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

describe("reactor", () => {
  test("many fds ready in one epoll_wait batch each wake their own waiter with the right bits", async () => {
    // Regression: TinyCC drops glibc's packed attribute on struct epoll_event;
    // a 16-byte layout garbles every event after the first in a batch.
    const reactor = await Reactor.get();
    const pairs = Array.from({ length: 200 }, readyPair);
    const watches = pairs.map(([fd]) => reactor.watch(fd));
    try {
      const results = await Promise.race([
        Promise.all(watches.map((w) => w.readable())),
        Bun.sleep(5000).then(() => "timed out" as const),
      ]);
      expect(results).not.toBe("timed out");
      for (const events of results as number[]) expect(events & Events.IN).toBe(Events.IN);
    } finally {
      for (const w of watches) w.close();
      for (const [a, b] of pairs) {
        native.qbn_close(a);
        native.qbn_close(b);
      }
    }
  });

  test("a pending wait costs no CPU while idle", async () => {
    const [a, b] = UnixStream.pair();
    try {
      const pending = a.read();
      await Bun.sleep(50);
      const before = cpuMs();
      await Bun.sleep(1000);
      const spent = cpuMs() - before;
      await b.write(new Uint8Array([9]));
      expect(await pending).toEqual(new Uint8Array([9]));
      expect(spent).toBeLessThan(50); // a polling loop would burn most of the second
    } finally {
      a.close();
      b.close();
    }
  });

  test("a waiting socket keeps the process alive unless unref'd", async () => {
    const unix = JSON.stringify(join(import.meta.dir, "..", "src", "unix", "index.ts"));
    const script = (unref: boolean) => `
      import { UnixStream } from ${unix};
      const [a, b] = UnixStream.pair();
      globalThis.peer = b; // keep the peer open (a dropped socket is closed by GC)
      ${unref ? "a.unref();" : ""}
      a.read().then(() => console.log("read"));
      console.log("waiting");
    `;
    const unrefd = Bun.spawn([process.execPath, "-e", script(true)], { stdout: "pipe" });
    expect(await unrefd.exited).toBe(0); // nothing keeps it alive
    expect(await new Response(unrefd.stdout).text()).toBe("waiting\n");

    const refd = Bun.spawn([process.execPath, "-e", script(false)], { stdout: "pipe" });
    const outcome = await Promise.race([refd.exited.then(() => "exited"), Bun.sleep(1500).then(() => "still running")]);
    refd.kill();
    expect(outcome).toBe("still running");
  });
});

describe("reactor backends", () => {
  const reactorModule = JSON.stringify(join(import.meta.dir, "..", "ffi", "reactor.ts"));
  const probe = `
    import { Reactor } from ${reactorModule};
    try { console.log((await Reactor.get()).backend); } catch (e) { console.log("error: " + e.message); }
  `;
  async function backendWith(value: string | undefined): Promise<string> {
    const env = { ...process.env };
    if (value === undefined) delete env.QBUN_REACTOR;
    else env.QBUN_REACTOR = value;
    const proc = Bun.spawn([process.execPath, "-e", probe], { env, stdout: "pipe" });
    const out = (await new Response(proc.stdout).text()).trim();
    expect(await proc.exited).toBe(0);
    return out;
  }

  test("io_uring is preferred where the kernel allows it; QBUN_REACTOR forces a backend", async () => {
    const disabled = (() => {
      try {
        return readFileSync("/proc/sys/kernel/io_uring_disabled", "utf8").trim() !== "0";
      } catch {
        return false; // older kernels have no switch: io_uring is on
      }
    })();
    expect(await backendWith(undefined)).toBe(disabled ? "epoll" : "io_uring");
    expect(await backendWith("epoll")).toBe("epoll");
    if (!disabled) expect(await backendWith("io_uring")).toBe("io_uring");
    expect(await backendWith("kqueue")).toStartWith('error: QBUN_REACTOR must be "io_uring" or "epoll"');
  });

  test("this process runs on the backend the environment asks for", async () => {
    const reactor = await Reactor.get();
    if (process.env.QBUN_REACTOR) expect(reactor.backend).toBe(process.env.QBUN_REACTOR as never);
    else expect(["io_uring", "epoll"]).toContain(reactor.backend);
  });
});
