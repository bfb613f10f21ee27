/**
 * The self-test's unit: a named check that either returns a one-line
 * finding or throws. Checks run in order; a check whose prerequisite failed
 * is skipped, not run.
 * @module
 */
import { errorMessage } from "../io.ts";

/** One self-test check. */
export interface Check {
  /** Stable identifier, used in `--json` output and by `needs`. */
  readonly id: string;
  /** What is checked, in a few words. */
  readonly title: string;
  /** Ids of checks that must have passed for this one to run. */
  readonly needs?: readonly string[];
  /** Does the check; resolves a one-line finding, throws when the check fails. */
  run(): Promise<string> | string;
}

/** The outcome of one check. */
export interface CheckResult {
  /** The check's {@link Check.id}. */
  readonly id: string;
  /** The check's {@link Check.title}. */
  readonly title: string;
  /** `skip`: a check it needs did not pass. */
  readonly status: "pass" | "fail" | "skip";
  /** The finding, the error message, or why it was skipped. */
  readonly detail: string;
  /** Wall time of the check, in milliseconds. */
  readonly ms: number;
}

/** Runs `checks` in order and collects their results; never throws. */
export async function runChecks(checks: readonly Check[]): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const passed = new Set<string>();
  for (const check of checks) {
    const missing = (check.needs ?? []).filter((id) => !passed.has(id));
    if (missing.length > 0) {
      results.push({ id: check.id, title: check.title, status: "skip", detail: `needs ${missing.join(", ")}`, ms: 0 });
      continue;
    }
    const started = performance.now();
    try {
      const detail = await check.run();
      passed.add(check.id);
      results.push({ id: check.id, title: check.title, status: "pass", detail, ms: elapsed(started) });
    } catch (error) {
      results.push({ id: check.id, title: check.title, status: "fail", detail: errorMessage(error), ms: elapsed(started) });
    }
  }
  return results;
}

function elapsed(since: number): number {
  return Math.round((performance.now() - since) * 10) / 10;
}
