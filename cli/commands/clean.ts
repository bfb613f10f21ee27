/**
 * `qbun clean`: remove the ring files and socket files dead processes left
 * behind. A dry run unless told otherwise; asks first in a terminal.
 * @module
 */
import * as v from "valibot";
import { absoluteDir, jsonFlag, serviceName } from "../args.ts";
import { formatBytes } from "../host/services.ts";
import { findStale, removeStale, type StaleItem } from "../host/stale.ts";
import type { CliIo } from "../io.ts";
import { defineCommand } from "./command.ts";

/** What `qbun clean --json` prints. */
export interface CleanReport {
  /** True when nothing was removed on purpose (no --yes, or the question was declined). */
  readonly dryRun: boolean;
  /** Everything found stale. */
  readonly stale: readonly StaleItem[];
  /** Paths removed. */
  readonly removed: readonly string[];
  /** Paths left in place because, checked again right before removal, they had changed or were in use. */
  readonly skipped: readonly { path: string; why: string }[];
  /** Paths that could not be removed, with why. */
  readonly failed: readonly { path: string; error: string }[];
}

/** The `clean` command. */
export const clean = defineCommand({
  name: "clean",
  summary: "Remove stale ring files and socket files of dead processes (dry run unless --yes)",
  description:
    "Finds libqb connection files in /dev/shm that no live process uses (the server and client\n" +
    "pids in the name are gone, or no longer map them) and, in filesystem-socket mode, socket\n" +
    "files no socket is bound to (judged from /proc/net/unix; nothing is connected to). Without\n" +
    "--socket-dir only files named as libqb names them are considered in /tmp; with it, every\n" +
    "socket file in that directory. Lists them; removes them with --yes, each only after checking\n" +
    "again that it is the same file and still unused. /proc/net/unix shows this network namespace\n" +
    "only: run clean where the services run (not across a container boundary). In a terminal without --yes\n" +
    "(and without --json) it asks first; otherwise it only lists (a dry run). Exit code 1 if\n" +
    "something could not be removed.",
  flags: {
    yes: { type: "boolean", short: "y", help: "Remove without asking" },
    force: { type: "boolean", help: "Same as --yes" },
    service: { type: "string", value: "NAME", help: "Only this service's leftovers" },
    json: { type: "boolean", help: "Print one JSON object {dryRun, stale, removed, skipped, failed}" },
    "shm-dir": { type: "string", value: "DIR", help: "Directory of libqb's connection files (default /dev/shm)" },
    "socket-dir": { type: "string", value: "DIR", help: "Consider every socket file in DIR (default: libqb-named ones in /tmp, in filesystem-socket mode only)" },
  },
  schema: v.strictObject({
    yes: v.optional(v.boolean(), false),
    force: v.optional(v.boolean(), false),
    service: v.optional(serviceName),
    json: jsonFlag,
    "shm-dir": v.optional(absoluteDir),
    "socket-dir": v.optional(absoluteDir),
  }),
  async run(options, io) {
    const stale = await findStale({ shmDir: options["shm-dir"], socketDir: options["socket-dir"], service: options.service });
    let remove = options.yes || options.force;
    if (!remove && stale.length > 0 && io.tty && !options.json) {
      printStale(stale, io);
      const prompts = await import("@clack/prompts");
      const answer = await prompts.confirm({ message: `Remove these ${stale.length} item(s)?`, initialValue: false });
      remove = answer === true;
    } else if (!options.json) {
      printStale(stale, io);
    }
    // removeStale checks each item again first: the answer may have taken minutes.
    const result = remove ? removeStale(stale) : { removed: [], skipped: [], failed: [] };
    const report: CleanReport = { dryRun: !remove, stale, ...result };
    if (options.json) {
      io.out(JSON.stringify(report, null, 2));
    } else if (stale.length > 0) {
      if (report.dryRun) io.out(`dry run: nothing removed. Run "qbun clean --yes" to remove ${stale.length === 1 ? "it" : "them"}.`);
      else io.out(`removed ${report.removed.length} of ${stale.length}`);
      for (const s of report.skipped) io.out(`kept ${s.path}: ${s.why}`);
      for (const f of report.failed) io.err(`qbun clean: could not remove ${f.path}: ${f.error}`);
    }
    return report.failed.length > 0 ? 1 : 0;
  },
});

function printStale(stale: readonly StaleItem[], io: CliIo): void {
  if (stale.length === 0) {
    io.out("nothing stale: no ring files or sockets of dead processes");
    return;
  }
  for (const s of stale) io.out(`${s.kind.padEnd(9)} ${s.path}  ${formatBytes(s.bytes)}  ${s.service ? `service ${s.service}; ` : ""}${s.why}`);
}
