/**
 * BlobChannel: hands blobs to another process over a unix seqpacket socket.
 * Only the fd and a 40-byte header move, so the cost does not grow with the
 * blob. The consumer acknowledges each blob when it has mapped it and again
 * when it has released it, so the producer knows when its memory is free.
 * @module
 */
import * as v from "valibot";
import { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import type { OwnedFd } from "../../ffi/fd.ts";
import { SharedMemory } from "../shm/shared-memory.ts";
import type { AddressInput } from "../unix/address.ts";
import type { ConnectOptions } from "../unix/connect.ts";
import { UnixSeqpacket } from "../unix/seqpacket.ts";
import type { ReceivedMessage } from "../unix/socket.ts";
import {
  BlobChannelClosedError,
  BlobDeliveryAbandonedError,
  BlobDescriptorError,
  BlobProtocolError,
  BlobRefusedError,
  type BlobDescriptorProblem,
} from "./errors.ts";
import { parsed } from "./options.ts";
import { BlobReader, DEFAULT_MAX_READ_SIZE } from "./reader.ts";
import { ShmBlob } from "./shm-blob.ts";
import { decodeFrame, DEFAULT_MAX_METADATA, encodeFrame, FrameType, HEADER_SIZE, type Frame } from "./wire.ts";

/** Options for a {@link BlobChannel}. */
export interface BlobChannelOptions {
  /** Refuse received blobs larger than this (default 1 TiB). */
  maxBlobSize?: number;
  /**
   * Refuse received blobs that are not sealed (default true). Only sealed
   * (memfd) blobs are immutable; pass false to also accept POSIX and
   * temp-file blobs, which are mapped with the SIGBUS guard but can still be
   * changed by their producer's user (see {@link BlobReader.immutable}).
   */
  requireSealed?: boolean;
  /** Most metadata bytes per blob, sent or received (default 16 KiB). */
  maxMetadataBytes?: number;
  /** Offers received but not yet taken by `receive()` before more are refused as `busy` (default 64). */
  maxQueuedOffers?: number;
}

/** Options for {@link BlobChannel.send}. */
export interface SendBlobOptions {
  /** A JSON object sent along with the blob (the receiver sees it as {@link BlobReader.metadata}). */
  metadata?: Record<string, unknown>;
  /**
   * Clean the blob up (release the producer's fd) once the consumer released
   * or refused it, or went away. A send that fails leaves the blob held.
   */
  cleanupWhenReleased?: boolean;
  /** Cancels a send that waits for room in the socket. */
  signal?: AbortSignal;
  /**
   * Stop waiting for the consumer this many ms after sending: if it has not
   * released (or refused) the blob by then, the delivery is abandoned as by
   * {@link BlobDelivery.abandon} with a timeout. Default: wait as long as
   * the channel lasts.
   */
  timeoutMs?: number;
}

/** How a delivery ended. */
export type BlobReleaseOutcome = "released" | "refused" | "peer-gone" | "closed";

const SendOptionsSchema = v.strictObject({
  metadata: v.optional(v.unknown()),
  cleanupWhenReleased: v.optional(v.boolean()),
  signal: v.optional(v.instance(AbortSignal)),
  timeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(2 ** 31 - 1))),
});

/**
 * Acknowledgements waiting for room in the socket before the peer is
 * disconnected: a peer that keeps sending offers but never reads would
 * otherwise make this side queue one acknowledgement per offer, forever.
 */
export const MAX_UNSENT_ACKS = 1024;

const ChannelOptionsSchema = v.strictObject({
  maxBlobSize: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  requireSealed: v.optional(v.boolean()),
  maxMetadataBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(60 * 1024))),
  maxQueuedOffers: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
});

interface DeliveryControl {
  delivery: BlobDelivery;
  mapped: PromiseWithResolvers<void>;
  released: PromiseWithResolvers<BlobReleaseOutcome>;
  isMapped: boolean;
  /** The timeoutMs timer, if any. */
  timer: Timer | undefined;
}

/** Where a delivery stands. */
export type BlobDeliveryState = "sent" | "mapped" | "abandoned" | BlobReleaseOutcome;

/** Lets only this module construct deliveries and move their state. */
const DELIVERY_KEY = Symbol("qbun.blob.delivery");
let setDeliveryState: (delivery: BlobDelivery, state: BlobDeliveryState) => void;

/**
 * One blob sent over a channel, as its producer sees it: when it was mapped,
 * and when it was released. `mapped` rejects with BlobRefusedError if the
 * consumer refused the descriptor, or BlobChannelClosedError if the channel
 * ended first. `released` resolves with how the delivery ended; both reject
 * with BlobDeliveryAbandonedError if the producer stopped waiting first
 * (`timeoutMs`, {@link BlobDelivery.abandon}). Rejections nobody awaits are
 * not reported as unhandled.
 */
export class BlobDelivery {
  /** The blob's id. */
  readonly id: string;
  /** Its size. */
  readonly size: number;
  /** Settles once the consumer has mapped the blob. */
  readonly mapped: Promise<void>;
  /** Settles once the consumer has let go of the blob, with how. */
  readonly released: Promise<BlobReleaseOutcome>;
  #state: BlobDeliveryState = "sent";
  readonly #abandon: (error: BlobDeliveryAbandonedError) => void;

  static {
    setDeliveryState = (delivery, state) => {
      delivery.#state = state;
    };
  }

  /** @internal made by BlobChannel.send (throws TypeError otherwise) */
  constructor(
    key: typeof DELIVERY_KEY,
    id: string,
    size: number,
    mapped: Promise<void>,
    released: Promise<BlobReleaseOutcome>,
    abandon: (error: BlobDeliveryAbandonedError) => void,
  ) {
    if (key !== DELIVERY_KEY) throw new TypeError("BlobDelivery cannot be constructed directly: BlobChannel.send() returns one");
    this.id = id;
    this.size = size;
    this.mapped = mapped;
    this.released = released;
    this.#abandon = abandon;
    // A caller interested in only one of them must not see an unhandled rejection of the other.
    mapped.catch(() => {});
    released.catch(() => {});
  }

  /** Where the delivery stands now. */
  get state(): BlobDeliveryState {
    return this.#state;
  }

  /**
   * Stop waiting for the consumer: `mapped` (if still pending) and
   * `released` reject with BlobDeliveryAbandonedError, the delivery no
   * longer keeps the process alive, and with `cleanupWhenReleased` the blob
   * is cleaned up here (a consumer that mapped it keeps its mapping). Late
   * acknowledgements from the consumer are ignored. No effect once the
   * delivery has ended.
   */
  abandon(): void {
    this.#abandon(new BlobDeliveryAbandonedError(this.id, false));
  }
}

interface QueuedOffer {
  frame: Frame;
  fd: OwnedFd;
}

/**
 * A channel that sends and receives blobs over a connected seqpacket socket
 * (it takes the socket over). Either side may send; `receive()` maps what
 * arrives read-only, after checking the fd against its announcement.
 *
 * A peer that breaks the protocol (bad frame, missing fd, ack for a blob it
 * was never sent) is disconnected: pending receives reject with
 * BlobProtocolError. A descriptor that does not match its announcement is
 * refused on its own (the sender's `mapped` rejects with BlobRefusedError;
 * this side's `receive` with BlobDescriptorError) and the channel carries on.
 *
 * An idle channel does not keep the process alive; one with a `receive()`
 * or a delivery pending does (a delivery until it ends, its `timeoutMs`
 * passes or it is abandoned). A peer that keeps sending while never reading
 * its acknowledgements is disconnected once 1024 ({@link MAX_UNSENT_ACKS}) of them
 * wait to be sent.
 *
 * By default only sealed (memfd) blobs are accepted: they are the only
 * ones nobody can change (see `requireSealed`).
 *
 * ```ts
 * // producer
 * await using channel = await BlobChannel.connect("\0frames");
 * const delivery = await channel.send(blob, { metadata: { kind: "frame" }, cleanupWhenReleased: true });
 * await delivery.released;
 * // consumer
 * using reader = await channel.receive();
 * ```
 */
export class BlobChannel implements Disposable, AsyncDisposable {
  readonly #socket: UnixSeqpacket;
  readonly #maxBlobSize: number;
  readonly #requireSealed: boolean;
  readonly #maxMetadata: number;
  readonly #maxQueued: number;
  readonly #deliveries = new Map<string, DeliveryControl>();
  readonly #offers: QueuedOffer[] = [];
  readonly #waiters: Array<PromiseWithResolvers<QueuedOffer | null>> = [];
  /** Ids received and mapped here, not yet released. */
  readonly #held = new Set<string>();
  /** Ids of deliveries abandoned here whose consumer has not released them yet (their late acks are ignored). */
  readonly #abandoned = new Set<string>();
  /** Acknowledgements handed to the socket and not yet sent (see {@link MAX_UNSENT_ACKS}). */
  #unsentAcks = 0;
  #pumping = false;
  /** undefined: open; null: ended cleanly; an error: ended by a protocol error. */
  #ended: Error | null | undefined;

  /** Take over a connected seqpacket socket. */
  constructor(socket: UnixSeqpacket, options: BlobChannelOptions = {}) {
    parsed(ChannelOptionsSchema, options, "BlobChannelOptions");
    this.#socket = socket;
    this.#maxBlobSize = options.maxBlobSize ?? DEFAULT_MAX_READ_SIZE;
    this.#requireSealed = options.requireSealed ?? true;
    this.#maxMetadata = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA;
    this.#maxQueued = options.maxQueuedOffers ?? 64;
    socket.unref();
  }

  /** Connect to a listening seqpacket socket (e.g. `UnixListener.listen(addr, { type: "seqpacket" })`). */
  static async connect(address: AddressInput, options: BlobChannelOptions & ConnectOptions = {}): Promise<BlobChannel> {
    const { signal, timeout, ...channelOptions } = options;
    return new BlobChannel(await UnixSeqpacket.connect(address, { signal, timeout }), channelOptions);
  }

  /** Two connected channels (socketpair), e.g. for a worker or a forked child. */
  static pair(options: BlobChannelOptions = {}): [BlobChannel, BlobChannel] {
    const [a, b] = UnixSeqpacket.pair();
    return [new BlobChannel(a, options), new BlobChannel(b, options)];
  }

  /** Deliveries sent and not yet released. */
  get pending(): number {
    return this.#deliveries.size;
  }

  /** Blobs received here and not yet released. */
  get held(): number {
    return this.#held.size;
  }

  /** Whether the channel has ended (closed here, peer gone, or protocol error). */
  get closed(): boolean {
    return this.#ended !== undefined;
  }

  /**
   * Send a published blob: its read-only fd, id, size, seal state and
   * metadata. Resolves once the descriptor is in the socket, with a
   * {@link BlobDelivery} that tracks the acknowledgements.
   *
   * @throws BlobStaleError if the blob was cleaned up or expired; QbunArgumentError
   *   if it is already in flight here, the metadata is too large or an option is bad; ClosedError once the channel ended
   */
  async send(blob: ShmBlob, options: SendBlobOptions = {}): Promise<BlobDelivery> {
    if (this.#ended !== undefined) throw this.#ended ?? new ClosedError("blob channel");
    if (!(blob instanceof ShmBlob)) throw new QbunArgumentError("send() takes a published blob: call publish() on the writer first");
    parsed(SendOptionsSchema, options, "SendBlobOptions");
    // A dup travels, so a cleanup while the send waits for room cannot close (or recycle) the fd being sent.
    using fd = SharedMemory.fromFd(blob.fd);
    if (this.#deliveries.has(blob.id)) throw new QbunArgumentError(`blob ${blob.id} is already in flight on this channel: wait for its release`);
    if (this.#abandoned.has(blob.id)) {
      throw new QbunArgumentError(`blob ${blob.id} was abandoned on this channel and the consumer has not released it yet: send it on another channel, or a new blob`);
    }
    let metadata: Uint8Array | undefined;
    if (options.metadata !== undefined) {
      if (typeof options.metadata !== "object" || options.metadata === null || Array.isArray(options.metadata)) {
        throw new QbunArgumentError("metadata must be a plain JSON object");
      }
      metadata = new TextEncoder().encode(JSON.stringify(options.metadata));
      if (metadata.length > this.#maxMetadata) {
        throw new QbunArgumentError(`metadata is ${metadata.length} bytes as JSON; this channel allows ${this.#maxMetadata} (maxMetadataBytes)`);
      }
    }
    const frame = encodeFrame(FrameType.Offer, blob.id, { size: blob.size, sealed: blob.sealed, backend: blob.backend, metadata });
    const control: DeliveryControl = {
      mapped: Promise.withResolvers<void>(),
      released: Promise.withResolvers<BlobReleaseOutcome>(),
      isMapped: false,
      timer: undefined,
    } as DeliveryControl;
    control.delivery = new BlobDelivery(DELIVERY_KEY, blob.id, blob.size, control.mapped.promise, control.released.promise, (error) =>
      this.#abandonDelivery(blob.id, control, error),
    );
    this.#deliveries.set(blob.id, control);
    this.#activity();
    try {
      await this.#socket.send(frame, { fds: [fd.fd], signal: options.signal });
    } catch (error) {
      if (this.#deliveries.get(blob.id) === control) this.#deliveries.delete(blob.id);
      this.#activity();
      throw error;
    }
    if (options.cleanupWhenReleased) {
      const cleanup = () => blob.cleanup();
      void control.released.promise.then(cleanup, cleanup);
    }
    const timeoutMs = options.timeoutMs;
    if (timeoutMs !== undefined && this.#deliveries.get(blob.id) === control) {
      control.timer = setTimeout(() => this.#abandonDelivery(blob.id, control, new BlobDeliveryAbandonedError(blob.id, true, timeoutMs)), timeoutMs);
      control.timer.unref(); // the pending delivery keeps the process alive until then, not the timer
    }
    return control.delivery;
  }

  /**
   * The next blob from the peer, mapped read-only (the peer is told it was
   * mapped; closing the reader tells it the blob was released). Null once
   * the peer has closed the channel and every blob it sent before was taken.
   *
   * Abort: an aborted wait takes nothing; a blob that arrives later waits
   * for the next `receive()`.
   *
   * @throws BlobDescriptorError if the fd does not match its announcement (it is refused; the channel carries on);
   *   BlobProtocolError if the peer broke the protocol (the channel is closed); AbortError from `signal`
   */
  async receive(options: { signal?: AbortSignal } = {}): Promise<BlobReader | null> {
    const offer = this.#offers.shift() ?? (await this.#nextOffer(options.signal));
    if (offer === null) return null;
    const { frame, fd } = offer;
    try {
      const reader = BlobReader.openWith(
        fd,
        {
          id: frame.id,
          size: frame.size,
          sealed: frame.sealed,
          requireSealed: this.#requireSealed,
          maxSize: this.#maxBlobSize,
          metadata: frame.metadata,
        },
        () => {
          this.#held.delete(frame.id);
          this.#ack(FrameType.Released, frame.id);
        },
      );
      this.#held.add(frame.id);
      this.#ack(FrameType.Mapped, frame.id);
      return reader;
    } catch (error) {
      fd.close();
      if (error instanceof BlobDescriptorError) this.#ack(FrameType.Refused, frame.id, error.problem);
      throw error;
    }
  }

  /** Blobs until the peer closes the channel. */
  async *[Symbol.asyncIterator](): AsyncGenerator<BlobReader, void, void> {
    for (;;) {
      const reader = await this.receive();
      if (reader === null) return;
      yield reader;
    }
  }

  /**
   * Close the socket. Pending receives resolve null; offers not yet
   * received are refused (their fds closed); deliveries not yet released
   * settle as `closed`. Readers already received stay mapped until
   * closed themselves. Idempotent.
   */
  close(): void {
    if (this.#ended === undefined) this.#end(null, "closed");
    for (const offer of this.#offers.splice(0)) offer.fd.close();
    this.#socket.close();
  }

  /** Same as {@link BlobChannel.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link BlobChannel.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  /** Stop tracking a delivery that has not ended: its promises reject, its late acknowledgements are ignored. */
  #abandonDelivery(id: string, control: DeliveryControl, error: BlobDeliveryAbandonedError): void {
    if (this.#deliveries.get(id) !== control) return; // already ended
    clearTimeout(control.timer);
    this.#deliveries.delete(id);
    this.#abandoned.add(id);
    setDeliveryState(control.delivery, "abandoned");
    if (!control.isMapped) control.mapped.reject(error);
    control.released.reject(error);
    this.#activity();
  }

  #nextOffer(signal: AbortSignal | undefined): Promise<QueuedOffer | null> {
    if (this.#ended !== undefined) return this.#ended ? Promise.reject(this.#ended) : Promise.resolve(null);
    signal?.throwIfAborted();
    const waiter = Promise.withResolvers<QueuedOffer | null>();
    this.#waiters.push(waiter);
    if (signal) {
      const onAbort = () => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        this.#activity();
        waiter.reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      void waiter.promise.then(
        () => signal.removeEventListener("abort", onAbort),
        () => signal.removeEventListener("abort", onAbort),
      );
    }
    this.#activity();
    return waiter.promise;
  }

  /** Keep the process alive exactly while someone waits on this channel; make sure the socket is being read. */
  #activity(): void {
    if (this.#ended !== undefined) return;
    if (this.#waiters.length > 0 || this.#deliveries.size > 0) this.#socket.ref();
    else this.#socket.unref();
    if (!this.#pumping) {
      this.#pumping = true;
      void this.#pump();
    }
  }

  async #pump(): Promise<void> {
    const maxBytes = HEADER_SIZE + this.#maxMetadata + 1; // one more, so that a longer frame shows as truncated
    try {
      for (;;) {
        const message = await this.#socket.receive({ maxBytes, maxFds: 1 });
        if (this.#ended !== undefined) {
          message?.[Symbol.dispose]();
          return;
        }
        if (message === null) return this.#end(null, "peer-gone");
        const problem = this.#handle(message);
        if (problem !== undefined) {
          message[Symbol.dispose]();
          return this.#end(new BlobProtocolError(problem), "peer-gone");
        }
      }
    } catch (error) {
      if (this.#ended !== undefined) return;
      // A peer that died with our acknowledgements unread resets the connection: that is just "gone".
      if (error instanceof QbunSystemError && error.code === "ECONNRESET") return this.#end(null, "peer-gone");
      this.#end(error instanceof Error ? error : new Error(String(error)), "peer-gone");
    }
  }

  /** Act on one message; returns a protocol violation to disconnect for. */
  #handle(message: ReceivedMessage): string | undefined {
    // A frame longer than this side reads is cut; it is still an offer to refuse if its header says so.
    const frame = decodeFrame(message.data, this.#maxMetadata, message.truncated);
    if (typeof frame === "string") return message.truncated ? `a frame longer than ${HEADER_SIZE + this.#maxMetadata} bytes (${frame})` : frame;
    if (frame.type === FrameType.Offer) {
      if (message.fds.length !== 1 || message.controlTruncated) return `an offer with ${message.controlTruncated ? "too many" : message.fds.length} fds (one expected)`;
      const fd = message.fds[0]!;
      const refusal: BlobDescriptorProblem | undefined = frame.oversized
        ? "metadata-too-large"
        : this.#held.has(frame.id) || this.#offers.some((o) => o.frame.id === frame.id)
          ? "duplicate"
          : this.#offers.length >= this.#maxQueued
            ? "busy"
            : undefined;
      if (refusal) {
        fd.close();
        this.#ack(FrameType.Refused, frame.id, refusal);
        return undefined;
      }
      const offer = { frame, fd };
      const waiter = this.#waiters.shift();
      if (waiter) waiter.resolve(offer);
      else this.#offers.push(offer);
      this.#activity();
      return undefined;
    }
    if (message.fds.length > 0 || message.controlTruncated) return "an acknowledgement carrying fds";
    const control = this.#deliveries.get(frame.id);
    if (!control) {
      if (this.#abandoned.has(frame.id)) {
        // Late news of an abandoned delivery: nobody waits for it any more; its end frees the id.
        if (frame.type !== FrameType.Mapped) this.#abandoned.delete(frame.id);
        return undefined;
      }
      return `an acknowledgement for blob ${frame.id}, which is not in flight on this channel`;
    }
    if (frame.type === FrameType.Mapped) {
      if (control.isMapped) return `blob ${frame.id} acknowledged as mapped twice`;
      control.isMapped = true;
      setDeliveryState(control.delivery, "mapped");
      control.mapped.resolve();
      return undefined;
    }
    if (frame.type === FrameType.Released && !control.isMapped) return `blob ${frame.id} released before it was mapped`;
    if (frame.type === FrameType.Refused && control.isMapped) return `blob ${frame.id} refused after it was mapped`;
    const outcome = frame.type === FrameType.Released ? "released" : "refused";
    if (frame.type === FrameType.Refused) control.mapped.reject(new BlobRefusedError(frame.id, frame.problem!));
    this.#finish(frame.id, control, outcome);
    return undefined;
  }

  #finish(id: string, control: DeliveryControl, outcome: BlobReleaseOutcome): void {
    clearTimeout(control.timer);
    this.#deliveries.delete(id);
    setDeliveryState(control.delivery, outcome);
    control.released.resolve(outcome);
    this.#activity();
  }

  /** The last acknowledgement still being sent, if any. */
  #ackTail: Promise<void> | undefined;

  /**
   * Send an acknowledgement; if the peer is gone there is nobody to tell.
   * Acknowledgements go out in order even when the socket is full (a
   * RELEASED overtaking its MAPPED would be a protocol error at the peer):
   * one waits for the one before; with none pending, it is sent at once.
   */
  #ack(type: FrameType, id: string, problem?: BlobDescriptorProblem): void {
    if (this.#ended !== undefined) return;
    if (this.#unsentAcks >= MAX_UNSENT_ACKS) {
      this.#end(new BlobProtocolError(`the peer does not read its acknowledgements (${this.#unsentAcks} wait to be sent) but keeps sending`), "peer-gone");
      return;
    }
    this.#unsentAcks++;
    const frame = encodeFrame(type, id, { problem });
    const send = () => (this.#ended === undefined ? this.#socket.send(frame).catch(() => {}) : undefined);
    const sent = (this.#ackTail ? this.#ackTail.then(send) : Promise.resolve(send())).then(() => {
      this.#unsentAcks--;
    });
    this.#ackTail = sent;
    void sent.then(() => {
      if (this.#ackTail === sent) this.#ackTail = undefined;
    });
  }

  #end(error: Error | null, outcome: "peer-gone" | "closed"): void {
    this.#ended = error;
    for (const waiter of this.#waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve(null);
    }
    // Offers that arrived before a clean end stay receivable (their fds are valid without the peer).
    if (error || outcome === "closed") for (const offer of this.#offers.splice(0)) offer.fd.close();
    for (const [id, control] of [...this.#deliveries]) {
      clearTimeout(control.timer);
      if (!control.isMapped) control.mapped.reject(new BlobChannelClosedError(id));
      this.#deliveries.delete(id);
      setDeliveryState(control.delivery, outcome);
      control.released.resolve(outcome);
    }
    this.#abandoned.clear();
    // Nothing more can be said on an ended channel (a protocol breaker is disconnected, a gone peer cannot read).
    this.#socket.close();
  }
}
