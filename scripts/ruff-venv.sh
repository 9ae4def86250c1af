#!/usr/bin/env bash
# A small Python venv with ruff, the Python agent's linter (ruff.toml): `npm test`'s ruff step
# (scripts/run-ruff.mjs) runs it. One ~15 MB wheel; a venv whose pin matches is reused at once.
#
# Where: $KVSCOPE_RUFF_VENV, default ~/.cache/kvscope/venv-ruff-<version> (outside the repo: CI
# clones afresh, the venv stays). Prints the venv's ruff on its last line.
set -euo pipefail
PIN=ruff==0.17.6
VENV=${KVSCOPE_RUFF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kvscope/venv-${PIN/==/-}}
BASE=${KVSCOPE_RUFF_BASE_PYTHON:-/usr/bin/python3}
[ -x "$BASE" ] || BASE=python3
if [ -x "$VENV/bin/ruff" ] && [ "$(cat "$VENV/.kvscope-pins" 2>/dev/null)" = "$PIN" ]; then
  echo "$VENV/bin/ruff"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PIN" >&2
echo "$PIN" > "$VENV/.kvscope-pins"
echo "$VENV/bin/ruff"
