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
  ].join("\n");
}

/** `qbun help <command>` / `qbun <command> --help`. */
export function commandHelp(command: Command): string {
  const flags: [string, string][] = Object.entries(command.flags).map(([name, flag]) => [flagSyntax(name, flag), flag.help]);
  flags.push(["-h, --help", "Show this help"]);
  const width = Math.max(...flags.map(([syntax]) => syntax.length));
  return [
    `Usage: qbun ${command.name} [options]`,
    "",
    command.description,
    "",
    "Options:",
    ...flags.map(([syntax, help]) => `  ${syntax.padEnd(width)}  ${help}`),
  ].join("\n");
}

function flagSyntax(name: string, flag: Flag): string {
  const long = `--${name}${flag.type === "string" ? ` ${flag.value ?? "VALUE"}` : ""}`;
  return flag.short ? `-${flag.short}, ${long}` : long;
}
