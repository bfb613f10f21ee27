/**
 * `qbun bench` against `qbun serve` and the libqb reference server: the
 * counts and percentiles it reports, error responses, the progress bar in
 * a terminal (util-linux `script` gives it one), and usage errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { removeCBuilds } from "./helpers/peers.ts";
import { cliMain, json, qbun, SERVER_KINDS, startServer } from "./cli-support.ts";

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
])("%j: exit 2, one line naming it", async (args, message) => {
  const ran = await qbun(args);
  expect(ran.exitCode).toBe(2);
  expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(ran.stderr).toContain(message);
});
