/**
 * `qbun` with no arguments in a terminal: an interactive session with
 * `@clack/prompts`. Pick a service from what `ls` finds, call it, watch
 * its connections and files, run a quick benchmark, run doctor, clean up
 * stale files. Every answer is checked with the same valibot schemas as the
 * command-line flags. Ctrl-C (or Escape) at any prompt ends the session
 * cleanly with exit code 0. Loaded only in a terminal (main.ts).
 * @module
 */
import * as p from "@clack/prompts";
import * as v from "valibot";
import type { QbClient } from "../src/qb/index.ts";
import { requestId, serviceName } from "./args.ts";
import { interruptOnSigint, runBenchWithProgress } from "./bench-progress.ts";
import { callData, callSummary, runCall } from "./call-run.ts";
import { connectService } from "./connect.ts";
import { runDoctor } from "./host/doctor-checks.ts";
import { formatBytes, listHost, refreshService, type ServiceInfo } from "./host/services.ts";
import { findStale, removeStale } from "./host/stale.ts";
import { processInfo } from "./host/unix-sockets.ts";
import { errorMessage, type CliIo } from "./io.ts";
import { nextKey, QUIT } from "./keys.ts";
import { VERSION } from "./version.ts";

/** How often "watch" refreshes: each refresh reads /proc/net/unix and /dev/shm and sends one probe request. */
const WATCH_INTERVAL_MS = 2_000;

/** Thrown out of any prompt the user cancelled: ends the session. */
class Cancelled extends Error {}

/** Thrown when input ended (EOF) while waiting for a key: ends the session like "quit". */
class InputEnded extends Error {}

function answer<T>(value: T): Exclude<T, symbol> {
  if (p.isCancel(value)) throw new Cancelled();
  return value as Exclude<T, symbol>;
}

/** Runs the session until the user quits or cancels; resolves the exit code (0). */
export async function runInteractive(_io: CliIo): Promise<number> {
  p.intro(`qbun ${VERSION}: libqb IPC on this host`);
  try {
    for (;;) {
      const services = listHost().services;
      const choice = answer(
        await p.selectKey({
          message: `What now? (${services.length} libqb service(s) listening)`,
          options: [
            { value: "s", label: "pick a service: call it, watch it, benchmark it" },
            { value: "d", label: "run doctor" },
            { value: "c", label: "clean: stale files of dead processes" },
            { value: "q", label: "quit" },
          ],
        }),
      );
      if (choice === "q") break;
      if (choice === "d") await doctor();
      if (choice === "c") await clean();
      if (choice === "s") await pickService(services);
    }
  } catch (error) {
    if (error instanceof InputEnded) {
      p.outro("Input ended: bye.");
      return 0;
    }
    if (error instanceof Cancelled) {
      p.cancel("Cancelled: bye.");
      return 0;
    }
    throw error;
  }
  p.outro("Bye.");
  return 0;
}

async function pickService(services: readonly ServiceInfo[]): Promise<void> {
  let name: string;
  if (services.length === 0) {
    p.log.warn("No libqb service is listening here (in this network namespace).");
    name = answer(await p.text({ message: "Service name to try anyway", validate: serviceName }));
  } else {
    name = answer(
      await p.autocomplete({
        message: "Service (type to filter)",
        options: services.map((s) => ({ value: s.name, label: s.name, hint: describe(s) })),
        maxItems: 8,
      }),
    );
  }
  for (;;) {
    const action = answer(
      await p.selectKey({
        message: `${name}: what now?`,
        options: [
          { value: "c", label: "call: send one request" },
          { value: "w", label: "watch: connections, files and a live round-trip probe, refreshed every 2 s" },
          { value: "b", label: "bench: 2000 requests, latency and throughput" },
          { value: "q", label: "back" },
        ],
      }),
    );
    if (action === "q") return;
    if (action === "c") await call(name);
    if (action === "w") await watch(name);
    if (action === "b") await bench(name);
  }
}

function describe(s: ServiceInfo): string {
  const owner = s.owners[0];
  return `${owner ? `pid ${owner.pid} ${owner.comm}` : "owner unknown"}, ${s.connections} connection(s)`;
}

async function call(service: string): Promise<void> {
  const id = v.parse(requestId, answer(await p.text({ message: "Request id", placeholder: "1", defaultValue: "1", validate: (value) => check(requestId, value || "1") })));
  const payload = answer(await p.text({ message: "Payload (text; empty for none)", defaultValue: "" }));
  const spin = p.spinner();
  spin.start(`calling ${service}`);
  try {
    const outcome = await runCall({ service, id, payload: new TextEncoder().encode(payload), timeout: 5_000 });
    spin.stop(`response: ${callSummary(outcome.report)}`);
    if (outcome.report.size > 0) p.note(callData(outcome), outcome.report.encoding === "utf8" ? "data (text)" : "data (hex)");
  } catch (error) {
    spin.error(errorMessage(error));
  }
}

/**
 * Watches one service until a key is pressed: its connections and their
 * files (from the same data as `ls`, refreshed without rescanning every
 * process), and the round-trip time of a probe request (id 1, empty
 * payload; any answer counts, an error reply too) over a connection of
 * its own, which the counts leave out. Request counters are not shown:
 * libqb keeps them inside the server process.
 */
async function watch(service: string): Promise<void> {
  const owners = listHost().services.find((s) => s.name === service)?.owners ?? [];
  let probe: QbClient | undefined;
  let probeProblem: string | undefined;
  try {
    probe = await connectService(service, { timeout: 5_000 });
  } catch (error) {
    probeProblem = errorMessage(error).split("\n")[0];
  }
  const rtts: number[] = [];
  let info: ServiceInfo | undefined;
  const refresh = async () => {
    info = refreshService(service, owners);
    if (!probe) return;
    const started = performance.now();
    try {
      await probe.request(1, new Uint8Array(0), { timeout: WATCH_INTERVAL_MS });
      rtts.push((performance.now() - started) * 1000);
    } catch (error) {
      probeProblem = errorMessage(error).split("\n")[0];
    }
  };
  const spin = p.spinner();
  p.log.info(`Watching ${service}; press Enter to stop.`);
  await refresh();
  spin.start(watchLine(service, info, rtts, probeProblem));
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return; // a slow probe: skip a beat rather than pile up
    busy = true;
    void refresh().finally(() => {
      busy = false;
      spin.message(watchLine(service, info, rtts, probeProblem));
    });
  }, WATCH_INTERVAL_MS);
  let key: string;
  try {
    key = await nextKey();
  } finally {
    clearInterval(timer);
    await probe?.close();
  }
  spin.stop(watchLine(service, info, rtts, probeProblem));
  if (info) p.note(connectionTable(info), `${service}: connections`);
  if (key === "\u0003") throw new Cancelled();
  if (key === QUIT) throw new InputEnded();
}

/** Connections other than this process's probe. */
function others(info: ServiceInfo): ServiceInfo["rings"] {
  return info.rings.filter((r) => r.clientPid !== process.pid);
}

function watchLine(service: string, info: ServiceInfo | undefined, rtts: readonly number[], probeProblem: string | undefined): string {
  if (!info) return `${service}: not listening`;
  const rings = others(info);
  const connections = Math.max(0, info.connections - (rings.length < info.rings.length ? 1 : 0));
  const bytes = rings.reduce((n, r) => n + r.allocated, 0);
  const sorted = [...rtts].sort((a, b) => a - b);
  const probe = probeProblem
    ? `probe: ${probeProblem}`
    : sorted.length
      ? `probe round trip ${rtts.at(-1)!.toFixed(1)} µs (median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} over ${sorted.length})`
      : "probe: waiting";
  return `${connections} connection(s), ${rings.length} file set(s) in /dev/shm (${formatBytes(bytes)}), not counting this probe; ${probe}`;
}

function connectionTable(info: ServiceInfo): string {
  const rings = others(info);
  if (rings.length === 0) return "no client connections (besides this probe)";
  return rings
    .map((r) => {
      const client = processInfo(r.clientPid);
      return `client pid ${r.clientPid}${client ? ` (${client.comm}, uid ${client.uid})` : " (gone)"}  ${r.transport}  ${r.files.length} file(s), ${formatBytes(r.allocated)}  ${r.path}`;
    })
    .join("\n");
}

async function bench(service: string): Promise<void> {
  const count = 2_000;
  // Ctrl-C stops the benchmark (with what it measured), not the session.
  using interrupt = interruptOnSigint();
  try {
    await runBenchWithProgress(
      { service, id: 1, payload: new Uint8Array(64), count, warmup: 100, inflight: 1, timeout: 5_000, signal: interrupt.signal },
      {
        title: `${count} echo requests (id 1, 64 B)`,
        summary: (r) => `${r.interrupted ? `interrupted after ${r.count}: ` : ""}p50 ${r.latencyMicros.p50} µs, p99 ${r.latencyMicros.p99} µs, ${r.requestsPerSecond} requests/s${r.errors ? `, ${r.errors} error response(s)` : ""}`,
      },
    );
  } catch {
    // The bar showed the error.
  }
}

async function doctor(): Promise<void> {
  const spin = p.spinner();
  spin.start("checking");
  const checks = await runDoctor();
  const failed = checks.filter((c) => c.verdict === "fail").length;
  spin.stop(`doctor verdict: ${failed === 0 ? "OK" : "NOT OK"}`);
  for (const c of checks) {
    const text = `${c.title}: ${c.detail}${c.fix ? `\nfix: ${c.fix}` : ""}`;
    if (c.verdict === "ok") p.log.success(text);
    else if (c.verdict === "warn") p.log.warn(text);
    else p.log.error(text);
  }
}

async function clean(): Promise<void> {
  const stale = await findStale();
  if (stale.length === 0) {
    p.log.success("Nothing stale: no ring files or sockets of dead processes.");
    return;
  }
  p.note(stale.map((s) => `${s.path}  ${formatBytes(s.bytes)}`).join("\n"), `${stale.length} stale item(s)`);
  if (!answer(await p.confirm({ message: `Remove them?`, initialValue: false }))) return;
  const result = removeStale(stale);
  p.log.info(`Removed ${result.removed.length} of ${stale.length}.`);
  for (const k of result.skipped) p.log.warn(`Kept ${k.path}: ${k.why}`);
  for (const f of result.failed) p.log.error(`${f.path}: ${f.error}`);
}

/** A clack validate callback from a valibot schema: the first issue's message, or undefined when valid. */
function check(schema: v.GenericSchema, value: unknown): string | undefined {
  const result = v.safeParse(schema, value);
  return result.success ? undefined : result.issues[0]!.message;
}
