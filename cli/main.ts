#!/usr/bin/env bun
/**
 * The `qbun` command line: `qbun <command> [options]`. Parses argv, runs the
 * command, and turns the outcome into an exit code (0 ok, 1 failed, 2 usage
 * error). This is the only place that catches everything and the only place
 * that exits. The standalone executable's entry (scripts/build-binary.ts)
 * imports it and calls {@link runCli}.
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import * as v from "valibot";
import { findCommand, commands } from "./commands/index.ts";
import type { Command } from "./commands/command.ts";
import { commandHelp, mainHelp } from "./help.ts";
import { errorMessage, processIo, type CliIo } from "./io.ts";
import { VERSION } from "./version.ts";

/** Exit code for a command line qbun could not understand. */
const USAGE = 2;

/**
 * Runs `qbun` with `argv` (the words after the program name) and resolves
 * the exit code. Never throws: failures are reported on `io.err`.
 */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === "-h" || first === "--help") {
    io.out(mainHelp(commands));
    return 0;
  }
  if (first === "-v" || first === "--version") {
    io.out(`qbun ${VERSION}`);
    return 0;
  }
  if (first === "help") return help(rest, io);
  const command = findCommand(first);
  if (!command) {
    io.err(`qbun: unknown command "${first}". Run "qbun --help" for the list.`);
    return USAGE;
  }
  return runCommand(command, rest, io);
}

function help(topics: readonly string[], io: CliIo): number {
  const [topic] = topics;
  if (topic === undefined) {
    io.out(mainHelp(commands));
    return 0;
  }
  const command = findCommand(topic);
  if (!command) {
    io.err(`qbun help: no command "${topic}". Commands: ${commands.map((c) => c.name).join(", ")}.`);
    return USAGE;
  }
  io.out(commandHelp(command));
  return 0;
}

async function runCommand(command: Command, args: readonly string[], io: CliIo): Promise<number> {
  const config: ParseArgsOptionsConfig = { help: { type: "boolean", short: "h" } };
  for (const [name, flag] of Object.entries(command.flags)) {
    config[name] = flag.short ? { type: flag.type, short: flag.short } : { type: flag.type };
  }
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: [...args], options: config, strict: true, allowPositionals: false }));
  } catch (error) {
    io.err(`qbun ${command.name}: ${errorMessage(error)}. Run "qbun help ${command.name}" for its options.`);
    return USAGE;
  }
  const { help: wantsHelp, ...flags } = values;
  if (wantsHelp) {
    io.out(commandHelp(command));
    return 0;
  }
  const parsed = v.safeParse(command.schema, flags);
  if (!parsed.success) {
    const problems = parsed.issues.map((issue) => {
      const path = v.getDotPath(issue);
      return path ? `--${path}: ${issue.message}` : issue.message;
    });
    io.err(`qbun ${command.name}: ${problems.join("; ")}`);
    return USAGE;
  }
  try {
    return await command.run(parsed.output, io);
  } catch (error) {
    io.err(`qbun ${command.name}: ${errorMessage(error)}`);
    if (process.env.QBUN_DEBUG && error instanceof Error && error.stack) io.err(error.stack);
    return 1;
  }
}

if (import.meta.main) process.exit(await runCli(process.argv.slice(2)));
