/**
 * Argument validation shared by the commands: `qbun serve`'s flags, the
 * range messages of whole numbers, and how a missing argument is reported.
 */
import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { maxMessageSize, uid, wholeNumber } from "../cli/args.ts";
import { qbun } from "./helpers/cli.ts";

describe("qbun serve rejects bad flags before listening", () => {
  test.each([
    [["--service", "x", "--max-msg", "0"], '--max-msg: a max message size in bytes, a whole number from 1 to 67108864 (got "0")'],
    [["--service", "x", "--max-msg", "99999999999999999999"], '--max-msg: a max message size in bytes, a whole number from 1 to 67108864 (got "99999999999999999999")'],
    [["--service", "x", "--max-msg", "67108865"], '(got "67108865")'],
    [["--service", "x", "--deny-uid", "99999999999"], '--deny-uid: a uid, a whole number from 0 to 4294967294 (got "99999999999")'],
    [["--service", "x", "--deny-uid", "4294967295"], '--deny-uid: a uid, a whole number from 0 to 4294967294 (got "4294967295")'],
    [["--service", "x", "--ro-uid", "-1"], '--ro-uid: a uid, a whole number from 0 to 4294967294 (got "-1")'],
    [["--service", "x", "--ro-uid", "root"], '--ro-uid: a uid, a whole number from 0 to 4294967294 (got "root")'],
    [["--service", "a/b"], "--service: a service name without '/' or NUL (got \"a/b\")"],
    [["--service", "x".repeat(107)], "--service: a service name of at most 106 bytes"],
    [["--service", "x", "--transport", "pipe"], '--transport: "shm" or "socket" (got "pipe")'],
    [[], "--service is required"],
  ])("serve %j: exit 2, no READY, one line naming the flag, the range and the value", async (args, message) => {
    const ran = await qbun(["serve", ...args]);
    expect(ran.exitCode).toBe(2);
    expect(ran.stdout).toBe("");
    expect(ran.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(ran.stderr).toContain(message);
  });
});

describe("shared validators", () => {
  test("whole numbers: the range is checked on the text, so the message quotes what was typed", () => {
    const port = wholeNumber("a count", 1, 10);
    expect(v.parse(port, "10")).toBe(10);
    expect(v.parse(port, "+3")).toBe(3);
    for (const bad of ["0", "11", "1.5", "", " 3", "1e3", "99999999999999999999"]) {
      const result = v.safeParse(port, bad);
      expect(result.success).toBe(false);
      expect(result.issues![0]!.message).toBe(`a count, a whole number from 1 to 10 (got ${JSON.stringify(bad)})`);
    }
  });

  test("uids stop below (uid_t)-1; max message sizes at the server's 64 MiB limit", () => {
    expect(v.parse(uid, "0")).toBe(0);
    expect(v.parse(uid, "4294967294")).toBe(4294967294);
    expect(v.safeParse(uid, "4294967295").success).toBe(false);
    expect(v.parse(maxMessageSize, "67108864")).toBe(64 * 1024 * 1024);
    expect(v.safeParse(maxMessageSize, "67108865").success).toBe(false);
  });
});

describe("missing arguments", () => {
  test("a missing positional or required flag is named as missing, whatever the schema's own message", async () => {
    const missing = await qbun(["call"]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr.trim()).toBe("qbun call: SERVICE is required: libqb service name (see qbun ls); ID is required: Request id, a 32-bit signed integer (the interop service: 1 echo ... 6 whoami)");
    // Present but wrong is not "missing".
    const wrong = await qbun(["call", "svc", ""]);
    expect(wrong.stderr).toContain('ID: a request id, a whole number from -2147483648 to 2147483647 (got "")');
    expect(wrong.stderr).not.toContain("required");
  });
});
