#!/usr/bin/env bash
# The built-in engine's disk tier side by side, in ONE device command (about 5-6 minutes on an H100
# 80GB; BUDGET_S, default 540, bounds it): the 8B preset (random bf16 weights) at 16,000-token
# contexts, USERS users (default 4), ROUNDS timed rounds (default 10), four runs of the same workload:
#   host-disk   a GPU pool for 2 users' conversations, a host pool for 1.5 (too small for the users
#               left out), and a disk tier behind it (--disk-kv-bytes for USERS users, in DISK_PATH)
#   host        the same GPU and host pools without the disk tier (what the host pool cannot keep
#               is recomputed)
#   gpu-only    a GPU pool sized by --free-gpu-memory-fraction: every user's blocks stay on the GPU
#   recompute   the 2-user GPU pool alone (no host pool)
# then bench/disk-tier-results.py's table: E2E and mean TTFT per config, every request's ttft_parts
# against its measured TTFT (target: within 2%), and the disk tier's promotion bandwidth against
# the plain sequential read the same run measured in setup by the same method (target: 80%).
# Run from the repo root:
#   OUT=/some/dir bash bench/gpu/disk-tier.sh
# Writes into $OUT: machine.txt (card, driver, torch, commit, the disk's filesystem), disk-tier.log
# (the runs' stderr), disk-tier-results.md and .json (the table and the checks), sample-three-tier.jsonl.gz
# (the host-disk run's log, a sample for the window), runs.tar.gz (every run's events.jsonl).
# DISK_PATH (default /var/tmp/kvscope-disk-tier, created): the folder of the disk tier's file; the
# tier reads and writes it with O_DIRECT where its filesystem takes it (the table says which, and
# whether the folder is on tmpfs, which would measure memory, not a disk).
# Dry run on the CPU (tiny preset, 256-token contexts, the same four runs and table):
#   DRY_RUN=1 OUT=/tmp/disk-tier PYTHON=/usr/bin/python3 bash bench/gpu/disk-tier.sh
# shellcheck source=bench/gpu/whatif-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/whatif-common.sh"
USERS=${USERS:-4}
ROUNDS=${ROUNDS:-10}
BUDGET_S=${BUDGET_S:-540}
DISK_PATH=${DISK_PATH:-/var/tmp/kvscope-disk-tier}
mkdir -p "$DISK_PATH" || exit 1
machine_record machine.txt >/dev/null
{ echo "disk tier folder $DISK_PATH:"; df -T "$DISK_PATH" 2>&1 | tail -1; } | tee -a "$OUT/machine.txt"

eight_b_two_user_pool  # MODEL, GPU_KV (2 users' last requests)
PER_USER=$(( GPU_KV / 2 ))
HOST_KV=$(( PER_USER * 3 / 2 ))
DISK_KV=$(( PER_USER * USERS ))
# shellcheck disable=SC2206
EXTRA=(${EXTRA:-})
COMMON=("${MODEL[@]}" --context-tokens 16000 --rounds "$ROUNDS" --users "$USERS" "${EXTRA[@]}")
echo "users $USERS, rounds $ROUNDS; a user's conversation $PER_USER bytes: GPU pool $GPU_KV, host pool $HOST_KV, disk tier $DISK_KV"

run_config() {  # run_config NAME agent-args...: one run into $RUNS/NAME, within the budget left
  local name=$1; shift
  local limit
  limit=$(left_s)
  if [ "$limit" -lt 40 ]; then
    echo "== $name: not run, ${limit} s left of BUDGET_S=$BUDGET_S"
    return
  fi
  local cmd=("$PY" -m kvscope_agent run "${COMMON[@]}" "$@" --out "$RUNS/$name" "${AGENT_DRY[@]}")
  echo "== $name (${limit} s at most): ${cmd[*]/$RUNS/RUNS}"
  timeout --signal=TERM --kill-after=15 "$limit" "${cmd[@]}" >> "$OUT/disk-tier.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - START )) s; check: $("$PY" -m kvscope_agent check "$RUNS/$name/events.jsonl" 2>&1 | tail -1)"
}

mkdir -p "$RUNS"
run_config host-disk --gpu-kv-bytes "$GPU_KV" --host-kv-bytes "$HOST_KV" --disk-kv-bytes "$DISK_KV" --disk-kv-path "$DISK_PATH"
run_config host --gpu-kv-bytes "$GPU_KV" --host-kv-bytes "$HOST_KV"
run_config gpu-only --host-kv-bytes 0
run_config recompute --gpu-kv-bytes "$GPU_KV" --host-kv-bytes 0
grep -E "^round|disk tier|error|Error|Traceback|cancelled" "$OUT/disk-tier.log" | tail -30

CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ "$DRY" = 1 ] && CARD="CPU dry run (tiny preset)"
"$PY" bench/disk-tier-results.py "$RUNS" --out "$OUT" --card "${CARD:-unknown}" \
  --command "OUT=\$OUT USERS=$USERS ROUNDS=$ROUNDS bash bench/gpu/disk-tier.sh"
[ -f "$RUNS/host-disk/events.jsonl" ] && gzip -c "$RUNS/host-disk/events.jsonl" > "$OUT/sample-three-tier.jsonl.gz"
pack_runs runs
