#!/usr/bin/env bash
# Tracing overhead microbenchmark on the GPU host (bench/gpu/tracer-overhead-micro.py says what it measures):
# off / trace / sample / on, each in a fresh process, 5 interleaved rounds, eager and CUDA-graph
# decode-shaped steps; ~4-5 s a worker, so ~90-110 s on an H100. From the repo root:
#   OUT=/some/dir bash bench/gpu/tracer-overhead-micro.sh
# CONFIGS (comma list of off,trace,sample,on,trace200,lib,tracenopool; default off,trace,sample,on), REPS (5),
# BUDGET_S (105: no round starts that would end past it) override. trace200 (200 ms flush) and lib
# (library without the Python collector), tracenopool (the library without its buffer pool) add
# ~25 s each at 5 rounds: raise BUDGET_S with them.
# A dry run without a GPU: DEVICE=cpu OUT=/tmp/x bash bench/gpu/tracer-overhead-micro.sh
# With GPU_TESTS=1 the tracer's GPU tests run after it (see below).
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EXTRA=()
[ "$DEVICE" = cpu ] && EXTRA=(--steps 20 --graph-steps 20 --layers 4 --hidden 256 --inner 128)
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  $PY -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUT/info.txt"
$PY bench/gpu/tracer-overhead-micro.py --out "$OUT" --device "$DEVICE" \
  --configs "${CONFIGS:-off,trace,sample,on}" --reps "${REPS:-5}" --budget-s "${BUDGET_S:-105}" "${EXTRA[@]}" \
  > "$OUT/tracer-overhead-micro.log" 2>&1
rc=$?
# GPU_TESTS=1: also the tracer's GPU tests (known copies traced exactly, 0 dropped; an agent run's
# copies agree with its blocks) and the buffer-pool self-test, which check the library's buffer
# pool on this GPU; ~20-40 s more.
if [ "${GPU_TESTS:-0}" = 1 ] && [ "$DEVICE" = cuda ]; then
  (cd resources/agent && timeout 150 $PY -m pytest -q -rs tests/test_tracer_gpu.py tests/test_tracer_pool.py 2>&1 | tail -n 15) | tee "$OUT/test_tracer_gpu.txt"
fi
# Keep what comes back small: the decoded events logs stay, raw CUPTI trace files go.
find "$OUT/runs" -path '*/trace' -type d -prune -exec rm -rf {} + 2>/dev/null
tail -n 40 "$OUT/tracer-overhead-micro.log"
echo "tracer-overhead-micro rc=$rc"
exit $rc
