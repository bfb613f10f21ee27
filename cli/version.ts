/**
 * qbun's version, read from package.json at bundle time (so the standalone
 * executable knows it without the file).
 * @module
 */
import pkg from "../package.json";

/** qbun's version, e.g. `"0.1.0"`. */
export const VERSION: string = pkg.version;
