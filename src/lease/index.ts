/**
 * `qbun/lease`: the leased write path. An owner serves named regions that
 * readers map read-only (a locator plus a read-only fd, replaced by epochs);
 * writers take an exclusive, expiring lease with a fencing token and send
 * each write to the owner, which checks it against a capability policy on
 * kernel credentials, applies it under a sequence lock, and audits it.
 * @module
 */
export { AuditLog } from "./audit.ts";
export type { AuditAction, AuditPeer, AuditRecord, AuditResult, AuditSink } from "./audit.ts";
export { Lease, LeaseClient, Subscription } from "./client.ts";
export type { AcquireOptions, LeaseEvent, SubscribeOptions, WriteAck, WriteOptions, WrittenEvent } from "./client.ts";
export { isLeaseErrorCode, LeaseError } from "./errors.ts";
export type { LeaseErrorCode } from "./errors.ts";
export { isValidName } from "./locator.ts";
export type { Locator, Segment } from "./locator.ts";
export { LeaseOwner, MAX_QUEUED_ACQUIRES_PER_CLIENT, MEMORY_WRITE } from "./owner.ts";
export { MAX_WAITERS_PER_CLASS } from "./lease.ts";
export type { LeaseOwnerOptions, LocalConnectOptions, OwnerListenOptions, RegionOptions, ReplaceOptions } from "./owner.ts";
export { CapabilityPolicy, PolicyConfigSchema, PolicyRuleSchema } from "./policy.ts";
export type { Capability, PolicyConfig, PolicyDecision, PolicyRule } from "./policy.ts";
export { MAX_WRITE_BYTES } from "./protocol.ts";
export { MAX_REGION_SIZE, READ_SPIN_MICROS, RegionView } from "./region.ts";
export type { ConsistentRead, ReadConsistentOptions } from "./region.ts";
export { ClosedError, QbunArgumentError, QbunSystemError } from "../../ffi/errors.ts";
