#!/usr/bin/env bun
/**
 * Packs qbun the way `bun pm pack` does for a release (prepack included) from
 * a staged copy of the package files, then prints what the tarball holds and
 * how big it is, and fails if it holds anything a user does not need (tests,
 * fixtures, scripts, benchmarks, build output) or declares install scripts.
 * The working tree is left untouched; the tarball is deleted unless `--keep DIR`.
 *
 *     bun scripts/pack-check.ts [--keep DIR]
 * @module
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const root = resolve(import.meta.dir, "..");
const { values } = parseArgs({ args: process.argv.slice(2), options: { keep: { type: "string" } }, strict: true });
const manifest = await Bun.file(join(root, "package.json")).json();

/** Paths no tarball may contain. */
const FORBIDDEN = /(^|\/)(test|tests|fixtures|bench|scripts|node_modules|build|\.git)\/|\.test\.ts$|\.tgz$/;

const work = mkdtempSync(join(tmpdir(), "qbun-pack-check-"));
let failed = false;
try {
  const stage = join(work, "stage");
  mkdirSync(stage);
  const tops = new Set<string>(["package.json", "scripts", ...manifest.files.map((f: string) => f.split("/")[0])]);
  for (const top of tops) if (existsSync(join(root, top))) cpSync(join(root, top), join(stage, top), { recursive: true });
  rmSync(join(stage, "ffi", "qbun.i"), { force: true });
  symlinkSync(join(root, "node_modules"), join(stage, "node_modules"));
  const out = join(work, "out");
  const packed = Bun.spawnSync([process.execPath, "pm", "pack", "--destination", out], { cwd: stage, stdout: "pipe", stderr: "pipe" });
  if (packed.exitCode !== 0) throw new Error(`bun pm pack failed:\n${packed.stdout}\n${packed.stderr}`);
  const tarball = join(out, readdirSync(out).find((f) => f.endsWith(".tgz"))!);
  const list = Bun.spawnSync(["tar", "-tvzf", tarball], { stdout: "pipe" }).stdout.toString().trim().split("\n");
  console.log(list.join("\n"));
  const files = list.map((line) => line.split(/\s+/).at(-1)!.replace(/^package\//, ""));
  const bad = files.filter((f) => FORBIDDEN.test(f));
  for (const f of bad) console.error(`pack-check: does not belong in the package: ${f}`);
  for (const hook of ["preinstall", "install", "postinstall", "prepare"]) {
    if (manifest.scripts?.[hook]) {
      console.error(`pack-check: the package declares an install-time script "${hook}"`);
      failed = true;
    }
  }
  for (const needed of ["package.json", "README.md", "LICENSE", "ffi/qbun.c", "ffi/qbun.i", "docs/API.md", "src/index.ts"]) {
    if (!files.includes(needed)) {
      console.error(`pack-check: missing from the package: ${needed}`);
      failed = true;
    }
  }
  failed ||= bad.length > 0;
  console.log(`\n${files.length} files, ${(statSync(tarball).size / 1024).toFixed(1)} KiB packed: ${failed ? "NOT OK" : "ok"}`);
  if (values.keep) {
    mkdirSync(values.keep, { recursive: true });
    cpSync(tarball, join(values.keep, tarball.split("/").at(-1)!));
    console.log(`kept ${join(values.keep, tarball.split("/").at(-1)!)}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
