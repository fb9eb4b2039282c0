import assert from "node:assert/strict";
import { test } from "node:test";

import { BATCH_SIZE, MAX_QUEUE, backoffDelay, enqueue, flush, newEvent, pending } from "../lib/queue.js";
import { ApiError, retryAfterMs } from "../lib/api.js";
import { memoryStorage } from "./chrome-stub.js";

const events = (n, type = "view") => Array.from({ length: n }, (_, i) => newEvent(type, `2401.0000${i % 10}`));

test("events get unique ids and unix-second timestamps", () => {
  const [a, b] = [newEvent("save", "2401.00001", {}, 1_700_000_000_000), newEvent("save", "2401.00001")];
  assert.notEqual(a.event_id, b.event_id);
  assert.equal(a.ts, 1_700_000_000);
  assert.equal(a.type, "save");
});

test("flush sends in batches and empties the queue", async () => {
  const storage = memoryStorage();
  await enqueue(storage, events(250));
  const sizes = [];
  const result = await flush(storage, async (batch) => sizes.push(batch.length));
  assert.deepEqual(sizes, [BATCH_SIZE, BATCH_SIZE, 50]);
  assert.equal(result.sent, 250);
  assert.equal((await pending(storage)).length, 0);
});

test("a failed send keeps every event and backs off; the retry delivers each id once", async () => {
  const storage = memoryStorage();
  const queued = events(120);
  await enqueue(storage, queued);
  let calls = 0;
  const failing = await flush(storage, async () => {
    calls += 1;
    if (calls === 2) throw Object.assign(new Error("down"), { kind: "offline" });
  }, { now: 1000 });
  assert.equal(failing.error, "offline");
  assert.equal(failing.sent, 100);
  assert.equal((await pending(storage)).length, 20);
  const waiting = await flush(storage, async () => assert.fail("must wait"), { now: 2000 });
  assert.equal(waiting.waiting, true);
  const delivered = [];
  await flush(storage, async (batch) => delivered.push(...batch.map((e) => e.event_id)), { now: 1000 + backoffDelay(1) });
  assert.deepEqual(delivered, queued.slice(100).map((e) => e.event_id));
});

test("events queued while a batch is in flight are not lost", async () => {
  const storage = memoryStorage();
  await enqueue(storage, events(3));
  const late = events(2, "save");
  const sent = [];
  await flush(storage, async (batch) => {
    sent.push(...batch);
    if (sent.length === 3) await enqueue(storage, late);
  });
  assert.equal(sent.length, 5);
  assert.equal((await pending(storage)).length, 0);
});

test("a batch the api refuses as malformed is dropped, not retried forever", async () => {
  const storage = memoryStorage();
  await enqueue(storage, events(5));
  const result = await flush(storage, async () => {
    throw Object.assign(new Error("400"), { kind: "rejected" });
  });
  assert.equal(result.sent, 0);
  assert.equal((await pending(storage)).length, 0);
});

test("the queue is capped, dropping the oldest events", async () => {
  const storage = memoryStorage();
  const first = events(MAX_QUEUE);
  await enqueue(storage, first);
  const result = await enqueue(storage, events(10, "save"));
  assert.equal(result.dropped, 10);
  const kept = await pending(storage);
  assert.equal(kept.length, MAX_QUEUE);
  assert.equal(kept[0].event_id, first[10].event_id);
  assert.equal(kept.at(-1).type, "save");
});

test("backoff doubles and is capped", () => {
  assert.equal(backoffDelay(1), 5000);
  assert.equal(backoffDelay(2), 10000);
  assert.equal(backoffDelay(30), 30 * 60_000);
});

test("a Retry-After longer than the backoff is honoured", async () => {
  const storage = memoryStorage();
  await enqueue(storage, events(2));
  const limited = await flush(storage, async () => {
    throw new ApiError("rate-limited", 429, "", retryAfterMs("60"));
  }, { now: 1000 });
  assert.equal(limited.error, "rate-limited");
  const early = await flush(storage, async () => assert.fail("must wait"), { now: 1000 + backoffDelay(1) });
  assert.equal(early.waiting, true);
  const sent = [];
  await flush(storage, async (batch) => sent.push(...batch), { now: 1000 + 60_000 });
  assert.equal(sent.length, 2);
  assert.equal(retryAfterMs(undefined), 0);
  assert.equal(retryAfterMs("nonsense"), 0);
});

test("enqueues at the same moment keep every event", async () => {
  const storage = memoryStorage();
  const batches = [events(1), events(1, "click"), events(1, "save"), events(2, "upvote")];
  await Promise.all(batches.map((batch) => enqueue(storage, batch)));
  const ids = (await pending(storage)).map((e) => e.event_id).sort();
  assert.deepEqual(ids, batches.flat().map((e) => e.event_id).sort());
});

test("events queued while a sent batch is removed stay queued", async () => {
  const storage = memoryStorage();
  await enqueue(storage, events(3));
  const late = events(4, "click");
  let first = true;
  const delivered = [];
  await flush(storage, async (batch) => {
    delivered.push(...batch.map((e) => e.event_id));
    if (!first) return;
    first = false;
    // While this batch is in flight, four events are queued one by one: the removal of
    // the batch must not overwrite them.
    await Promise.all(late.map((e) => enqueue(storage, [e])));
  }, { force: true });
  assert.deepEqual(await pending(storage), []);
  for (const e of late) assert.ok(delivered.includes(e.event_id), e.event_id);
  assert.equal(delivered.length, 7);
});
