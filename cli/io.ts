/**
 * Where commands write. Commands never touch `process.stdout` or `console`
 * directly: they get a {@link CliIo}, so a test can capture what they say.
 * @module
 */

/** The output channels handed to every command. */
export interface CliIo {
  /** Writes one line (or block) of normal output, to stdout. */
  out(text: string): void;
  /** Writes one line of diagnostics, to stderr. */
  err(text: string): void;
}

/** The process's own stdout and stderr. */
export const processIo: CliIo = {
  out: (text) => console.log(text),
  err: (text) => console.error(text),
};

/** The message of anything thrown, for one-line reports. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
