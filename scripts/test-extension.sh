#!/usr/bin/env bash
# The extension's unit tests (node's own test runner; no npm packages needed).
set -euo pipefail
cd "$(dirname "$0")/../extension"
if ! command -v node >/dev/null 2>&1; then
  echo "test-extension: node is missing" >&2
  exit 1
fi
node --test test/
