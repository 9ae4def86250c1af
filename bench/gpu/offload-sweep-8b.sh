#!/usr/bin/env bash
# The offload sweep on one GPU: the built-in engine (llama-3.1-8b shapes, random bf16 weights), the
# seed's workload with 16,000-token contexts and 10 timed rounds, GPU pool capped to hold 2 users'
# conversations, users 1, 2, 4, 8, with a 55e9-byte host pool and without (recompute baseline),
# beside a plain pinned copy of the same block size and count; the targets (bench/README.md) are
# checked in the results. Run from the repo root:
#   OUT=/some/dir bash bench/gpu/offload-sweep-8b.sh
# Writes into $OUT (at most 5 files): offload-sweep-results.md (tables and the target checks),
# copy-baseline.json (plain copy baseline), sweep.log (stderr of the sweep),
# sample-8b.jsonl.gz (users 4, host pool), runs.tar.gz (every run's events.jsonl;
# re-run the table here with: python3 bench/offload-sweep-results.py RUNS --copy copy-baseline.json --out DIR).
# Wall budget BUDGET_S (default 280 s): the sweep starts no run past the budget less a
# margin and is stopped (SIGTERM: the run in flight ends "cancelled" with a complete log) at it.
# Users run in the order USERS (default 4,2,1,8), each with and without the host pool; then,
# in the last WT_S (default 55; 0 = no such run) seconds, users 4 again with --offload-policy write-through
# and GPU sampling off (--sample-ms 0): its decode steps against the lazy users-4 run's (sampling
# every 100 ms) show whether NVML/nvidia-smi sampling slows the launch-bound step loop.
# Time (H100 and H200, 2026-11-28): set-up ~25 s (torch import, 16 GB of weights, 18 GB pinned,
# copy baseline); E2E of 10 rounds ~14 / 29-36 / 58-71 s at users 2 / 4 / 8 with the host pool,
# ~55-60 s at users 4 recomputing; USERS=2,4,8 WT_S=0 BUDGET_S=370 took 357 s (recompute users 8
# cut by the deadline). Results of every call: bench/results/ (bench/README.md has the latest).
# A/B of --copy-overlap (agent option: a batch's onboards on a second stream, pipelined behind its
# offload chunks; engine/kv_cache.py; auto = on for lazy offload). Two commands on the same warm
# machine (each run fills most of one 600 s device command), same card for both:
#   OUT=$OUT/off EXTRA="--copy-overlap off" bash bench/gpu/offload-sweep-8b.sh
#   OUT=$OUT/on EXTRA="--copy-overlap on" bash bench/gpu/offload-sweep-8b.sh
# then per side, on the users-4 host-pool log (lazy/host-55e9/users-4/events.jsonl in the archive):
#   python3 bench/ttft-bound.py LOG --copy copy-baseline.json --gpu-ttft-ms <on-GPU TTFT>
# "on" should show the d2h and h2d xfer lines of one admission on two streams, overlapping in time,
# and its copy span near max(D2H, H2D) at duplex rates instead of D2H + H2D. run.start's config
# says which side a log is (copy_overlap). The results hold a copy that shares the link with the
# other direction to half the plain both-ways copy, a copy alone to the plain one-way copy; the
# engine's h2d xfer lines are timed per onboard group from after its wait, so waiting is not
# counted as copying.
# KVSCOPE_STEP_TRACE=FILE (exported) adds a line per engine step (engine/scheduler.py): host time
# of admission, copy issue, launch and sync, and device segments allocated in the step.
# Other policies: EXTRA="--offload-policy lazy-keep" WT_S=0 SWEEP_DIR=lazy-keep (the sweep's runs
# land in RUNS/$SWEEP_DIR, default lazy). The card, sync probe, CUDA engine tests and launch cost
# before a sweep: bench/gpu/sync-probe.py, resources/agent/tests/test_engine.py, bench/gpu/launch-cost.sh.
# Dry run off the GPU (later options win): OUT=/tmp/sweep8b PYTHON=/usr/bin/python3 EXTRA="--device cpu
#   --model tiny --context-tokens 200 --new-tokens 16 --output-tokens 8 --block-tokens 16 --rounds 3
#   --gpu-kv-bytes 327680 --host-kv-bytes 1e6,0" bash bench/gpu/offload-sweep-8b.sh
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?set OUT to a writable folder}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=resources/agent PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET_S:-280}
USERS=${USERS:-4,2,1,8}
WORK=$(mktemp -d); RUNS=$WORK/runs
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${CARD:-unknown}; $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"

# Block size and blocks of one user's last request, from the preset (bf16 KV, 32-token blocks).
read -r BB PER < <($PY - <<'P'
from kvscope_agent.presets import PRESETS
c, bt = PRESETS["llama-3.1-8b"], 32
tokens = 16000 + 10 * (64 + 64) + 64 - 1  # last round's prompt + output, less the last token
print(bt * c.kv_bytes_per_token(2), -(-tokens // bt))
P
)
GPU_KV=$(( 2 * PER * BB ))
echo "block $BB bytes; a user's last request $PER blocks; GPU pool $GPU_KV bytes (2 users)"

echo "== (a) plain pinned copy, $PER blocks of $BB bytes"
timeout 60 "$PY" bench/agent-copy-bandwidth.py --block-bytes "$BB" --blocks "$PER" --out "$OUT/copy-baseline.json" | tr -d '\n'; echo

# (b) The sweep (lazy offload, the TensorRT-LLM behaviour) with and without the host pool, then,
# if time is left, users 4 with write-through offload (blocks copied to host as computed).
LEFT=$(( BUDGET - ($(date +%s) - START) - 20 ))
A_LIMIT=$(( LEFT - ${WT_S:-55} ))
CMD=("$PY" -m kvscope_agent sweep --model llama-3.1-8b --context-tokens 16000 --rounds 10 --users "$USERS"
     --host-kv-bytes 55e9,0 --gpu-kv-bytes "$GPU_KV" --deadline-s $(( A_LIMIT - 50 )) --out "$RUNS/${SWEEP_DIR:-lazy}")
# shellcheck disable=SC2206
EXTRA=(${EXTRA:-}); CMD+=("${EXTRA[@]}")
echo "== (b) sweep, ${A_LIMIT} s: ${CMD[*]}"
timeout --signal=TERM --kill-after=15 "$A_LIMIT" "${CMD[@]}" > "$OUT/sweep.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - START )) s"
LEFT=$(( BUDGET - ($(date +%s) - START) - 15 ))
if [ "${WT_S:-55}" -gt 0 ] && [ "$LEFT" -ge 35 ]; then
  CMD_WT=("$PY" -m kvscope_agent sweep --model llama-3.1-8b --context-tokens 16000 --rounds 10 --users 4
          --host-kv-bytes 55e9 --gpu-kv-bytes "$GPU_KV" --offload-policy write-through --sample-ms 0
          --out "$RUNS/write-through" "${EXTRA[@]}")
  echo "== (b2) write-through, ${LEFT} s: ${CMD_WT[*]}"
  # WT_ENV: environment for this run only (an allocator setting to A/B, for example).
  # shellcheck disable=SC2206
  WT_ENV=(${WT_ENV:-})
  [ ${#WT_ENV[@]} -gt 0 ] && echo "   with ${WT_ENV[*]}"
  timeout --signal=TERM --kill-after=10 "$LEFT" env "${WT_ENV[@]}" "${CMD_WT[@]}" >> "$OUT/sweep.log" 2>&1
  echo "write-through exit $? after $(( $(date +%s) - START )) s"
else
  echo "== (b2) write-through skipped: ${LEFT} s left"
fi
grep -E "^sweep|^round|error|Error|Traceback|cancelled" "$OUT/sweep.log" | tail -40
for f in "$RUNS"/*/*/*/events.jsonl; do echo "check ${f#$RUNS/}: $("$PY" -m kvscope_agent check "$f" 2>&1 | tail -1)"; done

echo "== (c) results"
"$PY" bench/offload-sweep-results.py "$RUNS" --copy "$OUT/copy-baseline.json" --out "$OUT" --card "${CARD:-unknown}" \
  --command "OUT=\$OUT bash bench/gpu/offload-sweep-8b.sh  (${CMD[*]/$RUNS/RUNS})"
[ -f "$RUNS/lazy/host-55e9/users-4/events.jsonl" ] && gzip -c "$RUNS/lazy/host-55e9/users-4/events.jsonl" > "$OUT/sample-8b.jsonl.gz"
tar czf "$OUT/runs.tar.gz" -C "$RUNS" .
# The device tool returns files of at most 16 MiB (the 2026-11-28 archive, 23.7 MB, was lost):
# xz packs these logs tighter; parts of 15 MiB if still too big (cat runs.tar.xz.* > x).
if [ "$(stat -c %s "$OUT/runs.tar.gz")" -gt $(( 15 * 1024 * 1024 )) ]; then
  tar cJf "$OUT/runs.tar.xz" -C "$RUNS" . && rm -f "$OUT/runs.tar.gz"
  if [ "$(stat -c %s "$OUT/runs.tar.xz")" -gt $(( 15 * 1024 * 1024 )) ]; then
    split -b 15M -d "$OUT/runs.tar.xz" "$OUT/runs.tar.xz." && rm -f "$OUT/runs.tar.xz"
  fi
fi
ls -la "$OUT"; echo "total $(( $(date +%s) - START )) s"
