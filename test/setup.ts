import { setDefaultTimeout } from "bun:test";

// Interop tests start peers (Python, C programs): allow them time on a slow CI machine.
setDefaultTimeout(60_000);
