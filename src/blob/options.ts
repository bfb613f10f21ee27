/**
 * Option parsing shared by the blob layer: valibot schemas whose first
 * issue becomes a QbunArgumentError naming the offending key.
 * @module
 */
import * as v from "valibot";
import { QbunArgumentError } from "../../ffi/errors.ts";

/** Parse `input` with `schema`, or throw a QbunArgumentError like `what.key: message`. */
export function parsed<S extends v.GenericSchema>(schema: S, input: unknown, what: string): v.InferOutput<S> {
  const result = v.safeParse(schema, input);
  if (result.success) return result.output;
  const issue = result.issues[0];
  const key = issue.path?.map((p) => String(p.key)).join(".");
  throw new QbunArgumentError(`${what}${key ? `.${key}` : ""}: ${issue.message}`);
}
