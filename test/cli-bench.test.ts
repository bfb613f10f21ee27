/**
 * `qbun bench` against `qbun serve` and the libqb reference server: the
 * counts and percentiles it reports, error responses, the progress bar in
 * a terminal (util-linux `script` gives it one), and usage errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { removeCBuilds } from "./helpers/peers.ts";
import { cliMain, json, qbun, SERVER_KINDS, shmEntriesOf, startServer, Terminal } from "./helpers/cli.ts";

afterAll(removeCBuilds);

describe.each(SERVER_KINDS)("qbun bench against the %s server", (kind) => {
  test("--json: every request timed, percentiles in order, throughput", async () => {
    await using server = await startServer(kind);
    const ran = await qbun(["bench", server.service, "-n", "500", "--size", "256", "--inflight", "4", "--warmup", "20", "--json"]);
    expect(ran.exitCode).toBe(0);
    const r = json(ran);
    expect(r).toMatchObject({ service: server.service, transport: "shm", id: 1, size: 256, count: 500, inflight: 4, errors: 0 });
    const l = r.latencyMicros;
    expect(l.p50).toBeGreaterThan(0);
    expect(l.p50).toBeLessThanOrEqual(l.p90);
    expect(l.p90).toBeLessThanOrEqual(l.p99);
    expect(l.p99).toBeLessThanOrEqual(l.max);
    expect(r.requestsPerSecond).toBeGreaterThan(0);
    // 256 bytes out and 256 back per request.
    expect(r.megabytesPerSecond).toBeCloseTo((r.requestsPerSecond * 512) / 1e6, 0);
  });

  test("responses with an error are counted and make the exit code 1", async () => {
    await using server = await startServer(kind);
    const ran = await qbun(["bench", server.service, "--id", "4", "--hex", "f3ffffff", "-n", "50", "--warmup", "0"]);
    expect(ran.exitCode).toBe(1);
    expect(ran.stdout).toContain("50 response(s) carried an error");
    expect(ran.stdout).toMatch(/round trip µs: p50 [\d.]+ +p90 [\d.]+ +p99 [\d.]+/);
  });
});

test("in a terminal, a progress bar runs and the summary follows", async () => {
  await using server = await startServer("qbun");
  const proc = Bun.spawn(["script", "-qfec", `stty cols 120 rows 40; ${process.execPath} ${cliMain} bench ${server.service} -n 3000`, "/dev/null"], { stdout: "pipe", stderr: "pipe", stdin: "pipe" });
  const out = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  // The bar redraws on a timer: a quick run may show only its first frame (the plan), else the count.
  expect(out).toMatch(new RegExp(`3000 requests to ${server.service}|\\d+ of 3000`));
  expect(out).toContain("━");
  expect(out).toMatch(/done in [\d.]+ s/);
  expect(out).toContain("throughput:");
});

test.each([
  [["bench"], "SERVICE is required"],
  [["bench", "svc", "-n", "0"], "--count: a request count, a whole number from 1 to 100000000"],
  [["bench", "svc", "--inflight", "many"], "--inflight: requests in flight"],
  [["bench", "svc", "--size", "-1"], "--size: a payload size in bytes"],
  [["bench", "svc", "--hex", "00ff", "--size", "8"], "--size 8 and a built payload (PAYLOAD, --hex, --u32, --i32) both set the payload: give one of them"],
  [["bench", "svc", "text", "--size", "8"], "both set the payload"],
  [["bench", "svc", "--u32", "-1"], "--u32: an unsigned 32-bit value"],
])("%j: exit 2, one line naming it", async (args, message) => {
  const ran = await qbun(args);
  expect(ran.exitCode).toBe(2);
  expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(ran.stderr).toContain(message);
});

describe("bench payloads are built as call builds them", () => {
  test("PAYLOAD text, --u32 and --hex parts in command-line order; the echo returns the same size", async () => {
    await using server = await startServer("qbun");
    const text = json(await qbun(["bench", server.service, "hello", "-n", "20", "--warmup", "0", "--json"]));
    expect(text).toMatchObject({ size: 5, count: 20, errors: 0, interrupted: false });
    const parts = json(await qbun(["bench", server.service, "--u32", "7", "--hex", "0102", "ab", "-n", "20", "--warmup", "0", "--json"]));
    expect(parts).toMatchObject({ size: 8, count: 20, errors: 0 });
    // SIZED (id 3) answers as many bytes as the u32 asks: 1000 back for 4 out.
    const sized = json(await qbun(["bench", server.service, "--id", "3", "--u32", "1000", "-n", "10", "--warmup", "0", "--json"]));
    expect(sized.size).toBe(4);
    expect(sized.megabytesPerSecond).toBeCloseTo((sized.requestsPerSecond * 1004) / 1e6, 0);
  });
});

test("Ctrl-C (SIGINT) stops the run and prints the partial results, exit code 130", async () => {
  await using server = await startServer("qbun");
  // SLOW (id 5) answers after 20 ms: 100000 of them would take over half an hour.
  const proc = Bun.spawn([process.execPath, cliMain, "bench", server.service, "--id", "5", "--u32", "20", "-n", "100000", "--warmup", "0", "--inflight", "2", "--json"], { stdout: "pipe", stderr: "pipe" });
  // Once it is connected (its ring directory exists), let it run a while, then interrupt it as a terminal would.
  for (let waited = 0; shmEntriesOf(proc.pid).length === 0 && waited < 20_000; waited += 50) await Bun.sleep(50);
  await Bun.sleep(500);
  proc.kill("SIGINT");
  const [stdout, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  expect(code).toBe(130);
  const r = JSON.parse(stdout);
  expect(r).toMatchObject({ service: server.service, interrupted: true, errors: 0 });
  expect(r.count).toBeGreaterThan(0);
  expect(r.count).toBeLessThan(100000);
  expect(r.latencyMicros.p50).toBeGreaterThanOrEqual(20_000 * 0.9);
});

test("in a terminal, Ctrl-C ends the progress bar with the partial count and prints the results", async () => {
  await using server = await startServer("qbun");
  // 2000 SLOW (20 ms) requests: 40 s in all; the bar advances every 20.
  await using term = new Terminal(["bench", server.service, "--id", "5", "--u32", "20", "-n", "2000", "--warmup", "0"]);
  await term.waitFor(`2000 requests to ${server.service}`);
  await term.waitFor(/\d+ of 2000/);
  await term.type("\x03");
  await term.waitFor(/interrupted after \d+ of 2000 in [\d.]+ s/);
  await term.waitFor(new RegExp(`${server.service} \\(shm\\): \\d+ requests \\(interrupted\\)`));
  await term.waitFor("round trip µs: p50");
  expect(await term.exited()).toBe(130);
});
