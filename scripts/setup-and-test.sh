#!/usr/bin/env bash
# The one command that sets up and passes the tests: installs the Debian packages the tests need
# when any is missing (scripts/debian-test-packages.txt, the one list), the exact npm dependencies
# (the Electron binary download is skipped: tests never launch Electron) and the venv with the GPU
# machine's PyTorch and Triton that the Triton kernel tests run in (scripts/triton-venv.sh; reused
# when its pins match) and the one with ruff that lints the Python agent (scripts/ruff-venv.sh), then
# `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the missing ones are installed with apt-get (through sudo when not root).
# Where that cannot happen (not Debian, not root and no sudo), say which are missing and go on:
# the tests that need them skip or fail saying what they lack.
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' scripts/debian-test-packages.txt)
install_missing() {
  local missing=() p as_root=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "setup: missing Debian packages ${missing[*]}; not root and no sudo, so install them yourself (apt-get install ${missing[*]})" >&2
      return 0
    fi
    as_root=(sudo)
  fi
  echo "setup: installing the Debian packages the tests need: ${missing[*]}" >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
if command -v dpkg-query >/dev/null 2>&1; then
  install_missing
else
  echo "setup: not a Debian system (no dpkg-query): the tests want the equivalents of ${packages[*]}" >&2
fi

export ELECTRON_SKIP_BINARY_DOWNLOAD=1
npm ci --no-audit --no-fund
bash scripts/triton-venv.sh
bash scripts/ruff-venv.sh
npm test
