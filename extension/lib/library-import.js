// Bring your library (issue 26): a file or pasted text sent to POST /v1/me/import, and
// its answer in words. The file goes as it is (the service reads BibTeX, CSL-JSON, RIS
// and lists of arXiv ids, and tells them apart itself).
import { ApiError, retryAfterMs } from "./api.js";

export const IMPORT_MAX_BYTES = 2 * 1024 * 1024;
export const IMPORT_MAX_ENTRIES = 5000;

export const FORMAT_NAMES = {
  bibtex: "BibTeX",
  "csl-json": "CSL-JSON",
  ris: "RIS",
  "arxiv-ids": "a list of arXiv ids",
};

function kindOf(status) {
  if (status === 401 || status === 403) return "unauthorized";
  if (status === 429) return "rate-limited";
  if (status >= 500) return "server";
  return "rejected";
}

// The answer of the service (see docs/import.md), or an ApiError as api.js's calls throw.
export async function importLibrary(base, token, body, format = "", timeoutMs = 60_000) {
  const url = new URL("/v1/me/import", base);
  if (format) url.searchParams.set("format", format);
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "text/plain; charset=utf-8" },
      body,
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
  return response.json();
}

const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// { summary, details, problems }: what became of the file, for the options page.
export function describeImport(result) {
  const format = FORMAT_NAMES[result.format] ?? result.format;
  let summary;
  if (result.saved) {
    summary = `Imported: ${count(result.saved, "paper")} saved to your library. Your feed follows them from now on.`;
  } else if (result.unchanged) {
    summary = `Nothing new: ${count(result.unchanged, "paper")} of this file ${result.unchanged === 1 ? "is" : "are"} in your library already.`;
  } else if (!result.entries) {
    summary = `Nothing could be read as ${format}.`;
  } else {
    summary = "Nothing imported: no paper of this file is in paperfeed's catalog.";
  }
  const read = [`${result.matched} matched`];
  if (result.waiting) read.push(`${result.waiting} waiting for arXiv to describe ${result.waiting === 1 ? "it" : "them"}`);
  if (result.unmatched) read.push(`${result.unmatched} not found`);
  if (result.unreadable) read.push(`${result.unreadable} unreadable`);
  let details = result.entries
    ? `${count(result.entries, "entry", "entries")} read as ${format}: ${read.join(", ")}.`
    : "";
  if (result.saved && result.unchanged) details += ` ${result.unchanged} already in your library.`;
  if (result.over_limit) {
    details += ` ${count(result.over_limit, "paper")} not saved: your library keeps as many papers as it can.`;
  }
  const problems = (result.problems ?? []).map(
    (p) => `Line ${p.line}${p.entry ? ` (${p.entry})` : ""}: ${p.message}`,
  );
  const listed = (result.problems ?? []).length;
  const total = (result.unmatched ?? 0) + (result.unreadable ?? 0);
  if (total > listed) problems.push(`…and ${total - listed} more.`);
  return { summary, details: details.trim(), problems };
}

// A refusal in words: the file's size or entries, the budget, the service's own reason.
export function describeImportError(error, kinds) {
  if (error.status === 413) {
    return `Too large: paperfeed takes files of up to 2 MB and ${IMPORT_MAX_ENTRIES.toLocaleString("en")} entries. Split it and import each part.`;
  }
  if (error.status === 429) return "Too many imports this hour: try again later.";
  if (error.kind === "rejected" && error.message) return `The service refused it: ${error.message}`;
  return kinds[error.kind] ?? "The import failed.";
}
