#!/usr/bin/env bash
# Which op of an admitting step's first layer holds the CPU (the offload sweep: users 1 and 2 of a users-4
# round launch their mixed step in ~100 ms, blocked in layer 0; user 3 in ~40). Users 4, 8B,
# 16,000-token contexts, the offload sweep's GPU pool (2 users), ROUNDS timed rounds (default 4), with the
# engine's step trace (KVSCOPE_STEP_TRACE: per step layer_ms and layer 0's per-op host times
# layer0_ms) and, where asked, torch's sync debug mode (KVSCOPE_SYNC_DEBUG=1: each step's record
# names every synchronising call, "syncs"). Runs: write-through with sync debug, write-through
# without it (the debug mode's own cost), lazy with it (PROBE_RUNS picks: wt-sync wt lazy-sync lazy). Leaves $OUT/stall-probe$TAG.tar.gz
# (TAG: a suffix, so two probes in one call keep their own tarballs).
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?}"
O=$OUT/stall; mkdir -p "$O"
export PYTHONPATH=$PWD/resources/agent
PY=${PY:-python3}
nvidia-smi --query-gpu=name,uuid,pci.bus_id,driver_version --format=csv > "$O/card.csv" 2>&1
GPU_KV=${GPU_KV:-4546625536}  # 2 users' last requests (offload-sweep-8b.sh: 542 blocks × 2 × 4 MiB)
run() {  # name policy sync_debug extra...
  local name=$1 policy=$2 dbg=$3; shift 3
  KVSCOPE_STEP_TRACE=$O/steps-$name.jsonl KVSCOPE_SYNC_DEBUG=$dbg timeout 150 "$PY" -m kvscope_agent run \
    --model llama-3.1-8b --context-tokens 16000 --rounds "${ROUNDS:-4}" --users 4 --host-kv-bytes 55e9 \
    --gpu-kv-bytes "$GPU_KV" --offload-policy "$policy" --sample-ms 0 --out "$O/$name" "$@" > "$O/$name.log" 2>&1
  echo "$name exit $?: $(grep -c . "$O/steps-$name.jsonl" 2>/dev/null) steps"
}
for r in ${PROBE_RUNS:-wt-sync wt lazy-sync}; do  # PROBE_RUNS: a subset, in this order
  case $r in
    wt-sync) run wt-sync write-through 1 ;;
    wt) run wt write-through 0 ;;
    lazy-sync) run lazy-sync lazy 1 ;;
    lazy) run lazy lazy 0 ;;
  esac
done
tar czf "$OUT/stall-probe${TAG:-}.tar.gz" -C "$OUT" stall && rm -rf "$O"
