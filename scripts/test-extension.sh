#!/usr/bin/env bash
# The extension's unit tests (node's own test runner), then Mozilla's linter on the
# generated Firefox build (web-ext, from the npm registry, pinned by package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/../extension"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "test-extension: node and npm are needed (scripts/test-setup.sh installs them)" >&2
  exit 1
fi
node --test test/
npm ci --no-audit --no-fund --silent
npm run -s lint:firefox
