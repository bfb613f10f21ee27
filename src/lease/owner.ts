/**
 * The owner service: serves named regions to readers, keeps the lease
 * table, applies writes from the current write-lease holder, and audits
 * every decision. Clients reach it in-process ({@link LeaseOwner.connect})
 * or over a unix seqpacket socket ({@link LeaseOwner.listen}); both run the
 * same session code on the same frames.
 * @module
 */
import { QbunArgumentError } from "../../ffi/errors.ts";
import type { OwnedFd } from "../../ffi/fd.ts";
import { UnixListener, type AddressInput, type Credentials, type UnixSeqpacket } from "../unix/index.ts";
import { AuditLog, type AuditAction, type AuditPeer, type AuditSink } from "./audit.ts";
import { isLeaseErrorCode, LeaseError, type LeaseErrorCode } from "./errors.ts";
import { LeaseTable, type Grant, type LeaseEndReason, type TokenCheck, type Waiter } from "./lease.ts";
import { encodeLocator, isValidName } from "./locator.ts";
import { CapabilityPolicy } from "./policy.ts";
import {
  decodeFrame, decodeWrite, encodeAck, encodeJson, encodeRaw, encodeWritten, FrameType, nameBytes, parseJson,
} from "./protocol.ts";
import { OwnedRegion } from "./region.ts";
import { inProcessPair, ownCredentials, SeqpacketChannel, type Channel } from "./transport.ts";
import { LeaseClient } from "./client.ts";

/** The lease class whose holder may write (unless the owner is told otherwise). */
export const MEMORY_WRITE = "memory-write";

/** Options for {@link LeaseOwner}. */
export interface LeaseOwnerOptions {
  /** Who may do what (default {@link CapabilityPolicy.sameUser}). */
  policy?: CapabilityPolicy;
  /** Where decisions are recorded: an {@link AuditLog} (the caller closes it) or a sink. Default: discarded. */
  audit?: AuditLog | AuditSink;
  /** The lease class that authorises writes (default `"memory-write"`). */
  writeClass?: string;
  /** Longest lease a client may ask for, in ms (default 60 000). */
  maxTtlMs?: number;
}

/** Options for {@link LeaseOwner.createRegion}. */
export interface RegionOptions {
  /** Size in bytes readers see. */
  size: number;
  /** Initial contents (zeros beyond). */
  initial?: Uint8Array;
}

/** Options for {@link LeaseOwner.replaceRegion}. */
export interface ReplaceOptions {
  /** New size (default: unchanged). */
  size?: number;
  /** Carry the old contents over (default true), or start from `initial`. */
  copy?: boolean;
  /** Contents of the new epoch (when `copy` is false). */
  initial?: Uint8Array;
}

/** Options for {@link LeaseOwner.listen}. */
export interface OwnerListenOptions {
  /** Permission bits of the socket file (path addresses). */
  mode?: number;
}

/** Options for {@link LeaseOwner.connect}. */
export interface LocalConnectOptions {
  /** The identity the policy sees for this in-process client (default: this process). */
  identity?: Credentials;
}

interface Subscription {
  readonly notifyWrites: boolean;
}

interface Endpoint {
  region: OwnedRegion;
  readonly nameBytes: Uint8Array;
  readonly subscribers: Map<Session, Subscription>;
}

/** One connected client, as the owner sees it. */
class Session {
  readonly id: number;
  readonly channel: Channel;
  readonly audit: AuditPeer;
  readonly waiters = new Map<number, { leaseClass: string; waiter: Waiter }>();
  constructor(id: number, channel: Channel) {
    this.id = id;
    this.channel = channel;
    this.audit = { session: id, pid: channel.peer.pid, uid: channel.peer.uid, gid: channel.peer.gid };
  }
}

/**
 * The owner of shared regions and their write leases.
 *
 * ```ts
 * await using owner = new LeaseOwner({ policy, audit: AuditLog.toFile("audit.jsonl") });
 * owner.createRegion("state", { size: 4096 });
 * owner.listen("/run/app/state.sock");
 * // later: owner.replaceRegion("state", { size: 8192 }) starts a new epoch
 * ```
 */
export class LeaseOwner implements AsyncDisposable, Disposable {
  readonly #policy: CapabilityPolicy;
  readonly #audit: AuditLog;
  readonly #ownsAudit: boolean;
  readonly #writeClass: string;
  readonly #maxTtl: number;
  readonly #endpoints = new Map<string, Endpoint>();
  readonly #sessions = new Map<number, Session>();
  readonly #listeners = new Set<UnixListener<"seqpacket">>();
  readonly #leases: LeaseTable;
  #nextSession = 1;
  #closed = false;

  constructor(options: LeaseOwnerOptions = {}) {
    this.#policy = options.policy ?? CapabilityPolicy.sameUser();
    if (options.audit instanceof AuditLog) {
      this.#audit = options.audit;
      this.#ownsAudit = false;
    } else {
      this.#audit = options.audit ? AuditLog.to(options.audit) : AuditLog.discard();
      this.#ownsAudit = true;
    }
    this.#writeClass = options.writeClass ?? MEMORY_WRITE;
    if (!isValidName(this.#writeClass)) throw new QbunArgumentError(`invalid write lease class ${JSON.stringify(this.#writeClass)}`);
    this.#maxTtl = options.maxTtlMs ?? 60_000;
    this.#leases = new LeaseTable({ ended: (grant, reason) => this.#leaseEnded(grant, reason) });
  }

  /** The lease class that authorises writes. */
  get writeClass(): string {
    return this.#writeClass;
  }

  /** Whether {@link LeaseOwner.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Names of the served regions. */
  get endpoints(): string[] {
    return [...this.#endpoints.keys()];
  }

  /** The current epoch of a region (undefined if not served). */
  epochOf(endpoint: string): number | undefined {
    return this.#endpoints.get(endpoint)?.region.epoch;
  }

  /** Serve a new region (epoch 1). */
  createRegion(endpoint: string, options: RegionOptions): void {
    this.#open();
    if (!isValidName(endpoint)) throw new QbunArgumentError(`invalid endpoint name ${JSON.stringify(endpoint)}: use 1-128 of A-Z a-z 0-9 . _ : @ / -`);
    if (this.#endpoints.has(endpoint)) throw new QbunArgumentError(`endpoint ${endpoint} is already served: use replaceRegion to change it`);
    const region = OwnedRegion.create(endpoint, 1, options.size, options.initial);
    this.#endpoints.set(endpoint, { region, nameBytes: nameBytes(endpoint), subscribers: new Map() });
    this.#audit.record(null, "epoch", endpoint, "ok", { epoch: 1, size: options.size });
  }

  /**
   * Replace a region with new backing (a new epoch): every subscriber is
   * told the old epoch is invalid, then gets the new locator and fd.
   * Returns the new epoch.
   */
  replaceRegion(endpoint: string, options: ReplaceOptions = {}): number {
    this.#open();
    const entry = this.#endpoints.get(endpoint);
    if (!entry) throw new QbunArgumentError(`endpoint ${endpoint} is not served`);
    const old = entry.region;
    const size = options.size ?? old.size;
    const initial = options.copy === false ? options.initial : old.snapshot();
    const epoch = (old.epoch + 1) >>> 0 || 1;
    const region = OwnedRegion.create(endpoint, epoch, size, initial);
    entry.region = region;
    old.retire();
    old.close(); // readers keep their own mappings of the old epoch until they drop them
    this.#audit.record(null, "epoch", endpoint, "ok", { epoch, previous: old.epoch, size });
    const invalid = encodeJson(FrameType.EPOCH_INVALID, 0, { endpoint, epoch: old.epoch, next: epoch });
    for (const session of entry.subscribers.keys()) {
      this.#send(session, invalid);
      this.#sendLocator(session, region);
    }
    return epoch;
  }

  /** Stop serving a region: subscribers are told its epoch is invalid (with no successor, `next` 0). */
  removeRegion(endpoint: string): void {
    const entry = this.#endpoints.get(endpoint);
    if (!entry) return;
    this.#endpoints.delete(endpoint);
    entry.region.retire();
    entry.region.close();
    this.#audit.record(null, "epoch", endpoint, "ok", { epoch: 0, previous: entry.region.epoch, removed: true });
    const invalid = encodeJson(FrameType.EPOCH_INVALID, 0, { endpoint, epoch: entry.region.epoch, next: 0 });
    for (const session of entry.subscribers.keys()) this.#send(session, invalid);
  }

  /**
   * Accept clients on a unix seqpacket socket. Each client's identity is
   * the kernel's (SO_PEERCRED). Returns the listener (closed with the owner).
   */
  listen(address: AddressInput, options: OwnerListenOptions = {}): UnixListener<"seqpacket"> {
    this.#open();
    const listener = UnixListener.listen(address, { type: "seqpacket", ...(options.mode !== undefined ? { mode: options.mode } : {}) });
    this.#listeners.add(listener);
    void (async () => {
      for await (const socket of listener) this.#adoptSocket(socket);
      this.#listeners.delete(listener);
    })();
    return listener;
  }

  #adoptSocket(socket: UnixSeqpacket): void {
    let channel: Channel;
    try {
      channel = new SeqpacketChannel(socket);
    } catch {
      socket.close(); // the peer vanished before we could ask the kernel who it was
      return;
    }
    this.#startSession(channel);
  }

  /** An in-process client of this owner: the same API and frames as over a socket. */
  connect(options: LocalConnectOptions = {}): LeaseClient {
    this.#open();
    const [ownerSide, clientSide] = inProcessPair(options.identity ?? ownCredentials());
    this.#startSession(ownerSide);
    return new LeaseClient(clientSide);
  }

  #startSession(channel: Channel): void {
    const session = new Session(this.#nextSession++, channel);
    this.#sessions.set(session.id, session);
    this.#audit.record(session.audit, "connect", "", "ok");
    channel.start({
      frame: (bytes, fds) => this.#onFrame(session, bytes, fds),
      closed: (error) => this.#endSession(session, error),
    });
  }

  #endSession(session: Session, error?: Error): void {
    if (this.#sessions.get(session.id) !== session) return;
    for (const entry of this.#endpoints.values()) entry.subscribers.delete(session);
    session.waiters.clear();
    this.#leases.dropHolder(session.id); // announces "revoked" for each lease it held, naming this session
    this.#sessions.delete(session.id);
    this.#audit.record(session.audit, "disconnect", "", "ok", error ? { error: error.message } : undefined);
  }

  #onFrame(session: Session, bytes: Uint8Array, fds: OwnedFd[]): void {
    // Clients never send fds: close any that came, and treat it as a protocol error.
    let requestId = 0;
    try {
      if (fds.length) {
        for (const fd of fds) fd.close();
        throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", "clients must not send file descriptors");
      }
      const frame = decodeFrame(bytes);
      requestId = frame.requestId;
      switch (frame.type) {
        case FrameType.WRITE:
          return this.#onWrite(session, requestId, frame.body);
        case FrameType.SUBSCRIBE:
          return this.#onSubscribe(session, requestId, parseJson(FrameType.SUBSCRIBE, frame.body));
        case FrameType.UNSUBSCRIBE: {
          const { endpoint } = parseJson(FrameType.UNSUBSCRIBE, frame.body);
          this.#endpoints.get(endpoint)?.subscribers.delete(session);
          this.#audit.record(session.audit, "unsubscribe", endpoint, "ok");
          return this.#send(session, encodeJson(FrameType.REPLY, requestId, {}));
        }
        case FrameType.ACQUIRE:
          return this.#onAcquire(session, requestId, parseJson(FrameType.ACQUIRE, frame.body));
        case FrameType.CANCEL:
          return this.#onCancel(session, parseJson(FrameType.CANCEL, frame.body).requestId);
        case FrameType.RENEW:
          return this.#onRenew(session, requestId, parseJson(FrameType.RENEW, frame.body));
        case FrameType.RELEASE:
          return this.#onRelease(session, requestId, parseJson(FrameType.RELEASE, frame.body));
        default:
          throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `unknown frame type ${frame.type}`);
      }
    } catch (error) {
      // A peer that breaks the protocol is told why and disconnected; everyone else carries on.
      const message = error instanceof Error ? error.message : String(error);
      this.#audit.record(session.audit, "protocol", "", "refused", { error: message });
      if (error instanceof LeaseError && error.code === "ERR_QBUN_LEASE_PROTOCOL") {
        this.#refuse(session, requestId, "ERR_QBUN_LEASE_PROTOCOL", message);
      } else {
        this.#refuse(session, requestId, "ERR_QBUN_LEASE_PROTOCOL", `owner failed on this request: ${message}`);
      }
      session.channel.close();
    }
  }

  #onSubscribe(session: Session, requestId: number, body: { endpoint: string; notifyWrites: boolean }): void {
    const entry = this.#endpoints.get(body.endpoint);
    if (!entry) return this.#deny(session, requestId, "subscribe", body.endpoint, "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `no region named ${body.endpoint} is served`);
    if (!this.#policy.allows(session.channel.peer, "subscribe", body.endpoint)) {
      return this.#deny(session, requestId, "subscribe", body.endpoint, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} subscribe to ${body.endpoint}`);
    }
    entry.subscribers.set(session, { notifyWrites: body.notifyWrites });
    this.#audit.record(session.audit, "subscribe", body.endpoint, "granted", { epoch: entry.region.epoch });
    this.#sendLocator(session, entry.region); // retained: a late subscriber gets the current epoch at once
    this.#send(session, encodeJson(FrameType.REPLY, requestId, { epoch: entry.region.epoch }));
  }

  #sendLocator(session: Session, region: OwnedRegion): void {
    const fd = region.readOnlyFd();
    try {
      this.#send(session, encodeRaw(FrameType.LOCATOR, 0, encodeLocator(region.locator())), [fd]);
    } finally {
      fd.close();
    }
  }

  #onAcquire(session: Session, requestId: number, body: { leaseClass: string; ttlMs: number; wait: boolean }): void {
    const { leaseClass } = body;
    if (!this.#policy.allows(session.channel.peer, "lease", leaseClass)) {
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} (pid ${session.audit.pid}) take the ${leaseClass} lease`);
    }
    const ttlMs = Math.min(body.ttlMs, this.#maxTtl);
    const granted = (grant: Grant): void => {
      session.waiters.delete(requestId);
      this.#audit.record(session.audit, "lease.acquire", leaseClass, "granted", { token: grant.token, ttlMs: grant.ttlMs });
      this.#send(session, encodeJson(FrameType.REPLY, requestId, { token: grant.token, ttlMs: grant.ttlMs }));
      this.#broadcast(encodeJson(FrameType.LEASE_EVENT, 0, { leaseClass, event: "granted", token: grant.token }));
    };
    const now = this.#leases.tryAcquire(leaseClass, session.id, ttlMs);
    if (now) return granted(now);
    const holder = this.#leases.current(leaseClass);
    if (!body.wait) {
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_BUSY", `the ${leaseClass} lease is held${holder ? ` (token ${holder.token})` : ""}; wait for it or try later`);
    }
    const waiter: Waiter = { holder: session.id, ttlMs, granted };
    session.waiters.set(requestId, { leaseClass, waiter });
    this.#audit.record(session.audit, "lease.acquire", leaseClass, "queued");
    this.#leases.enqueue(leaseClass, waiter);
  }

  #onCancel(session: Session, requestId: number): void {
    const queued = session.waiters.get(requestId);
    if (!queued) return; // already granted (the client releases it) or unknown
    session.waiters.delete(requestId);
    this.#leases.dequeue(queued.leaseClass, queued.waiter);
    this.#audit.record(session.audit, "lease.acquire", queued.leaseClass, "cancelled");
    this.#refuse(session, requestId, "ERR_QBUN_LEASE_BUSY", "the acquire was cancelled");
  }

  #onRenew(session: Session, requestId: number, body: { leaseClass: string; token: number; ttlMs: number }): void {
    const result = this.#leases.renew(body.leaseClass, session.id, body.token, Math.min(body.ttlMs, this.#maxTtl));
    if (typeof result === "string") return this.#tokenRefusal(session, requestId, "lease.renew", body.leaseClass, body.token, result);
    this.#audit.record(session.audit, "lease.renew", body.leaseClass, "granted", { token: result.token, ttlMs: result.ttlMs });
    this.#send(session, encodeJson(FrameType.REPLY, requestId, { token: result.token, ttlMs: result.ttlMs }));
  }

  #onRelease(session: Session, requestId: number, body: { leaseClass: string; token: number }): void {
    const result = this.#leases.release(body.leaseClass, session.id, body.token);
    if (result !== "ok") return this.#tokenRefusal(session, requestId, "lease.release", body.leaseClass, body.token, result);
    // the "lease.release" record and the announcement come from #leaseEnded
    this.#send(session, encodeJson(FrameType.REPLY, requestId, {}));
  }

  #onWrite(session: Session, requestId: number, body: Uint8Array): void {
    const { endpoint, offset, token, data } = decodeWrite(body);
    const entry = this.#endpoints.get(endpoint);
    if (!entry) return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `no region named ${endpoint} is served`);
    if (!this.#policy.allows(session.channel.peer, "write", endpoint)) {
      return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} (pid ${session.audit.pid}) write to ${endpoint}`);
    }
    const check = this.#leases.check(this.#writeClass, session.id, token);
    if (check !== "ok") return this.#tokenRefusal(session, requestId, "write", endpoint, token, check);
    const region = entry.region;
    if (offset + data.length > region.size) {
      return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_OUT_OF_BOUNDS", `write of ${data.length} bytes at ${offset} is outside the ${region.size}-byte region ${endpoint} (epoch ${region.epoch})`, { offset, length: data.length, token });
    }
    const sequence = region.write(offset, data);
    this.#audit.record(session.audit, "write", endpoint, "ok", { offset, length: data.length, token, epoch: region.epoch, sequence });
    this.#send(session, encodeAck(requestId, region.epoch, sequence));
    let notice: Uint8Array | undefined;
    for (const [subscriber, sub] of entry.subscribers) {
      if (!sub.notifyWrites) continue;
      notice ??= encodeWritten(entry.nameBytes, region.epoch, sequence, offset, data.length);
      this.#send(subscriber, notice);
    }
  }

  #tokenRefusal(session: Session, requestId: number, action: AuditAction, resource: string, token: number, check: Exclude<TokenCheck, "ok">): void {
    const leaseClass = action === "write" ? this.#writeClass : resource;
    const current = this.#leases.current(leaseClass);
    if (check === "stale-token") {
      this.#deny(session, requestId, action, resource, "ERR_QBUN_LEASE_STALE_TOKEN", `fencing token ${token} is stale for ${leaseClass} (current ${current?.token}): acquire the lease again`, { token });
    } else {
      this.#deny(session, requestId, action, resource, "ERR_QBUN_LEASE_NOT_HELD", `this client does not hold the ${leaseClass} lease (token ${token}): acquire it first`, { token });
    }
  }

  #deny(session: Session, requestId: number, action: AuditAction, resource: string, code: LeaseErrorCode, message: string, detail: Record<string, unknown> = {}): void {
    this.#audit.record(session.audit, action, resource, "refused", { code, ...detail });
    this.#refuse(session, requestId, code, message);
  }

  #refuse(session: Session, requestId: number, code: LeaseErrorCode, message: string): void {
    this.#send(session, encodeJson(FrameType.ERROR, requestId, { code: isLeaseErrorCode(code) ? code : "ERR_QBUN_LEASE_PROTOCOL", message: message.slice(0, 2048) }));
  }

  #leaseEnded(grant: Grant, reason: LeaseEndReason): void {
    const action: AuditAction = reason === "released" ? "lease.release" : reason === "expired" ? "lease.expire" : "lease.revoke";
    const holder = this.#sessions.get(grant.holder);
    this.#audit.record(holder?.audit ?? { session: grant.holder, pid: 0, uid: 0, gid: 0 }, action, grant.leaseClass, "ok", { token: grant.token });
    this.#broadcast(encodeJson(FrameType.LEASE_EVENT, 0, { leaseClass: grant.leaseClass, event: reason, token: grant.token }));
  }

  #broadcast(frame: Uint8Array): void {
    for (const session of this.#sessions.values()) this.#send(session, frame);
  }

  #send(session: Session, frame: Uint8Array, fds?: OwnedFd[]): void {
    if (session.channel.closed) return;
    try {
      session.channel.send(frame, fds);
    } catch {
      // the channel ended under us; its closed() handler cleans up the session
    }
  }

  #open(): void {
    if (this.#closed) throw new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the lease owner is closed");
  }

  /**
   * Stop: close listeners and every client connection, stop lease timers,
   * unmap and close every region (readers keep their own mappings). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const listener of this.#listeners) listener.close();
    this.#listeners.clear();
    for (const session of [...this.#sessions.values()]) session.channel.close();
    this.#sessions.clear();
    this.#leases.close();
    for (const entry of this.#endpoints.values()) entry.region.close();
    this.#endpoints.clear();
    if (this.#ownsAudit) this.#audit.close();
  }

  /** Same as {@link LeaseOwner.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link LeaseOwner.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}
