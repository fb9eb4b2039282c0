// The popup: the personalized feed, trending, the reader's library and search, with
// actions and keys. Every list shows the reader's own state of each paper (what the
// service says, then their actions still queued), so undo is one click after reopening.
import * as api from "../lib/api.js";
import {
  applyAction, keyAction, openUrl, paperState, toggle, trendingReasons, unseen, viewModel,
} from "../lib/render.js";
import { keepForReader, read, readerOf } from "../lib/settings.js";
import { QUEUE_KEY } from "../lib/queue.js";

const storage = chrome.storage.local;
const list = document.getElementById("list");
const status = document.getElementById("status");
const notice = document.getElementById("notice");
const template = document.getElementById("item");
const windows = document.getElementById("windows");
const searchBox = document.getElementById("search");
const TABS = ["feed", "trending", "saved", "upvoted", "search"];
const LIBRARY = { saved: "saved", upvoted: "upvoted" };
const PAGE = 30;
const LIBRARY_PAGE = 100;
// No paper is the current one until the reader picks one (j, k, a click or a tab): the
// first j marks the first paper, and no key acts on a paper nothing marks.
const NONE = -1;

const state = {
  tab: "feed",
  previousTab: "feed",
  window: "week",
  items: [],
  // The reader's actions in this popup, by paper: the state they left (it wins over a
  // list read before an action reached the service).
  acted: new Map(),
  queued: [],
  current: NONE,
  impressed: new Set(),
};
// An impression is a card actually seen: at least half of it visible for a second (the
// service lowers a paper a little for each showing, so a card never scrolled to must
// not count).
const SEEN_RATIO = 0.5;
const SEEN_MS = 1000;
const seenTimers = new Map();
const visibility = new IntersectionObserver(watchCards, { threshold: [0, SEEN_RATIO, 1] });

function send(events) {
  return chrome.runtime.sendMessage({ kind: "track", site: "popup", events });
}

function say(text) {
  status.textContent = text;
}

function stateOf(item) {
  return state.acted.get(item.paper.id) ?? paperState(item, state.queued);
}

async function installed(settings) {
  if (settings.token) return settings;
  const install = await chrome.runtime.sendMessage({ kind: "install" });
  if (install.error) {
    throw new api.ApiError(install.error, 0, install.detail, install.retryAfterMs);
  }
  return { ...settings, token: install.token };
}

const when = (at) => new Date(at * 1000).toLocaleDateString();
const libraryItems = (kind) => (items) =>
  items.map((item) => ({ ...item, reasons: [`${kind} ${when(item.at)}`] }));
const trendingItems = (windowName) => (items) =>
  items.map((item) => ({ ...item, reasons: trendingReasons(item, windowName) }));

// Each load is one of a series: the reader may switch tabs (or windows, or search again)
// before an answer comes. An answer that comes after a newer load started is kept for
// offline use, but never shown: it belongs to a tab the reader has left.
let loads = 0;
// The tokens this popup had forgotten on a 401 (once each: a service that refuses every
// new install too is said so, not asked again and again).
const forgotten = new Set();

async function load() {
  const mine = ++loads;
  const left = () => mine !== loads;
  say("Loading…");
  list.replaceChildren();
  const settings = await read(
    storage,
    ["backendUrl", "token", "cachedFeed", "cachedTrending", "cachedSaved", "cachedUpvoted"],
  );
  state.queued = (await storage.get(QUEUE_KEY))[QUEUE_KEY] ?? [];
  if (left()) return;
  const tab = state.tab;
  const windowName = state.window;
  const base = settings.backendUrl;
  try {
    if (tab === "search") {
      const query = searchBox.value.trim();
      const answer = await api.search(base, settings.token, query, PAGE);
      if (left()) return;
      if (answer.named && !answer.items.length) {
        missing(answer.named, settings, left);
      } else {
        say(answer.items.length ? "" : `Nothing matches “${query}”.`);
      }
      show(answer.items);
      return;
    }
    if (tab in LIBRARY) {
      const kind = LIBRARY[tab];
      const install = await installed(settings);
      const reader = await readerOf(storage, install.token);
      const page = await api.getLibrary(base, install.token, kind, LIBRARY_PAGE);
      await keepForReader(storage, reader, { [tab === "saved" ? "cachedSaved" : "cachedUpvoted"]: page });
      if (left()) return;
      say(page.items.length ? "" : {
        saved: "Nothing saved yet: ★ Save keeps a paper here.",
        upvoted: "Nothing upvoted yet: ▲ Upvote a paper you liked.",
      }[tab]);
      show(libraryItems(kind)(page.items));
      if (page.next) {
        list.append(more(`Show more ${kind} papers`, page.next,
          (cursor) => api.getLibrary(base, install.token, kind, LIBRARY_PAGE, cursor),
          libraryItems(kind)));
      }
      return;
    }
    let page;
    let toItems;
    let fetchMore;
    if (tab === "feed") {
      const install = await installed(settings);
      const reader = await readerOf(storage, install.token);
      page = await api.getFeed(base, install.token, PAGE);
      const kept = await keepForReader(storage, reader, { cachedFeed: page });
      if (left()) return; // not seen: the badge keeps counting these papers as new
      // (Nor when the reader was forgotten meanwhile: they are not this install's.)
      if (kept) {
        chrome.runtime.sendMessage({ kind: "feed-seen", ids: page.items.map((i) => i.paper.id), reader });
      }
      toItems = (items) => items;
      fetchMore = (cursor) => api.getFeed(base, install.token, PAGE, cursor);
    } else {
      const reader = await readerOf(storage, settings.token);
      page = await trending(base, windowName, settings.token);
      // The reader's own marks are on it. Read again, in turn with other writers: the
      // cache of another window (or another popup) may have been written meanwhile.
      await keepForReader(storage, reader, async () => {
        const { cachedTrending } = await read(storage, ["cachedTrending"]);
        return { cachedTrending: { ...cachedTrending, [windowName]: page } };
      });
      if (left()) return;
      toItems = trendingItems(windowName);
      fetchMore = (cursor) => trending(base, windowName, settings.token, cursor);
    }
    say(page.items.length ? "" : "Nothing here yet: read, upvote or save a few papers.");
    show(toItems(page.items));
    if (page.next) list.append(more("Show more papers", page.next, fetchMore, toItems));
  } catch (error) {
    if (left()) return;
    if (error.status === 401 && settings.token && !forgotten.has(settings.token)) {
      // The service no longer knows this install (its reader deleted, perhaps from another
      // linked browser): forget it and what was kept of its reader, and start afresh.
      forgotten.add(settings.token);
      await chrome.runtime.sendMessage({ kind: "forget", token: settings.token });
      if (!left()) load();
      return;
    }
    const cached = {
      feed: settings.cachedFeed,
      trending: settings.cachedTrending[windowName],
      saved: settings.cachedSaved,
      upvoted: settings.cachedUpvoted,
    }[tab];
    if (error.kind === "offline" && cached) {
      const what = {
        feed: "your last feed",
        trending: "trending as it was last seen",
        saved: "your saved papers as they were last seen",
        upvoted: "your upvoted papers as they were last seen",
      }[tab];
      say(`Offline: showing ${what}. Your actions are kept and sent later.`);
      if (tab in LIBRARY) show(libraryItems(LIBRARY[tab])(cached.items));
      else if (tab === "trending") show(trendingItems(windowName)(cached.items));
      else show(cached.items);
    } else if (error.kind === "offline" && tab === "search") {
      say("Offline: search needs the service.");
    } else if (error.kind === "offline") {
      say("");
      firstRun(settings.backendUrl);
    } else if (tab === "feed" && !settings.token) {
      // No install yet: For you needs one, Trending does not.
      say(`${api.describe(error)} Trending works meanwhile.`);
    } else {
      say(api.describe(error));
    }
  }
}

// The arXiv ids the reader asked for in this popup: "Ask for it" is offered once each.
const asked = new Set();
const askedText = (id) =>
  `Asked for arXiv ${id}: it will appear once arXiv confirms it.`;

// A search named an arXiv paper the catalog lacks: say so, and offer to ask for it (the
// service looks the id up at arXiv and Hugging Face; only their metadata admits it).
function missing(id, settings, left) {
  if (asked.has(id)) {
    say(askedText(id));
    return;
  }
  say(`arXiv ${id} is not in the catalog yet.`);
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "ask", textContent: "Ask for it",
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const install = await installed(settings);
      const answer = await api.requestPaper(settings.backendUrl, install.token, id);
      asked.add(id);
      if (left()) return;
      if (answer.state === "catalogued") load(); // there meanwhile: show it
      else say(askedText(id));
    } catch (error) {
      if (left()) return;
      if (error.kind === "rate-limited" && error.detail?.startsWith("paper_id: ")) {
        // The reader's papers a day are spent: asking again today cannot work.
        say(`arXiv ${id} is not in the catalog yet. Not asked: ${error.detail.replace(/^paper_id: /, "")}.`);
        return;
      }
      say(error.kind === "offline"
        ? `arXiv ${id} is not in the catalog yet. Offline: asking for it needs the service.`
        : `arXiv ${id} is not in the catalog yet. ${api.describe(error)}`);
      button.disabled = false;
      status.append(" ", button);
    }
  });
  status.append(" ", button);
}

// Trending with the reader's state of each paper; a token the service no longer knows
// still gets trending (anonymous: the token is the feed's business).
function trending(base, windowName, token, cursor = null) {
  return api.getTrending(base, windowName, PAGE, token, cursor).catch((error) => {
    if (error.kind !== "unauthorized" || !token) throw error;
    return api.getTrending(base, windowName, PAGE, null, cursor);
  });
}

// When the catalog sync has been failing, the papers shown are the catalog as it was:
// say so (the service knows, GET /v1/catalog; the reasons are in its logs).
async function showCatalogHealth() {
  const { backendUrl } = await read(storage, ["backendUrl"]);
  let catalog;
  try {
    catalog = await api.getCatalog(backendUrl);
  } catch {
    return; // offline or an older service: nothing to say
  }
  const failing = (catalog.sources ?? []).filter((source) => source.failing);
  if (catalog.sync !== "failing" || !failing.length) return;
  const since = failing
    .map((s) => `${s.name}: ${s.last_success ? `failing since ${when(s.last_success)}` : "no successful sync yet"}`)
    .join("; ");
  notice.textContent =
    `New papers are not arriving: the catalog sync is failing (${since}). ` +
    "These are the papers paperfeed already has.";
  notice.hidden = false;
}

// Nothing answers where the extension looks, and nothing was kept from before: say
// where it looks and how to point it elsewhere.
function firstRun(backendUrl) {
  const panel = document.createElement("section");
  panel.className = "first-run";
  panel.setAttribute("aria-labelledby", "first-run-heading");
  const heading = Object.assign(document.createElement("h2"), {
    id: "first-run-heading", textContent: "The paperfeed service does not answer",
  });
  const where = document.createElement("p");
  where.append("paperfeed looks for it at ", Object.assign(document.createElement("code"), {
    className: "backend", textContent: backendUrl,
  }), ".");
  const how = document.createElement("p");
  how.append("Start it (", Object.assign(document.createElement("code"), { textContent: "make run" }),
    " in the paperfeed folder), or tell the extension where it runs.");
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "open-options", textContent: "Open options",
  });
  button.addEventListener("click", () => chrome.runtime.openOptionsPage());
  panel.append(heading, where, how, button);
  list.replaceChildren(panel);
}

function show(items) {
  state.items = items;
  state.current = NONE;
  visibility.disconnect();
  seenTimers.forEach((timer) => clearTimeout(timer));
  seenTimers.clear();
  list.replaceChildren(...items.map((item, index) => render(item, index)));
  list.querySelectorAll("article.paper").forEach((card) => visibility.observe(card));
}

// A long list comes a page at a time: the button at its end reads the next page (the
// api's cursor), and shows the papers not shown already.
function more(label, cursor, fetchPage, toItems) {
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "more", textContent: label,
  });
  const shown = state.items;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const page = await fetchPage(cursor);
      if (state.items !== shown) return; // the reader went to another tab meanwhile
      button.remove();
      append(unseen(toItems(page.items), state.items.map((item) => item.paper.id)));
      if (page.next) list.append(more(label, page.next, fetchPage, toItems));
    } catch (error) {
      button.disabled = false;
      say(error.kind === "offline"
        ? "Offline: the rest of the list needs the service."
        : api.describe(error));
    }
  });
  return button;
}

function append(items) {
  const start = state.items.length;
  state.items.push(...items);
  const nodes = items.map((item, n) => render(item, start + n));
  list.append(...nodes);
  nodes.filter((node) => node.matches("article.paper")).forEach((node) => visibility.observe(node));
}

function watchCards(entries) {
  for (const entry of entries) {
    const id = entry.target.dataset.paperId;
    if (!id || state.impressed.has(id)) continue;
    if (entry.isIntersecting && entry.intersectionRatio >= SEEN_RATIO) {
      if (!seenTimers.has(id)) seenTimers.set(id, setTimeout(() => seen(id), SEEN_MS));
    } else {
      clearTimeout(seenTimers.get(id));
      seenTimers.delete(id);
    }
  }
}

function seen(id) {
  seenTimers.delete(id);
  if (state.impressed.has(id)) return;
  state.impressed.add(id);
  // At once: the popup may close the next moment (the background queues it).
  send([{ type: "impression", paper_id: id }]);
}

// A paper the reader dismissed is a "Dismissed" row with undo, never a card (the library
// tabs list the reader's saved and upvoted papers as cards whatever else they did, unless
// dismissed right there).
function render(item, index) {
  const vm = viewModel(item, stateOf(item));
  if (vm.dismissed && (item.dismissedHere || !(state.tab in LIBRARY))) {
    return renderDismissed(item, index);
  }
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.index = String(index);
  node.dataset.paperId = vm.id;
  node.classList.toggle("read", vm.read);
  node.querySelector(".title").textContent = vm.title;
  node.querySelector(".names").textContent = vm.authors;
  node.querySelector(".read-mark").hidden = !vm.read;
  node.querySelector(".abstract").textContent = vm.abstract;
  node.querySelector(".reasons").replaceChildren(
    ...vm.reasons.map((reason) => Object.assign(document.createElement("li"), { textContent: reason })),
  );
  node.querySelector(".links").replaceChildren(
    ...vm.links.map((link) =>
      Object.assign(document.createElement("a"), {
        href: link.href, textContent: link.label, target: "_blank", rel: "noopener",
      }),
    ),
  );
  node.querySelector('[data-action="upvote"]').setAttribute("aria-pressed", String(vm.upvoted));
  node.querySelector('[data-action="save"]').setAttribute("aria-pressed", String(vm.saved));
  node.addEventListener("click", (event) => {
    const action = event.target.closest("[data-action]")?.dataset.action;
    if (action) act(index, action);
    if (event.target.closest(".links a")) act(index, "click");
  });
  node.addEventListener("focus", () => { state.current = index; });
  return node;
}

function renderDismissed(item, index) {
  const node = document.createElement("div");
  node.className = "dismissed";
  node.dataset.index = String(index);
  node.dataset.paperId = item.paper.id;
  const text = Object.assign(document.createElement("span"), {
    className: "what",
    textContent: item.dismissedHere ? "Dismissed." : `Dismissed: ${item.paper.title || item.paper.id}`,
    title: item.paper.title || item.paper.id,
  });
  const undo = Object.assign(document.createElement("button"), { type: "button", textContent: "Undo" });
  undo.addEventListener("click", () => act(index, "undismiss"));
  node.append(text, undo);
  return node;
}

function act(index, action) {
  const item = state.items[index];
  if (!item) return;
  const id = item.paper.id;
  const before = stateOf(item);
  if (action === "open" || action === "click") {
    send([{ type: "click", paper_id: id }]);
    state.acted.set(id, applyAction(before, "click"));
    if (action === "open") {
      const url = openUrl(item.paper);
      if (url) chrome.tabs.create({ url });
    }
    return; // the card stays as it is while the popup is open
  }
  const type = toggle(before, action);
  if (type === "dismiss") item.dismissedHere = true;
  if (type === "undismiss") item.dismissedHere = false;
  state.acted.set(id, applyAction(before, type));
  send([{ type, paper_id: id }]);
  const node = list.querySelector(`[data-index="${index}"]`);
  const fresh = render(item, index);
  node.replaceWith(fresh);
  if (fresh.matches("article.paper")) visibility.observe(fresh);
  fresh.querySelector(type === "dismiss" ? "button" : `[data-action="${action}"]`)?.focus();
}

// The keyboard moves among the papers shown: a dismissed row ("Dismissed. Undo") is never
// the current paper, so no key acts on a paper the reader hid.
function move(step) {
  const cards = [...list.querySelectorAll("article.paper[data-index]")];
  if (!cards.length) return;
  const indexes = cards.map((card) => Number(card.dataset.index));
  let at = indexes.indexOf(state.current);
  if (at === -1) {
    // The current paper is gone from the cards (dismissed): the nearest one that way.
    const after = indexes.findIndex((index) => index > state.current);
    at = step < 0 ? (after === -1 ? indexes.length : after) - 1 : after === -1 ? indexes.length - 1 : after;
  } else {
    at += step;
  }
  const card = cards[Math.max(0, Math.min(cards.length - 1, at))];
  state.current = Number(card.dataset.index);
  list.querySelectorAll(".current").forEach((n) => n.classList.remove("current"));
  card.classList.add("current");
  card.focus();
  card.scrollIntoView({ block: "nearest" });
}

function isDismissed(index) {
  return Boolean(list.querySelector(`.dismissed[data-index="${index}"]`));
}

document.addEventListener("keydown", (event) => {
  if (event.target === searchBox) {
    if (event.key === "Escape") { searchBox.blur(); move(0); }
    return;
  }
  if (event.key === "/" && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    searchBox.focus();
    return;
  }
  const action = keyAction(event);
  if (!action) return;
  event.preventDefault();
  if (action === "next") move(1);
  else if (action === "previous") move(-1);
  else if (state.current !== NONE && !isDismissed(state.current)) act(state.current, action);
});

// A search is a tab of its own ("Search", shown while there is one); an empty search
// (the box cleared, then Enter) goes back to the tab the reader was on.
function selectTab(tab) {
  if (tab === "search" && state.tab !== "search") state.previousTab = state.tab;
  state.tab = tab;
  for (const name of TABS) {
    document.getElementById(`tab-${name}`).setAttribute("aria-selected", String(name === tab));
  }
  document.getElementById("tab-search").hidden = tab !== "search";
  document.getElementById("list").setAttribute("aria-labelledby", `tab-${tab}`);
  windows.hidden = tab !== "trending";
  load();
}

for (const name of TABS) {
  document.getElementById(`tab-${name}`).addEventListener("click", () => {
    if (name !== "search") searchBox.value = "";
    selectTab(name);
  });
}
document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (searchBox.value.trim()) selectTab("search");
  else if (state.tab === "search") selectTab(state.previousTab);
});
for (const button of windows.querySelectorAll("button[data-window]")) {
  button.addEventListener("click", () => {
    state.window = button.dataset.window;
    for (const other of windows.querySelectorAll("button[data-window]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    load();
  });
}
load();
showCatalogHealth();
