/**
 * valibot schemas for the arguments several commands share. Every message
 * says what is accepted, so a usage error reads "--timeout: a whole number
 * of milliseconds, 1 to 3600000 (got "soon")".
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

/** A decimal whole number in [min, max], given as text; outputs the number. */
export function wholeNumber(what: string, min: number, max: number) {
  const accepted = `${what}, a whole number from ${min} to ${max}`;
  return v.pipe(
    v.string(),
    v.regex(/^[+-]?\d+$/, (issue) => `${accepted} ${got(issue)}`),
    v.transform(Number),
    v.number(),
    v.check((n) => Number.isSafeInteger(n) && n >= min && n <= max, (issue) => `${accepted} ${got(issue)}`),
  );
}

/** Milliseconds, 1 ms to one hour. */
export const milliseconds = wholeNumber("milliseconds", 1, 3_600_000);

/** `--json`: print one JSON document instead of text. */
export const jsonFlag = v.optional(v.boolean(), false);
