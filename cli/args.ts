/**
 * valibot schemas for the arguments several commands share. Every message
 * says what is accepted and quotes what was given, so a usage error reads
 * `--timeout: milliseconds, a whole number from 1 to 3600000 (got "soon")`.
 * @module
 */
import * as v from "valibot";

/** `(got "x")`, for messages that quote the bad input. */
export const got = (issue: { input: unknown }) => `(got ${JSON.stringify(issue.input)})`;

/** A libqb service name: 1–106 bytes, no '/' or NUL (libqb's limit). */
export const serviceName = v.pipe(
  v.string((issue) => `a service name is required ${issue.input === undefined ? "" : got(issue)}`.trim()),
  v.minLength(1, "a service name of 1 to 106 bytes is required"),
  v.maxBytes(106, (issue) => `a service name of at most 106 bytes (libqb's limit) ${got(issue)}`),
  v.regex(/^[^/\0]+$/, (issue) => `a service name without '/' or NUL ${got(issue)}`),
);

/**
 * A decimal whole number in [min, max], given as text; outputs the number.
 * The range is checked on the text, so the message quotes what was typed
 * (`(got "99999999999999999999")`, not a rounded double).
 */
export function wholeNumber(what: string, min: number, max: number) {
  const accepted = `${what}, a whole number from ${min} to ${max}`;
  return v.pipe(
    v.string((issue) => `${accepted} ${got(issue)}`),
    v.regex(/^[+-]?\d+$/, (issue) => `${accepted} ${got(issue)}`),
    v.check((text) => {
      const n = Number(text);
      return Number.isSafeInteger(n) && n >= min && n <= max;
    }, (issue) => `${accepted} ${got(issue)}`),
    v.transform(Number),
  );
}

/** Milliseconds, 1 ms to one hour. */
export const milliseconds = wholeNumber("milliseconds", 1, 3_600_000);

/** A request id: libqb's header carries a signed 32-bit id. */
export const requestId = wholeNumber("a request id", -0x8000_0000, 0x7fff_ffff);

/** A uid as the kernel passes it: 0 to 2^32-2 (2^32-1 is the "no uid" value, (uid_t)-1). */
export const uid = wholeNumber("a uid", 0, 0xffff_fffe);

/** The largest max message size a qbun server accepts by default (QbServerOptions.maxMessageSizeLimit, 64 MiB). */
export const SERVER_MAX_MESSAGE_LIMIT = 64 * 1024 * 1024;

/** A max message size to negotiate, in bytes: 1 to 64 MiB (a server refuses larger ones with EMSGSIZE). */
export const maxMessageSize = wholeNumber("a max message size in bytes", 1, SERVER_MAX_MESSAGE_LIMIT);

/** An absolute directory path (`--shm-dir`, `--socket-dir`). */
export const absoluteDir = v.pipe(
  v.string((issue) => `an absolute directory path ${got(issue)}`),
  v.startsWith("/", (issue) => `an absolute directory path ${got(issue)}`),
);

/** `--json`: print one JSON document instead of text. */
export const jsonFlag = v.optional(v.boolean(), false);
