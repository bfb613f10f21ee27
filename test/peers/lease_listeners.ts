/**
 * Runs in its own process, because it needs errors to go uncaught.
 *
 *   lease_listeners.ts throwing   every kind of listener throws; prints what the process saw as JSON
 *   lease_listeners.ts idle       holds a long lease and returns: the process must exit by itself
 */
import { CapabilityPolicy, LeaseOwner } from "../../src/lease/index.ts";

const mode = process.argv[2];

if (mode === "idle") {
  const owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
  owner.createRegion("state", { size: 8 });
  const client = owner.connect();
  const lease = await client.acquire("memory-write", { ttlMs: 60_000 });
  console.log(JSON.stringify({ token: lease.token }));
  // nothing else to do: a pending lease expiry must not keep the process alive for a minute
} else if (mode === "throwing") {
  const uncaught: string[] = [];
  process.on("uncaughtException", (error) => uncaught.push(String(error)));
  const owner = new LeaseOwner({ policy: CapabilityPolicy.allowAll() });
  owner.createRegion("state", { size: 8 });
  const client = owner.connect();
  const heard: string[] = [];
  const sub = await client.subscribe("state");
  client.onLeaseEvent(() => { throw new Error("from onLeaseEvent"); });
  client.onLeaseEvent((e) => heard.push(`lease ${e.event}`)); // a later listener still hears it
  sub.onWrite(() => { throw new Error("from onWrite"); });
  sub.onWrite(() => heard.push("write"));
  sub.onInvalidate(() => { throw new Error("from onInvalidate"); });
  sub.onEpoch(() => { throw new Error("from onEpoch"); });
  sub.onEpoch((epoch) => heard.push(`epoch ${epoch}`));
  const lease = await client.acquire("memory-write", { ttlMs: 60_000 });
  lease.onLost(() => { throw new Error("from onLost"); });
  await client.write("state", 0, Uint8Array.of(1), lease.token);
  await sub.nextWrite({ after: 0 });
  const next = sub.nextEpoch();
  owner.replaceRegion("state", {});
  await next;
  await lease.release();
  const again = await client.acquire("memory-write", { ttlMs: 60_000 }); // the connection is still there
  await client.write("state", 0, Uint8Array.of(2), again.token);
  await sub.nextWrite({ after: 0 });
  await Bun.sleep(10);
  console.log(JSON.stringify({ uncaught: uncaught.sort(), heard, closed: client.closed, value: (await sub.read(0, 1)).bytes[0] }));
  client.close();
  owner.close();
}
