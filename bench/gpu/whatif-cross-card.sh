#!/usr/bin/env bash
# What-if validation, cross-card (docs/whatif.md, "Validation"): the same 8B sweep on an H100 and
# on an H200 (one call on each card, same tree); then, here, the simulator calibrated on the H100
# runs predicts the H200 runs (target: 10% E2E and mean TTFT):
#   OUT=/some/dir bash bench/gpu/whatif-cross-card.sh          # on each card
#   python3 bench/whatif-validation.py --check cross-card --source H100/cross-card-runs \
#       --measured H200/cross-card-runs --profile h200 --out bench/results/<session>/whatif-cross-card.md
# (after `tar xzf cross-card-runs.tar.gz` of each call into its folder). The workload is the
# seed's 8B setting of bench/gpu/offload-sweep-8b.sh at the agent's defaults (lazy offload, copy
# overlap auto, tracing on): 16,000-token contexts, a GPU pool for 2 users, 55e9-byte host pool.
# Env: USERS (default 2,4,8), ROUNDS (default 3), BUDGET_S (default 300), PYTHON, DRY_RUN=1.
# Estimate: H100 ~90 s (set-up ~25 s; users 2 / 4 / 8: context 4 / 8 / 15 s, rounds 1.6 / 3.6 /
# 7 s), the H200 ~20% less. Comes back in $OUT: cross-card-runs.tar.gz, the sweep log, machine.txt,
# whatif-self.md (each run replayed on its own card: the calibration holds on this card).
. "$(dirname "$0")/whatif-common.sh"
BUDGET_S=${BUDGET_S:-300}
USERS=${USERS:-2,4,8}
ROUNDS=${ROUNDS:-3}
machine_record machine.txt
eight_b_two_user_pool
run_sweep cross-card $(( $(left_s) - 30 )) "${MODEL[@]}" --users "$USERS" --rounds "$ROUNDS" --context-tokens 16000 \
  --host-kv-bytes 55e9 --gpu-kv-bytes "$GPU_KV"
"$PY" bench/whatif-validation.py --check self --measured "$RUNS/cross-card" "${SRC_PROFILE[@]}" --out "$OUT/whatif-self.md"
echo "self-check exit $?"
mv "$RUNS/cross-card" "$RUNS/cross-card-runs" && pack_runs cross-card-runs
