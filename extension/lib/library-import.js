// Bring your library (issue 26): a file or pasted text sent to POST /v1/me/import, and
// its answer in words. The file goes as it is (the service reads BibTeX, CSL-JSON, RIS
// and lists of arXiv ids, and tells them apart itself).
// The request itself is api.js's (the only module that talks to the network).
export { importLibrary } from "./api.js";

export const IMPORT_MAX_BYTES = 2 * 1024 * 1024;
export const IMPORT_MAX_ENTRIES = 5000;

export const FORMAT_NAMES = {
  bibtex: "BibTeX",
  "csl-json": "CSL-JSON",
  ris: "RIS",
  "arxiv-ids": "a list of arXiv ids",
};

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
