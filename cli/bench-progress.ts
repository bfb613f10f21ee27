/**
 * A benchmark run with a progress bar on the terminal: `qbun bench` in a
 * terminal and the interactive session's quick benchmark share it.
 *
 * The bar is drawn here rather than with clack's `progress()`: clack's
 * spinner puts stdin in raw mode while it runs and calls `process.exit(0)`
 * on Ctrl-C (`block()` in @clack/core), so an interrupted run could never
 * print what it had measured. Here stdin is left alone: Ctrl-C is a
 * SIGINT, which {@link interruptOnSigint} turns into an abort.
 * @module
 */
import { styleText } from "node:util";
import { runBench, type BenchPlan, type BenchResult } from "./bench-run.ts";
import { errorMessage } from "./io.ts";

/** How the bar starts and ends. */
export interface ProgressOptions {
  /** The bar's first line (what is being run). */
  readonly title: string;
  /** The bar's closing line for a finished (or interrupted) run. */
  readonly summary: (result: BenchResult) => string;
  /** Where to draw (default stdout). */
  readonly output?: { write(text: string): unknown; readonly columns?: number };
}

const WIDTH = 40;
/** Redraws at most this often: a fast run completes thousands of requests per frame. */
const FRAME_MS = 80;

/**
 * Runs `plan` with a progress bar. The bar closes with the summary (marked
 * as interrupted when the plan's signal stopped it), or with the error,
 * which is rethrown.
 */
export async function runBenchWithProgress(plan: BenchPlan, options: ProgressOptions): Promise<BenchResult> {
  const out = options.output ?? process.stdout;
  let done = 0;
  let text = options.title;
  const draw = (symbol: string, line: string, last = false) => {
    const filled = Math.round((done / Math.max(1, plan.count)) * WIDTH);
    const bar = styleText("magenta", "━".repeat(filled)) + styleText("dim", "━".repeat(WIDTH - filled));
    // One terminal row, or \r would leave the wrapped part behind.
    const room = Math.max(10, (out.columns ?? 80) - WIDTH - 5);
    out.write(`\r\x1b[K${symbol}  ${bar} ${line.length > room && !last ? `${line.slice(0, room - 3)}...` : line}`);
  };
  out.write(`${styleText("gray", "│")}\n`);
  draw(styleText("magenta", "◆"), text);
  const timer = setInterval(() => draw(styleText("magenta", "◆"), text), FRAME_MS);
  try {
    const result = await runBench({
      ...plan,
      onProgress: (n) => {
        done = n;
        text = `${n} of ${plan.count}`;
        plan.onProgress?.(n);
      },
    });
    clearInterval(timer);
    draw(result.interrupted ? styleText("yellow", "■") : styleText("green", "◇"), options.summary(result), true);
    out.write("\n");
    return result;
  } catch (error) {
    clearInterval(timer);
    draw(styleText("red", "▲"), errorMessage(error).split("\n")[0]!, true);
    out.write("\n");
    throw error;
  }
}

/**
 * An AbortSignal that the next SIGINT (Ctrl-C) aborts, for stopping a
 * benchmark early with its partial results. Listens once (a second Ctrl-C
 * is not swallowed here); dispose to stop listening.
 */
export function interruptOnSigint(): Disposable & { readonly signal: AbortSignal } {
  const stop = new AbortController();
  const onSigint = () => stop.abort(new Error("interrupted (SIGINT)"));
  process.once("SIGINT", onSigint);
  return {
    signal: stop.signal,
    [Symbol.dispose]: () => {
      process.off("SIGINT", onSigint);
    },
  };
}
