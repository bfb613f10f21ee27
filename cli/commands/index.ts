/**
 * The list of commands: help text and dispatch are both derived from it.
 * @module
 */
import { bench } from "./bench.ts";
import { call } from "./call.ts";
import { clean } from "./clean.ts";
import type { Command } from "./command.ts";
import { demo } from "./demo.ts";
import { doctor } from "./doctor.ts";
import { ls } from "./ls.ts";
import { selftest } from "./selftest.ts";
import { serve } from "./serve.ts";

/** Every `qbun` command, in the order `--help` lists them. */
export const commands: readonly Command[] = [serve, call, ls, doctor, clean, bench, demo, selftest];

/** The command called `name`, if there is one. */
export function findCommand(name: string): Command | undefined {
  return commands.find((command) => command.name === name);
}
