/**
 * `qbun doctor`: is this host fit for libqb IPC? Each check prints a
 * verdict and, when not ok, a fix. Exit code 1 when any check fails.
 * @module
 */
import * as v from "valibot";
import { absoluteDir, jsonFlag } from "../args.ts";
import { runDoctor, type CheckOutcome } from "../host/doctor-checks.ts";
import type { CliIo } from "../io.ts";
import { defineCommand } from "./command.ts";

/** What `qbun doctor --json` prints. */
export interface DoctorReport {
  /** False when any check failed (warnings do not count). */
  readonly ok: boolean;
  /** Every check's outcome, in the order run. */
  readonly checks: readonly CheckOutcome[];
}

/** The `doctor` command. */
export const doctor = defineCommand({
  name: "doctor",
  summary: "Check this host for libqb IPC trouble; a verdict and a fix for each check",
  description:
    "Checks the kernel features qbun and libqb rely on (memfd with seals, abstract sockets with\n" +
    "libqb's padded names), /dev/shm (size, free space against what the running services' connections\n" +
    "take, permissions, tmpfs), open file limits (here and of each service's process), ring files\n" +
    "and sockets left by dead processes, whether libqb.so.100 is installed, and the socket mode\n" +
    "(/etc/libqb/force-filesystem-sockets). Each check: ok, warn or fail, with a fix.\n" +
    "Exit code 1 when a check fails, 0 otherwise (warnings included).",
  flags: {
    json: { type: "boolean", help: "Print one JSON object {ok, checks: [{id, title, verdict, detail, fix}]}" },
    "shm-dir": { type: "string", value: "DIR", help: "Directory of libqb's connection files (default /dev/shm)" },
    "socket-dir": { type: "string", value: "DIR", help: "Directory of filesystem-mode sockets to check for dead ones (default /tmp, in that mode only)" },
  },
  schema: v.strictObject({ json: jsonFlag, "shm-dir": v.optional(absoluteDir), "socket-dir": v.optional(absoluteDir) }),
  async run(options, io) {
    const checks = await runDoctor({ shmDir: options["shm-dir"], socketDir: options["socket-dir"] });
    const report: DoctorReport = { ok: checks.every((c) => c.verdict !== "fail"), checks };
    if (options.json) io.out(JSON.stringify(report, null, 2));
    else printDoctor(report, io);
    return report.ok ? 0 : 1;
  },
});

/** The report as text. */
export function printDoctor(report: DoctorReport, io: CliIo): void {
  const width = Math.max(...report.checks.map((c) => c.title.length));
  for (const c of report.checks) {
    io.out(`${c.verdict.toUpperCase().padEnd(4)}  ${c.title.padEnd(width)}  ${c.detail}`);
    if (c.fix) io.out(`      ${"".padEnd(width)}  fix: ${c.fix}`);
  }
  const count = (verdict: string) => report.checks.filter((c) => c.verdict === verdict).length;
  io.out(`verdict: ${report.ok ? "OK" : "NOT OK"} (${count("ok")} ok, ${count("warn")} warn, ${count("fail")} fail)`);
}
