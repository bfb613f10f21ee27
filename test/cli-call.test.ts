/**
 * `qbun call` against a running `qbun serve` and the libqb reference
 * server: payload building, the --json shape, errors and exit codes.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Deadline } from "../cli/connect.ts";
import { removeCBuilds } from "./helpers/peers.ts";
import { json, qbun, SERVER_KINDS, shmEntriesOf, startServer } from "./helpers/cli.ts";

afterAll(removeCBuilds);

describe.each(SERVER_KINDS)("qbun call against the %s server", (kind) => {
  test.each(["shm", "socket"] as const)("%s transport: echo, binary parts in argv order, error responses, exact --json shape", async (transport) => {
    let serverPid = 0;
    {
      await using server = await startServer(kind, transport);
      serverPid = server.pid;
      const echo = await qbun(["call", server.service, "1", "hello, qb", "--json"]);
      expect(echo.exitCode).toBe(0);
      const report = json(echo);
      expect(Object.keys(report)).toEqual(["error", "size", "data", "encoding", "micros"]);
      expect(report).toMatchObject({ error: 0, size: 9, data: "hello, qb", encoding: "utf8" });
      expect(typeof report.micros).toBe("number");
      expect(report.micros).toBeGreaterThan(0);

      // --u32, --hex, --i32 and the text, each appended where it stood on the command line.
      const parts = await qbun(["call", server.service, "1", "--u32", "258", "--hex", "ff00", "--i32", "-1", "ab", "--u32", "7", "--json"]);
      expect(json(parts)).toMatchObject({ error: 0, size: 16, data: "02010000ff00ffffffff616207000000", encoding: "hex" });

      // SIZED answers 0,1,2,... (control characters): shown as hex.
      expect(json(await qbun(["call", server.service, "3", "--u32", "4", "--json"]))).toMatchObject({ size: 4, data: "00010203", encoding: "hex" });

      // ERROR answers the errno asked for: printed, exit code 1.
      const refused = await qbun(["call", server.service, "4", "--i32", "-13", "--json"]);
      expect(refused.exitCode).toBe(1);
      expect(json(refused)).toMatchObject({ error: -13, size: 0, data: "", encoding: "utf8" });
      const text = await qbun(["call", server.service, "4", "--i32", "-13"]);
      expect(text.stdout).toContain("error -13 (EACCES)");
      expect(text.exitCode).toBe(1);

      // WHOAMI: the server saw this caller.
      const whoami = json(await qbun(["call", server.service, "6", "--json"]));
      expect(whoami.encoding).toBe("utf8");
      expect(JSON.parse(whoami.data).pid).toBeGreaterThan(0);

      // SLOW beyond --timeout: a timeout failure, exit code 1, one line.
      const slow = await qbun(["call", server.service, "5", "--u32", "3000", "--timeout", "300"]);
      expect(slow.exitCode).toBe(1);
      expect(slow.stderr).toContain("ETIMEDOUT");
    }
    expect(shmEntriesOf(serverPid)).toEqual([]);
  });
});

describe("qbun call usage", () => {
  test("a service nobody serves: exit 1 and a hint to run qbun ls", async () => {
    const ran = await qbun(["call", `qbun-test-${process.pid}-nobody`, "1"]);
    expect(ran.exitCode).toBe(1);
    expect(ran.stderr).toContain("ECONNREFUSED");
    expect(ran.stderr).toContain("qbun ls");
  });

  test.each([
    [["call"], "SERVICE is required"],
    [["call", "svc"], "ID is required"],
    [["call", "svc", "one"], "ID: a request id, a whole number from -2147483648 to 2147483647"],
    [["call", "svc", "1", "--hex", "zz"], "--hex: pairs of hex digits"],
    [["call", "svc", "1", "--u32", "-1"], "--u32: an unsigned 32-bit value, a whole number from 0 to 4294967295"],
    [["call", "svc", "1", "--i32", "2147483648"], "--i32: a signed 32-bit value"],
    [["call", "svc", "1", "--timeout", "soon"], "--timeout: milliseconds, a whole number from 1 to 3600000"],
    [["call", "a/b", "1"], "SERVICE: a service name without '/'"],
    [["call", "svc", "1", "x", "extra"], 'unexpected argument "extra"'],
    [["call", "svc", "1", "--frob"], "--frob"],
  ])("%j: exit 2, one line naming it", async (args, message) => {
    const ran = await qbun(args);
    expect(ran.exitCode).toBe(2);
    expect(ran.stdout).toBe("");
    expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(ran.stderr).toContain(message);
  });

  test("--help shows the arguments and flags", async () => {
    const ran = await qbun(["call", "--help"]);
    expect(ran.exitCode).toBe(0);
    expect(ran.stdout).toContain("Usage: qbun call [options] SERVICE ID [PAYLOAD]");
    for (const flag of ["--hex HEX", "--u32 N", "--i32 N", "--timeout MS", "--json"]) expect(ran.stdout).toContain(flag);
  });
});

/**
 * A "service" that accepts connections on libqb's padded abstract name and
 * never answers the handshake (Python, no qbun code). Printed READY once listening.
 */
async function silentService(name: string): Promise<AsyncDisposable> {
  const script = [
    "import socket, sys",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
    `s.bind(b"\\0" + ${JSON.stringify(name)}.encode().ljust(107, b"\\0"))`,
    "s.listen(8)",
    'print("READY", flush=True)',
    "held = []",
    "while True:",
    "    held.append(s.accept()[0])",
  ].join("\n");
  const proc = Bun.spawn(["python3", "-c", script], { stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain("READY");
  reader.releaseLock();
  return {
    async [Symbol.asyncDispose]() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

describe("qbun call --json when no response comes", () => {
  test("refused: one JSON object on stdout (the five keys first, then failure), exit 1", async () => {
    const ran = await qbun(["call", `qbun-test-${process.pid}-nobody-json`, "1", "--json"]);
    expect(ran.exitCode).toBe(1);
    const report = json(ran);
    expect(Object.keys(report)).toEqual(["error", "size", "data", "encoding", "micros", "failure"]);
    expect(report).toMatchObject({ error: -111, size: 0, data: "", encoding: "utf8" });
    expect(report.failure).toStartWith("ECONNREFUSED: ");
    expect(report.failure).toContain("qbun ls");
    expect(typeof report.micros).toBe("number");
    expect(ran.stderr).toContain("ECONNREFUSED");
  });

  test("a server that accepts but never answers: ETIMEDOUT within the one --timeout, as JSON and as text", async () => {
    const name = `qbun-test-${process.pid}-silent`;
    await using _silent = await silentService(name);
    const ran = await qbun(["call", name, "1", "--timeout", "400", "--json"]);
    expect(ran.exitCode).toBe(1);
    const report = json(ran);
    expect(report).toMatchObject({ error: -110, size: 0, data: "", encoding: "utf8" });
    expect(report.failure).toStartWith("ETIMEDOUT: ");
    expect(report.failure).toContain("No connection within 400 ms");
    expect(report.micros).toBeGreaterThanOrEqual(400_000 * 0.9);
    const text = await qbun(["call", name, "1", "--timeout", "400"]);
    expect(text.exitCode).toBe(1);
    expect(text.stdout).toBe("");
    expect(text.stderr).toContain("ETIMEDOUT");
  });

  test("SLOW beyond --timeout after connecting: ETIMEDOUT in the JSON too", async () => {
    await using server = await startServer("qbun");
    const ran = await qbun(["call", server.service, "5", "--u32", "3000", "--timeout", "300", "--json"]);
    expect(ran.exitCode).toBe(1);
    expect(json(ran)).toMatchObject({ error: -110, size: 0, data: "", encoding: "utf8", failure: expect.stringMatching(/^ETIMEDOUT: /) });
  });
});

describe("one deadline for connect and request", () => {
  test("what is left shrinks as time passes, never below 1 ms, and the signal fires at the end", async () => {
    const deadline = new Deadline(200);
    const first = deadline.remaining();
    expect(first).toBeLessThanOrEqual(200);
    await Bun.sleep(60);
    // The request after a slow connect gets only the rest, not a fresh 200 ms.
    expect(deadline.remaining()).toBeLessThanOrEqual(first - 50);
    await new Promise((resolve) => deadline.signal.addEventListener("abort", resolve, { once: true }));
    expect(deadline.signal.aborted).toBe(true);
    expect(deadline.remaining()).toBe(1);
  });
});
