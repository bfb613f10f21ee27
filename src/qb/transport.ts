/**
 * The seam between a connection and how its messages travel. Each transport
 * (shared-memory rings, datagram sockets) implements it once per side; the
 * server's connection logic and the client (ordering, flow control, stats)
 * never look past it.
 * @module
 */
import { SharedMemory } from "../shm/index.ts";
import type { UnixStream } from "../unix/index.ts";
import type { QbMessage } from "./wire.ts";

/** The other end closed its setup socket. */
export class PeerGoneError extends Error {
  /** Always `"ERR_QBUN_PEER_GONE"`. */
  readonly code = "ERR_QBUN_PEER_GONE";
  constructor() {
    super("the peer closed the connection");
    this.name = "PeerGoneError";
  }
}

/**
 * Remove a connection's `files` and then its directory, ignoring failures
 * (the server carries on either way). With `peerRemovesThem` (libqb's
 * socket-transport client removes its control file and directory when it
 * disconnects) the directory is tried first, so the common case is one
 * rmdir that finds nothing; a missing file never costs an exception.
 */
export function removeConnectionFiles(dir: string, files: readonly string[], peerRemovesThem = false): void {
  if (peerRemovesThem) {
    try {
      SharedMemory.removeDirectory(dir);
      return;
    } catch {} // not empty: the client did not get to it
  }
  for (const file of files) {
    try {
      SharedMemory.removeFile(file);
    } catch {}
  }
  try {
    SharedMemory.removeDirectory(dir);
  } catch {}
}

/** What a transport needs to know about the connection it serves. */
export interface TransportSetup {
  /** The per-connection directory (already created). */
  readonly dir: string;
  readonly service: string;
  readonly maxMessageSize: number;
  /** Owner and mode for every file (the client's ids, 0600 by default). */
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
  /** The accepted setup socket (owned by the connection, not the transport). */
  readonly setup: UnixStream;
}

/** Names sent to the client in the connection response. */
export interface TransportNames {
  readonly request: string;
  readonly response: string;
  readonly event: string;
}

/** One received request: its bytes are valid until `release()`. */
export interface IncomingMessage {
  /**
   * Holds the whole message (request header + payload): `length` bytes at
   * `start`, possibly in place in a ring or a reused buffer. No view is
   * made for the message itself (a view costs more than the rest of taking
   * a small request); the connection makes one for the payload.
   */
  readonly bytes: Uint8Array;
  readonly start: number;
  readonly length: number;
  /**
   * Whether `bytes` is memory the transport reuses (an SHM ring chunk, the
   * socket transport's receive buffer), to be copied if it must outlive
   * `release()` or the next take().
   */
  readonly inPlace: boolean;
  /** Give the space back (reclaim the ring chunk; end the socket transport's loan of its receive buffer). */
  release(): void;
}

/** A server connection's transport. */
export interface ServerTransport {
  /** `shm` or `socket`. */
  readonly kind: "shm" | "socket";
  /** What the connection response tells the client. */
  readonly names: TransportNames;
  /** Next request if one is ready now; null if none. Throws on a corrupt peer. */
  take(): IncomingMessage | null;
  /**
   * Resolves when more requests may be ready (or the peer went away, which
   * the transport reports by rejecting); undefined when they may be ready
   * now, which spares the caller a promise. SHM waits for notification
   * bytes on the setup socket; the socket transport for its request
   * datagram socket.
   */
  waitForRequests(signal: AbortSignal): Promise<void> | undefined;
  /**
   * Make responses written from now on invisible to the client until
   * `releaseResponses()` (SHM: commit but hold the semaphore post). Holds
   * nest: responses show once every hold is released.
   */
  holdResponses(): void;
  /** Let the client see the responses written since `holdResponses()`. */
  releaseResponses(): void;
  /** Write one response; false when there is no room now (retry later). */
  writeResponse(parts: readonly Uint8Array[]): boolean | Promise<boolean>;
  /**
   * Capability of transports that write synchronously (SHM): write one event
   * now, copying the parts before returning; false when there is no room.
   */
  writeEventNow?(parts: readonly Uint8Array[]): boolean;
  /** Write one event (and its notification); false when there is no room now. */
  writeEvent(parts: readonly Uint8Array[]): boolean | Promise<boolean>;
  /** libqb's flow-control value the client reads before each send (0 open, 1 or 2 closed). */
  flowControl: number;
  /** Events written but not yet read by the client. */
  readonly unreadEvents: number;
  /** Remove every file and socket; idempotent. */
  close(): void;
}

/** A client connection's transport. */
export interface ClientTransport {
  /** `shm` or `socket`. */
  readonly kind: "shm" | "socket";
  /** The server's flow-control value (0 open; 1 or 2: back off). */
  readonly flowControl: number;
  /** Whether the server still holds the connection (SHM: request ring ref_count 2). */
  readonly attached: boolean;
  /** Write one request (and its notification); false when there is no room now. */
  send(parts: readonly Uint8Array[]): boolean | Promise<boolean>;
  /**
   * The next response, checked (an untrusted server's bytes) and its payload
   * copied out: into the buffer `into()` returns when it is taken, if it
   * fits there. Rejects with the `gone` reason once the connection ends.
   */
  nextResponse(into?: () => Uint8Array | undefined): Promise<QbMessage>;
  /**
   * Capability of transports that can read without waiting: the next
   * response if one is there now (as nextResponse), undefined if none.
   */
  takeResponse?(into?: Uint8Array): QbMessage | undefined;
  /**
   * Capability of transports that batch the requests of one turn of the
   * event loop (SHM): send them now.
   */
  flush?(): void;
  /**
   * Capability of batching transports: true while the server answers as
   * requests arrive, in parallel with this client (another CPU): requests
   * should then go out as soon as each response makes room, not in batches.
   */
  readonly serverRunsAlongside?: boolean;
  /** The next event, as nextResponse. */
  nextEvent(): Promise<QbMessage>;
  /**
   * Aborted when the connection ends: with a PeerGoneError when the server
   * closed it, otherwise by close(). Waits end with it (one signal for the
   * connection's life, rather than a race per wait that would keep every
   * result alive until the end).
   */
  readonly gone: AbortSignal;
  /** Detach (unmap, close sockets; the socket transport also removes its control file, as libqb's client). */
  close(): void;
  /** After close: remove the files a dead server left behind (as libqb's client does). */
  removeDeadServerFiles(): void;
}
