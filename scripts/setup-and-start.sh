#!/usr/bin/env bash
# The one command that sets up and starts the app: installs dependencies (downloading Electron
# when there is internet), builds, and opens the window on the Local host with the bundled runs.
# Without an Electron binary it says why and starts the same app in the browser (kvscope serve).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
npm start
