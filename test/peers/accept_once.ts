/**
 * Child process for the process-lifetime tests: listens on the abstract
 * name in argv[2], prints READY, and waits for one connection. argv[3]:
 *   "ref"    (default) the pending accept keeps the process alive;
 *   "unref"  the listener is unref'd: the process may exit while it waits;
 *   "abort"  the accept is aborted after 50 ms: nothing is left to wait for;
 *   "close"  the listener is closed after 50 ms: likewise.
 * (No top-level await: Bun 1.4.4 keeps a process alive on an unsettled
 * top-level await by itself.)
 */
import { UnixListener } from "../../src/unix/index.ts";

const [name, mode = "ref"] = process.argv.slice(2);
const server = UnixListener.listen(`\0${name}`);
if (mode === "unref") server.unref();
const ac = new AbortController();
server.accept({ signal: ac.signal }).then(
  (conn) => {
    console.log("accepted");
    conn.close();
    server.close();
  },
  (error) => console.log(`rejected ${error?.name ?? error}`),
);
if (mode === "abort") setTimeout(() => ac.abort(new Error("aborted")), 50);
if (mode === "close") setTimeout(() => server.close(), 50);
console.log("READY");
