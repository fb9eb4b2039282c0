// The only module that talks to the network. Every failure becomes an ApiError with
// one of a few kinds, which the popup and options page show in one way each.

export const KINDS = {
  offline: "The paperfeed service cannot be reached.",
  unauthorized: "This install is not known to the service.",
  rejected: "The service refused the request.",
  "rate-limited": "Too many requests; trying again soon.",
  server: "The service had a problem; trying again soon.",
};

export class ApiError extends Error {
  constructor(kind, status = 0, detail = "", retryAfterMs = 0) {
    super(`${kind}${status ? ` (${status})` : ""}${detail ? `: ${detail}` : ""}`);
    this.kind = kind;
    this.status = status;
    this.detail = detail;
    // The service's Retry-After (429, 503): the queue waits at least that long.
    this.retryAfterMs = retryAfterMs;
  }
}

// What the reader reads of an error: its kind's sentence, and for a limit that lasts
// (a network past its new installs an hour) when to try again, not a promise of "soon"
// (a Retry-After is read up to an hour: a longer wait reads "in about an hour").
export function describe(error, otherwise = "Something went wrong.") {
  const minutes = Math.ceil((error?.retryAfterMs ?? 0) / 60_000);
  if (error?.kind === "rate-limited" && minutes > 1) {
    const what = String(error.detail ?? "").replace(/^rate limit reached: /, "");
    const when = minutes >= 60 ? "in about an hour" : `in about ${minutes} minutes`;
    return `Too many requests${what ? ` (${what})` : ""}: try again ${when}.`;
  }
  return KINDS[error?.kind] ?? otherwise;
}

export function retryAfterMs(header) {
  const seconds = Number.parseInt(header ?? "", 10);
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 3600) * 1000 : 0;
}

function kindOf(status) {
  if (status === 401 || status === 403) return "unauthorized";
  if (status === 429) return "rate-limited";
  if (status >= 500) return "server";
  return "rejected";
}

// ``body`` goes as JSON; ``text`` (a library file) goes as it is.
async function call(base, path, { method = "GET", token, body, text, timeoutMs = 10_000 } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (text !== undefined) headers["Content-Type"] = "text/plain; charset=utf-8";
  let response;
  try {
    response = await fetch(new URL(path, base), {
      method,
      headers,
      body: text ?? (body === undefined ? undefined : JSON.stringify(body)),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch {
    throw new ApiError("offline");
  }
  if (!response.ok) {
    let detail = "";
    try {
      detail = (await response.json()).detail ?? "";
    } catch {
      // not JSON
    }
    const wait = retryAfterMs(response.headers.get("Retry-After"));
    throw new ApiError(kindOf(response.status), response.status, detail, wait);
  }
  return response.status === 204 ? null : response.json();
}

export const register = (base) => call(base, "/v1/installs", { method: "POST" });
export const sendEvents = (base, token, events) =>
  call(base, "/v1/events", { method: "POST", token, body: { events } });
const cursorParam = (cursor) => (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
export const getFeed = (base, token, limit = 30, cursor = null) =>
  call(base, `/v1/feed?limit=${limit}${cursorParam(cursor)}`, { token });
// With a token, each paper carries the reader's own state of it (upvoted, saved, ...).
export const getTrending = (base, window = "week", limit = 30, token = null, cursor = null) =>
  call(base, `/v1/trending?window=${window}&limit=${limit}${cursorParam(cursor)}`, {
    token: token ?? undefined,
  });
export const getCatalog = (base) => call(base, "/v1/catalog", { timeoutMs: 5_000 });
export const getPairing = (base, token) => call(base, "/v1/me/pairing", { token });
export const exportData = (base, token) => call(base, "/v1/me/export", { token });
// Bring your library: the file as it is (the service tells the formats apart itself).
export const importLibrary = (base, token, text, format = "", timeoutMs = 60_000) =>
  call(base, format ? `/v1/me/import?format=${encodeURIComponent(format)}` : "/v1/me/import", {
    method: "POST",
    token,
    text,
    timeoutMs,
  });
export const deleteData = (base, token) => call(base, "/v1/me", { method: "DELETE", token });
export const getMeta = (base) => call(base, "/v1/meta", {});
export const getDigest = (base, token) => call(base, "/v1/me/digest", { token });
export const putDigest = (base, token, choice) =>
  call(base, "/v1/me/digest", { method: "PUT", token, body: choice });
export const deleteDigest = (base, token) =>
  call(base, "/v1/me/digest", { method: "DELETE", token });
export const getLibrary = (base, token, kind = "saved", limit = 50, cursor = null) =>
  call(base, `/v1/me/library?kind=${kind}&limit=${limit}${cursorParam(cursor)}`, { token });
// Ask for a paper the catalog lacks (an arXiv id or URL): {paper_id, state: "waiting" |
// "catalogued"}; it enters the catalog once arXiv (or Hugging Face) describes it.
export const requestPaper = (base, token, paperId) =>
  call(base, "/v1/catalog/requests", { method: "POST", token, body: { paper_id: paperId } });
export const search = (base, token, query, limit = 30) =>
  call(base, `/v1/search?q=${encodeURIComponent(query)}&limit=${limit}`, { token: token ?? undefined });
export const createPairingCode = (base, token) =>
  call(base, "/v1/me/pairing-codes", { method: "POST", token });
export const linkInstall = (base, token, code) =>
  call(base, "/v1/me/link", { method: "POST", token, body: { code } });
export const unlinkInstall = (base, token) => call(base, "/v1/me/link", { method: "DELETE", token });
// Follows (issue 26): the catalog's topics with example titles, and the reader's
// followed authors ({author: name}) and topics ({topic: id}).
export const getTopics = (base) => call(base, "/v1/topics", {});
export const getFollows = (base, token) => call(base, "/v1/me/follows", { token });
export const follow = (base, token, what) =>
  call(base, "/v1/me/follows", { method: "PUT", token, body: what });
export const unfollow = (base, token, what) =>
  call(base, "/v1/me/follows", { method: "DELETE", token, body: what });
