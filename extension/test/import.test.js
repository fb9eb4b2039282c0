import assert from "node:assert/strict";
import { test } from "node:test";

import { describeImport, describeImportError } from "../lib/library-import.js";

const answer = {
  format: "bibtex", entries: 12, matched: 8, waiting: 1, unmatched: 2, unreadable: 1,
  saved: 7, unchanged: 2, over_limit: 0, reported: 1, waiting_ids: ["2501.01234"],
  problems: [
    { line: 7, entry: "broken", message: "could not be read: Unexpected block start" },
    { line: 20, message: "no arXiv id, DOI or title" },
  ],
};

test("an import's answer in words: what was saved, what was read, each problem's line", () => {
  const told = describeImport(answer);
  assert.equal(told.summary, "Imported: 7 papers saved to your library. Your feed follows them from now on.");
  assert.equal(
    told.details,
    "12 entries read as BibTeX: 8 matched, 1 waiting for arXiv to describe it, 2 not found, 1 unreadable. 2 already in your library.",
  );
  assert.deepEqual(told.problems, [
    "Line 7 (broken): could not be read: Unexpected block start",
    "Line 20: no arXiv id, DOI or title",
    "…and 1 more.",
  ]);
});

test("a re-import, an unreadable file and a full library say so", () => {
  const again = { ...answer, saved: 0, unchanged: 9, problems: [] };
  assert.equal(describeImport(again).summary, "Nothing new: 9 papers of this file are in your library already.");
  const nothing = { ...answer, format: "arxiv-ids", entries: 0, matched: 0, waiting: 0, unmatched: 0, unreadable: 1, saved: 0, unchanged: 0, problems: [{ line: 1, entry: "hello", message: "no arXiv id or URL in this line" }] };
  const told = describeImport(nothing);
  assert.equal(told.summary, "Nothing could be read as a list of arXiv ids.");
  assert.equal(told.details, "");
  assert.deepEqual(told.problems, ["Line 1 (hello): no arXiv id or URL in this line"]);
  assert.match(describeImport({ ...answer, over_limit: 3 }).details, /3 papers not saved: your library keeps/);
});

test("refusals: too large, too many imports, the service's reason", () => {
  const kinds = { offline: "The paperfeed service cannot be reached." };
  assert.match(describeImportError({ status: 413, kind: "rejected" }, kinds), /^Too large: .* 2 MB and 5,000 entries/);
  assert.match(describeImportError({ status: 429, kind: "rate-limited" }, kinds), /Too many imports/);
  assert.equal(describeImportError({ status: 0, kind: "offline" }, kinds), kinds.offline);
});
