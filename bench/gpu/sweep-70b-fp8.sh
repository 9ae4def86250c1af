#!/usr/bin/env bash
# The seed's sweep with a 70B model on one 80 GB GPU: Llama-3.1-70B-shaped model, FP8 weights +
# FP8 KV, the GPU pool what the weights leave (2 users), 10 rounds, 16,000-token contexts, host
# pool 55e9. What it measures and its latest result: bench/README.md; the preset, memory plan and
# earlier calls: docs/h100-70b.md.
#
#   bash bench/gpu/sweep-70b-fp8.sh                       # users 2,4,8,16,3 in that order, as time allows
#   USERS=2,4 bash bench/gpu/sweep-70b-fp8.sh             # one call of a split (times below)
#   USERS=8 SKIP_CHECK=1 BUDGET_S=560 bash bench/gpu/sweep-70b-fp8.sh
#
# Env: USERS (comma list, run in the order given), SKIP_CHECK=1 (skip step 1), BUDGET_S (wall
# seconds from the script's start after which the sweep is stopped, default 480 so one call stays
# under 9 minutes), OUT (results folder; the device tool provides it), PYTHON (default python3).
# MODEL / EXTRA exist to dry-run this script on a CPU with the tiny preset (later options override
# earlier ones); leave them unset on the GPU:
#   OUT=/tmp/sweep70b PYTHON=/usr/bin/python3 USERS=2,3 SKIP_CHECK=1 MODEL=tiny EXTRA="--device cpu \
#     --context-tokens 256 --new-tokens 16 --output-tokens 8 --rounds 2 --gpu-kv-bytes 327680 --host-kv-bytes 1e8" \
#     bash bench/gpu/sweep-70b-fp8.sh
#
# Steps: (1) FP8 correctness of one 70B layer's projections vs an fp32 reference (bf16 beside)
# and where a decode-sized FP8 call spends its time (bench/fp8-accuracy-70b.py), (2) build the
# CUPTI tracer (tracing is on by default in the agent and degrades with a logged reason if the
# build fails), (3) the sweep, one process, weights built once and reused:
#   python3 -m kvscope_agent sweep --model llama-3.1-70b-fp8 --users $USERS --rounds 10 \
#       --context-tokens 16000 --host-kv-bytes 55e9 --out RUNS --deadline-s ...
# each user count's events.jsonl is complete when that point ends, so a stop keeps finished
# points; (4) each run replayed on its own card by the what-if simulator (bench/whatif-validation.py
# --check self: the measured E2E and TTFT of every point, and how well the simulator holds them).
#
# What comes back in $OUT (the device tool returns at most 8 files):
#   sweep-70b-results.md (measured and self-replayed E2E/TTFT per point, and .json beside it),
#   sample-70b-fp8.jsonl.gz (users=4), runs-<users>.tar.gz or .tar.xz if over 15 MiB (every
#   users-N/events.jsonl), fp8-accuracy.json, sweep.log (the sweep's stderr, capped), env.txt
#   (card, driver, torch, commit, tracer build)
# GH200 from these runs, here: python3 -m kvscope_agent whatif RUNS --profile gh200-96 (docs/whatif.md)
#
# Time per call (H100 80GB HBM3, CUDA-graph decode, 2026-11-28, docs/h100-70b.md): set-up ~35 s
# (most of it pinning the host pool for max(users)), the FP8 check ~15 s; then per point about
# 1.6 / 1.9 / 2.5 min for users 2 / 3 / 4, 322 s for users 8 (traced), and for users 16 ~150 s of
# set-up and round 0 plus ~49 s a round (~640 s: past one 600-s command; split it or run fewer
# rounds). Splits that fit: USERS=2,4; USERS=3 SKIP_CHECK=1; USERS=8 SKIP_CHECK=1 BUDGET_S=560.
# The budget guard stops the sweep at BUDGET_S and --deadline-s starts no point in the budget's
# last minute, so finished points always come back.
set -u
cd "$(dirname "$0")/../.."
START=$(date +%s)
OUT="${OUT:-/tmp/kvscope-sweep-70b}"
mkdir -p "$OUT"
USERS="${USERS:-2,4,8,16,3}"
BUDGET="${BUDGET_S:-480}"
PY="${PYTHON:-python3}"
TAG="$(echo "$USERS" | tr ',' '_')"
RUNS="/tmp/kvscope-sweep-70b-runs-$TAG"     # outside $OUT: only 8 files come back
rm -rf "$RUNS"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
ENV_TXT="$OUT/env.txt"

{
  echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "users $USERS budget_s $BUDGET"
  nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader
  free -g | head -2
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  git rev-parse HEAD 2>/dev/null | sed 's/^/commit /'
} > "$ENV_TXT" 2>&1
cat "$ENV_TXT"

if [ "${SKIP_CHECK:-0}" != 1 ]; then
  echo "== 1. FP8 correctness, one 70B layer, and the decode-call breakdown (~15 s)"
  timeout 90 "$PY" bench/fp8-accuracy-70b.py "$OUT/fp8-accuracy.json"
  echo "fp8 check exit $?"
fi

echo "== 2. tracer build"
{ echo "--- build-tracer"; timeout 90 "$PY" -m kvscope_agent build-tracer --out /tmp/kvscope-tracer-build 2>&1; echo "build-tracer exit $?"; } >> "$ENV_TXT"
tail -3 "$ENV_TXT"

NOW=$(date +%s)
LEFT=$(( BUDGET - (NOW - START) ))
DEADLINE=$(( LEFT - 60 ))   # start no new point in the last minute of the budget
[ "$DEADLINE" -lt 1 ] && DEADLINE=1
# MODEL / EXTRA: a CPU dry run (header).
# shellcheck disable=SC2206
EXTRA=(${EXTRA:-})
CMD=("$PY" -m kvscope_agent sweep --model "${MODEL:-llama-3.1-70b-fp8}" --users "$USERS" --rounds 10 --context-tokens 16000 --host-kv-bytes 55e9 --deadline-s "$DEADLINE" --out "$RUNS" "${EXTRA[@]}")
echo "== 3. sweep (${LEFT} s left of the budget): ${CMD[*]}"
# SIGTERM at the budget: the agent ends the running point with run.end "cancelled" and a flushed
# log; points already finished are complete on disk.
timeout --signal=TERM --kill-after=20 "$LEFT" "${CMD[@]}" > "$OUT/sweep.full.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - START )) s"
grep -E "^sweep:|round [0-9]+:|error|Error|Traceback" "$OUT/sweep.full.log" | tail -60
{ head -c 4000000 "$OUT/sweep.full.log"; } > "$OUT/sweep.log"; rm -f "$OUT/sweep.full.log"

echo "== 4. results"
if [ -d "$RUNS" ]; then
  TARBALL="$OUT/runs-$TAG.tar.gz"
  tar -C "$(dirname "$RUNS")" -czf "$TARBALL" "$(basename "$RUNS")"
  if [ "$(stat -c %s "$TARBALL")" -gt 15728640 ]; then
    # over the 16 MiB a returned file may have: xz packs JSON lines about 1.5x tighter
    rm -f "$TARBALL"; TARBALL="$OUT/runs-$TAG.tar.xz"
    XZ_OPT=-6 tar -C "$(dirname "$RUNS")" -cJf "$TARBALL" "$(basename "$RUNS")"
  fi
  ls -l "$TARBALL"
  "$PY" bench/whatif-validation.py --check self --measured "$RUNS" --out "$OUT/sweep-70b-results.md"
  echo "results exit $?"
  [ -f "$RUNS/users-4/events.jsonl" ] && gzip -c "$RUNS/users-4/events.jsonl" > "$OUT/sample-70b-fp8.jsonl.gz"
  SAMPLE="$OUT/sample-70b-fp8.jsonl.gz"
  if [ -f "$SAMPLE" ] && [ "$(stat -c %s "$SAMPLE")" -gt 15728640 ]; then
    echo "sample over 15 MiB, not returned (take the users=4 call's sample)"; rm -f "$SAMPLE"
  fi
else
  echo "no runs folder: the sweep produced nothing (see sweep.log)"
fi
echo "total $(( $(date +%s) - START )) s"
ls -l "$OUT"
