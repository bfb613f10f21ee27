/**
 * The shape every CLI command has: its flags (fed to node:util `parseArgs`),
 * a valibot schema that checks the parsed flags and gives them types and
 * defaults, and `run`, which returns the exit code.
 * @module
 */
import type * as v from "valibot";
import type { CliIo } from "../io.ts";

/** One command-line flag of a command. */
export interface Flag {
  /** `boolean` for a switch, `string` for a flag that takes a value. */
  readonly type: "boolean" | "string";
  /** One-letter alias, without the dash. */
  readonly short?: string;
  /** Placeholder for the value in help text (string flags). */
  readonly value?: string;
  /** One line for the help text. */
  readonly help: string;
}

/** A `qbun <name>` command. */
export interface Command<TSchema extends v.GenericSchema = v.GenericSchema> {
  /** The word typed after `qbun`. */
  readonly name: string;
  /** One line for `qbun --help`. */
  readonly summary: string;
  /** A few sentences for `qbun help <name>`. */
  readonly description: string;
  /** The flags the command accepts, keyed by long name (`json` is `--json`). */
  readonly flags: Readonly<Record<string, Flag>>;
  /** Checks the parsed flags; its output is what `run` receives. */
  readonly schema: TSchema;
  /** Runs the command; resolves the process exit code. */
  run(options: v.InferOutput<TSchema>, io: CliIo): Promise<number>;
}

/** Declares a command; only here so TypeScript infers `run`'s option type from the schema. */
export function defineCommand<TSchema extends v.GenericSchema>(command: Command<TSchema>): Command<TSchema> {
  return command;
}
