#!/usr/bin/env bash
# bench/gpu/launch-cost.py in fresh processes, untraced and traced alternately (2 each), the
# tracer built from this tree. Writes $OUT/launch-cost.txt. About 30 s on the H100.
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?}"
export PYTHONPATH=resources/agent
LIB=$(python3 -m kvscope_agent build-tracer --out /tmp/kvs-lc-build 2>/dev/null | tail -1)
echo "tracer: $LIB" | tee "$OUT/launch-cost.txt"
for i in 1 2; do
  python3 bench/gpu/launch-cost.py | tee -a "$OUT/launch-cost.txt"
  rm -rf /tmp/kvs-lc-trace; mkdir -p /tmp/kvs-lc-trace
  CUDA_INJECTION64_PATH=$LIB KVSCOPE_TRACE_DIR=/tmp/kvs-lc-trace python3 bench/gpu/launch-cost.py | tee -a "$OUT/launch-cost.txt"
done
