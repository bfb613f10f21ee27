/**
 * `qbun ls`: the libqb services on this host, their owners, connections
 * and files in /dev/shm.
 * @module
 */
import * as v from "valibot";
import { absoluteDir, jsonFlag } from "../args.ts";
import { formatBytes, listHost, type HostListing } from "../host/services.ts";
import type { RingSet } from "../host/rings.ts";
import type { CliIo } from "../io.ts";
import { defineCommand } from "./command.ts";

/** The `ls` command. */
export const ls = defineCommand({
  name: "ls",
  summary: "List the libqb services on this host: owners, connections, files in /dev/shm",
  description:
    "Reads /proc/net/unix for listening sockets bound the way libqb binds them (a NUL-padded\n" +
    "abstract name; in filesystem-socket mode, sockets in /tmp or --socket-dir), finds the processes holding\n" +
    "them through /proc/*/fd (root sees every process), counts their connections, and matches\n" +
    "each connection's files in /dev/shm or --shm-dir (qb-<server pid>-<client pid>-<fd>-XXXXXX/) with their\n" +
    "sizes and owners. Files no listed service owns are shown as orphans, marked stale when no\n" +
    'live process uses them ("qbun clean" removes those). Abstract names are per network namespace.',
  flags: {
    json: { type: "boolean", help: "Print one JSON object {services, orphanRings, filesystemSockets, shmDir, socketDir}" },
    "shm-dir": { type: "string", value: "DIR", help: "Where to look for connection files (default /dev/shm)" },
    "socket-dir": { type: "string", value: "DIR", help: "libqb's socket directory in filesystem-socket mode (default /tmp)" },
  },
  schema: v.strictObject({ json: jsonFlag, "shm-dir": v.optional(absoluteDir), "socket-dir": v.optional(absoluteDir) }),
  async run(options, io) {
    const listing = listHost({ shmDir: options["shm-dir"], socketDir: options["socket-dir"] });
    if (options.json) io.out(JSON.stringify(listing, null, 2));
    else printListing(listing, io);
    return 0;
  },
});

/** The listing as text. */
export function printListing(listing: HostListing, io: CliIo): void {
  if (listing.services.length === 0) io.out(`no libqb services listening here${listing.filesystemSockets ? ` (filesystem-socket mode, in ${listing.socketDir})` : ""}`);
  for (const s of listing.services) {
    const owner = s.owners[0];
    const who = owner ? `pid ${s.owners.map((o) => o.pid).join(",")} (${owner.comm}, uid ${owner.uid})` : "owner unknown";
    const bytes = s.rings.reduce((n, r) => n + r.allocated, 0);
    io.out(`${s.name}  ${s.address.length > 60 ? `${s.address.slice(0, 57)}...` : s.address}  ${who}  ${s.connections} connection(s), ${s.rings.length} in ${listing.shmDir} (${formatBytes(bytes)})`);
    for (const r of s.rings) io.out(`  ${ringLine(r)}`);
  }
  if (listing.orphanRings.length > 0) {
    io.out("files of no listed service:");
    for (const r of listing.orphanRings) io.out(`  ${ringLine(r)}${r.stale ? "  STALE" : ""}`);
  }
}

function ringLine(r: RingSet): string {
  return `${r.path}  ${r.transport}  ${formatBytes(r.allocated)}  uid ${r.uid} gid ${r.gid} mode ${r.mode.toString(8)}  client pid ${r.clientPid}  (${r.why})`;
}
