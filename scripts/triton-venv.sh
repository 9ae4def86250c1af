#!/usr/bin/env bash
# A Python venv with the GPU machine's PyTorch and Triton, for the tests that run the Triton
# kernels on the CPU under Triton's interpreter (TRITON_INTERPRET=1): `npm test`'s pytest-triton
# step (scripts/run-pytest.mjs --triton) runs them there. Debian's python3-torch (1.13) has no
# Triton, so without this venv those tests skip.
#
# The pins are the GPU machine's (PyTorch 2.11 + Triton 3.6, CUDA 13). PyPI's Linux torch wheel
# is the CUDA build and needs its CUDA libraries to import even on a CPU: ~2.5 GB of wheels
# (~1.5 min to download here), ~4.6 GB installed, ~3 min to install on the shared 2-core machine
# (measured with the wheels cached); a venv whose pins match is reused at once. numpy < 2.3: Triton 3.6's interpreter turns 1-element arrays into
# ints, which newer NumPy refuses.
#
# Where: $KVSCOPE_TRITON_VENV, default ~/.cache/kvscope/venv-torch2.11.0-triton3.6.0 (outside the
# repo: CI clones afresh, the venv stays). Prints the venv's python on its last line.
set -euo pipefail
PINS=(torch==2.11.0 triton==3.6.0 "numpy<2.3" pytest)
VENV=${KVSCOPE_TRITON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kvscope/venv-torch2.11.0-triton3.6.0}
BASE=${KVSCOPE_TRITON_BASE_PYTHON:-/usr/bin/python3}
[ -x "$BASE" ] || BASE=python3
want="${PINS[*]}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.kvscope-pins" 2>/dev/null)" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
t0=$(date +%s)
mkdir -p "$(dirname "$VENV")"
"$BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
"$VENV/bin/python" -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}")' >&2
echo "$want" > "$VENV/.kvscope-pins"
echo "triton venv ready in $(( $(date +%s) - t0 )) s: $VENV" >&2
echo "$VENV/bin/python"
