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
  /** Whether stdin and stdout are terminals: only then may a command prompt or animate. */
  readonly tty: boolean;
}

/** The process's own stdout and stderr. */
export const processIo: CliIo = {
  out: (text) => console.log(text),
  err: (text) => console.error(text),
  get tty() {
    return Boolean(process.stdin.isTTY && process.stdout.isTTY);
  },
};

/**
 * A command line that is wrong in a way only the command can tell (a
 * handler module of the wrong shape, say): reported in one line, exit code 2.
 */
export class CliUsageError extends Error {
  /** `"ERR_QBUN_USAGE"`, or a subclass's more specific code. */
  readonly code: string;
  /** `message`: one line naming the argument and what is accepted; `code`: for subclasses. */
  constructor(message: string, code = "ERR_QBUN_USAGE") {
    super(message);
    this.name = "CliUsageError";
    this.code = code;
  }
}

/** The message of anything thrown, for one-line reports. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
