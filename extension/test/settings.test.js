import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_BACKEND, serviceOrigin } from "../lib/settings.js";

test("the service's origin from the address a reader types", () => {
  const cases = {
    "http://127.0.0.1:8000": "http://127.0.0.1:8000",
    "http://127.0.0.1:8000/v1/feed?x=1": "http://127.0.0.1:8000",
    "localhost:8000": "http://localhost:8000",
    "  127.0.0.1:8000  ": "http://127.0.0.1:8000",
    "paperfeed.example.org": "https://paperfeed.example.org",
    "paperfeed.example.org:8443": "https://paperfeed.example.org:8443",
    "192.168.1.5:8000": "http://192.168.1.5:8000",
    "172.20.0.2:8000": "http://172.20.0.2:8000",
    "172.40.0.2:8000": "https://172.40.0.2:8000",
    "nas.local:8000": "http://nas.local:8000",
    "paperfeed:8000": "http://paperfeed:8000",
    "http://paperfeed.example.org": "http://paperfeed.example.org",
    "   ": DEFAULT_BACKEND,
    "HTTPS://Paperfeed.Example.org/": "https://paperfeed.example.org",
    "": DEFAULT_BACKEND,
    "ftp://example.org": null,
    "javascript:alert(1)": null,
    "http://": null,
    "not an address": null,
  };
  for (const [typed, origin] of Object.entries(cases)) {
    assert.equal(serviceOrigin(typed), origin, JSON.stringify(typed));
  }
});
