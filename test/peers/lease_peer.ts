/**
 * A lease client in its own process, driven by JSON lines on stdin (one
 * reply line per command on stdout, after a first "READY" line).
 *
 *   {"op":"connect","address":"\u0000name"}
 *   {"op":"subscribe","endpoint":"e"}      maps it; checks every write notification with a consistent read
 *   {"op":"read-loop","endpoint":"e"}      starts reading the whole region continuously (yielding between bursts)
 *   {"op":"report","endpoint":"e"}         reads, torn reads, epochs seen, last value; stops the read loop
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
interface Watched {
  sub: Subscription;
  reads: number;
  torn: number;
  epochs: number[];
  last: number;
  errors: string[];
  /** The continuous reader: reads, torn reads, distinct values and epochs it saw, stale/contended retries. */
  loop?: { stop: boolean; done: Promise<void>; reads: number; torn: number; values: Set<number>; epochs: Set<number>; stale: number; contended: number };
}
const watched = new Map<string, Watched>();

/** Whether a copy is whole: every write fills the region with one value. */
const whole = (bytes: Uint8Array): boolean => {
  const first = bytes[0]!;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== first) return false;
  return true;
};

function check(endpoint: string): void {
  const state = watched.get(endpoint)!;
  try {
    const { bytes } = state.sub.readConsistent();
    state.reads++;
    if (!whole(bytes)) state.torn++;
    state.last = bytes[0]!;
  } catch (error) {
    // Stale: the new locator is on its way. Contended: the next write notification calls check() again.
    if (error instanceof LeaseError && (error.code === "ERR_QBUN_LEASE_STALE_EPOCH" || error.code === "ERR_QBUN_LEASE_CONTENDED")) return;
    state.errors.push(String(error));
  }
}

/** Read the whole region over and over while writes land, in bursts, yielding to the event loop between them. */
async function readLoop(state: Watched, loop: NonNullable<Watched["loop"]>): Promise<void> {
  let into = new Uint8Array(0);
  while (!loop.stop) {
    for (let burst = 0; burst < 16 && !loop.stop; burst++) {
      const view = state.sub.view;
      if (!view) {
        await state.sub.nextEpoch();
        continue;
      }
      if (into.length !== view.size) into = new Uint8Array(view.size);
      try {
        const { bytes, epoch } = view.readConsistent(0, view.size, { into });
        loop.reads++;
        if (!whole(bytes)) loop.torn++;
        loop.values.add(bytes[0]!);
        loop.epochs.add(epoch);
      } catch (error) {
        if (!(error instanceof LeaseError)) throw error;
        if (error.code === "ERR_QBUN_LEASE_STALE_EPOCH") loop.stale++;
        else if (error.code === "ERR_QBUN_LEASE_CONTENDED") {
          loop.contended++;
          const { bytes } = await state.sub.read(); // waits for the next write notification
          loop.reads++;
          if (!whole(bytes)) loop.torn++;
        } else throw error;
        break;
      }
    }
    await new Promise((resolve) => setImmediate(resolve));
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
    case "read-loop": {
      const state = watched.get(cmd.endpoint)!;
      const loop = { stop: false, done: Promise.resolve(), reads: 0, torn: 0, values: new Set<number>(), epochs: new Set<number>(), stale: 0, contended: 0 };
      loop.done = readLoop(state, loop).catch((error) => void state.errors.push(`read loop: ${error}`));
      state.loop = loop;
      return {};
    }
    case "report": {
      const s = watched.get(cmd.endpoint)!;
      // With "until": wait (on write notifications) until the write acknowledged as {epoch, sequence} has been seen.
      while (cmd.until && !(s.sub.lastWrite?.epoch === cmd.until.epoch && s.sub.lastWrite?.sequence === cmd.until.sequence)) {
        await s.sub.nextWrite();
      }
      check(cmd.endpoint);
      let loop;
      if (s.loop) {
        s.loop.stop = true;
        await s.loop.done;
        loop = { reads: s.loop.reads, torn: s.loop.torn, values: s.loop.values.size, epochs: [...s.loop.epochs].sort(), stale: s.loop.stale, contended: s.loop.contended };
      }
      return { reads: s.reads, torn: s.torn, epochs: s.epochs, last: s.last, errors: s.errors, epoch: s.sub.epoch, size: s.sub.locator?.size, closed: client!.closed ? String(client!.closeReason) : false, loop };
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
