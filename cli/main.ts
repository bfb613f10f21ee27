#!/usr/bin/env bun
/**
 * The `qbun` command line: `qbun <command> [options]`. Parses argv, runs the
 * command, and turns the outcome into an exit code (0 ok, 1 failed, 2 usage
 * error; `bench` stopped by Ctrl-C: 130). With no arguments in a terminal it starts the interactive session
 * (cli/interactive.ts, loaded only then); without a terminal it prints help. This is the only place that catches everything and the only place
 * that exits. The standalone executable's entry (scripts/build-binary.ts)
 * imports it and calls {@link runCli}.
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import * as v from "valibot";
import { findCommand, commands } from "./commands/index.ts";
import type { ArgToken, Command } from "./commands/command.ts";
import { commandHelp, mainHelp } from "./help.ts";
import { CliUsageError, errorMessage, processIo, type CliIo } from "./io.ts";
import { VERSION } from "./version.ts";

/** Exit code for a command line qbun could not understand. */
const USAGE = 2;

/**
 * Runs `qbun` with `argv` (the words after the program name) and resolves
 * the exit code. Never throws: failures are reported on `io.err`.
 */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined && io.tty) {
    const { runInteractive } = await import("./interactive.ts");
    try {
      return await runInteractive(io);
    } catch (error) {
      io.err(`qbun: ${errorMessage(error)}`);
      return 1;
    }
  }
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
    config[name] = { type: flag.type, ...(flag.short ? { short: flag.short } : {}), ...(flag.multiple ? { multiple: true } : {}) };
  }
  const positionals = command.positionals ?? [];
  const usage = (text: string) => {
    io.err(`qbun ${command.name}: ${text}. Run "qbun help ${command.name}" for its options.`);
    return USAGE;
  };
  let parsed: ReturnType<typeof parseArgs<{ options: ParseArgsOptionsConfig; tokens: true; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: joinNegativeValues(args, command), options: config, strict: true, allowPositionals: positionals.length > 0, tokens: true });
  } catch (error) {
    // node:util's messages run over several lines; the first says it all.
    return usage(errorMessage(error).split("\n")[0]!.replace(/\.$/, ""));
  }
  const { help: wantsHelp, ...flags } = parsed.values;
  if (wantsHelp) {
    io.out(commandHelp(command));
    return 0;
  }
  if (parsed.positionals.length > positionals.length) {
    return usage(`unexpected argument "${parsed.positionals[positionals.length]}" (takes ${positionals.map((p) => p.label).join(" ") || "no arguments"})`);
  }
  const input: Record<string, unknown> = { ...flags };
  positionals.forEach((p, i) => {
    if (parsed.positionals[i] !== undefined) input[p.name] = parsed.positionals[i];
  });
  const tokens: ArgToken[] = [];
  let nextPositional = 0;
  for (const token of parsed.tokens ?? []) {
    if (token.kind === "option" && token.name !== "help") tokens.push({ name: token.name, value: token.value });
    if (token.kind === "positional") tokens.push({ name: positionals[nextPositional++]!.name, value: token.value });
  }
  const checked = v.safeParse(command.schema, input);
  if (!checked.success) {
    const labels = new Map(positionals.map((p) => [p.name, p.label]));
    const problems = checked.issues.map((issue) => {
      const key = v.getDotPath(issue)?.split(".")[0];
      if (!key) return issue.message;
      const name = labels.get(key) ?? `--${key}`;
      // A missing key: an issue about the top-level entry itself, whose input is undefined because the key is absent.
      if (issue.input === undefined && issue.path?.length === 1 && !Object.hasOwn(input, key)) {
        const positional = positionals.find((p) => p.name === key);
        return `${name} is required${positional ? `: ${positional.help}` : ""}`;
      }
      return `${name}: ${issue.message}`;
    });
    io.err(`qbun ${command.name}: ${problems.join("; ")}`);
    return USAGE;
  }
  try {
    return await command.run(checked.output, io, { tokens });
  } catch (error) {
    io.err(`qbun ${command.name}: ${errorMessage(error)}`);
    if (process.env.QBUN_DEBUG && error instanceof Error && error.stack) io.err(error.stack);
    return error instanceof CliUsageError ? USAGE : 1;
  }
}

/**
 * `--i32 -5` as `--i32=-5`: node:util reads a value that starts with a dash
 * as a forgotten value, but a negative number is what such flags take.
 */
function joinNegativeValues(args: readonly string[], command: Command): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    const name = arg.startsWith("--") ? arg.slice(2) : Object.entries(command.flags).find(([, f]) => f.short && arg === `-${f.short}`)?.[0];
    if (name !== undefined && command.flags[name]?.type === "string" && next !== undefined && /^-\d/.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

if (import.meta.main) process.exit(await runCli(process.argv.slice(2)));
