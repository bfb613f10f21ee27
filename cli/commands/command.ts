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
  /** May be given several times; the schema then receives an array of the values. */
  readonly multiple?: boolean;
}

/** One positional argument of a command (`SERVICE` in `qbun call SERVICE ID`). */
export interface Positional {
  /** Key under which the schema receives the value, e.g. `service`. */
  readonly name: string;
  /** How help and errors show it, e.g. `SERVICE`. */
  readonly label: string;
  /** One line for the help text. */
  readonly help: string;
  /** Whether it may be left out (only trailing positionals may). */
  readonly optional?: boolean;
}

/** One argument as it stood on the command line, for commands where the order of flags matters. */
export interface ArgToken {
  /** The flag's long name, or the positional's key. */
  readonly name: string;
  /** The flag's value (string flags) or the positional's text. */
  readonly value: string | undefined;
}

/** What a command learns about its command line besides the validated options. */
export interface CommandContext {
  /** Every flag and positional, in the order given. */
  readonly tokens: readonly ArgToken[];
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
  /** Positional arguments, in order (none when absent). */
  readonly positionals?: readonly Positional[];
  /** Checks the parsed flags and positionals (keyed by name); its output is what `run` receives. */
  readonly schema: TSchema;
  /** Runs the command; resolves the process exit code (0 ok, 1 failed, 2 usage error). */
  run(options: v.InferOutput<TSchema>, io: CliIo, context: CommandContext): Promise<number>;
}

/** Declares a command; only here so TypeScript infers `run`'s option type from the schema. */
export function defineCommand<TSchema extends v.GenericSchema>(command: Command<TSchema>): Command<TSchema> {
  return command;
}
