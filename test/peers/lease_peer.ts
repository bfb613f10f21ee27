/**
 * A lease client in its own process, driven by JSON lines on stdin (one
 * reply line per command on stdout, after a first "READY" line).
 *
 *   {"op":"connect","address":"\u0000name"}
 *   {"op":"subscribe","endpoint":"e"}      maps it; checks every write notification with a consistent read
 *   {"op":"report","endpoint":"e"}         reads, torn reads, epochs seen, last value
 *   {"op":"try-map-write","endpoint":"e"}  tries to map the received fd writable and to write through the JS view
 *   {"op":"acquire","leaseClass":"c","ttlMs":n}
 *   {"op":"write","endpoint":"e","offset":n,"fill":n,"length":n,"token":n}
 *   {"op":"write-loop","endpoint":"e","count":n,"token":n}   fills the whole region with 1..count, in turn
 *
 * Every write fills a range with one byte value, so a reader that ever sees
 * two different values inside one consistent read has seen half a write.
 */
import { LeaseClient, LeaseError, type Subscription } from "../../src/lease/index.ts";
import { SharedMemory } from "../../src/shm/index.ts";

let client: LeaseClient | undefined;
const watched = new Map<string, { sub: Subscription; reads: number; torn: number; epochs: number[]; last: number; errors: string[] }>();

function check(endpoint: string): void {
  const state = watched.get(endpoint)!;
  try {
    const { bytes } = state.sub.readConsistent();
    state.reads++;
    const first = bytes[0]!;
    if (!bytes.every((b) => b === first)) state.torn++;
    state.last = first;
  } catch (error) {
    if (!(error instanceof LeaseError && error.code === "ERR_QBUN_LEASE_STALE_EPOCH")) state.errors.push(String(error));
  }
}

async function run(cmd: any): Promise<unknown> {
  switch (cmd.op) {
    case "connect":
      client = await LeaseClient.connect(cmd.address);
      return { pid: process.pid };
    case "subscribe": {
      const sub = await client!.subscribe(cmd.endpoint);
      const state = { sub, reads: 0, torn: 0, epochs: [sub.epoch], last: -1, errors: [] as string[] };
      watched.set(cmd.endpoint, state);
      sub.onEpoch((epoch) => {
        state.epochs.push(epoch);
        check(cmd.endpoint);
      });
      sub.onWrite(() => check(cmd.endpoint));
      check(cmd.endpoint);
      return { epoch: sub.epoch, size: sub.locator!.size };
    }
    case "report": {
      const s = watched.get(cmd.endpoint)!;
      // With "until": wait (on write notifications) until the write acknowledged as {epoch, sequence} has been seen.
      while (cmd.until && !(s.sub.lastWrite?.epoch === cmd.until.epoch && s.sub.lastWrite?.sequence === cmd.until.sequence)) {
        await s.sub.nextWrite();
      }
      check(cmd.endpoint);
      return { reads: s.reads, torn: s.torn, epochs: s.epochs, last: s.last, errors: s.errors, epoch: s.sub.epoch, size: s.sub.locator?.size, closed: client!.closed ? String(client!.closeReason) : false };
    }
    case "try-map-write": {
      const sub = watched.get(cmd.endpoint)!.sub;
      const view = sub.view!;
      using mem = SharedMemory.fromFd(view.fd);
      let mapWrite = "ok";
      try {
        mem.map({ access: "read-write" }).close();
      } catch (error: any) {
        mapWrite = error.code;
      }
      let jsWrite = "ok";
      try {
        view.mapping.bytes[0] = 1;
      } catch (error: any) {
        jsWrite = error.name;
      }
      return { mapWrite, jsWrite, readOnly: mem.readOnly };
    }
    case "acquire": {
      const lease = await client!.acquire(cmd.leaseClass, { ttlMs: cmd.ttlMs, wait: cmd.wait ?? true });
      return { token: lease.token };
    }
    case "write": {
      const ack = await client!.write(cmd.endpoint, cmd.offset, new Uint8Array(cmd.length).fill(cmd.fill), cmd.token);
      return { ack };
    }
    case "write-loop": {
      const size = cmd.size as number;
      let ack;
      for (let i = 1; i <= cmd.count; i++) ack = await client!.write(cmd.endpoint, 0, new Uint8Array(size).fill(i & 0xff), cmd.token);
      return { written: cmd.count, ack };
    }
    case "exit":
      client?.close();
      setTimeout(() => process.exit(0), 10);
      return {};
  }
  throw new Error(`unknown op ${cmd.op}`);
}

console.log("READY");
let queue = Promise.resolve();
let buffer = "";
for await (const chunk of Bun.stdin.stream()) {
  buffer += new TextDecoder().decode(chunk);
  let nl: number;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl);
    buffer = buffer.slice(nl + 1);
    const cmd = JSON.parse(line);
    queue = queue.then(async () => {
      try {
        console.log(JSON.stringify({ ok: true, ...(await run(cmd) as object) }));
      } catch (error: any) {
        console.log(JSON.stringify({ ok: false, code: error?.code, error: String(error) }));
      }
    });
  }
}
