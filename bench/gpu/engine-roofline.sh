#!/usr/bin/env bash
# The built-in engine against the hardware's limits, in one device call (~5-7 min on an H100):
# (1) the Triton kernels' tests and the engine tests on CUDA (bf16 and fp32, CUDA graphs);
# (2) bench/engine-roofline.py: decode step vs bandwidth bound, prefill vs FLOP bound, kernel A/B,
#     for llama-3.1-8b and llama-3.1-70b-fp8 at 1, 2, 4, 8 users of 16,000 tokens.
# From the repo root: OUT=/some/dir bash bench/gpu/engine-roofline.sh [roofline options]
# ENGINE_TESTS=0 skips (1). TUNE=1 first times the kernels' configurations (bench/fp8-decode-tune.py,
# bench/prefill-attention-tune.py, ~2 min each at most) and writes the fastest into the engine's
# tables in this checkout (bench/apply-tuned-configs.py; the diff is $OUT/tuned-configs.diff), so
# (1) and (2) measure the engine as tuned; apply the same JSONs to the source afterwards.
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
if [ "${TUNE:-0}" = 1 ]; then
  echo "== tuning"
  timeout "${TUNE_DECODE_S:-150}" $PY bench/fp8-decode-tune.py --out "$OUT" > "$OUT/tune.log" 2>&1; echo "fp8-decode-tune rc=$?"
  timeout "${TUNE_PREFILL_S:-150}" $PY bench/prefill-attention-tune.py --out "$OUT" >> "$OUT/tune.log" 2>&1; echo "prefill-attention-tune rc=$?"
  args=()
  [ -f "$OUT/fp8-decode-tune.json" ] && args+=(--fp8-decode "$OUT/fp8-decode-tune.json")
  [ -f "$OUT/prefill-attention-tune.json" ] && args+=(--prefill "$OUT/prefill-attention-tune.json")
  [ ${#args[@]} -gt 0 ] && $PY bench/apply-tuned-configs.py "${args[@]}"
  git diff -- resources/agent/kvscope_agent/engine > "$OUT/tuned-configs.diff" 2>/dev/null
fi
if [ "${ENGINE_TESTS:-1}" != 0 ]; then
  echo "== kernel and engine tests on CUDA"
  # each file runs whatever the one before it did, and says its own exit status
  for t in "150 test_paged_attention.py" "60 test_fused_ops.py" "60 test_fp8.py" "60 test_fp8_gemv.py" "90 test_engine.py"; do
    read -r limit file <<<"$t"
    (cd resources/agent && timeout "$limit" $PY "tests/$file"); echo "$file rc=$?"
  done > "$OUT/tests.log" 2>&1
  grep -Ev '^(PASS|SKIP)' "$OUT/tests.log" | tail -n 25
fi
echo "== roofline"
timeout 540 $PY bench/engine-roofline.py --out "$OUT" "$@"
echo "roofline rc=$?"
