/**
 * Exclusive, expiring leases per resource class with fencing tokens — the
 * owner's bookkeeping, free of I/O. A class is any application string
 * (`memory-write`, `input`, `power`). At most one holder per class; every
 * grant takes the next token from one counter, so a token seen later is
 * always larger, and a holder that lost its lease cannot pass for the new one.
 * The counter starts at the owner's wall clock in microseconds, so tokens
 * keep growing across owner restarts too (as long as the clock does not go
 * back and fewer than a million grants are made per second on average).
 * @module
 */

/** A holder's identity inside the owner (a session id). */
export type HolderId = number;

/** One granted lease. */
export interface Grant {
  readonly leaseClass: string;
  readonly holder: HolderId;
  /** Fencing token: grows with every grant of any class. */
  readonly token: number;
  /** Time-to-live of this grant in ms. */
  readonly ttlMs: number;
  /** When it runs out (ms since the epoch, owner clock). */
  expiresAt: number;
}

/** Why a lease ended. */
export type LeaseEndReason = "released" | "expired" | "revoked";

/** A queued acquire. */
export interface Waiter {
  readonly holder: HolderId;
  readonly ttlMs: number;
  /** Called once when the lease is granted to this waiter. */
  granted(grant: Grant): void;
}

/** Outcome of checking a (holder, token) pair against a class. */
export type TokenCheck = "ok" | "not-held" | "stale-token";

/** What the table tells its owner. */
export interface LeaseTableHooks {
  /** A lease ended (released, expired, or revoked because its holder went away). */
  ended(grant: Grant, reason: LeaseEndReason): void;
}

interface ClassState {
  grant: Grant | undefined;
  timer: Timer | undefined;
  readonly waiters: Waiter[];
}

/** Most acquires one class may have queued; further ones are refused as busy. */
export const MAX_WAITERS_PER_CLASS = 256;

/** The lease table of one owner. */
export class LeaseTable implements Disposable {
  readonly #classes = new Map<string, ClassState>();
  readonly #hooks: LeaseTableHooks;
  #lastToken: number;

  constructor(hooks: LeaseTableHooks, firstToken = Date.now() * 1000) {
    this.#hooks = hooks;
    this.#lastToken = firstToken - 1;
  }

  #state(leaseClass: string): ClassState {
    let state = this.#classes.get(leaseClass);
    if (!state) this.#classes.set(leaseClass, (state = { grant: undefined, timer: undefined, waiters: [] }));
    return state;
  }

  /** The current grant of a class, if any. */
  current(leaseClass: string): Grant | undefined {
    return this.#classes.get(leaseClass)?.grant;
  }

  /** Grant now if the class is free (and nobody queued earlier); undefined otherwise. */
  tryAcquire(leaseClass: string, holder: HolderId, ttlMs: number): Grant | undefined {
    const state = this.#state(leaseClass);
    if (state.grant || state.waiters.length > 0) return undefined;
    return this.#grant(leaseClass, state, holder, ttlMs);
  }

  /**
   * Queue a waiter (first come, first served); it is granted when the class
   * frees up. False (nothing queued) when {@link MAX_WAITERS_PER_CLASS} wait already.
   */
  enqueue(leaseClass: string, waiter: Waiter): boolean {
    const state = this.#state(leaseClass);
    if (state.waiters.length >= MAX_WAITERS_PER_CLASS) return false;
    state.waiters.push(waiter);
    if (!state.grant) this.#grantNext(leaseClass, state);
    return true;
  }

  /** Remove a queued waiter (cancelled or timed out); false if it was not queued. */
  dequeue(leaseClass: string, waiter: Waiter): boolean {
    const state = this.#classes.get(leaseClass);
    const at = state?.waiters.indexOf(waiter) ?? -1;
    if (at < 0) return false;
    state!.waiters.splice(at, 1);
    return true;
  }

  /** Whether `holder` holds `leaseClass` with exactly `token`, right now. */
  check(leaseClass: string, holder: HolderId, token: number, now = Date.now()): TokenCheck {
    const grant = this.#classes.get(leaseClass)?.grant;
    if (!grant || grant.holder !== holder) return "not-held";
    if (grant.token !== token) return "stale-token";
    // The timer may run late on a busy loop; the deadline is what counts.
    if (now >= grant.expiresAt) {
      this.#end(leaseClass, "expired");
      return "not-held";
    }
    return "ok";
  }

  /** Extend a held lease by `ttlMs` from now (same token). */
  renew(leaseClass: string, holder: HolderId, token: number, ttlMs: number): Grant | Exclude<TokenCheck, "ok"> {
    const check = this.check(leaseClass, holder, token);
    if (check !== "ok") return check;
    const state = this.#state(leaseClass);
    const grant = state.grant!;
    (grant as { ttlMs: number }).ttlMs = ttlMs;
    grant.expiresAt = Date.now() + ttlMs;
    this.#arm(leaseClass, state);
    return grant;
  }

  /** Give a held lease back. */
  release(leaseClass: string, holder: HolderId, token: number): TokenCheck {
    const check = this.check(leaseClass, holder, token);
    if (check === "ok") this.#end(leaseClass, "released");
    return check;
  }

  /** A holder went away: revoke everything it holds and drop its queued waiters. */
  dropHolder(holder: HolderId): void {
    for (const [leaseClass, state] of this.#classes) {
      for (let i = state.waiters.length - 1; i >= 0; i--) if (state.waiters[i]!.holder === holder) state.waiters.splice(i, 1);
      if (state.grant?.holder === holder) this.#end(leaseClass, "revoked");
    }
  }

  #grant(leaseClass: string, state: ClassState, holder: HolderId, ttlMs: number): Grant {
    const grant: Grant = { leaseClass, holder, token: ++this.#lastToken, ttlMs, expiresAt: Date.now() + ttlMs };
    state.grant = grant;
    this.#arm(leaseClass, state);
    return grant;
  }

  #arm(leaseClass: string, state: ClassState): void {
    clearTimeout(state.timer);
    const grant = state.grant!;
    state.timer = setTimeout(() => {
      if (state.grant === grant) this.#end(leaseClass, "expired");
    }, Math.max(0, grant.expiresAt - Date.now()));
    state.timer.unref(); // a lease alone must not keep the owner's process alive
  }

  #end(leaseClass: string, reason: LeaseEndReason): void {
    const state = this.#classes.get(leaseClass);
    const grant = state?.grant;
    if (!state || !grant) return;
    clearTimeout(state.timer);
    state.timer = undefined;
    state.grant = undefined;
    this.#hooks.ended(grant, reason);
    this.#grantNext(leaseClass, state);
  }

  #grantNext(leaseClass: string, state: ClassState): void {
    if (state.grant) return;
    const next = state.waiters.shift();
    if (!next) {
      // Forget idle classes so that peers naming many classes cannot grow the table.
      if (this.#classes.get(leaseClass) === state) this.#classes.delete(leaseClass);
      return;
    }
    next.granted(this.#grant(leaseClass, state, next.holder, next.ttlMs));
  }

  /** Stop every timer and forget all leases (the owner is closing). */
  close(): void {
    for (const state of this.#classes.values()) clearTimeout(state.timer);
    this.#classes.clear();
  }

  /** Same as {@link LeaseTable.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
