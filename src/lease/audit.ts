/**
 * The audit log: one JSON line per decision of the owner — every grant,
 * refusal, write, release, expiry, revocation and epoch change — to an
 * append-only file, a callback, or a writable stream.
 * @module
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { QbunArgumentError } from "../../ffi/errors.ts";

/** What was decided or happened. */
export type AuditAction =
  | "subscribe"
  | "unsubscribe"
  | "lease.acquire"
  | "lease.renew"
  | "lease.release"
  | "lease.expire"
  | "lease.revoke"
  | "write"
  | "epoch"
  | "protocol"
  | "connect"
  | "accept"
  | "disconnect";

/** The outcome. */
export type AuditResult = "granted" | "refused" | "ok" | "queued" | "cancelled";

/** The peer a record is about (kernel credentials plus the owner's session number); null for the owner itself. */
export interface AuditPeer {
  /** The owner's number for the connection (unique per owner). */
  readonly session: number;
  /** The peer's process id from the kernel; -1 when the session had already gone. */
  readonly pid: number;
  /** The peer's user id from the kernel; -1 when unknown. */
  readonly uid: number;
  /** The peer's group id from the kernel; -1 when unknown. */
  readonly gid: number;
}

/** One line of the audit log. */
export interface AuditRecord {
  /** ISO 8601 time of the decision. */
  readonly time: string;
  /** Who the decision was about; null for the owner's own actions (epochs, accept failures). */
  readonly peer: AuditPeer | null;
  /** What was decided or happened. */
  readonly action: AuditAction;
  /** Endpoint or lease class. */
  readonly resource: string;
  /** The outcome. */
  readonly result: AuditResult;
  /** Refusal code, token, offsets, epochs: whatever explains the record. */
  readonly detail?: Record<string, unknown>;
}

/** Where records go: a callback, or an object with `write(line)` (e.g. a Bun `FileSink` or a Node stream). */
export type AuditSink = ((record: AuditRecord) => void) | { write(line: string): unknown };

/**
 * An audit log. Records are written synchronously, one line each, before
 * the peer is answered; a sink that throws does not stop the owner (the
 * failure is counted in {@link AuditLog.failures}).
 *
 * ```ts
 * using audit = AuditLog.toFile("/var/log/app/lease-audit.jsonl");
 * const owner = new LeaseOwner({ audit });
 * ```
 */
export class AuditLog implements Disposable {
  readonly #sink: (record: AuditRecord) => void;
  readonly #onClose: () => void;
  #closed = false;
  /** Records a sink failed to take. */
  failures = 0;

  private constructor(sink: (record: AuditRecord) => void, onClose: () => void = () => {}) {
    this.#sink = sink;
    this.#onClose = onClose;
  }

  /** Append JSON lines to `path` (created with mode 0600 if missing, opened O_APPEND). */
  static toFile(path: string): AuditLog {
    if (typeof path !== "string" || path.length === 0 || path.includes("\0")) throw new QbunArgumentError(`audit log path must be a non-empty string without NUL: ${JSON.stringify(path)}`);
    const fd = openSync(path, "a", 0o600);
    return new AuditLog((record) => {
      writeSync(fd, `${JSON.stringify(record)}\n`);
    }, () => closeSync(fd));
  }

  /** Send records to a callback or to a `write(line)` sink (one JSON line per record). */
  static to(sink: AuditSink): AuditLog {
    if (typeof sink === "function") return new AuditLog(sink);
    if (sink && typeof sink.write === "function") return new AuditLog((record) => void sink.write(`${JSON.stringify(record)}\n`));
    throw new QbunArgumentError("an audit sink is a function or an object with write(line)");
  }

  /** Discard records (the default when an owner is given no log). */
  static discard(): AuditLog {
    return new AuditLog(() => {});
  }

  /** Append one record (time is added here). Ignored once closed. */
  record(peer: AuditPeer | null, action: AuditAction, resource: string, result: AuditResult, detail?: Record<string, unknown>): void {
    if (this.#closed) return;
    const record: AuditRecord = detail === undefined
      ? { time: new Date().toISOString(), peer, action, resource, result }
      : { time: new Date().toISOString(), peer, action, resource, result, detail };
    try {
      this.#sink(record);
    } catch {
      this.failures++;
    }
  }

  /** Whether {@link AuditLog.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Stop logging and close the file (if this log opened one). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
  }

  /** Same as {@link AuditLog.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
