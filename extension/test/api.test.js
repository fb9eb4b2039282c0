import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, describe, KINDS } from "../lib/api.js";

test("a limit that lasts says when to try again, not 'soon'", () => {
  const installs = new ApiError(
    "rate-limited", 429, "rate limit reached: at most 30 new installs an hour from an address",
    3_491_000,
  );
  assert.equal(
    describe(installs),
    "Too many requests (at most 30 new installs an hour from an address): try again in about 59 minutes.",
  );
  assert.equal(
    describe(new ApiError("rate-limited", 429, "", 3_600_000)),
    "Too many requests: try again in about an hour.",
  );
  // A minute or less is "soon"; other kinds say what they always said.
  assert.equal(describe(new ApiError("rate-limited", 429, "", 30_000)), KINDS["rate-limited"]);
  assert.equal(describe(new ApiError("server", 503, "", 5_000)), KINDS.server);
  assert.equal(describe(new ApiError("strange")), "Something went wrong.");
  assert.equal(describe(new ApiError("strange"), "Export failed."), "Export failed.");
});
