#!/usr/bin/env bun
/**
 * Writes the header-free form of the C helper that the npm package ships:
 * ffi/qbun.c preprocessed into ffi/qbun.i. ffi/native.ts compiles it (on a
 * memfd, against the running libc.so.6) when building qbun.c from source
 * fails for want of libc headers, so `bun add qbun` works on machines
 * without libc6-dev.
 *
 *     bun scripts/preprocess-helper.ts            write ffi/qbun.i and check it compiles header-free
 *     bun scripts/preprocess-helper.ts --remove   delete ffi/qbun.i again
 *
 * package.json runs the first as `prepack` and the second as `postpack`, so
 * every tarball carries a copy made from the qbun.c it contains, and the
 * copy is never committed (it cannot go stale). Preprocessing is done as
 * scripts/build-binary.ts does it (`gcc -E -P -U__GNUC__`: see there for
 * why); the text is tied to this machine's architecture and glibc ABI, so
 * pack on Linux x86_64 with glibc. Needs gcc and libc6-dev here.
 * @module
 */
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const root = resolve(import.meta.dir, "..");
const source = join(root, "ffi", "qbun.c");
const output = join(root, "ffi", "qbun.i");

/** The preprocessor command; the same flags as scripts/build-binary.ts. */
const CPP = ["gcc", "-E", "-P", "-U__GNUC__", "-U_FORTIFY_SOURCE"];

function fail(message: string): never {
  console.error(`preprocess-helper: ${message}`);
  process.exit(1);
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { remove: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  strict: true,
  allowPositionals: false,
});
if (values.help) {
  console.log("Usage: bun scripts/preprocess-helper.ts [--remove]   (writes or removes ffi/qbun.i)");
  process.exit(0);
}
if (values.remove) {
  rmSync(output, { force: true });
  process.exit(0);
}

let proc;
try {
  proc = Bun.spawnSync([...CPP, source], { cwd: root, stdout: "pipe", stderr: "pipe" });
} catch (error) {
  fail(`could not start gcc (${error instanceof Error ? error.message : error}); packing needs gcc and libc6-dev`);
}
if (proc.exitCode !== 0) fail(`${CPP.join(" ")} ffi/qbun.c failed:\n${proc.stderr.toString().trim()}`);
const text = `/* Generated from qbun.c by scripts/preprocess-helper.ts when the package was packed; do not edit. */\n${proc.stdout.toString()}`;

// Compile it exactly as a machine without headers will, so a text TinyCC rejects fails the pack, not an install.
const { helperBuild, loadNative, useEmbeddedHelper } = await import("../ffi/native.ts");
useEmbeddedHelper(text);
try {
  loadNative().qbn_sizeof_sem();
} catch (error) {
  fail(`the preprocessed helper does not compile header-free:\n${error instanceof Error ? error.message : error}`);
}
if (helperBuild() !== "embedded") fail(`expected the header-free build to load, got "${helperBuild()}"`);

const tmp = `${output}.${process.pid}.tmp`;
writeFileSync(tmp, text);
renameSync(tmp, output);
console.log(`preprocess-helper: wrote ffi/qbun.i (${(text.length / 1024).toFixed(0)} KiB), compiles header-free`);
