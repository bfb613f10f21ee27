/**
 * `qbun/qb`: a libqb-compatible IPC server and client.
 * @module
 */
export { QbConnection, QueueFullError } from "./connection.ts";
export type { AccessLevel, ConnectionInfo, ConnectionStats, QbHandler, QbReply, QbRequest } from "./connection.ts";
export { RingCorruptError } from "./ring.ts";
export { QbServer } from "./server.ts";
export type { AuthDecision, QbServerOptions, RateLimit, ServerStats } from "./server.ts";
export { InteropId, interopAuthenticate, interopHandler } from "./interop-service.ts";
export type { InteropPolicy } from "./interop-service.ts";
export { QbClient, QbDisconnectedError } from "./client.ts";
export type { QbClientOptions, QbMessage, QbReceiveOptions, QbRequestOptions } from "./client.ts";
