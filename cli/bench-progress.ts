/**
 * A benchmark run with a clack progress bar: `qbun bench` in a terminal
 * and the interactive session's quick benchmark share it.
 * @module
 */
import { runBench, type BenchPlan, type BenchResult } from "./bench-run.ts";
import { errorMessage } from "./io.ts";

/** How the bar ends: `summary` turns the result into its closing line. */
export interface ProgressOptions {
  /** The bar's first line (what is being run). */
  readonly title: string;
  /** The bar's closing line for a finished (or interrupted) run. */
  readonly summary: (result: BenchResult) => string;
}

/**
 * Runs `plan` with a progress bar on the terminal. The bar closes with the
 * summary, or with the error (which is rethrown).
 */
export async function runBenchWithProgress(plan: BenchPlan, options: ProgressOptions): Promise<BenchResult> {
  const prompts = await import("@clack/prompts");
  const bar = prompts.progress({ max: plan.count });
  bar.start(options.title);
  let shown = 0;
  let result: BenchResult;
  try {
    result = await runBench({
      ...plan,
      onProgress: (done) => {
        bar.advance(done - shown, `${done} of ${plan.count}`);
        shown = done;
        plan.onProgress?.(done);
      },
    });
  } catch (error) {
    bar.error(errorMessage(error));
    throw error;
  }
  if (result.interrupted) bar.cancel(options.summary(result));
  else bar.stop(options.summary(result));
  return result;
}
