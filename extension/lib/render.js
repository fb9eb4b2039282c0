// Pure view logic of a feed item: what the popup shows, with no DOM in sight.

export const ABSTRACT_CHARS = 280;

export function shortAbstract(text, limit = ABSTRACT_CHARS) {
  const clean = (text ?? "").replace(/\s+/g, " ").trim();
  if (clean.length <= limit) return clean;
  const cut = clean.slice(0, limit);
  const space = cut.lastIndexOf(" ");
  return `${cut.slice(0, space > limit * 0.6 ? space : limit).replace(/[\s,.;:]+$/, "")}…`;
}

export function paperLinks(paper) {
  const links = [];
  const abs = paper.url ?? (/^\d{4}\.\d{4,5}$/.test(paper.id) ? `https://arxiv.org/abs/${paper.id}` : null);
  if (abs) links.push({ label: "Abstract", href: abs });
  // Papers known by title only (the demo page has no ids): find them on arXiv.
  else if (paper.title) {
    const query = encodeURIComponent(paper.title);
    links.push({ label: "Find on arXiv", href: `https://arxiv.org/search/?query=${query}&searchtype=title` });
  }
  if (paper.pdf_url) links.push({ label: "PDF", href: paper.pdf_url });
  if (paper.code_url) links.push({ label: "Code", href: paper.code_url });
  if (paper.project_url) links.push({ label: "Project", href: paper.project_url });
  return links.filter((l) => /^https?:\/\//.test(l.href));
}

export function openUrl(paper) {
  return paperLinks(paper)[0]?.href ?? null;
}

// The reader's own state of a paper: what the service said (an item's `state`: trending,
// search and library answers carry it; feed items never need it, the feed lists no paper
// the reader acted on), then the reader's actions still waiting in the queue, in order.
export const NO_STATE = Object.freeze({ upvoted: false, saved: false, dismissed: false, read: false });
const EFFECTS = {
  upvote: { upvoted: true },
  unvote: { upvoted: false },
  save: { saved: true },
  unsave: { saved: false },
  dismiss: { dismissed: true },
  undismiss: { dismissed: false },
  view: { read: true },
  click: { read: true },
};

export function paperState(item, queued = []) {
  let state = { ...NO_STATE, ...(item.state ?? {}) };
  for (const event of queued) {
    if (event.paper_id === item.paper.id && EFFECTS[event.type]) {
      state = { ...state, ...EFFECTS[event.type] };
    }
  }
  return state;
}

// The action a button sends: its opposite when the paper already has that state (one
// click undoes, whether the state was set in this popup or came from the service).
export function toggle(state, action) {
  if (action === "upvote") return state.upvoted ? "unvote" : "upvote";
  if (action === "save") return state.saved ? "unsave" : "save";
  return action;
}

export function applyAction(state, type) {
  return { ...state, ...(EFFECTS[type] ?? {}) };
}

// Trending's reason: the paper's place in the window.
export const WINDOW_NAMES = { day: "today", week: "this week", month: "this month" };

export function trendingReasons(item, window) {
  return item.rank ? [`#${item.rank} ${WINDOW_NAMES[window] ?? window}`] : [];
}

// Papers of a next page not shown already (a feed ranked again between two pages may
// repeat one).
export function unseen(items, shownIds) {
  const shown = new Set(shownIds);
  return items.filter((item) => !shown.has(item.paper.id) && shown.add(item.paper.id));
}

export function viewModel(item, state = {}) {
  const paper = item.paper;
  return {
    id: paper.id,
    title: paper.title || paper.id,
    abstract: shortAbstract(paper.abstract),
    authors: (paper.authors ?? []).slice(0, 3).join(", ") + ((paper.authors ?? []).length > 3 ? " et al." : ""),
    reasons: item.reasons ?? [],
    links: paperLinks(paper),
    upvoted: Boolean(state.upvoted),
    saved: Boolean(state.saved),
    dismissed: Boolean(state.dismissed),
    read: Boolean(state.read),
  };
}

// Keyboard: j/k move, o open, s save, u upvote, d dismiss.
export const KEYS = { j: "next", k: "previous", o: "open", s: "save", u: "upvote", d: "dismiss" };

export function keyAction(event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return null;
  return KEYS[event.key] ?? null;
}

// The badge's count: recommended papers that reached paperfeed after the popup was last
// opened (`since`, unix seconds) and were not shown then. Papers that merely moved up
// the feed do not count.
export function newCount(items, seen, since) {
  const known = new Set(seen);
  return items.filter((i) => !known.has(i.paper.id) && (i.paper.added_at ?? 0) > since).length;
}

// The badge's words for the new papers of followed authors among the new ones (the
// service's reason for such a paper starts "new from"; the digest says the same).
export function followsNote(items, seen, since) {
  const known = new Set(seen);
  const n = items.filter(
    (i) => !known.has(i.paper.id) && (i.paper.added_at ?? 0) > since && (i.reasons?.[0] ?? "").startsWith("new from "),
  ).length;
  return n ? `${n} new paper${n === 1 ? "" : "s"} from authors you follow` : "";
}
