/**
 * The owner service: serves named regions to readers, keeps the lease
 * table, applies writes from the current write-lease holder, and audits
 * every decision. Clients reach it in-process ({@link LeaseOwner.connect})
 * or over a unix seqpacket socket ({@link LeaseOwner.listen}); both run the
 * same session code on the same frames.
 * @module
 */
import { ClosedError, QbunArgumentError } from "../../ffi/errors.ts";
import type { OwnedFd } from "../../ffi/fd.ts";
import { UnixListener, type AddressInput, type Credentials, type UnixSeqpacket } from "../unix/index.ts";
import { AuditLog, type AuditAction, type AuditPeer, type AuditSink } from "./audit.ts";
import { isLeaseErrorCode, LeaseError, type LeaseErrorCode } from "./errors.ts";
import { LeaseTable, MAX_WAITERS_PER_CLASS, type Grant, type LeaseEndReason, type TokenCheck, type Waiter } from "./lease.ts";
import { checkName, encodeLocator } from "./locator.ts";
import { CapabilityPolicy } from "./policy.ts";
import {
  decodeFrame, decodeWrite, encodeAck, encodeJson, encodeRaw, encodeWritten, FrameType, nameBytes, parseJson, type LeaseEventKind,
} from "./protocol.ts";
import { OwnedRegion } from "./region.ts";
import { inProcessPair, ownCredentials, SeqpacketChannel, type Channel } from "./transport.ts";
import { LeaseClient } from "./client.ts";
import { CONSTRUCT } from "./internal.ts";

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
  /** Longest lease a client may ask for, in ms: an integer from 1 to 86 400 000 (default 60 000). */
  maxTtlMs?: number;
}

/** Most acquires one client may have waiting at once; more are refused as busy. */
export const MAX_QUEUED_ACQUIRES_PER_CLIENT = 16;
/** Pause after a failed accept (e.g. out of fds) before trying again, doubling up to {@link ACCEPT_BACKOFF_MAX_MS}. */
const ACCEPT_BACKOFF_MS = 50;
const ACCEPT_BACKOFF_MAX_MS = 2000;

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

interface SubscriberState {
  readonly notifyWrites: boolean;
}

interface Endpoint {
  region: OwnedRegion;
  readonly nameBytes: Uint8Array;
  readonly subscribers: Map<Session, SubscriberState>;
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

  /** An owner with no regions yet: add them with {@link LeaseOwner.createRegion}, serve with {@link LeaseOwner.listen} or {@link LeaseOwner.connect}. */
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
    checkName(this.#writeClass, "write lease class");
    this.#maxTtl = options.maxTtlMs ?? 60_000;
    if (!Number.isSafeInteger(this.#maxTtl) || this.#maxTtl < 1 || this.#maxTtl > 86_400_000) {
      throw new QbunArgumentError(`maxTtlMs must be an integer from 1 to 86400000 (one day), got ${this.#maxTtl}`);
    }
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
    checkName(endpoint, "endpoint name");
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
    const initial = options.copy === false ? options.initial : old; // copied mapping to mapping
    const epoch = (old.epoch + 1) >>> 0 || 1;
    const region = OwnedRegion.create(endpoint, epoch, size, initial);
    entry.region = region;
    old.retire();
    old.close(); // readers keep their own mappings of the old epoch until they drop them
    this.#audit.record(null, "epoch", endpoint, "ok", { epoch, previous: old.epoch, size });
    const invalid = encodeJson(FrameType.EPOCH_INVALID, 0, { endpoint, epoch: old.epoch, next: epoch });
    for (const session of entry.subscribers.keys()) this.#send(session, invalid);
    if (entry.subscribers.size === 0) return epoch;
    // One read-only fd for everyone: the kernel gives each receiver its own copy.
    let fd: OwnedFd | undefined;
    try {
      fd = region.readOnlyFd();
    } catch (error) {
      // Out of fds: the subscribers cannot follow the new epoch; end their subscriptions rather than leave them waiting.
      this.#audit.record(null, "epoch", endpoint, "refused", { epoch, error: errorText(error) });
      const gone = encodeJson(FrameType.EPOCH_INVALID, 0, { endpoint, epoch, next: 0 });
      for (const session of entry.subscribers.keys()) this.#send(session, gone);
      entry.subscribers.clear();
      return epoch;
    }
    try {
      const frame = encodeRaw(FrameType.LOCATOR, 0, encodeLocator(region.locator()));
      for (const session of [...entry.subscribers.keys()]) {
        try {
          this.#sendOrThrow(session, frame, [fd]);
        } catch (error) {
          this.#audit.record(session.audit, "subscribe", endpoint, "refused", { epoch, error: errorText(error) });
          this.#send(session, encodeJson(FrameType.EPOCH_INVALID, 0, { endpoint, epoch, next: 0 }));
          entry.subscribers.delete(session);
        }
      }
    } finally {
      fd.close();
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
    entry.subscribers.clear();
  }

  /**
   * Accept clients on a unix seqpacket socket. Each client's identity is
   * the kernel's (SO_PEERCRED). Returns the listener (closed with the owner).
   */
  listen(address: AddressInput, options: OwnerListenOptions = {}): UnixListener<"seqpacket"> {
    this.#open();
    const listener = UnixListener.listen(address, { type: "seqpacket", ...(options.mode !== undefined ? { mode: options.mode } : {}) });
    this.#listeners.add(listener);
    void this.#acceptLoop(listener);
    return listener;
  }

  /** Accept until the listener closes; a failed accept (e.g. EMFILE) is audited and retried after a pause, never thrown. */
  async #acceptLoop(listener: UnixListener<"seqpacket">): Promise<void> {
    let backoff = ACCEPT_BACKOFF_MS;
    while (!listener.closed) {
      let socket: UnixSeqpacket;
      try {
        socket = await listener.accept();
      } catch (error) {
        if (error instanceof ClosedError || listener.closed) break;
        this.#audit.record(null, "accept", "", "refused", { error: errorText(error), retryInMs: backoff });
        await Bun.sleep(backoff); // the pending connection stays in the backlog: waiting for readability would spin
        backoff = Math.min(backoff * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      backoff = ACCEPT_BACKOFF_MS;
      this.#adoptSocket(socket);
    }
    this.#listeners.delete(listener);
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
    return new LeaseClient(CONSTRUCT, clientSide);
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
      const message = errorText(error);
      if (error instanceof LeaseError && error.code === "ERR_QBUN_LEASE_PROTOCOL") {
        // A peer that breaks the protocol is told why and disconnected; everyone else carries on.
        this.#audit.record(session.audit, "protocol", "", "refused", { error: message });
        this.#refuse(session, requestId, "ERR_QBUN_LEASE_PROTOCOL", message);
        session.channel.close();
      } else {
        // Our own failure (e.g. out of fds): the request is answered, the well-behaved client stays connected.
        this.#audit.record(session.audit, "protocol", "", "refused", { code: "ERR_QBUN_LEASE_UNAVAILABLE", error: message });
        this.#refuse(session, requestId, "ERR_QBUN_LEASE_UNAVAILABLE", `the owner could not serve this request (${message}); retry later`);
      }
    }
  }

  #onSubscribe(session: Session, requestId: number, body: { endpoint: string; notifyWrites: boolean }): void {
    const entry = this.#endpoints.get(body.endpoint);
    if (!entry) return this.#deny(session, requestId, "subscribe", body.endpoint, "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `no region named ${body.endpoint} is served`);
    if (!this.#policy.allows(session.channel.peer, "subscribe", body.endpoint)) {
      return this.#deny(session, requestId, "subscribe", body.endpoint, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} subscribe to ${body.endpoint}`);
    }
    // The locator goes out first (retained: a late subscriber gets the current epoch at once); if that fails
    // (out of fds), the request fails as unavailable and the session is not left half subscribed.
    const region = entry.region;
    const fd = region.readOnlyFd();
    try {
      this.#sendOrThrow(session, encodeRaw(FrameType.LOCATOR, 0, encodeLocator(region.locator())), [fd]);
    } finally {
      fd.close();
    }
    entry.subscribers.set(session, { notifyWrites: body.notifyWrites });
    this.#audit.record(session.audit, "subscribe", body.endpoint, "granted", { epoch: region.epoch });
    this.#send(session, encodeJson(FrameType.REPLY, requestId, { epoch: region.epoch }));
  }

  #onAcquire(session: Session, requestId: number, body: { leaseClass: string; ttlMs: number; wait: boolean }): void {
    const { leaseClass } = body;
    if (!this.#policy.allows(session.channel.peer, "lease", leaseClass)) {
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} (pid ${session.audit.pid}) take the ${leaseClass} lease`);
    }
    const ttlMs = Math.min(body.ttlMs, this.#maxTtl);
    const holder = this.#leases.current(leaseClass);
    if (holder?.holder === session.id) {
      // Waiting would wait on itself until its own lease expired.
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_BUSY", `you already hold the ${leaseClass} lease (token ${holder.token}): renew it instead of acquiring it again`, { token: holder.token });
    }
    const granted = (grant: Grant): void => {
      session.waiters.delete(requestId);
      this.#audit.record(session.audit, "lease.acquire", leaseClass, "granted", { token: grant.token, ttlMs: grant.ttlMs });
      this.#send(session, encodeJson(FrameType.REPLY, requestId, { token: grant.token, ttlMs: grant.ttlMs }));
      this.#announce(leaseClass, "granted", grant.token);
    };
    const now = this.#leases.tryAcquire(leaseClass, session.id, ttlMs);
    if (now) return granted(now);
    if (!body.wait) {
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_BUSY", `the ${leaseClass} lease is held${holder ? ` (token ${holder.token})` : ""}; wait for it or try later`);
    }
    if (session.waiters.size >= MAX_QUEUED_ACQUIRES_PER_CLIENT) {
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_BUSY", `this client already has ${MAX_QUEUED_ACQUIRES_PER_CLIENT} acquires waiting: wait for one of them first`, { queued: session.waiters.size });
    }
    const waiter: Waiter = { holder: session.id, ttlMs, granted };
    session.waiters.set(requestId, { leaseClass, waiter });
    this.#audit.record(session.audit, "lease.acquire", leaseClass, "queued");
    if (!this.#leases.enqueue(leaseClass, waiter)) {
      session.waiters.delete(requestId);
      return this.#deny(session, requestId, "lease.acquire", leaseClass, "ERR_QBUN_LEASE_BUSY", `${MAX_WAITERS_PER_CLASS} acquires of ${leaseClass} are already waiting; try later`);
    }
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
    const { endpoint, offset, token, epoch, data } = decodeWrite(body);
    const entry = this.#endpoints.get(endpoint);
    if (!entry) return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_UNKNOWN_ENDPOINT", `no region named ${endpoint} is served`);
    if (!this.#policy.allows(session.channel.peer, "write", endpoint)) {
      return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_REFUSED", `the policy does not let uid ${session.audit.uid} (pid ${session.audit.pid}) write to ${endpoint}`);
    }
    const check = this.#leases.check(this.#writeClass, session.id, token);
    if (check !== "ok") return this.#tokenRefusal(session, requestId, "write", endpoint, token, check);
    const region = entry.region;
    if (epoch !== 0 && epoch !== region.epoch) {
      return this.#deny(session, requestId, "write", endpoint, "ERR_QBUN_LEASE_STALE_EPOCH", `the write was meant for epoch ${epoch} of ${endpoint}, which is now at epoch ${region.epoch}: check the new contents and write again`, { epoch, current: region.epoch, token });
    }
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
    // A session already gone is named by its number only: -1 says "unknown", never a made-up root identity.
    this.#audit.record(holder?.audit ?? { session: grant.holder, pid: -1, uid: -1, gid: -1 }, action, grant.leaseClass, "ok", { token: grant.token });
    this.#announce(grant.leaseClass, reason, grant.token);
  }

  /** Tell the sessions the policy allows this lease class what happened to it (no one else learns of it). */
  #announce(leaseClass: string, event: LeaseEventKind, token: number): void {
    let frame: Uint8Array | undefined;
    for (const session of this.#sessions.values()) {
      if (!this.#policy.allows(session.channel.peer, "lease", leaseClass)) continue;
      frame ??= encodeJson(FrameType.LEASE_EVENT, 0, { leaseClass, event, token });
      this.#send(session, frame);
    }
  }

  #send(session: Session, frame: Uint8Array, fds?: OwnedFd[]): void {
    if (session.channel.closed) return;
    try {
      session.channel.send(frame, fds);
    } catch {
      // the channel ended under us; its closed() handler cleans up the session
    }
  }

  /** Like #send, but a failure other than a closed channel (e.g. no fd left to dup) is thrown. */
  #sendOrThrow(session: Session, frame: Uint8Array, fds: OwnedFd[]): void {
    try {
      session.channel.send(frame, fds);
    } catch (error) {
      if (!session.channel.closed) throw error;
    }
  }

  #open(): void {
    if (this.#closed) throw new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the lease owner is closed");
  }

  /**
   * Stop: close listeners and every client connection, stop lease timers,
   * retire (audited), unmap and close every region (readers keep their own
   * mappings; their reads fail as stale). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const listener of this.#listeners) listener.close();
    this.#listeners.clear();
    for (const session of [...this.#sessions.values()]) session.channel.close();
    this.#sessions.clear();
    this.#leases.close();
    for (const [endpoint, entry] of this.#endpoints) {
      // Readers that still map it see the retired flag: their reads fail as stale instead of showing frozen data as live.
      entry.region.retire();
      entry.region.close();
      this.#audit.record(null, "epoch", endpoint, "ok", { epoch: 0, previous: entry.region.epoch, closed: true });
    }
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

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
