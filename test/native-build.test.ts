import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const NATIVE = join(import.meta.dir, "..", "ffi", "native.ts");

// bun:ffi `cc` rewrites TinyCC's headers into one shared directory on every
// call; without qbun's compile lock, about a quarter of these children failed
// with a parse error in a half-written header.
test("many processes compiling the C helper at the same moment all succeed", async () => {
  const script = `const { loadNative } = await import(${JSON.stringify(NATIVE)}); loadNative(); console.log("ok");`;
  for (let round = 0; round < 4; round++) {
    const children = Array.from({ length: 8 }, () =>
      Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" }),
    );
    const results = await Promise.all(
      children.map(async (child) => ({ code: await child.exited, out: await new Response(child.stdout).text(), err: await new Response(child.stderr).text() })),
    );
    for (const r of results) expect({ code: r.code, out: r.out.trim(), err: r.code === 0 ? "" : r.err }).toEqual({ code: 0, out: "ok", err: "" });
  }
  expect(existsSync(join(tmpdir(), `qbun-cc-${process.getuid!()}.lock`))).toBe(false);
}, 60_000);
