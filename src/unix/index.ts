/**
 * `qbun/unix`: AF_UNIX stream, seqpacket and datagram sockets with path and
 * abstract addresses, fd passing (SCM_RIGHTS) and credentials.
 * @module
 */
export { decodeAddress, encodeAddress, formatAddress } from "./address.ts";
export type { AddressInput, UnixAddress } from "./address.ts";
export type { BindOptions } from "./bind.ts";
export type { ConnectOptions } from "./connect.ts";
export { UnixDatagram } from "./datagram.ts";
export { UnixListener } from "./listener.ts";
export type { ListenOptions } from "./listener.ts";
export { UnixSeqpacket } from "./seqpacket.ts";
export { ReceivedMessage, UnixSocket } from "./socket.ts";
export type { Credentials, ReceiveOptions, SendOptions, SocketType } from "./socket.ts";
export { UnixStream } from "./stream.ts";
export type { ArrivalHandlers, ReadOptions } from "./stream.ts";
export { OwnedFd } from "../../ffi/fd.ts";
export type { FdLike } from "../../ffi/fd.ts";
export { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
