/**
 * The list of commands: help text and dispatch are both derived from it.
 * @module
 */
import type { Command } from "./command.ts";
import { demo } from "./demo.ts";
import { selftest } from "./selftest.ts";
import { serve } from "./serve.ts";

/** Every `qbun` command, in the order `--help` lists them. */
export const commands: readonly Command[] = [serve, demo, selftest];

/** The command called `name`, if there is one. */
export function findCommand(name: string): Command | undefined {
  return commands.find((command) => command.name === name);
}
