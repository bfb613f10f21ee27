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
import { errnoName } from "../ffi/errors.ts";
import { QbClient } from "../src/qb/index.ts";
import { serviceName, wholeNumber } from "./args.ts";
import { runBench } from "./bench-run.ts";
import { runDoctor } from "./host/doctor-checks.ts";
import { connectHint, formatBytes, listHost, type ServiceInfo } from "./host/services.ts";
import { findStale, removeStale } from "./host/stale.ts";
import { errorMessage, type CliIo } from "./io.ts";
import { showBytes } from "./payload.ts";
import { VERSION } from "./version.ts";

const requestId = wholeNumber("a request id", -0x8000_0000, 0x7fff_ffff);

/** Thrown out of any prompt the user cancelled: ends the session. */
class Cancelled extends Error {}

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
          { value: "w", label: "watch: connections and files, refreshed every second" },
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
    await using client = await QbClient.connect(service, { timeout: 5_000 }).catch((error: unknown) => {
      throw connectHint(service, error);
    });
    const started = performance.now();
    const response = await client.request(id, new TextEncoder().encode(payload), { timeout: 5_000 });
    const micros = Math.round((performance.now() - started) * 10_000) / 10;
    const shown = showBytes(response.data);
    const error = response.error === 0 ? "0 (ok)" : `${response.error} (${errnoName(-response.error)})`;
    spin.stop(`response: error ${error}, ${response.data.byteLength} bytes in ${micros} µs`);
    if (response.data.byteLength > 0) p.note(shown.text, shown.encoding === "utf8" ? "data (text)" : "data (hex)");
  } catch (error) {
    spin.error(errorMessage(error));
  }
}

async function watch(service: string): Promise<void> {
  const spin = p.spinner();
  const line = () => {
    const s = listHost().services.find((x) => x.name === service);
    if (!s) return `${service}: not listening`;
    const bytes = s.rings.reduce((n, r) => n + r.allocated, 0);
    return `${s.connections} connection(s), ${s.rings.length} file set(s) in /dev/shm (${formatBytes(bytes)})`;
  };
  p.log.info(`Watching ${service}; press Enter to stop.`);
  spin.start(line());
  const timer = setInterval(() => spin.message(line()), 1_000);
  const key = await nextKey();
  clearInterval(timer);
  spin.stop(line());
  if (key === "\u0003") throw new Cancelled();
}

/** Resolves the next key pressed (raw mode while waiting). */
function nextKey(): Promise<string> {
  const stdin = process.stdin;
  const wasRaw = stdin.isRaw;
  stdin.setRawMode?.(true);
  stdin.resume();
  return new Promise((resolve) => {
    stdin.once("data", (data: Buffer) => {
      stdin.setRawMode?.(wasRaw);
      stdin.pause();
      resolve(data.toString("latin1"));
    });
  });
}

async function bench(service: string): Promise<void> {
  const count = 2_000;
  const bar = p.progress({ max: count });
  bar.start(`${count} echo requests (id 1, 64 B)`);
  let shown = 0;
  try {
    const r = await runBench({
      service,
      id: 1,
      payload: new Uint8Array(64),
      count,
      warmup: 100,
      inflight: 1,
      timeout: 5_000,
      onProgress: (done) => {
        bar.advance(done - shown, `${done} of ${count}`);
        shown = done;
      },
    });
    const l = r.latencyMicros;
    bar.stop(`p50 ${l.p50} µs, p99 ${l.p99} µs, ${r.requestsPerSecond} requests/s${r.errors ? `, ${r.errors} error response(s)` : ""}`);
  } catch (error) {
    bar.error(errorMessage(error));
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
  for (const f of result.failed) p.log.error(`${f.path}: ${f.error}`);
}

/** A clack validate callback from a valibot schema: the first issue's message, or undefined when valid. */
function check(schema: v.GenericSchema, value: unknown): string | undefined {
  const result = v.safeParse(schema, value);
  return result.success ? undefined : result.issues[0]!.message;
}
