// The service worker only wires listeners; the work is in lib/. It may be stopped at
// any moment: everything it knows lives in chrome.storage.local.
import * as api from "./lib/api.js";
import { enqueue, eraseInstall, flush, newEvent, pending } from "./lib/queue.js";
import { followsNote, newCount } from "./lib/render.js";
import { keepForReader, read, readerOf, tracking, withInstallLock } from "./lib/settings.js";

const storage = chrome.storage.local;
const FLUSH_ALARM = "flush";
const BADGE_ALARM = "badge";
const FOR_YOU_TTL_MS = 10 * 60_000;
// Passive signals stop while tracking is paused; explicit actions still count.
const PASSIVE = new Set(["impression", "view", "read", "click"]);

// The install, registered once however many ask at the same moment (onInstalled, the
// popup, the options page, a Hugging Face list, the queue): the first call registers,
// every other one awaits that same registration (two would leave orphan installs on the
// service, one token kept, the others' readers lost). Under the install lock: a new
// service URL, a deletion or an unlink waits for it, and it for them.
let installing = null;

function ensureInstall() {
  installing ??= withInstallLock(async () => {
    const settings = await read(storage, ["backendUrl", "token"]);
    if (settings.token) return settings;
    const install = await api.register(settings.backendUrl);
    await storage.set({ token: install.token, userId: install.user_id });
    return { ...settings, token: install.token };
  }).finally(() => {
    installing = null;
  });
  return installing;
}

// The service no longer knows this token (its reader deleted, from another linked browser
// too): forget it and everything kept of its reader, the events not yet sent included
// (they are that reader's, whose data was erased: sent again, they would start a new
// reader with part of it), unless a new token replaced it meanwhile; the next use
// registers anew. Whatever met the 401 (the queue, the popup, the badge) comes here.
function forgetToken(token) {
  return withInstallLock(async () => {
    const { token: current } = await read(storage, ["token"]);
    if (current === token) await eraseInstall(storage);
  });
}

const unknownToken = (error) => error?.status === 401;

// One delivery at a time. A request that comes while one is under way (an event queued
// after its last look at the queue, the network back, a flush asked) runs once more after
// it, forced if any of them asked so: none waits for the alarm.
let delivering = null;
let again = null;

function deliver(force = false) {
  if (delivering) {
    again = { force: force || Boolean(again?.force) };
    return delivering;
  }
  delivering = (async () => {
    let result = await deliverOnce(force);
    while (again) {
      const next = again;
      again = null;
      result = await deliverOnce(next.force);
    }
    return result;
  })().finally(() => {
    delivering = null;
  });
  return delivering;
}

async function deliverOnce(force) {
  try {
    const settings = await ensureInstall();
    return await flush(
      storage,
      async (batch) => {
        try {
          return await api.sendEvents(settings.backendUrl, settings.token, batch);
        } catch (error) {
          // Unknown token (data deleted elsewhere): register anew on the next try.
          if (unknownToken(error)) await forgetToken(settings.token);
          throw error;
        }
      },
      { force },
    );
  } catch (error) {
    return { sent: 0, error: error.kind ?? "network" };
  }
}

async function track(message, sender) {
  const settings = await read(storage, ["paused", "sites"]);
  // A content script on a paper site (the popup and the options page, even when open in
  // a tab, are the extension's own pages: the reader's explicit actions).
  const fromPage = Boolean(sender.tab) && !(sender.url ?? "").startsWith(chrome.runtime.getURL(""));
  const events = [];
  for (const item of message.events ?? []) {
    if (fromPage && !tracking(settings, message.site ?? null)) continue;
    if (!fromPage && settings.paused && PASSIVE.has(item.type)) continue;
    const { type, paper_id: paperId, ...extra } = item;
    events.push(newEvent(type, paperId, { source: message.site ?? "popup", ...extra }));
  }
  if (events.length === 0) return { queued: 0 };
  const result = await enqueue(storage, events);
  deliver();
  return result;
}

async function updateBadge() {
  const settings = await read(storage, ["backendUrl", "token", "seenFeedIds", "openedAt"]);
  if (!settings.token) return;
  try {
    const feed = await api.getFeed(settings.backendUrl, settings.token, 20);
    const count = newCount(feed.items, settings.seenFeedIds, settings.openedAt);
    await chrome.action.setBadgeText({ text: count ? String(count) : "" });
    // The badge's tooltip: "3 new papers from authors you follow", when some are.
    const note = followsNote(feed.items, settings.seenFeedIds, settings.openedAt);
    await chrome.action.setTitle({ title: note ? `paperfeed: ${note}` : "paperfeed" });
    // When the badge last reflected the feed (the options page and tests read it).
    await storage.set({ badgeCheckedAt: Date.now() });
  } catch (error) {
    // offline: keep the badge as it is
    if (unknownToken(error)) await forgetToken(settings.token);
  }
}

async function forYou() {
  const settings = await read(storage, ["backendUrl", "forYou"]);
  const cached = settings.forYou;
  if (cached && Date.now() - cached.at < FOR_YOU_TTL_MS) return cached;
  const { token } = await ensureInstall();
  const reader = await readerOf(storage, token);
  let feed;
  try {
    feed = await api.getFeed(settings.backendUrl, token, 50);
  } catch (error) {
    if (unknownToken(error)) await forgetToken(token);
    throw error;
  }
  const picked = feed.items.slice(0, 15).map((i) => ({ id: i.paper.id, reason: i.reasons[0] ?? "" }));
  const fresh = { at: Date.now(), papers: picked };
  await keepForReader(storage, reader, { forYou: fresh });
  return fresh;
}

const handlers = {
  track,
  flush: () => deliver(true),
  "feed-seen": async (message) => {
    // Only for the reader whose feed was seen (not one forgotten since).
    const seen = { seenFeedIds: message.ids ?? [], openedAt: Date.now() / 1000 };
    if (!(await keepForReader(storage, message.reader ?? {}, seen))) return { ok: false };
    await chrome.action.setBadgeText({ text: "" });
    await chrome.action.setTitle({ title: "paperfeed" });
    return { ok: true };
  },
  "for-you": () => forYou(),
  forget: (message) => forgetToken(message.token).then(() => ({ ok: true })),
  install: () => ensureInstall().then((s) => ({ token: s.token, backendUrl: s.backendUrl })),
};

chrome.runtime.onMessage.addListener((message, sender, respond) => {
  const handler = handlers[message?.kind];
  if (!handler) return false;
  handler(message, sender).then(respond, (error) => respond({
    error: error.kind ?? String(error), detail: error.detail ?? "", retryAfterMs: error.retryAfterMs ?? 0,
  }));
  return true; // the answer comes asynchronously
});

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === FLUSH_ALARM) deliver();
  if (alarm.name === BADGE_ALARM) updateBadge();
});

chrome.runtime.onInstalled.addListener((details) => {
  ensureInstall().catch(() => {});
  // First run: a page offers to import a library, paste arXiv ids or pick topics
  // (skipping is one click), so that the popup's first feed is already the reader's.
  if (details?.reason === "install") {
    chrome.tabs.create({ url: chrome.runtime.getURL("welcome/welcome.html") }).catch(() => {});
  }
});
chrome.runtime.onStartup.addListener(() => deliver(true));
self.addEventListener("online", () => deliver(true));

// Every start of the service worker sends what waits in the queue, not only onStartup
// (which not every browser start fires, and the alarm is a minute away). The first start
// of a browser session (chrome.storage.session is empty then: a browser start, or the
// extension installed, updated or reloaded) sends at once whatever the backoff says:
// the service may have come back meanwhile. Later starts (the worker is stopped when
// idle and started again by an event) keep the backoff.
async function flushOnStart() {
  const { started } = await chrome.storage.session.get("started");
  if (!started) await chrome.storage.session.set({ started: Date.now() });
  if ((await pending(storage)).length) deliver(!started);
}
flushOnStart();

chrome.alarms.get(FLUSH_ALARM).then((alarm) => {
  if (!alarm) chrome.alarms.create(FLUSH_ALARM, { periodInMinutes: 1 });
});
chrome.alarms.get(BADGE_ALARM).then((alarm) => {
  if (!alarm) chrome.alarms.create(BADGE_ALARM, { periodInMinutes: 30 });
});
