/**
 * Blob ids and lifecycle tokens. An id is 128 random bits. A token is the id
 * plus an HMAC of it under a per-allocator secret, so the allocator can tell
 * a forged token from a stale one without remembering every token it ever
 * issued (memory stays flat over millions of blobs).
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** `bytes` random bytes from the OS CSPRNG, as lowercase hex. */
export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

/** Length of an id in bytes (on the wire) and hex characters (in the API). */
export const ID_BYTES = 16;
const ID_RE = /^[0-9a-f]{32}$/;
const MAC_BYTES = 16;
const MAC_RE = /^[A-Za-z0-9_-]{22}$/;

/** Issues and checks tokens under one secret. */
export class TokenMinter {
  readonly #secret = randomBytes(32);

  /** A token for `id`. */
  mint(id: string): string {
    return `${id}.${this.#mac(id).toString("base64url")}`;
  }

  /** The id a token names, or a description of why it is not genuine. */
  verify(token: unknown): { id: string } | { problem: string } {
    if (typeof token !== "string") return { problem: `expected a string, got ${typeof token}` };
    const dot = token.indexOf(".");
    const id = token.slice(0, dot);
    if (dot !== 32 || !ID_RE.test(id)) return { problem: "malformed" };
    const mac = token.slice(dot + 1);
    // Exactly the 22 characters mint() writes: the decoder would skip stray ones.
    if (!MAC_RE.test(mac)) return { problem: "malformed" };
    // Compare the text, not the decoded bytes, so only the exact token mint() wrote is genuine.
    if (!timingSafeEqual(Buffer.from(mac), Buffer.from(this.#mac(id).toString("base64url")))) return { problem: "bad signature" };
    return { id };
  }

  #mac(id: string): Buffer {
    return createHmac("sha256", this.#secret).update(id).digest().subarray(0, MAC_BYTES);
  }
}
