// What the extension keeps in chrome.storage.local, with defaults.

export const DEFAULT_BACKEND = "http://127.0.0.1:8000";

export const DEFAULTS = {
  backendUrl: DEFAULT_BACKEND,
  paused: false,
  sites: { arxiv: true, huggingface: true },
  token: null,
  userId: null,
  seenFeedIds: [],
  openedAt: 0,
  cachedFeed: null,
  cachedTrending: {},
  cachedSaved: null,
  cachedUpvoted: null,
  cachedHidden: null,
  forYou: null,
};

// The service's origin from the address the reader typed: one without a scheme is
// http:// on this machine or a private network ("localhost:8000", "192.168.1.5:8000",
// "nas.local") and https:// anywhere else ("paperfeed.example.org": the token must not
// travel in clear); only http(s) addresses are a service's. null when the text is none.
export function serviceOrigin(typed) {
  const text = (typed ?? "").trim() || DEFAULT_BACKEND;
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text);
  try {
    const url = new URL(hasScheme ? text : `https://${text}`);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    if (!hasScheme && nearby(url.hostname)) url.protocol = "http:";
    return url.origin;
  } catch {
    return null;
  }
}

function nearby(host) {
  return host === "localhost" || host.endsWith(".localhost") || host.endsWith(".local")
    || !host.includes(".") || host === "[::1]"
    || /^(127|10)\.\d+\.\d+\.\d+$/.test(host)
    || /^192\.168\.\d+\.\d+$/.test(host)
    || /^172\.(1[6-9]|2\d|3[01])\.\d+\.\d+$/.test(host);
}

export async function read(storage, keys = Object.keys(DEFAULTS)) {
  const got = await storage.get(keys);
  return Object.fromEntries(keys.map((k) => [k, got[k] ?? DEFAULTS[k]]));
}

// The paper sites a reader may switch off, and whether a page may be tracked.
export function tracking(settings, site) {
  return !settings.paused && site !== null && settings.sites[site] !== false;
}

// The install's token changes in one place at a time: registering, forgetting a token the
// service no longer knows, a new service URL, deleting or unlinking (the service worker
// and the extension's pages alike, through the Web Locks API; else, in Node's tests,
// through one chain). Registration itself runs once however many ask (background.js).
const INSTALL_LOCK = "paperfeed-install";
let installTurn = Promise.resolve();

export function withInstallLock(change) {
  if (globalThis.navigator?.locks) return navigator.locks.request(INSTALL_LOCK, change);
  const mine = installTurn.then(change, change);
  installTurn = mine.catch(() => {});
  return mine;
}

// What the extension keeps of its reader's own (their feed, library, hidden papers, their
// marks on trending, the for-you marks, what the badge counted as seen): it goes when the
// install stops reading as that reader.
export const READER_CACHES = [
  "cachedFeed", "cachedTrending", "cachedSaved", "cachedUpvoted", "cachedHidden", "forYou",
  "seenFeedIds",
];
// The install and what is kept of its reader: removed, the next use registers anew.
export const INSTALL_KEYS = ["token", "userId", ...READER_CACHES];

// A reader's cached answers belong to the reader they were fetched for. One that arrives
// after that reader was forgotten here (deleted, unlinked, linked to another, a new
// service URL: each a change of token or reader id, under the install lock) is dropped,
// never written back over the forgetting, where offline it would show a deleted reader's
// papers. The check and the write are one step under the install lock. ``changes`` may
// be a function that reads what it changes: it runs after the check, in the same step.
export async function readerOf(storage, token) {
  const { userId } = await read(storage, ["userId"]);
  return { token, userId };
}

export function keepForReader(storage, reader, changes) {
  return withInstallLock(async () => {
    const now = await read(storage, ["token", "userId"]);
    if (now.token !== reader.token || now.userId !== reader.userId) return false;
    await storage.set(typeof changes === "function" ? await changes() : changes);
    return true;
  });
}
