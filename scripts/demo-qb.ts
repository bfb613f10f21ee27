/**
 * The main job, shown end to end: `qbun serve` runs the interop service on
 * qbun's libqb-compatible server, and a real libqb client (Debian's libqb,
 * qb_ipcc_*) talks to it over both transports. Run by scripts/demo.sh.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "qbun-demo-"));
const client = join(work, "qb_client");

function say(line = ""): void {
  console.log(line);
}

async function libqb(args: string[]): Promise<any> {
  const proc = Bun.spawn([client, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const last = out.trim().split("\n").at(-1) ?? "";
  if (code !== 0) throw new Error(`libqb client ${args.slice(1).join(" ")} failed (exit ${code}): ${last} ${err}`);
  return JSON.parse(last);
}

try {
  const gcc = Bun.spawnSync(["gcc", "-O2", "-o", client, join(root, "test", "peers", "qb_client.c"), "-lqb"], { stderr: "pipe" });
  if (gcc.exitCode !== 0) throw new Error(`building the libqb client failed (is libqb-dev installed?): ${gcc.stderr}`);
  const shmBefore = readdirSync("/dev/shm").length;

  for (const transport of ["shm", "socket"]) {
    const service = `qbun-demo-${process.pid}-${transport}`;
    say(`$ qbun serve --service ${service} --transport ${transport}`);
    const server = Bun.spawn([process.execPath, join(root, "cli", "main.ts"), "serve", "--service", service, "--transport", transport], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const reader = server.stdout.getReader();
    say(`  ${new TextDecoder().decode((await reader.read()).value).trim()}`);
    try {
      say(`  a libqb client (qb_ipcc_connect, Debian's libqb) connects to "${service}":`);
      const info = await libqb([service, "info"]);
      say(`    connected: buffer ${info.bufferSize} bytes; the server is pid ${info.serverPid}, uid ${info.serverUid} (from SCM_CREDENTIALS)`);
      const echo = await libqb([service, "echo", "64", "2000"]);
      say(`    ECHO 64 B x 2000, each verified: ${((echo.ms * 1000) / 2000).toFixed(1)} us per round trip`);
      const big = await libqb([service, "--max", "1048576", "echo", "1048000", "20"]);
      say(`    ECHO 1 MB x 20, each verified: ${(big.ms / 20).toFixed(2)} ms per round trip`);
      const who = await libqb([service, "whoami"]);
      say(`    WHOAMI: ${JSON.stringify(who.whoami)}`);
      const events = await libqb([service, "events", "100", "1000"]);
      say(`    EVENTS 100 x 1000 B: ${events.events} events received in order, then the response`);
      const error = await libqb([service, "error", "-95"]);
      say(`    ERROR -95: the client got error ${error.error} (EOPNOTSUPP)`);
    } finally {
      server.kill("SIGTERM");
    }
    say(`  SIGTERM: qbun serve exited ${await server.exited}`);
    say();
  }
  const shmAfter = readdirSync("/dev/shm").length;
  say(`/dev/shm holds ${shmAfter} entries, as before the demo (${shmBefore}): every connection's files were removed.`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
