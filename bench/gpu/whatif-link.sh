#!/usr/bin/env bash
# What-if validation, link (docs/whatif.md, "Validation"): the same 8B sweep with the host pool in
# pinned memory and in pageable memory (--host-kv-memory pageable: a slower host link on the same
# card), then the simulator, calibrated on the pinned run only, predicts the pageable one (target:
# 10% E2E and mean TTFT). The slow link's rates come from the plain pageable copy that the pageable
# run measures beside its workload (summary.plain_copy): a profile file made here from the card's
# profile with those rates, each citing this call. Copy overlap off on both sides (each direction
# alone; pageable copies also hold the host). One command, from the repo root, on an H100 or H200:
#   OUT=/some/dir bash bench/gpu/whatif-link.sh
# Env: USERS (default 4), ROUNDS (default 3), BUDGET_S (default 300), PYTHON, DRY_RUN=1 (CPU, tiny).
# Estimate: ~40 s a side on an H200 (set-up ~25 s, context ~6 s, 3 rounds of ~3-5 s): ~1.5 min.
# Comes back in $OUT: whatif-link.md/.json, slow-link-profile.json, link-runs.tar.gz, logs.
. "$(dirname "$0")/whatif-common.sh"
BUDGET_S=${BUDGET_S:-300}
USERS=${USERS:-4}
ROUNDS=${ROUNDS:-3}
machine_record machine.txt
eight_b_two_user_pool
COMMON=("${MODEL[@]}" --users "$USERS" --rounds "$ROUNDS" --context-tokens 16000 --host-kv-bytes 55e9
        --gpu-kv-bytes "$GPU_KV" --copy-overlap off --trace off)
run_sweep pinned $(( $(left_s) / 2 )) "${COMMON[@]}" --host-kv-memory pinned
run_sweep pageable $(( $(left_s) - 20 )) "${COMMON[@]}" --host-kv-memory pageable

# The slow link's profile: the card's own (or the dry run's stand-in), its copy rates replaced by
# the pageable run's measured plain copy; both directions at once taken as their sum (not measured).
"$PY" - "$RUNS/pageable" "$OUT/slow-link-profile.json" "${DRY_PROFILE:-}" <<'P'
import json, sys
from kvscope_agent.whatif.profiles import profile_for_gpu, resolve_profile
from kvscope_agent.whatif.recorded import find_logs, read_run
run = read_run(find_logs(sys.argv[1])[0])
card = profile_for_gpu(run.gpu.get("name")) or resolve_profile(sys.argv[3] or "h200")
plain = run.summary.get("plain_copy") or {}
h2d = plain.get("h2d_gb_per_s") or 0.5 * card.value("link.h2d_bytes_per_s") / 1e9  # the CPU has no plain copy
d2h = plain.get("d2h_gb_per_s") or 0.5 * card.value("link.d2h_bytes_per_s") / 1e9
src = f"measured in this call: plain copy between the GPU pool and the pageable host pool (run {run.run_id}, summary.plain_copy)"
doc = json.loads(json.dumps(card.doc))
doc.update(id=card.id + "-pageable", name=card.name + ", host pool in pageable memory", match=[])
doc["link"].update(
    h2d_bytes_per_s={"value": h2d * 1e9, "source": src, "basis": "measured"},
    d2h_bytes_per_s={"value": d2h * 1e9, "source": src, "basis": "measured"},
    both_bytes_per_s={"value": (h2d + d2h) * 1e9, "source": "assumed: the sum of the two measured one-way rates", "basis": "assumed"})
json.dump(doc, open(sys.argv[2], "w"), indent=2)
print(f"slow link: h2d {h2d} GB/s, d2h {d2h} GB/s (pinned pool: {card.value('link.h2d_bytes_per_s') / 1e9:.1f})")
P
"$PY" bench/whatif-validation.py --check link --source "$RUNS/pinned" --measured "$RUNS/pageable" \
  --profile "$OUT/slow-link-profile.json" "${SRC_PROFILE[@]}" --out "$OUT/whatif-link.md"
echo "validation exit $?"
pack_runs link-runs
