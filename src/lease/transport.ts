/**
 * The seam between the lease logic and how frames travel. The owner's
 * sessions and the client speak the same frames over either transport:
 *
 * - in-process: a pair of endpoints that hand frames over on a microtask;
 *   fds are duplicated on the way, exactly as SCM_RIGHTS would, so the
 *   receiver owns its copy and the sender keeps its own;
 * - unix socket: a seqpacket connection (message boundaries, fds by
 *   SCM_RIGHTS); the owner takes the peer's identity from SO_PEERCRED.
 * @module
 */
import { LeaseError } from "./errors.ts";
import { MAX_FRAME } from "./protocol.ts";
import { OwnedFd } from "../../ffi/fd.ts";
import type { Credentials, UnixSeqpacket } from "../unix/index.ts";

/** Receives what arrives on a channel. */
export interface ChannelHandler {
  /** One frame and the fds that came with it (the handler owns them). */
  frame(bytes: Uint8Array, fds: OwnedFd[]): void;
  /** The channel ended (peer gone, closed, or failed); called once. */
  closed(error?: Error): void;
}

/** A bidirectional, ordered frame channel. */
export interface Channel {
  /** The peer's credentials as the kernel reports them (in-process: this process). */
  readonly peer: Credentials;
  /** Start delivering frames to `handler`. */
  start(handler: ChannelHandler): void;
  /** Queue one frame (and fds, which stay open here). Frames arrive in send order. Throws once closed. */
  send(frame: Uint8Array, fds?: readonly OwnedFd[]): void;
  /** End the channel; the peer sees it closed. Idempotent. */
  close(): void;
  /** Whether the channel has ended. */
  readonly closed: boolean;
}

/** Frames a unix channel queues for a peer that does not read before it is cut off as too slow. */
export const MAX_QUEUED_FRAMES = 4096;

/** This process's own credentials (the identity of in-process peers). */
export function ownCredentials(): Credentials {
  return { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
}

class InProcessEnd implements Channel {
  readonly peer: Credentials;
  other!: InProcessEnd;
  #handler: ChannelHandler | undefined;
  #backlog: Array<[Uint8Array, OwnedFd[]]> = [];
  #closed = false;

  constructor(peer: Credentials) {
    this.peer = peer;
  }

  get closed(): boolean {
    return this.#closed;
  }

  start(handler: ChannelHandler): void {
    this.#handler = handler;
    const backlog = this.#backlog;
    this.#backlog = [];
    for (const [bytes, fds] of backlog) this.#deliver(bytes, fds);
  }

  send(frame: Uint8Array, fds: readonly OwnedFd[] = []): void {
    if (this.#closed) throw new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the in-process channel is closed");
    const copy = frame.slice(); // the sender may reuse its buffer
    const dups = fds.map((fd) => fd.dup());
    queueMicrotask(() => this.other.#deliver(copy, dups));
  }

  #deliver(bytes: Uint8Array, fds: OwnedFd[]): void {
    if (this.#closed) {
      for (const fd of fds) fd.close();
      return;
    }
    if (!this.#handler) {
      this.#backlog.push([bytes, fds]);
      return;
    }
    this.#handler.frame(bytes, fds);
  }

  close(): void {
    this.#end(undefined);
    // The peer learns of it after frames already queued to it, as on a socket.
    queueMicrotask(() => this.other.#end(undefined));
  }

  #end(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [, fds] of this.#backlog) for (const fd of fds) fd.close();
    this.#backlog = [];
    this.#handler?.closed(error);
  }
}

/**
 * Two connected in-process channel ends: `[ownerSide, clientSide]`.
 * `clientIdentity` is what the owner's policy sees for this client.
 */
export function inProcessPair(clientIdentity: Credentials): [Channel, Channel] {
  const ownerSide = new InProcessEnd(clientIdentity);
  const clientSide = new InProcessEnd(ownCredentials());
  ownerSide.other = clientSide;
  clientSide.other = ownerSide;
  return [ownerSide, clientSide];
}

/** A channel over a connected seqpacket socket (owns the socket). */
export class SeqpacketChannel implements Channel {
  readonly peer: Credentials;
  readonly #socket: UnixSeqpacket;
  #handler: ChannelHandler | undefined;
  #closed = false;
  #pending = 0;
  #tail: Promise<void> = Promise.resolve();

  /** Wrap `socket`; the peer's identity is read from the kernel (SO_PEERCRED) now. */
  constructor(socket: UnixSeqpacket) {
    this.#socket = socket;
    this.peer = socket.peerCredentials();
  }

  get closed(): boolean {
    return this.#closed;
  }

  start(handler: ChannelHandler): void {
    this.#handler = handler;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    let failure: Error | undefined;
    try {
      for (;;) {
        const message = await this.#socket.receive({ maxBytes: MAX_FRAME, maxFds: 2 });
        if (message === null) break;
        if (this.#closed) {
          for (const fd of message.fds) fd.close(); // arrived as we closed: nobody will take them
          break;
        }
        if (message.truncated || message.controlTruncated) {
          for (const fd of message.fds) fd.close();
          throw new LeaseError("ERR_QBUN_LEASE_PROTOCOL", `peer ${this.peer.pid} sent a message over ${MAX_FRAME} bytes or with too many fds`);
        }
        this.#handler!.frame(message.data, [...message.fds]);
      }
    } catch (error) {
      if (!this.#closed) failure = error instanceof Error ? error : new Error(String(error));
    }
    this.#finish(failure);
  }

  send(frame: Uint8Array, fds: readonly OwnedFd[] = []): void {
    if (this.#closed) throw new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", "the connection is closed");
    if (this.#pending >= MAX_QUEUED_FRAMES) {
      this.#finish(new LeaseError("ERR_QBUN_LEASE_DISCONNECTED", `peer ${this.peer.pid} stopped reading (${MAX_QUEUED_FRAMES} frames queued): disconnected`));
      return;
    }
    // fds must stay open until the frame is sent: keep our own copies.
    const held = fds.map((fd) => fd.dup());
    const sendNow = (): Promise<void> =>
      this.#socket.send(frame, held.length ? { fds: held } : {}).finally(() => {
        for (const fd of held) fd.close();
      });
    this.#pending++;
    // The first sendmsg runs synchronously inside send(); queue behind a pending one to keep order.
    const sent = this.#pending === 1 ? sendNow() : this.#tail.then(sendNow);
    this.#tail = sent.then(
      () => {
        this.#pending--;
      },
      (error) => {
        this.#pending--;
        if (!this.#closed) this.#finish(error instanceof Error ? error : new Error(String(error)));
      },
    );
  }

  #finish(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    this.#handler?.closed(error);
  }

  close(): void {
    this.#finish(undefined);
  }
}
