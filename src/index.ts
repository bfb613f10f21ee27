/**
 * qbun: Bun-native Linux local IPC. Re-exports every public module; the
 * subpaths (`qbun/unix`, `qbun/shm`, `qbun/qb`, `qbun/blob`, `qbun/lease`) give
 * the same names per module.
 * @module
 */
export * from "./unix/index.ts";
export * from "./shm/index.ts";
export * from "./qb/index.ts";
export * from "./blob/index.ts";
export * from "./lease/index.ts";
export { UnsupportedPlatformError, platformProblem } from "../ffi/platform.ts";
export type { PlatformInfo } from "../ffi/platform.ts";
