/**
 * Help text, generated from the command list and each command's flags.
 * @module
 */
import type { Command, Flag } from "./commands/command.ts";
import { VERSION } from "./version.ts";

/** `qbun --help`: what qbun is, its commands and global options. */
export function mainHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length), "help".length);
  return [
    `qbun ${VERSION}: Linux local IPC for Bun (AF_UNIX sockets with fd passing and credentials, shared memory)`,
    "",
    "Usage: qbun <command> [options]",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    `  ${"help".padEnd(width)}  Show this help, or a command's: qbun help <command>`,
    "",
    "Options:",
    "  -h, --help     Show help",
    "  -v, --version  Print qbun's version",
    "",
    "With no arguments in a terminal, qbun starts an interactive session (pick a service, call it,",
    "watch it, run doctor); Ctrl-C or q ends it (exit code 0). It never prompts when stdin is not a",
    "terminal.",
    "",
    "Exit codes (every command):",
    "  0  done; for doctor: no check failed",
    "  1  failed: the command ran and something went wrong (a refused connection, an error",
    "     response from call, a failed doctor check, a file clean could not remove)",
    "  2  usage: a bad command, flag or argument; the one-line message names it",
    "  130  bench stopped by Ctrl-C (SIGINT), after printing the partial results",
  ].join("\n");
}

/** `qbun help <command>` / `qbun <command> --help`. */
export function commandHelp(command: Command): string {
  const flags: [string, string][] = Object.entries(command.flags).map(([name, flag]) => [flagSyntax(name, flag), flag.help]);
  flags.push(["-h, --help", "Show this help"]);
  const positionals: [string, string][] = (command.positionals ?? []).map((p) => [p.optional ? `[${p.label}]` : p.label, p.help]);
  const width = Math.max(...[...flags, ...positionals].map(([syntax]) => syntax.length));
  const words = positionals.map(([syntax]) => ` ${syntax}`).join("");
  return [
    `Usage: qbun ${command.name} [options]${words}`,
    "",
    command.description,
    "",
    ...(positionals.length ? ["Arguments:", ...positionals.map(([syntax, help]) => `  ${syntax.padEnd(width)}  ${help}`), ""] : []),
    "Options:",
    ...flags.map(([syntax, help]) => `  ${syntax.padEnd(width)}  ${help}`),
  ].join("\n");
}

function flagSyntax(name: string, flag: Flag): string {
  const long = `--${name}${flag.type === "string" ? ` ${flag.value ?? "VALUE"}` : ""}${flag.multiple ? " ..." : ""}`;
  return flag.short ? `-${flag.short}, ${long}` : long;
}
