#!/usr/bin/env bash
# The one command that sets up and passes the tests: installs the exact npm dependencies (the
# Electron binary download is skipped: tests never launch Electron), then `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
npm ci --no-audit --no-fund
npm test
