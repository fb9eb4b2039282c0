import assert from "node:assert/strict";
import { test } from "node:test";

import { followsNote, keyAction, newCount, openUrl, paperLinks, shortAbstract, viewModel } from "../lib/render.js";
import { tracking } from "../lib/settings.js";
import { firefoxManifest } from "../tools/firefox-manifest.mjs";
import { readFileSync } from "node:fs";

const paper = {
  id: "2401.01234",
  title: "A paper",
  abstract: "word ".repeat(100),
  authors: ["A", "B", "C", "D"],
  url: "https://arxiv.org/abs/2401.01234",
  pdf_url: "https://arxiv.org/pdf/2401.01234",
  code_url: "https://github.com/x/y",
};

test("abstracts are shortened at a word with an ellipsis", () => {
  const short = shortAbstract(paper.abstract);
  assert.ok(short.length <= 281);
  assert.ok(short.endsWith("word…"));
  assert.equal(shortAbstract("  short\n text "), "short text");
});

test("links keep http(s) only, in a fixed order", () => {
  assert.deepEqual(paperLinks(paper).map((l) => l.label), ["Abstract", "PDF", "Code"]);
  assert.deepEqual(paperLinks({ id: "slug", code_url: "javascript:alert(1)" }), []);
  assert.equal(
    openUrl({ id: "a-slug", title: "Attention & more" }),
    "https://arxiv.org/search/?query=Attention%20%26%20more&searchtype=title",
  );
  assert.equal(openUrl({ id: "2401.00001" }), "https://arxiv.org/abs/2401.00001");
});

test("the view model carries reasons, short authors and action state", () => {
  const vm = viewModel({ paper, score: 1, reasons: ["trending today"] }, { saved: true });
  assert.equal(vm.authors, "A, B, C et al.");
  assert.deepEqual(vm.reasons, ["trending today"]);
  assert.equal(vm.saved, true);
  assert.equal(vm.upvoted, false);
});

test("keys map to actions, modified keys do not", () => {
  assert.equal(keyAction({ key: "j" }), "next");
  assert.equal(keyAction({ key: "d" }), "dismiss");
  assert.equal(keyAction({ key: "s", ctrlKey: true }), null);
  assert.equal(keyAction({ key: "x" }), null);
});

test("the badge counts papers new since the popup was last opened", () => {
  const item = (id, added) => ({ paper: { id, added_at: added } });
  const feed = [item("old-unseen", 90), item("new", 150), item("new-but-shown", 160), item("x", 200)];
  assert.equal(newCount(feed, ["new-but-shown"], 100), 2);
  assert.equal(newCount([], ["a"], 0), 0);
});

test("tracking respects pause and per-site switches", () => {
  const on = { paused: false, sites: { arxiv: true, huggingface: false } };
  assert.equal(tracking(on, "arxiv"), true);
  assert.equal(tracking(on, "huggingface"), false);
  assert.equal(tracking({ ...on, paused: true }, "arxiv"), false);
});

test("the manifest asks for the least, and the Firefox one is generated from it", () => {
  const manifest = JSON.parse(readFileSync(new URL("../manifest.json", import.meta.url)));
  assert.deepEqual(manifest.permissions.sort(), ["alarms", "storage"]);
  assert.ok(!JSON.stringify(manifest.host_permissions).includes("<all_urls>"));
  const firefox = firefoxManifest(manifest);
  assert.deepEqual(firefox.background, { scripts: ["background.js"], type: "module" });
  assert.ok(firefox.browser_specific_settings.gecko.id);
  assert.ok(firefox.browser_specific_settings.gecko.data_collection_permissions.required.length);
  assert.equal(manifest.background.service_worker, "background.js");
});

test("a paper's state: the service's, then the reader's actions still queued", async () => {
  const { paperState, toggle, applyAction, NO_STATE } = await import("../lib/render.js");
  const item = { paper: { id: "p" }, state: { ...NO_STATE, upvoted: true } };
  assert.deepEqual(paperState({ paper: { id: "q" } }), NO_STATE); // the feed: no state
  assert.equal(paperState(item).upvoted, true);
  const queued = [
    { type: "unvote", paper_id: "p" },
    { type: "save", paper_id: "p" },
    { type: "dismiss", paper_id: "other" },
    { type: "impression", paper_id: "p" },
  ];
  assert.deepEqual(paperState(item, queued), { ...NO_STATE, saved: true });
  // One click undoes: the button sends the opposite of the state shown.
  assert.equal(toggle({ ...NO_STATE, upvoted: true }, "upvote"), "unvote");
  assert.equal(toggle(NO_STATE, "upvote"), "upvote");
  assert.equal(toggle({ ...NO_STATE, saved: true }, "save"), "unsave");
  assert.equal(toggle(NO_STATE, "dismiss"), "dismiss");
  assert.deepEqual(applyAction(NO_STATE, "click"), { ...NO_STATE, read: true });
});

test("trending says each paper's place; a next page shows no paper twice", async () => {
  const { trendingReasons, unseen } = await import("../lib/render.js");
  assert.deepEqual(trendingReasons({ rank: 3 }, "week"), ["#3 this week"]);
  assert.deepEqual(trendingReasons({ rank: 1 }, "day"), ["#1 today"]);
  assert.deepEqual(trendingReasons({}, "day"), []);
  const page = ["a", "b", "b", "c"].map((id) => ({ paper: { id } }));
  assert.deepEqual(unseen(page, ["a"]).map((i) => i.paper.id), ["b", "c"]);
});

test("the badge's note counts the new papers of followed authors only", () => {
  const item = (id, reason, addedAt = 200) => ({ paper: { id, added_at: addedAt }, reasons: [reason] });
  const items = [
    item("a", "new from Yann LeCun"),
    item("b", "new from Y. Bengio"),
    item("c", "new in diffusion · video"),
    item("d", "new from Yann LeCun", 50), // added before the popup was last opened
    item("e", "new from Yann LeCun"), // seen already
  ];
  assert.equal(followsNote(items, ["e"], 100), "2 new papers from authors you follow");
  assert.equal(followsNote(items.slice(2), [], 100), "1 new paper from authors you follow");
  assert.equal(followsNote([item("c", "trending today")], [], 100), "");
});
