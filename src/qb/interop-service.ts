/**
 * The interop test service (ids 1–6: ECHO, EVENTS, SIZED, ERROR, SLOW,
 * WHOAMI) that every server in qbun's tests and benchmarks speaks, so one
 * client — qbun's or a real libqb client in C — can exercise any server.
 * @module
 */
import type { Credentials } from "../unix/index.ts";
import type { QbHandler, QbReply, QbRequest } from "./connection.ts";
import type { AuthDecision } from "./server.ts";

/** Request ids of the interop service. */
export const InteropId = { ECHO: 1, EVENTS: 2, SIZED: 3, ERROR: 4, SLOW: 5, WHOAMI: 6 } as const;

/** Authentication policy of the interop service. */
export interface InteropPolicy {
  /** Reject this uid (its connect fails with a permission error). */
  denyUid?: number;
  /** Accept this uid read-only. */
  readOnlyUid?: number;
}

const EINVAL = 22;

/** The service's request handler. */
export const interopHandler: QbHandler = (request: QbRequest): QbReply | Promise<QbReply> => {
  const { id, payload } = request;
  if (id === InteropId.ECHO) return { data: payload }; // the hot path: no view, no copy
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  switch (id) {
    case InteropId.EVENTS: {
      if (payload.byteLength < 8) return { error: -EINVAL };
      const count = view.getUint32(0, true);
      const size = view.getUint32(4, true);
      for (let k = 0; k < count; k++) {
        const event = new Uint8Array(size);
        for (let i = 0; i < size; i++) event[i] = (i + k) & 0xff;
        request.connection.sendEvent(InteropId.EVENTS, event);
      }
      return {};
    }
    case InteropId.SIZED: {
      if (payload.byteLength < 4) return { error: -EINVAL };
      const n = view.getUint32(0, true);
      const data = new Uint8Array(n);
      for (let i = 0; i < n; i++) data[i] = i & 0xff;
      return { data };
    }
    case InteropId.ERROR:
      if (payload.byteLength < 4) return { error: -EINVAL };
      return { error: view.getInt32(0, true) };
    case InteropId.SLOW: {
      if (payload.byteLength < 4) return { error: -EINVAL };
      const ms = view.getUint32(0, true);
      return Bun.sleep(ms).then(() => ({}));
    }
    case InteropId.WHOAMI: {
      const { uid, gid, pid, access } = request.connection.info;
      return { data: new TextEncoder().encode(JSON.stringify({ uid, gid, pid, readOnly: access === "read-only" })) };
    }
    default:
      return { error: -EINVAL };
  }
};

/** The service's authentication policy as an `authenticate` callback. */
export function interopAuthenticate(policy: InteropPolicy): (peer: Credentials) => AuthDecision {
  return (peer) => {
    if (policy.denyUid !== undefined && peer.uid === policy.denyUid) return "reject";
    if (policy.readOnlyUid !== undefined && peer.uid === policy.readOnlyUid) return "read-only";
    return "read-write";
  };
}
