/**
 * `qbun serve --handler FILE`: loading a user's handler module and checking
 * its shape.
 *
 * The module contract: the default export (or the module itself) is an
 * object with
 *
 * ```ts
 * export default {
 *   // Required. Answers one request; a throw or rejection answers -EIO.
 *   onRequest(request, ctx) { return { data: request.payload }; },
 *   // Optional. Decides on a connecting client from its kernel credentials:
 *   // "read-write", "read-only", "reject" (EACCES) or a negative errno.
 *   authenticate(peer) { return peer.uid === 0 ? "read-write" : "read-only"; },
 *   // Optional. Told about connections coming and going.
 *   onConnect(connection) {},
 *   onDisconnect(connection, reason) {},
 * };
 * ```
 *
 * `request` is qbun's `QbRequest` (`id`, `payload`, `connection`, `signal`);
 * the reply is a `QbReply` (`error`, `data`, `id`). `ctx.server` is the
 * running `QbServer` (for `broadcast`, `stats`), `ctx.log(text)` writes a
 * line to qbun's stderr. The file is imported by absolute path, so it works
 * with the standalone executable too (TypeScript is transpiled by the
 * embedded Bun); it may import only what it can resolve from its own directory.
 * @module
 */
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import * as v from "valibot";
import type { AuthDecision, QbConnection, QbReply, QbRequest, QbServer } from "../src/qb/index.ts";
import type { Credentials } from "../src/unix/index.ts";
import { CliUsageError, errorMessage } from "./io.ts";

/** What the handler's functions get besides the request. */
export interface HandlerContext {
  /** The running server. */
  readonly server: QbServer;
  /** Writes one line to qbun's stderr. */
  log(text: string): void;
}

/** The shape a `--handler` module exports (as its default export, or as named exports). */
export interface ServeHandlerModule {
  /** Answers one request; a throw or rejection answers -EIO. */
  onRequest(request: QbRequest, ctx: HandlerContext): QbReply | Promise<QbReply>;
  /** Decides on a connecting client from its kernel credentials (default: everyone read-write). */
  authenticate?(peer: Credentials, ctx: HandlerContext): AuthDecision | Promise<AuthDecision>;
  /** Told about each new connection. */
  onConnect?(connection: QbConnection, ctx: HandlerContext): void;
  /** Told about each connection that went away, and why. */
  onDisconnect?(connection: QbConnection, reason: unknown, ctx: HandlerContext): void;
}

/**
 * A `--handler` module that could not be imported (a syntax error, an
 * import it cannot resolve, a throw at load time). The command line was
 * fine but the module failed, so the exit code is 1; the message names the
 * file, the reason and what to try.
 */
export class HandlerImportError extends Error {
  /** Always `"ERR_QBUN_HANDLER_IMPORT"`. */
  readonly code = "ERR_QBUN_HANDLER_IMPORT";
  /** The module's absolute path. */
  readonly file: string;
  /** The first line of what the import threw. */
  readonly reason: string;
  /** `file`: the module's absolute path; `cause`: what its import threw. */
  constructor(file: string, cause: unknown) {
    const reason = errorMessage(cause).split("\n")[0]!;
    super(
      `--handler: could not import ${file}: ${reason}. Check that it is valid TypeScript/JavaScript and that everything it imports resolves from its own directory (running "bun ${file}" shows the full error)`,
      { cause },
    );
    this.name = "HandlerImportError";
    this.file = file;
    this.reason = reason;
  }
}

const handlerShape = v.object({
  onRequest: v.function(),
  authenticate: v.optional(v.function()),
  onConnect: v.optional(v.function()),
  onDisconnect: v.optional(v.function()),
});

const CONTRACT = "export default { onRequest(request, ctx) { return { data } }, authenticate?(peer), onConnect?(connection), onDisconnect?(connection, reason) }";

/**
 * Imports the module at `file` and checks its shape.
 * @throws CliUsageError when the file is missing or exports the wrong shape (exit code 2).
 * @throws HandlerImportError when importing it fails (exit code 1).
 */
export async function loadHandlerModule(file: string): Promise<ServeHandlerModule> {
  const path = resolve(file);
  if (!existsSync(path) || !statSync(path).isFile()) throw new CliUsageError(`--handler: no such file ${path}`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(path)) as Record<string, unknown>;
  } catch (error) {
    throw new HandlerImportError(path, error);
  }
  const candidate = mod.default !== undefined && typeof mod.default === "object" ? mod.default : mod;
  const checked = v.safeParse(handlerShape, candidate);
  if (!checked.success) {
    const found = mod.default === undefined ? "no default export" : `a default export of type ${typeof mod.default}`;
    const key = v.getDotPath(checked.issues[0]!);
    const what = key ? `${key} must be a function, found ${typeof (candidate as Record<string, unknown>)[key]}` : `found ${found}`;
    throw new CliUsageError(`--handler: ${path} does not export a handler (${what}). Expected: ${CONTRACT}`);
  }
  return candidate as ServeHandlerModule;
}
