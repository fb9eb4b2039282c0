// The event queue: persisted in chrome.storage.local, so a stopped service worker loses
// nothing. Events carry client-made ids; the api counts a replayed id once, so a batch
// that may or may not have arrived is simply sent again.

import { INSTALL_KEYS } from "./settings.js";

export const QUEUE_KEY = "queue";
export const STATE_KEY = "queueState";
export const MAX_QUEUE = 5000;
export const BATCH_SIZE = 100;
const BASE_DELAY_MS = 5_000;
const MAX_DELAY_MS = 30 * 60_000;

export function newEvent(type, paperId, extra = {}, now = Date.now()) {
  return {
    event_id: crypto.randomUUID(),
    paper_id: paperId,
    type,
    ts: now / 1000,
    ...extra,
  };
}

export async function pending(storage) {
  const got = await storage.get(QUEUE_KEY);
  return got[QUEUE_KEY] ?? [];
}

// Every change to the queue reads it, awaits, and writes it back: two at once (a popup
// click while a page reports a view, an event queued while a sent batch is removed)
// would overwrite each other. They take turns: through the Web Locks API across the
// extension's pages and its service worker, else (tests in Node) through one chain.
const LOCK = "paperfeed-queue";
let turn = Promise.resolve();

export function withQueueLock(change) {
  if (globalThis.navigator?.locks) return navigator.locks.request(LOCK, change);
  const mine = turn.then(change, change);
  turn = mine.catch(() => {});
  return mine;
}

// Everything this browser keeps of its reader, the events not yet sent too (their data
// deleted, here or from a linked browser), in turn with the queue's other changes; the
// caller holds the install lock.
export function eraseInstall(storage) {
  return withQueueLock(() => storage.remove([...INSTALL_KEYS, QUEUE_KEY, STATE_KEY]));
}

export function enqueue(storage, events) {
  return withQueueLock(async () => {
    const queue = (await pending(storage)).concat(events);
    // Past the cap the oldest events go first: recent behaviour says more.
    const dropped = Math.max(0, queue.length - MAX_QUEUE);
    await storage.set({ [QUEUE_KEY]: queue.slice(dropped) });
    return { queued: queue.length - dropped, dropped };
  });
}

export function backoffDelay(failures) {
  return Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.max(0, failures - 1));
}

async function state(storage) {
  const got = await storage.get(STATE_KEY);
  return got[STATE_KEY] ?? { failures: 0, nextAttemptAt: 0 };
}

function remove(storage, ids) {
  return withQueueLock(async () => {
    // Read again: events may have been queued while the batch was in flight.
    const queue = await pending(storage);
    await storage.set({ [QUEUE_KEY]: queue.filter((e) => !ids.has(e.event_id)) });
  });
}

// Send queued events in batches with `send(batch)`, which resolves when the api took
// them and rejects with an error whose `kind` is one of lib/api.js's kinds.
export async function flush(storage, send, { now = Date.now(), force = false } = {}) {
  const current = await state(storage);
  if (!force && now < current.nextAttemptAt) return { sent: 0, waiting: true };
  let sent = 0;
  for (;;) {
    const batch = (await pending(storage)).slice(0, BATCH_SIZE);
    if (batch.length === 0) break;
    try {
      await send(batch);
    } catch (error) {
      if (error.kind === "rejected") {
        // The api refused the batch as malformed: it will never be accepted.
        await remove(storage, new Set(batch.map((e) => e.event_id)));
        continue;
      }
      const failures = current.failures + 1;
      const delay = Math.max(backoffDelay(failures), error.retryAfterMs ?? 0);
      await storage.set({ [STATE_KEY]: { failures, nextAttemptAt: now + delay } });
      return { sent, error: error.kind ?? "network" };
    }
    await remove(storage, new Set(batch.map((e) => e.event_id)));
    sent += batch.length;
  }
  await storage.set({ [STATE_KEY]: { failures: 0, nextAttemptAt: 0 } });
  return { sent };
}
