/**
 * The capability policy: which peer may subscribe to which endpoint, take
 * which lease class, or write to which endpoint — decided on the peer's
 * credentials as the kernel reported them (SO_PEERCRED on the socket), never
 * on anything the peer says about itself.
 * @module
 */
import * as v from "valibot";
import { QbunArgumentError } from "../../ffi/errors.ts";
import type { Credentials } from "../unix/index.ts";
import { describeIssue } from "./protocol.ts";

/** What a peer asks to do. */
export type Capability = "subscribe" | "lease" | "write";

/** Decides one request: `resource` is the endpoint (subscribe, write) or the lease class (lease). */
export type PolicyDecision = (peer: Credentials, capability: Capability, resource: string) => boolean;

const ids = v.union([v.pipe(v.number(), v.integer(), v.minValue(0)), v.array(v.pipe(v.number(), v.integer(), v.minValue(0)))]);
const resources = v.union([v.literal("*"), v.array(v.pipe(v.string(), v.minLength(1)))]);

/** Schema of one rule of {@link PolicyConfig}. */
export const PolicyRuleSchema = v.strictObject({
  /** Which peers the rule is for; every given field must match (none given: everyone). */
  match: v.optional(v.strictObject({ uid: v.optional(ids), gid: v.optional(ids), pid: v.optional(ids) }), {}),
  /** Endpoints the peer may subscribe to. */
  subscribe: v.optional(resources),
  /** Lease classes the peer may acquire. */
  lease: v.optional(resources),
  /** Endpoints the peer may write to (it still needs the write lease). */
  write: v.optional(resources),
});

/** Schema of a {@link PolicyConfig}. */
export const PolicyConfigSchema = v.strictObject({
  /** Rules; a request is allowed if any matching rule allows it. */
  rules: v.array(PolicyRuleSchema),
});

/** One rule: who it is for, and what it allows. */
export type PolicyRule = v.InferInput<typeof PolicyRuleSchema>;
/** A capability policy as plain data (e.g. loaded from a JSON file). */
export type PolicyConfig = v.InferInput<typeof PolicyConfigSchema>;

function matches(want: number | number[] | undefined, got: number): boolean {
  return want === undefined || (Array.isArray(want) ? want.includes(got) : want === got);
}

/**
 * A capability policy. Build one from rules ({@link CapabilityPolicy.fromConfig}),
 * from a function, or use {@link CapabilityPolicy.allowAll} /
 * {@link CapabilityPolicy.sameUser}.
 *
 * ```ts
 * const policy = CapabilityPolicy.fromConfig({ rules: [
 *   { match: { uid: 1000 }, subscribe: "*", lease: ["memory-write"], write: ["state"] },
 *   { subscribe: ["state"] },                       // everyone may read "state"
 * ] });
 * ```
 */
export class CapabilityPolicy {
  readonly #decide: PolicyDecision;

  /** A policy deciding with `decide` (return true to allow). */
  constructor(decide: PolicyDecision) {
    this.#decide = decide;
  }

  /** Everything is allowed (only for sockets nobody else can reach). */
  static allowAll(): CapabilityPolicy {
    return new CapabilityPolicy(() => true);
  }

  /** Peers running as this process's uid (or root) may do everything; others nothing. */
  static sameUser(): CapabilityPolicy {
    const uid = process.getuid!();
    return new CapabilityPolicy((peer) => peer.uid === uid || peer.uid === 0);
  }

  /** A policy from rules; the config is validated first (QbunArgumentError naming the bad field). */
  static fromConfig(config: unknown): CapabilityPolicy {
    const parsed = v.safeParse(PolicyConfigSchema, config);
    if (!parsed.success) throw new QbunArgumentError(`invalid policy at ${describeIssue(parsed.issues, "(root)")}`);
    const rules = parsed.output.rules;
    return new CapabilityPolicy((peer, capability, resource) =>
      rules.some((rule) => {
        const m = rule.match;
        if (!matches(m.uid, peer.uid) || !matches(m.gid, peer.gid) || !matches(m.pid, peer.pid)) return false;
        const allowed = rule[capability];
        return allowed === "*" || (allowed !== undefined && allowed.includes(resource));
      }),
    );
  }

  /** Whether `peer` may use `capability` on `resource`. A throwing decision function counts as a refusal. */
  allows(peer: Credentials, capability: Capability, resource: string): boolean {
    try {
      return this.#decide(peer, capability, resource) === true;
    } catch {
      return false;
    }
  }
}
