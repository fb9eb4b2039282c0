// The popup: the personalized feed and the trending lists, with actions and keys.
import * as api from "../lib/api.js";
import { keyAction, openUrl, viewModel } from "../lib/render.js";
import { read } from "../lib/settings.js";

const storage = chrome.storage.local;
const list = document.getElementById("list");
const status = document.getElementById("status");
const template = document.getElementById("item");
const windowSelect = document.getElementById("window");
const searchBox = document.getElementById("search");
const TABS = [["feed", "tab-feed"], ["trending", "tab-trending"], ["saved", "tab-saved"]];
const LIBRARY_PAGE = 100;
const state = { tab: "feed", items: [], acted: new Map(), current: 0, impressed: new Set() };
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

// Each load is one of a series: the reader may switch tabs (or windows, or search again)
// before an answer comes. An answer that comes after a newer load started is kept for
// offline use, but never shown: it belongs to a tab the reader has left.
let loads = 0;

async function load() {
  const mine = ++loads;
  const left = () => mine !== loads;
  say("Loading…");
  list.replaceChildren();
  const settings = await read(
    storage, ["backendUrl", "token", "cachedFeed", "cachedTrending", "cachedSaved"],
  );
  if (left()) return;
  const tab = state.tab;
  const windowName = windowSelect.value;
  try {
    let items;
    if (tab === "search") {
      const query = searchBox.value.trim();
      items = (await api.search(settings.backendUrl, settings.token, query, 30)).items;
      if (left()) return;
      say(items.length ? "" : `Nothing matches “${query}”.`);
      show(items);
      return;
    }
    if (tab === "saved") {
      const install = settings.token ? settings : await chrome.runtime.sendMessage({ kind: "install" });
      if (install.error) throw new api.ApiError(install.error);
      const saved = await api.getLibrary(settings.backendUrl, install.token, "saved", LIBRARY_PAGE);
      await storage.set({ cachedSaved: saved });
      if (left()) return;
      say(saved.items.length ? "" : "Nothing saved yet: ★ Save keeps a paper here.");
      showSaved(saved.items);
      if (saved.next) list.append(moreSaved(settings.backendUrl, install.token, saved.next));
      return;
    }
    if (tab === "feed") {
      const install = settings.token ? settings : await chrome.runtime.sendMessage({ kind: "install" });
      if (install.error) throw new api.ApiError(install.error);
      const feed = await api.getFeed(settings.backendUrl, install.token, 30);
      items = feed.items;
      await storage.set({ cachedFeed: feed });
      if (left()) return; // not seen: the badge keeps counting these papers as new
      chrome.runtime.sendMessage({ kind: "feed-seen", ids: items.map((i) => i.paper.id) });
    } else {
      const trending = await api.getTrending(settings.backendUrl, windowName, 30);
      items = trending.items;
      // Read again: the cache of another window may have been written meanwhile.
      const { cachedTrending } = await read(storage, ["cachedTrending"]);
      await storage.set({ cachedTrending: { ...cachedTrending, [windowName]: trending } });
      if (left()) return;
    }
    say(items.length ? "" : "Nothing here yet: read, upvote or save a few papers.");
    show(items);
  } catch (error) {
    if (left()) return;
    const cached = {
      feed: settings.cachedFeed,
      trending: settings.cachedTrending[windowName],
      saved: settings.cachedSaved,
    }[tab];
    if (error.kind === "offline" && cached) {
      const what = {
        feed: "your last feed",
        trending: "trending as it was last seen",
        saved: "your saved papers as they were last seen",
      }[tab];
      say(`Offline: showing ${what}. Your actions are kept and sent later.`);
      if (tab === "saved") showSaved(cached.items);
      else show(cached.items);
    } else if (error.kind === "offline" && tab === "search") {
      say("Offline: search needs the service.");
    } else if (error.kind === "offline") {
      say("");
      firstRun(settings.backendUrl);
    } else {
      say(api.KINDS[error.kind] ?? "Something went wrong.");
    }
  }
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
  state.current = 0;
  visibility.disconnect();
  seenTimers.forEach((timer) => clearTimeout(timer));
  seenTimers.clear();
  list.replaceChildren(...items.map((item, index) => render(item, index)));
  list.querySelectorAll("article.paper").forEach((card) => visibility.observe(card));
}

// The Saved tab: the reader's library, each card with its save pressed (unsave there).
function showSaved(items) {
  show(savedCards(items));
}

function savedCards(items) {
  for (const item of items) {
    if (!state.acted.has(item.paper.id)) state.acted.set(item.paper.id, { saved: true });
  }
  const when = (at) => new Date(at * 1000).toLocaleDateString();
  return items.map((item) => ({ ...item, reasons: [`saved ${when(item.at)}`] }));
}

// A long library comes a page at a time: the button at its end reads the next page.
function moreSaved(backendUrl, token, cursor) {
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "more", textContent: "Show more saved papers",
  });
  const shown = state.items;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const page = await api.getLibrary(backendUrl, token, "saved", LIBRARY_PAGE, cursor);
      if (state.items !== shown) return; // the reader went to another tab meanwhile
      button.remove();
      append(savedCards(page.items));
      if (page.next) list.append(moreSaved(backendUrl, token, page.next));
    } catch (error) {
      button.disabled = false;
      say(error.kind === "offline"
        ? "Offline: the rest of your saved papers needs the service."
        : api.KINDS[error.kind] ?? "Something went wrong.");
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

function render(item, index) {
  const vm = viewModel(item, state.acted.get(item.paper.id));
  if (vm.dismissed) return renderDismissed(item, index);
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.index = String(index);
  node.dataset.paperId = vm.id;
  node.querySelector(".title").textContent = vm.title;
  node.querySelector(".authors").textContent = vm.authors;
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
    if (event.target.closest(".links a")) send([{ type: "click", paper_id: vm.id }]);
  });
  node.addEventListener("focus", () => { state.current = index; });
  return node;
}

function renderDismissed(item, index) {
  const node = document.createElement("div");
  node.className = "dismissed";
  node.dataset.index = String(index);
  node.dataset.paperId = item.paper.id;
  const text = Object.assign(document.createElement("span"), { textContent: "Dismissed." });
  const undo = Object.assign(document.createElement("button"), { type: "button", textContent: "Undo" });
  undo.addEventListener("click", () => act(index, "undismiss"));
  node.append(text, undo);
  return node;
}

function act(index, action) {
  const item = state.items[index];
  if (!item) return;
  const id = item.paper.id;
  const acted = { ...(state.acted.get(id) ?? {}) };
  let type = action;
  if (action === "open") {
    const url = openUrl(item.paper);
    send([{ type: "click", paper_id: id }]);
    if (url) chrome.tabs.create({ url });
    return;
  }
  if (action === "upvote") { type = acted.upvoted ? "unvote" : "upvote"; acted.upvoted = !acted.upvoted; }
  if (action === "save") { type = acted.saved ? "unsave" : "save"; acted.saved = !acted.saved; }
  if (action === "dismiss") acted.dismissed = true;
  if (action === "undismiss") acted.dismissed = false;
  state.acted.set(id, acted);
  send([{ type, paper_id: id }]);
  const node = list.querySelector(`[data-index="${index}"]`);
  const fresh = render(item, index);
  node.replaceWith(fresh);
  if (fresh.matches("article.paper")) visibility.observe(fresh);
  fresh.querySelector(action === "dismiss" ? "button" : `[data-action="${action}"]`)?.focus();
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
  const item = state.items[index];
  return Boolean(item && state.acted.get(item.paper.id)?.dismissed);
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLSelectElement) return;
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
  else if (!isDismissed(state.current)) act(state.current, action);
});

function selectTab(tab) {
  state.tab = tab;
  for (const [name, button] of TABS) {
    document.getElementById(button).setAttribute("aria-selected", String(name === tab));
  }
  document.getElementById("window-label").hidden = tab !== "trending";
  load();
}

for (const [name, button] of TABS) {
  document.getElementById(button).addEventListener("click", () => {
    searchBox.value = "";
    selectTab(name);
  });
}
document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (searchBox.value.trim()) selectTab("search");
});
windowSelect.addEventListener("change", load);
load();
