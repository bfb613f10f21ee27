/**
 * What both ends of libqb's socket transport share: the control file's
 * layout, libqb's way of naming abstract sockets, and gathering a message's
 * parts into one datagram.
 * @module
 */
import type { AddressInput } from "../unix/index.ts";

/** Control file int32 slots: {sent, flow_control} for request, response, event. */
export const Control = { REQUEST_SENT: 0, REQUEST_FC: 1, RESPONSE_SENT: 2, EVENT_SENT: 4 } as const;
/** The control file's size. */
export const CONTROL_SIZE = 24;

/** libqb names abstract sockets into sun_path + 1 with snprintf: at most 106 bytes. */
const ABSTRACT_NAME_MAX = 106;

/** libqb's padded abstract address for a name (truncated as libqb truncates it). */
export function libqbAbstract(name: string): AddressInput {
  const raw = new TextEncoder().encode(name).subarray(0, ABSTRACT_NAME_MAX);
  return { abstract: raw, padded: true };
}

