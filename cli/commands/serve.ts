/**
 * `qbun serve`: run the interop test service on a libqb-compatible server
 * until SIGTERM or SIGINT, then stop cleanly (nothing left in /dev/shm).
 * @module
 */
import * as v from "valibot";
import { QbServer, interopAuthenticate, interopHandler, type QbServerOptions } from "../../src/qb/index.ts";
import { got, maxMessageSize, serviceName, uid } from "../args.ts";
import { loadHandlerModule, type HandlerContext } from "../handler-module.ts";
import { CliUsageError, errorMessage } from "../io.ts";
import { defineCommand } from "./command.ts";

/** The `serve` command. */
export const serve = defineCommand({
  name: "serve",
  summary: "Run a libqb-compatible server: the interop test service, or your handler module",
  description:
    "Listens as the libqb service NAME (abstract socket, or /tmp/NAME when\n" +
    "/etc/libqb/force-filesystem-sockets exists) and answers the interop service's requests\n" +
    "(ECHO, EVENTS, SIZED, ERROR, SLOW, WHOAMI) over shared memory or datagram sockets.\n" +
    'Prints "READY NAME" once it accepts connections; on SIGTERM or SIGINT it answers what is\n' +
    "in flight, removes every connection's files and exits 0.",
  flags: {
    service: { type: "string", value: "NAME", help: "Service name clients connect to (required)" },
    transport: { type: "string", value: "shm|socket", help: "Transport (default shm)" },
    "deny-uid": { type: "string", value: "N", help: "Reject clients with this uid, 0 to 4294967294 (EACCES)" },
    "ro-uid": { type: "string", value: "N", help: "Accept clients with this uid read-only, 0 to 4294967294" },
    "max-msg": { type: "string", value: "BYTES", help: "Smallest max message size to negotiate, 1 to 67108864 (64 MiB)" },
    handler: { type: "string", value: "FILE", help: "Serve this TypeScript/JavaScript handler module instead of the interop service" },
  },
  schema: v.strictObject({
    service: serviceName,
    transport: v.optional(v.picklist(["shm", "socket"], (issue) => `"shm" or "socket" ${got(issue)}`), "shm"),
    "deny-uid": v.optional(uid),
    "ro-uid": v.optional(uid),
    "max-msg": v.optional(maxMessageSize),
    handler: v.optional(v.pipe(v.string(), v.minLength(1, "a path to a handler module"))),
  }),
  async run(options, io) {
    const common = {
      name: options.service,
      transport: options.transport,
      maxMessageSize: options["max-msg"],
      onError: (error: unknown) => io.err(`qbun serve: ${errorMessage(error)}`),
    };
    let server: QbServer;
    if (options.handler !== undefined) {
      for (const flag of ["deny-uid", "ro-uid"] as const) {
        if (options[flag] !== undefined) throw new CliUsageError(`--${flag} applies to the interop service; with --handler, your module's authenticate(peer) decides`);
      }
      const mod = await loadHandlerModule(options.handler);
      let running: QbServer | undefined;
      const ctx: HandlerContext = {
        get server() {
          if (!running) throw new Error("the server is not listening yet");
          return running;
        },
        log: (text) => io.err(text),
      };
      const serverOptions: QbServerOptions = { ...common, handler: (request) => mod.onRequest(request, ctx) };
      if (mod.authenticate) serverOptions.authenticate = (peer) => mod.authenticate!(peer, ctx);
      if (mod.onConnect) serverOptions.onConnect = (connection) => mod.onConnect!(connection, ctx);
      if (mod.onDisconnect) serverOptions.onDisconnect = (connection, reason) => mod.onDisconnect!(connection, reason, ctx);
      server = running = await QbServer.listen(serverOptions);
    } else {
      server = await QbServer.listen({
        ...common,
        handler: interopHandler,
        authenticate: interopAuthenticate({ denyUid: options["deny-uid"], readOnlyUid: options["ro-uid"] }),
        // The interop handler reads every payload synchronously: it can take them in place.
        zeroCopyRequests: true,
      });
    }
    const { promise: stopped, resolve } = Promise.withResolvers<string>();
    const onSignal = (signal: string) => () => resolve(signal);
    const handlers = { SIGTERM: onSignal("SIGTERM"), SIGINT: onSignal("SIGINT") };
    for (const [signal, handler] of Object.entries(handlers)) process.on(signal, handler);
    io.out(`READY ${server.name}`);
    await stopped;
    for (const [signal, handler] of Object.entries(handlers)) process.off(signal, handler);
    await server.stop();
    return 0;
  },
});
