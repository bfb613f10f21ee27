/**
 * `qbun selftest`: can qbun work on this machine? Runs every check and
 * prints a verdict; exit code 0 when all passed, 1 otherwise.
 * @module
 */
import * as v from "valibot";
import { helperBuild } from "../../ffi/native.ts";
import { runChecks, type Check, type CheckResult } from "../selftest/check.ts";
import { nativeChecks } from "../selftest/native.ts";
import { shmChecks } from "../selftest/shm.ts";
import { VERSION } from "../version.ts";
import { defineCommand } from "./command.ts";

/** Every self-test check, in order. New areas append theirs here. */
const checks: readonly Check[] = [...nativeChecks, ...shmChecks];

/** What `qbun selftest --json` prints. */
export interface SelftestReport {
  /** True when every check passed. */
  readonly ok: boolean;
  /** How the C helper was built (`"source"`, `"embedded"`), or null if it never loaded. */
  readonly build: string | null;
  /** qbun's version. */
  readonly qbun: string;
  /** The Bun runtime's version. */
  readonly bun: string;
  /** `${platform}-${arch}`. */
  readonly platform: string;
  /** Every check, in the order run. */
  readonly checks: readonly CheckResult[];
}

const LABEL = { pass: "PASS", fail: "FAIL", skip: "SKIP" } as const;

/** The `selftest` command. */
export const selftest = defineCommand({
  name: "selftest",
  summary: "Check that qbun works here: the C helper, fd passing, SO_PEERCRED, shared memory",
  description:
    "Compiles and loads the C helper (from ffi/qbun.c, or the header-free copy embedded in the\n" +
    "standalone executable), passes a memfd with credentials over a socketpair, reads\n" +
    "SO_PEERCRED, then checks shared memory: memfd seals, read-only fds, circular mappings and\n" +
    "process-shared semaphores. Exit code 0 when every check passed, 1 otherwise.",
  flags: {
    json: { type: "boolean", help: "Print one JSON object instead of text" },
  },
  schema: v.strictObject({ json: v.optional(v.boolean(), false) }),
  async run(options, io) {
    const results = await runChecks(checks);
    const report: SelftestReport = {
      ok: results.every((r) => r.status === "pass"),
      build: helperBuild() ?? null,
      qbun: VERSION,
      bun: Bun.version,
      platform: `${process.platform}-${process.arch}`,
      checks: results,
    };
    if (options.json) {
      io.out(JSON.stringify(report, null, 2));
    } else {
      io.out(`qbun ${report.qbun} selftest (Bun ${report.bun}, ${report.platform}, helper build: ${report.build ?? "none"})`);
      const width = Math.max(...results.map((r) => r.title.length));
      for (const r of results) {
        const [first = "", ...more] = r.detail.split("\n");
        io.out(`  ${LABEL[r.status]}  ${r.title.padEnd(width)}  ${first}${r.status === "skip" ? "" : ` (${r.ms} ms)`}`);
        for (const line of more) io.out(`        ${line}`);
      }
      const passed = results.filter((r) => r.status === "pass").length;
      io.out(`verdict: ${report.ok ? "OK" : "NOT OK"} (${passed} of ${results.length} checks passed)`);
    }
    return report.ok ? 0 : 1;
  },
});
