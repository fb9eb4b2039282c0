import assert from "node:assert/strict";
import { test } from "node:test";

import { arxivId, paperIdFromUrl, siteOf } from "../lib/ids.js";

test("paper ids from arXiv and Hugging Face URLs", () => {
  const cases = {
    "https://arxiv.org/abs/2401.01234": "2401.01234",
    "https://arxiv.org/abs/2401.01234v3": "2401.01234",
    "https://arxiv.org/pdf/2401.01234v2": "2401.01234",
    "https://arxiv.org/pdf/2401.01234.pdf": "2401.01234",
    "https://arxiv.org/html/2401.01234v1/": "2401.01234",
    "https://huggingface.co/papers/2401.01234": "2401.01234",
    "https://huggingface.co/papers": null,
    "https://huggingface.co/papers/2401.01234/discussion": null,
    "https://arxiv.org/list/cs.LG/recent": null,
    "https://example.com/abs/2401.01234": null,
    "not a url": null,
  };
  for (const [url, id] of Object.entries(cases)) assert.equal(paperIdFromUrl(url), id, url);
});

test("arxiv ids and sites", () => {
  assert.equal(arxivId("2312.17653v2"), "2312.17653");
  assert.equal(arxivId("hep-th/9901001"), null);
  assert.equal(siteOf("https://arxiv.org/abs/1"), "arxiv");
  assert.equal(siteOf("https://huggingface.co/papers/1"), "huggingface");
  assert.equal(siteOf("https://example.com"), null);
});
