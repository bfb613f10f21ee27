/**
 * Waiting for one keypress in a terminal (the interactive session's
 * "watch" runs until a key is pressed).
 * @module
 */

/** What {@link nextKey} resolves when input ends (EOF, Ctrl-D or a closed stream) instead of a key. */
export const QUIT = "quit";

/** The parts of `process.stdin` that {@link nextKey} uses (a test passes a plain stream). */
export interface KeySource {
  /** Terminals only: raw mode, so one keypress arrives without Enter. */
  setRawMode?(raw: boolean): unknown;
  /** Whether raw mode is on now (terminals only). */
  readonly isRaw?: boolean;
  /** True once the stream has ended. */
  readonly readableEnded: boolean;
  /** True once the stream was destroyed. */
  readonly destroyed: boolean;
  /** Adds a listener for input. */
  on(event: "data", listener: (data: Buffer | string) => void): unknown;
  /** Adds a listener for the end of input. */
  on(event: "end" | "close", listener: () => void): unknown;
  /** Removes an input listener. */
  off(event: "data", listener: (data: Buffer | string) => void): unknown;
  /** Removes an end-of-input listener. */
  off(event: "end" | "close", listener: () => void): unknown;
  /** Starts the flow of input. */
  resume(): unknown;
  /** Stops the flow of input (so the process can exit). */
  pause(): unknown;
}

/**
 * Resolves the next key pressed (raw mode while waiting), or {@link QUIT}
 * when input ends first or the key is Ctrl-D. Leaves the stream as it
 * found it: raw mode restored, paused, no listeners of its own.
 */
export function nextKey(input: KeySource = process.stdin): Promise<string> {
  if (input.readableEnded || input.destroyed) return Promise.resolve(QUIT);
  return new Promise((resolve) => {
    const wasRaw = input.isRaw ?? false;
    const finish = (key: string) => {
      input.off("data", onData);
      input.off("end", onEnd);
      input.off("close", onEnd);
      input.setRawMode?.(wasRaw);
      input.pause();
      resolve(key);
    };
    const onData = (data: Buffer | string) => {
      const key = typeof data === "string" ? data : data.toString("latin1");
      finish(key === "\u0004" ? QUIT : key);
    };
    const onEnd = () => finish(QUIT);
    input.setRawMode?.(true);
    input.on("data", onData);
    input.on("end", onEnd);
    input.on("close", onEnd);
    input.resume();
  });
}
