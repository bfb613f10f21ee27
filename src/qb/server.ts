/**
 * A libqb-compatible IPC server: existing `qb_ipcc_*` clients (libqb 2.x)
 * connect to it unchanged, over shared-memory rings or datagram sockets.
 * @module
 */
import { chmodSync, chownSync, existsSync, mkdtempSync, rmdirSync } from "node:fs";
import { QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
import { UnixListener, type Credentials, type UnixStream } from "../unix/index.ts";
import {
  QbConnection,
  type AccessLevel,
  type ConnectionInfo,
  type ConnectionPolicy,
  type QbHandler,
} from "./connection.ts";
import { ShmServerTransport } from "./shm-transport.ts";
import { libqbAbstract } from "./socket-names.ts";
import { SocketServerTransport } from "./socket-transport.ts";
import type { ServerTransport, TransportSetup } from "./transport.ts";
import {
  CONNECTION_REQUEST_SIZE,
  CONNECTION_RESPONSE_SIZE,
  type ConnectionResponse,
  ConnectionType,
  encodeConnectionResponse,
  MIN_MAX_MSG_SIZE,
  parseConnectionRequest,
} from "./wire.ts";

/** libqb's rate limits (`qb_ipcs_request_rate_limit`). */
export type RateLimit = "fast" | "normal" | "slow" | "off" | "off2";

const RATE: Record<RateLimit, { batch: number; flowControl: number }> = {
  fast: { batch: 50, flowControl: 0 },
  normal: { batch: 5, flowControl: 0 },
  slow: { batch: 1, flowControl: 0 },
  off: { batch: 1, flowControl: 1 },
  off2: { batch: 1, flowControl: 2 },
};

/** What `authenticate` may answer: an access level, "reject" (EACCES), or a negative errno to refuse with. */
export type AuthDecision = AccessLevel | "reject" | number;

/** Options for {@link QbServer.listen}. */
export interface QbServerOptions {
  /** Service name (the abstract socket name clients connect to). */
  name: string;
  /** Handles every request. */
  handler: QbHandler;
  /** `shm` (default; libqb's NATIVE on Linux) or `socket`. */
  transport?: "shm" | "socket";
  /** Decide on a connecting peer from its kernel credentials. Default: everyone read-write. */
  authenticate?: (peer: Credentials) => AuthDecision | Promise<AuthDecision>;
  /** Smallest max message size to negotiate (libqb's `qb_ipcs_enforce_buffer_size`). */
  maxMessageSize?: number;
  /** Largest max message size a client may ask for (default 64 MiB); above it the connection is refused with EMSGSIZE. */
  maxMessageSizeLimit?: number;
  /** Requests per wake-up, as libqb's rate limits (see {@link QbServer.setRateLimit}). Default `normal`. */
  rateLimit?: RateLimit;
  /** Unanswered requests per connection at which flow control closes (default 64; reopens at half). */
  flowControlHighWater?: number;
  /** Most responses and events queued per connection while the client does not read (default 1024). */
  maxQueued?: number;
  /**
   * Hand handlers request payloads in place in shared memory, valid only
   * during the handler's synchronous part (default false: a copy).
   */
  zeroCopyRequests?: boolean;
  /** Mode of each ring/control file (default 0o600, as libqb). */
  fileMode?: number;
  /**
   * Listen on a filesystem socket `<socketDir>/<name>` instead of the abstract
   * name. Default: as libqb, when `/etc/libqb/force-filesystem-sockets` exists.
   */
  filesystemSocket?: boolean;
  /** Directory for filesystem-socket mode (default `/tmp`, Debian's libqb SOCKETDIR). */
  socketDir?: string;
  /** Directory for per-connection files (default `/dev/shm`). */
  shmDir?: string;
  /** Close a connection that sends no connection request within this many ms (default 10 s). */
  handshakeTimeout?: number;
  /** Called once a connection is established. */
  onConnect?: (connection: QbConnection) => void;
  /** Called when a connection ends (`reason` undefined for a normal disconnect). */
  onDisconnect?: (connection: QbConnection, reason: unknown) => void;
  /** Errors that are not the caller's to catch: handler failures, corrupt peers, failed handshakes. */
  onError?: (error: unknown, connection?: QbConnection) => void;
}

/** Server-wide statistics (libqb's `qb_ipcs_stats`). */
export interface ServerStats {
  readonly activeConnections: number;
  readonly closedConnections: number;
}

const FORCE_FILESYSTEM_SOCKETS = "/etc/libqb/force-filesystem-sockets";
const EACCES = 13;
const EMSGSIZE = 90;

/**
 * A libqb IPC server.
 *
 * ```ts
 * await using server = await QbServer.listen({
 *   name: "my-service",
 *   handler: ({ id, payload }) => ({ data: payload }), // echo
 * });
 * server.broadcast(7, new TextEncoder().encode("hello, everyone"));
 * ```
 */
export class QbServer implements AsyncDisposable {
  /** The service name. */
  readonly name: string;
  /** `shm` or `socket`. */
  readonly transport: "shm" | "socket";
  /** Where clients connect: `@name` (abstract, padded) or a path. */
  readonly address: string;
  readonly #listener: UnixListener;
  readonly #options: QbServerOptions;
  readonly #policy: ConnectionPolicy;
  readonly #connections = new Map<number, QbConnection>();
  readonly #handshakes = new Set<UnixStream>();
  #nextId = 1;
  #closed = 0;
  /**
   * The next round of request handling, shared: as libqb's loop serves each
   * ready connection up to `batch` requests per poll, a backlogged
   * connection yields after its batch and all of them go on together after
   * one turn of the event loop (one per round, not one per connection).
   */
  #round: Promise<void> | undefined;
  #stopped = false;

  private constructor(listener: UnixListener, address: string, options: QbServerOptions) {
    this.#listener = listener;
    this.address = address;
    this.name = options.name;
    this.transport = options.transport ?? "shm";
    this.#options = options;
    const rate = RATE[options.rateLimit ?? "normal"];
    this.#policy = {
      handler: options.handler,
      batch: rate.batch,
      flowControlHighWater: options.flowControlHighWater ?? 64,
      maxQueued: options.maxQueued ?? 1024,
      zeroCopy: options.zeroCopyRequests ?? false,
      nextRound: () => (this.#round ??= new Promise<void>((resolve) => setImmediate(() => {
        this.#round = undefined;
        resolve();
      }))),
      onError: (error, connection) => this.#report(error, connection),
    };
  }

  /** Start listening. Rejects with EADDRINUSE when the name is taken. */
  static async listen(options: QbServerOptions): Promise<QbServer> {
    checkOptions(options);
    const filesystem = options.filesystemSocket ?? existsSync(FORCE_FILESYSTEM_SOCKETS);
    let listener: UnixListener;
    let address: string;
    if (filesystem) {
      address = `${options.socketDir ?? "/tmp"}/${options.name}`;
      listener = UnixListener.listen(address, { backlog: 128, mode: 0o777 });
    } else {
      address = `@${options.name}`;
      listener = UnixListener.listen(libqbAbstract(options.name), { backlog: 128 });
    }
    // Credentials for connections not yet accepted: the kernel attaches them then.
    listener.passCredentials = true;
    const server = new QbServer(listener, address, options);
    void server.#acceptLoop();
    return server;
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const setup of this.#listener) void this.#handshake(setup);
    } catch (error) {
      this.#report(error);
    }
  }

  async #handshake(setup: UnixStream): Promise<void> {
    // Accepted just before stop() closed the listener: stop() did not see it.
    if (this.#stopped) return void setup.close();
    this.#handshakes.add(setup);
    let dir: string | undefined;
    let transport: ServerTransport | undefined;
    let owned = false;
    try {
      setup.passCredentials = true;
      // A timer cleared once the request is in: AbortSignal.timeout's cannot
      // be, and at thousands of connections a second they pile up. stop()
      // ends this read by closing the socket.
      const timedOut = new AbortController();
      const timer = setTimeout(
        () => timedOut.abort(new DOMException("the client sent no connection request in time", "TimeoutError")),
        this.#options.handshakeTimeout ?? 10_000,
      );
      let received: Awaited<ReturnType<typeof readConnectionRequest>>;
      try {
        received = await readConnectionRequest(setup, timedOut.signal);
      } finally {
        clearTimeout(timer);
      }
      const { request, credentials } = received;
      // libqb closes without an answer when credentials or the id are missing.
      if (!credentials || !request) return void setup.close();
      const limit = this.#options.maxMessageSizeLimit ?? 64 * 1024 * 1024;
      const maxMessageSize = Math.max(request.maxMessageSize, this.#options.maxMessageSize ?? 0, MIN_MAX_MSG_SIZE);
      const shmDir = this.#options.shmDir ?? "/dev/shm";
      dir = mkdtempSync(`${shmDir}/qb-${process.pid}-${credentials.pid}-${setup.fd}-`);
      chmodSync(dir, 0o770);
      try {
        chownSync(dir, credentials.uid, credentials.gid);
      } catch {}
      let decision: AuthDecision = maxMessageSize > limit ? -EMSGSIZE : "read-write";
      if (decision === "read-write" && this.#options.authenticate) {
        const verdict = this.#options.authenticate(credentials);
        // A plain answer costs no extra turn; a promise (or any thenable) is awaited.
        decision = typeof verdict === "string" || typeof verdict === "number" ? verdict : await verdict;
        if (this.#stopped) throw new Error("server stopping"); // no files for a connection stop() will not see
      }
      if (!isAuthDecision(decision)) {
        this.#report(new TypeError(`authenticate answered ${String(decision)}, not "read-write", "read-only", "reject" or a negative errno: the client is refused`));
        decision = "reject"; // fail closed
      }
      if (typeof decision === "number" || decision === "reject") {
        const error = decision === "reject" ? -EACCES : decision < 0 ? decision : -EACCES;
        await answer(setup, { error, connectionType: 0, maxMessageSize: 0, request: "", response: "", event: "" });
        return;
      }
      const config: TransportSetup = {
        dir,
        service: this.name,
        maxMessageSize,
        uid: credentials.uid,
        gid: credentials.gid,
        mode: this.#options.fileMode ?? 0o600,
        setup,
      };
      try {
        transport = this.transport === "shm" ? new ShmServerTransport(config) : new SocketServerTransport(config);
      } catch (error) {
        const errno = error instanceof QbunSystemError ? error.errno : 12; /* ENOMEM */
        await answer(setup, { error: -errno, connectionType: 0, maxMessageSize: 0, request: "", response: "", event: "" });
        throw error;
      }
      const info: ConnectionInfo = {
        id: this.#nextId++,
        pid: credentials.pid,
        uid: credentials.uid,
        gid: credentials.gid,
        access: decision,
        transport: this.transport,
        maxMessageSize,
      };
      const { request: requestName, response: responseName, event: eventName } = transport.names;
      const answering = answer(setup, {
        error: 0,
        connectionType: this.transport === "shm" ? ConnectionType.SHM : ConnectionType.SOCKET,
        maxMessageSize,
        request: requestName,
        response: responseName,
        event: eventName,
      });
      if (answering) await answering;
      if (this.#stopped) throw new Error("server stopping");
      const connection = new QbConnection(info, transport, setup, this.#policy, (c, reason) => this.#closedConnection(c, reason));
      transport = undefined; // owned by the connection now, with the directory and the setup socket
      dir = undefined;
      owned = true;
      this.#handshakes.delete(setup);
      this.#connections.set(info.id, connection);
      this.#options.onConnect?.(connection);
      await connection.run();
    } catch (error) {
      if (!this.#stopped) this.#report(error);
    } finally {
      this.#handshakes.delete(setup);
      if (transport) transport.close();
      if (dir) {
        try {
          rmdirSync(dir);
        } catch {}
      }
      if (!owned) setup.close(); // an established connection closes its own setup socket
    }
  }

  #closedConnection(connection: QbConnection, reason: unknown): void {
    this.#connections.delete(connection.info.id);
    this.#closed++;
    if (reason !== undefined) this.#report(reason, connection);
    this.#options.onDisconnect?.(connection, reason);
  }

  #report(error: unknown, connection?: QbConnection): void {
    this.#options.onError?.(error, connection);
  }

  /** The established connections. */
  connections(): QbConnection[] {
    return [...this.#connections.values()];
  }

  /**
   * Send an event to every connection. Returns how many took it; a
   * connection whose queue is at its bound is skipped and reported to onError.
   */
  broadcast(id: number, data: Uint8Array | readonly Uint8Array[] = []): number {
    let sent = 0;
    for (const connection of this.#connections.values()) {
      try {
        connection.sendEvent(id, data);
        sent++;
      } catch (error) {
        this.#report(error, connection);
      }
    }
    return sent;
  }

  /**
   * Change the rate limit, as libqb's `qb_ipcs_request_rate_limit`: requests
   * handled per wake-up (fast 50, normal 5, slow/off/off2 1), and the
   * flow-control value of the connections that exist now ("off": 1, so every
   * libqb client backs off; "off2": 2, only clients that raised their
   * `fc_enable_max`; others: 0). Connections made later start open, as in libqb.
   */
  setRateLimit(rateLimit: RateLimit): void {
    const rate = RATE[rateLimit];
    if (!rate) throw new QbunArgumentError(`rate limit must be one of ${Object.keys(RATE).join(", ")}`);
    this.#policy.batch = rate.batch;
    for (const connection of this.#connections.values()) connection.forceFlowControl(rate.flowControl);
  }

  /** Active and closed connection counts. */
  stats(): ServerStats {
    return { activeConnections: this.#connections.size, closedConnections: this.#closed };
  }

  /**
   * Stop: no new connections; requests in flight are answered (for up to
   * `timeout` ms, default 5 s), then every connection is closed and all its
   * files and sockets removed.
   */
  async stop(options: { timeout?: number } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#listener.close();
    for (const setup of this.#handshakes) setup.close();
    const deadline = AbortSignal.timeout(options.timeout ?? 5000);
    await Promise.all([...this.#connections.values()].map((c) => c.drain(deadline).catch(() => {})));
    for (const connection of [...this.#connections.values()]) connection.close();
  }

  /** Same as {@link QbServer.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

function isAuthDecision(value: unknown): value is AuthDecision {
  return value === "read-write" || value === "read-only" || value === "reject" || Number.isInteger(value);
}

/** Every connection response is encoded here: the socket copies it at once, or it is written from a copy. */
const responseBuffer = new Uint8Array(CONNECTION_RESPONSE_SIZE);

/** Send a connection response; a promise only when the socket did not take it all at once. */
function answer(setup: UnixStream, response: ConnectionResponse): Promise<void> | undefined {
  const bytes = encodeConnectionResponse(response, responseBuffer);
  const sent = setup.tryWrite(bytes);
  return sent < bytes.byteLength ? setup.write(bytes.slice(sent)) : undefined;
}

/** Read the 24-byte connection request and the credentials that came with it. */
async function readConnectionRequest(setup: UnixStream, signal: AbortSignal) {
  const bytes = new Uint8Array(CONNECTION_REQUEST_SIZE);
  let got = 0;
  let credentials: Credentials | undefined;
  while (got < CONNECTION_REQUEST_SIZE) {
    const message = await setup.receiveMessage({ maxBytes: CONNECTION_REQUEST_SIZE - got, maxFds: 0, signal });
    if (message === null) return { request: null, credentials: undefined };
    credentials ??= message.credentials;
    bytes.set(message.data, got);
    got += message.data.byteLength;
  }
  return { request: parseConnectionRequest(bytes), credentials };
}

function checkOptions(options: QbServerOptions): void {
  if (typeof options.name !== "string" || options.name.length === 0 || options.name.includes("\0") || options.name.includes("/")) {
    throw new QbunArgumentError(`service name must be a non-empty string without "/" or NUL: ${JSON.stringify(options.name)}`);
  }
  if (new TextEncoder().encode(options.name).length > 106) throw new QbunArgumentError("service name longer than libqb's 106-byte limit");
  if (typeof options.handler !== "function") throw new QbunArgumentError("handler must be a function");
  if (options.transport !== undefined && options.transport !== "shm" && options.transport !== "socket") {
    throw new QbunArgumentError(`transport must be "shm" or "socket", not ${JSON.stringify(options.transport)}`);
  }
}
