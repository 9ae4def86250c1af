#!/usr/bin/env bash
# The one command that sets up and passes the tests: installs the exact npm dependencies (the
# Electron binary download is skipped: tests never launch Electron) and the venv with the GPU
# machine's PyTorch and Triton that the Triton kernel tests run in (scripts/triton-venv.sh; reused
# when its pins match), then `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
npm ci --no-audit --no-fund
bash scripts/triton-venv.sh
npm test
