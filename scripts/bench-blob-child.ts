/**
 * The consumer side of scripts/bench-blob.ts, in its own Bun process.
 *
 *   bun scripts/bench-blob-child.ts @BLOB_NAME @STREAM_NAME QB_NAME
 *
 * - BlobChannel on BLOB_ADDR: every blob is received (mapped read-only; the
 *   channel acknowledges MAPPED), then released. A blob sent with metadata
 *   `{ measure: true }` is also read end to end twice (copyTo into an
 *   ordinary buffer) and compared with Uint8Array.set between two ordinary
 *   buffers of the same size; one line "READ {json}" is printed.
 * - UnixStream on STREAM_ADDR: frames of an 8-byte length and that many
 *   bytes, read into a buffer of the full size; answered with one byte.
 * - QbServer QB_NAME: a sink handler that answers every request empty, and
 *   takes the payload in place (zeroCopyRequests).
 * Prints READY once all three are up.
 */
import { BlobChannel } from "../src/blob/index.ts";
import { QbServer } from "../src/qb/index.ts";
import { UnixStream } from "../src/unix/index.ts";

// "@name" stands for the abstract name "\0name" (argv cannot carry NUL bytes).
const [blobAddr, streamAddr, qbName] = process.argv.slice(2).map((a) => (a.startsWith("@") ? `\0${a.slice(1)}` : a));
const QB_MAX = 64 * 1024 * 1024 + 4096;

const server = await QbServer.listen({
  name: qbName!,
  transport: "shm",
  handler: () => ({}),
  zeroCopyRequests: true,
  maxMessageSize: QB_MAX,
  maxMessageSizeLimit: QB_MAX,
});
const channel = await BlobChannel.connect(blobAddr!);
const stream = await UnixStream.connect(streamAddr!);
console.log("READY");
// The parent stops this process with SIGTERM: stop the server first, so its
// rings leave /dev/shm with it.
process.once("SIGTERM", () => {
  void server.stop().finally(() => process.exit(0));
});

const gbps = (bytes: number, ns: number) => bytes / ns; // bytes per ns = GB/s

async function serveBlobs(): Promise<void> {
  for await (const reader of channel) {
    if (reader.metadata.measure) {
      const target = new Uint8Array(reader.size);
      const other = new Uint8Array(reader.size);
      target.fill(1); // touch every page of the ordinary buffers first
      other.fill(2);
      let t = Bun.nanoseconds();
      reader.copyTo(target);
      const firstNs = Bun.nanoseconds() - t;
      t = Bun.nanoseconds();
      reader.copyTo(target);
      const secondNs = Bun.nanoseconds() - t;
      t = Bun.nanoseconds();
      other.set(target);
      const memcpyNs = Bun.nanoseconds() - t;
      console.log(`READ ${JSON.stringify({ size: reader.size, first: gbps(reader.size, firstNs), second: gbps(reader.size, secondNs), memcpy: gbps(reader.size, memcpyNs) })}`);
    }
    reader.close();
  }
}

async function serveStream(): Promise<void> {
  let buffer = new Uint8Array(0);
  const header = new Uint8Array(8);
  const view = new DataView(header.buffer);
  for (;;) {
    let got = 0;
    while (got < 8) {
      const n = await stream.readInto(header.subarray(got));
      if (n === 0) return;
      got += n;
    }
    const size = Number(view.getBigUint64(0, true));
    if (buffer.length < size) buffer = new Uint8Array(size);
    got = 0;
    while (got < size) {
      const n = await stream.readInto(buffer.subarray(got, size));
      if (n === 0) return;
      got += n;
    }
    await stream.write(header.subarray(0, 1));
  }
}

await Promise.race([serveBlobs(), serveStream()]);
stream.close();
channel.close();
await server.stop();
