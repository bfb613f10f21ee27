/**
 * The key that guards constructors users must not call (a `LeaseClient` is
 * made by `LeaseClient.connect` or `LeaseOwner.connect`). Not exported from
 * the package: only code in this module can pass it.
 * @module
 */

/** Passed as the first constructor argument by this module's own code. */
export const CONSTRUCT: unique symbol = Symbol("qbun.lease.construct");
