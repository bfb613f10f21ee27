/**
 * A Bun blob peer in its own process, for the blob tests and benchmark.
 *
 *   bun blob_child.ts consume ADDRESS [--hold]
 *     connect a BlobChannel (accepting unsealed blobs); for each blob print
 *     one JSON line (id, size, sha256, metadata, sealed), then release it
 *     (--hold: keep it mapped).
 *   bun blob_child.ts produce ADDRESS BACKEND SIZE
 *     create a blob on BACKEND, fill it with random bytes, publish and send
 *     it; print its JSON (id, sha256); then wait to be killed.
 *   bun blob_child.ts idle-lease
 *     hold a blob with a one-hour lease and a pair of channels that have
 *     handed one blob over, print READY and return: the process must exit
 *     by itself.
 *   bun blob_child.ts abandon TIMEOUT_MS|none
 *     send a blob to a consumer that never answers (one end of a socket
 *     pair nobody reads), with that timeoutMs (or none), print READY, and
 *     when the delivery ends print RELEASED <outcome> or ABANDONED <code>.
 *     With a timeout the process must exit by itself once it passes.
 * Prints READY first.
 */
import { BlobAllocator, BlobChannel, type BlobBackend } from "../../src/blob/index.ts";
import { UnixSeqpacket } from "../../src/unix/index.ts";

const [mode, addressArg, ...rest] = process.argv.slice(2);
// "@name" (as the Python peers write it) is an abstract name.
const address = addressArg?.startsWith("@") ? `\0${addressArg.slice(1)}` : addressArg;
const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

if (mode === "consume") {
  const hold = rest.includes("--hold");
  // The tests hand over every backend: accept unsealed (posix, tempfile) blobs too.
  const channel = await BlobChannel.connect(address!, { requireSealed: false });
  console.log("READY");
  const kept = [];
  for await (const reader of channel) {
    console.log(JSON.stringify({ id: reader.id, size: reader.size, sealed: reader.sealed, metadata: reader.metadata, sha256: sha256(reader.view.slice()) }));
    if (hold) kept.push(reader);
    else reader.close();
  }
  console.log("END");
} else if (mode === "produce") {
  const [backend, size] = rest;
  const channel = await BlobChannel.connect(address!);
  const allocator = new BlobAllocator({ backend: backend as BlobBackend });
  console.log("READY");
  const writer = allocator.create(Number(size), { leaseMs: 600_000 });
  crypto.getRandomValues(writer.bytes.subarray(0, Math.min(writer.size, 65536)));
  writer.bytes.copyWithin(65536, 0); // beyond 64 KiB the pattern repeats
  const blob = writer.publish();
  const sent = sha256(blob.openReader().view.slice());
  await channel.send(blob, { metadata: { from: "bun-child" } });
  console.log(JSON.stringify({ id: blob.id, sha256: sent }));
  await new Promise(() => setInterval(() => {}, 1 << 30)); // keep running until killed
} else if (mode === "idle-lease") {
  const allocator = new BlobAllocator();
  const blob = allocator.create(4096, { leaseMs: 3_600_000 }).publish();
  const [a, b] = BlobChannel.pair();
  // One full round trip, so both channels have been read from; then they sit idle.
  const delivery = await a.send(blob);
  (await b.receive())!.close();
  await delivery.released;
  console.log("READY");
} else if (mode === "abandon") {
  const allocator = new BlobAllocator();
  const blob = allocator.create(4096, { leaseMs: 3_600_000 }).publish();
  const [end, silent] = UnixSeqpacket.pair();
  (globalThis as { silentConsumer?: unknown }).silentConsumer = silent; // kept open, never read
  const channel = new BlobChannel(end);
  const delivery = await channel.send(blob, addressArg === "none" ? {} : { timeoutMs: Number(addressArg) });
  console.log("READY");
  delivery.released.then(
    (outcome) => console.log(`RELEASED ${outcome}`),
    (error: { code?: string }) => console.log(`ABANDONED ${error.code}`),
  );
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
