/**
 * The C helper imported as a file (`import path from "./qbun.c" with { type:
 * "file" }`): Bun resolves it to the file's path (or its embedded `/$bunfs/…`
 * path in a compiled executable). Narrow on purpose: it declares only this
 * one file name, so it cannot clash with a consumer's own declarations.
 */
declare module "*/qbun.c" {
  const path: string;
  export default path;
}
