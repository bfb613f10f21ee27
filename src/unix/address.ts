/**
 * AF_UNIX addresses: filesystem paths, and abstract names in both forms seen
 * in the wild — the short form (address length = name length; Node, Bun,
 * systemd) and libqb's padded form (name NUL-padded to the full 108-byte
 * `sun_path`; the two forms name *different* sockets).
 * @module
 */
import { QbunArgumentError } from "../../ffi/errors.ts";

/** Size of `struct sockaddr_un` on Linux: 2-byte family + 108-byte path. */
export const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_MAX = 108;
const AF_UNIX = 1;

/** A socket address as qbun reports it. */
export type UnixAddress =
  | { readonly kind: "path"; readonly path: string }
  | {
      readonly kind: "abstract";
      /** The name without the leading NUL (padding NULs removed when `padded`). */
      readonly name: string;
      /** libqb's full-length form (address length 110). */
      readonly padded: boolean;
    }
  | { readonly kind: "unnamed" };

/**
 * What a user may pass as an address:
 * - `"/run/x.sock"` or `{ path }`: a filesystem socket;
 * - `"\0name"` or `{ abstract: "name" }`: a short-form abstract name;
 * - `{ abstract: "name", padded: true }`: libqb's full-length abstract name;
 * - a {@link UnixAddress} qbun reported, such as a datagram's `from`.
 */
export type AddressInput =
  | string
  | { readonly path: string }
  | { readonly abstract: string | Uint8Array; readonly padded?: boolean }
  | UnixAddress;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The encoded form: the sockaddr bytes and the address length to pass. */
export interface EncodedAddress {
  readonly bytes: Uint8Array;
  readonly length: number;
  /** A printable form for error messages (`@name` for abstract). */
  readonly display: string;
  /** The filesystem path, when it is one. */
  readonly path?: string;
}

/** Check and encode an address; throws {@link QbunArgumentError} before any syscall. */
export function encodeAddress(input: AddressInput): EncodedAddress {
  const bytes = new Uint8Array(SOCKADDR_UN_SIZE);
  bytes[0] = AF_UNIX;
  if (typeof input === "string") {
    input = input.startsWith("\0") ? { abstract: input.slice(1) } : { path: input };
  } else if ("kind" in input) {
    // An address qbun reported (e.g. a datagram's `from`), passed back in.
    if (input.kind === "unnamed") throw new QbunArgumentError("an unnamed socket has no address to send to or bind");
    input = input.kind === "path" ? { path: input.path } : { abstract: input.name, padded: input.padded };
  }
  if ("path" in input) {
    const path = input.path;
    if (path.length === 0) throw new QbunArgumentError("socket path is empty");
    if (path.includes("\0")) throw new QbunArgumentError(`socket path contains a NUL byte: ${JSON.stringify(path)}`);
    const raw = encoder.encode(path);
    if (raw.length > SUN_PATH_MAX - 1) {
      throw new QbunArgumentError(
        `socket path is ${raw.length} bytes; AF_UNIX allows at most ${SUN_PATH_MAX - 1}: use a shorter path or an abstract name`,
      );
    }
    bytes.set(raw, 2);
    return { bytes, length: 2 + raw.length + 1, display: path, path };
  }
  const raw = typeof input.abstract === "string" ? encoder.encode(input.abstract) : input.abstract;
  if (raw.length > SUN_PATH_MAX - 1) {
    throw new QbunArgumentError(
      `abstract socket name is ${raw.length} bytes; at most ${SUN_PATH_MAX - 1} fit after the leading NUL`,
    );
  }
  bytes.set(raw, 3);
  const display = `@${decoder.decode(raw)}`;
  return { bytes, length: input.padded ? SOCKADDR_UN_SIZE : 3 + raw.length, display };
}

/** Decode `length` bytes of a `sockaddr_un` returned by the kernel. */
export function decodeAddress(bytes: Uint8Array, length: number): UnixAddress {
  if (length <= 2) return { kind: "unnamed" };
  const end = Math.min(length, SOCKADDR_UN_SIZE);
  if (bytes[2] !== 0) {
    let stop = 2;
    while (stop < end && bytes[stop] !== 0) stop++;
    return { kind: "path", path: decoder.decode(bytes.subarray(2, stop)) };
  }
  const padded = end === SOCKADDR_UN_SIZE;
  let stop = end;
  if (padded) while (stop > 3 && bytes[stop - 1] === 0) stop--;
  return { kind: "abstract", name: decoder.decode(bytes.subarray(3, stop)), padded };
}

/** A printable form of a decoded address. */
export function formatAddress(address: UnixAddress): string {
  switch (address.kind) {
    case "path":
      return address.path;
    case "abstract":
      return `@${address.name}${address.padded ? " (padded)" : ""}`;
    case "unnamed":
      return "(unnamed)";
  }
}
