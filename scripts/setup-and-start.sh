#!/usr/bin/env bash
# The one command that sets up and starts the app: installs dependencies (with Electron's binary
# when it can be downloaded), builds, and opens the window on the Local host with the bundled runs.
# Without an Electron binary (no internet), `npm start` says why and serves the same app to your
# browser (kvscope serve) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then
  if ! npm ci --no-audit --no-fund; then
    echo "setup: installing with Electron's binary failed (it is downloaded from the internet);" >&2
    echo "setup: installing without it — the app will open in your browser instead." >&2
    ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
  fi
fi
npm run build --silent
exec npm start -- "$@"
