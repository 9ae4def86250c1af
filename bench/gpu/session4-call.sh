#!/usr/bin/env bash
# One device call of the fourth GPU session (2026-11-28), what NEXT.md step 1 and 3 ask, in one
# command: card, sync probe, engine tests on CUDA and the launch-cost probe (PART=1 only), then
# issue 3's sweep (users 2, 4,
# 8 with the host pool; the recompute baseline was measured in the third session) and users 4
# with write-through, with a step trace. PART=1: copy overlap off, write-through as is.
# PART=2: copy overlap on. PART=3: --offload-policy lazy-keep, no write-through run.
# SKIP_PROBES=1: PART=1 without the probes and tests. USERS: the sweep's users (2,4,8).
# DRY_EXTRA: options appended to the runs' (a CPU dry run: see bench/gpu/issue3.sh's header). WT_ENV: environment of the write-through run only (the fourth
# session ran PART=2 with WT_ENV=PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: slower).
# Leaves $OUT/part$PART.tar.gz plus part$PART-issue3-runs.tar.* (the device returns 8 files of <= 16
# MiB; both parts in one call keep their own names).
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?}" "${PART:?}"
O=$OUT/part$PART; mkdir -p "$O"
nvidia-smi --query-gpu=name,uuid,pci.bus_id,driver_version --format=csv > "$O/card.csv" 2>&1
if [ "$PART" = 1 ] && [ -z "${SKIP_PROBES:-}" ]; then
  timeout 90 python3 bench/gpu/sync-probe.py --out "$O/sync-probe.json" > "$O/sync-probe.txt" 2>&1
  echo "sync probe exit $?"
  timeout 200 python3 resources/agent/tests/test_engine.py > "$O/engine-tests-cuda.log" 2>&1
  echo "engine tests exit $?: $(tail -1 "$O/engine-tests-cuda.log")"
  # Host cost of a launch / small upload / small device copy, tracer loaded vs not (issue 4).
  OUT=$O timeout 120 bash bench/gpu/launch-cost.sh > /dev/null 2>&1
  echo "launch cost: $(grep -c traced "$O/launch-cost.txt" 2>/dev/null) lines"; cat "$O/launch-cost.txt" 2>/dev/null
fi
WT_S=90 SWEEP_DIR=lazy
if [ "$PART" = 1 ]; then
  EXTRA="--host-kv-bytes 55e9"
elif [ "$PART" = 2 ]; then
  EXTRA="--host-kv-bytes 55e9 --copy-overlap on"
else  # PART=3: lazy-keep (the host keeps an onboarded block's copy), no write-through run
  EXTRA="--host-kv-bytes 55e9 --offload-policy lazy-keep" WT_S=0 SWEEP_DIR=lazy-keep
fi
EXTRA="$EXTRA ${DRY_EXTRA:-}"  # a dry run off the GPU: issue3.sh's header gives the options
WT_ENV=${WT_ENV:-}
KVSCOPE_STEP_TRACE=$O/steps.jsonl OUT=$O/issue3 ISSUE3_USERS=${USERS:-2,4,8} ISSUE3_EXTRA="$EXTRA" ISSUE3_WT_ENV="$WT_ENV" \
  ISSUE3_BUDGET_S=${BUDGET_S:-380} ISSUE3_WT_S=$WT_S ISSUE3_SWEEP_DIR=$SWEEP_DIR bash bench/gpu/issue3.sh > "$O/issue3.txt" 2>&1
echo "issue3 exit $?"
tail -25 "$O/issue3.txt"
for f in "$O"/issue3/issue3-runs.tar.*; do [ -e "$f" ] && mv "$f" "$OUT/part$PART-$(basename "$f")"; done
tar czf "$OUT/part$PART.tar.gz" -C "$OUT" "part$PART" && rm -rf "$O"
ls -la "$OUT"
