#!/usr/bin/env bash
# Issue 4 on the GPU host: tracer build time, nvidia-smi fixtures, and the overhead of tracing +
# sampling on the agent's 8B preset (GPU pool short enough to offload, 10 rounds, users 4):
# runs with `--trace on --sample-ms 100` and `--trace off --sample-ms 0`, alternating, as many
# pairs (>= 5 wanted) as fit the time budget. From the repo root:
#   OUT=/some/dir bash bench/gpu/issue4.sh            (BUDGET_S=270 CTX=16000 by default)
# If pair 1 at CTX tokens shows that 5 pairs cannot fit the budget, the remaining pairs use a
# smaller context computed from pair 1's own phase times; the results say so.
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-270}
CTX=${CTX:-16000}
USERS=${USERS:-4}
ROUNDS=${ROUNDS:-10}
PAIRS=${PAIRS:-5}
MODEL=${MODEL:-llama-3.1-8b}
KV_TOK=${KV_TOK:-131072}  # bytes of KV per token of llama-3.1-8b in bf16 (h100-measurements.md)
EXTRA_ARGS=${EXTRA_ARGS:-}  # e.g. "--device cpu" for a dry run of this script without a GPU
T_START=$(date +%s)
date -u +"date: %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/info.txt"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv,noheader | tee -a "$OUT/info.txt"
$PY -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/info.txt"

echo "== build the tracer (fresh cache, then cached)"
rm -rf /tmp/kvscope-issue4-tracer
t0=$(date +%s%N)
LIB=$($PY -m kvscope_agent build-tracer --out /tmp/kvscope-issue4-tracer 2> "$OUT/build.err"); rc=$?
t1=$(date +%s%N)
$PY -m kvscope_agent build-tracer --out /tmp/kvscope-issue4-tracer > /dev/null 2>&1
t2=$(date +%s%N)
cat "$OUT/build.err"
echo "build: rc=$rc path=$LIB fresh_ms=$(( (t1 - t0) / 1000000 )) cached_ms=$(( (t2 - t1) / 1000000 ))" | tee -a "$OUT/info.txt"

echo "== nvidia-smi outputs for fixtures"
Q=$($PY -c 'from kvscope_agent import telemetry as t; print(",".join(t.SAMPLE_FIELDS))')
P=$($PY -c 'from kvscope_agent import telemetry as t; print(",".join(t.PROBE_FIELDS))')
{ echo "+ nvidia-smi --query-gpu=$Q --format=csv,noheader,nounits -lms 100 (2 s)"; timeout 2 nvidia-smi --query-gpu="$Q" --format=csv,noheader,nounits -lms 100 2>&1; } > "$OUT/fixtures-query-gpu-sample.txt"
{ echo "+ nvidia-smi --query-gpu=$Q --format=csv"; nvidia-smi --query-gpu="$Q" --format=csv 2>&1; } > "$OUT/fixtures-query-gpu-sample-units.txt"
{ echo "+ nvidia-smi --query-gpu=$P --format=csv,noheader,nounits"; nvidia-smi --query-gpu="$P" --format=csv,noheader,nounits 2>&1; } > "$OUT/fixtures-query-gpu-probe.txt"
{ echo "+ nvidia-smi --query-gpu=index,c2c.mode --format=csv,noheader,nounits"; nvidia-smi --query-gpu=index,c2c.mode --format=csv,noheader,nounits 2>&1; } > "$OUT/fixtures-c2c.txt"
{ echo "+ nvidia-smi dmon -s t -c 3"; timeout 8 nvidia-smi dmon -s t -c 3 2>&1; } > "$OUT/fixtures-dmon-t.txt"
{ echo "+ nvidia-smi -q"; nvidia-smi -q 2>&1; } > "$OUT/fixtures-q.txt"

# One run: $1 folder, $2 on|off, $3 context tokens. GPU pool = 2.2 users' contexts (so 4 users
# offload), host pool = 1.5x what all users ever hold (no host eviction).
one_run() {
  local dir=$1 mode=$2 ctx=$3
  local kv_tok=$KV_TOK
  local gpu_kv=$(( ctx * kv_tok * 22 / 10 ))
  local host_kv=$(( USERS * (ctx + ROUNDS * 128 + 256) * kv_tok * 3 / 2 ))
  local extra=(--trace off --sample-ms 0)
  [ "$mode" = on ] && extra=(--trace on --sample-ms 100)
  local t0=$(date +%s%N)
  timeout 200 $PY -m kvscope_agent run --model "$MODEL" $EXTRA_ARGS --users "$USERS" --rounds "$ROUNDS" \
    --context-tokens "$ctx" --gpu-kv-bytes "$gpu_kv" --host-kv-bytes "$host_kv" "${extra[@]}" \
    --out "$dir" > "$dir.log" 2>&1
  local rc=$?
  echo "$(basename "$(dirname "$dir")")/$mode ctx=$ctx rc=$rc wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))" | tee -a "$OUT/info.txt"
  tail -n 3 "$dir.log"
}
CMD="python3 -m kvscope_agent run --model $MODEL $EXTRA_ARGS --users $USERS --rounds $ROUNDS --context-tokens CTX --gpu-kv-bytes CTX*$KV_TOK*2.2 --host-kv-bytes $USERS*(CTX+$ROUNDS*128+256)*$KV_TOK*1.5 --trace on --sample-ms 100 | --trace off --sample-ms 0"

run_pair() {  # $1 root, $2 pair number, $3 ctx; odd pairs run "on" first, even pairs "off" first
  local d="$1/pair-$2"; mkdir -p "$d"
  if [ $(( $2 % 2 )) = 1 ]; then one_run "$d/on" on "$3"; one_run "$d/off" off "$3";
  else one_run "$d/off" off "$3"; one_run "$d/on" on "$3"; fi
}

echo "== pair 1 at context $CTX"
p0=$(date +%s)
run_pair "$OUT/runs" 1 "$CTX"
pair_s=$(( $(date +%s) - p0 ))
left=$(( BUDGET_S - ($(date +%s) - T_START) ))
NOTE=""
CTX2=$CTX
if [ $(( pair_s * (PAIRS - 1) )) -gt "$left" ]; then
  # Scale the context so that the remaining pairs fit: per run, time outside the context and
  # rounds phases is fixed, time inside them grows with the context (prefill and attention).
  CTX2=$($PY - "$OUT/runs/pair-1/off/events.jsonl" "$pair_s" "$left" "$PAIRS" "$CTX" <<'EOF'
import json, sys
path, pair_s, left, pairs, ctx = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ph = {}
for line in open(path):
    e = json.loads(line)
    if e["type"] == "phase":
        ph.setdefault(e["name"], {})[e["state"]] = e["t"]
var = sum((p["end"] - p["begin"]) / 1e9 for n, p in ph.items() if n in ("context", "rounds") and "end" in p and "begin" in p)
run_s = pair_s / 2
fixed = max(run_s - var, 1.0)
target = left / max(pairs - 1, 1) / 2 * 0.9
scale = (target - fixed) / var if var > 0 else 0.25
new = int(max(1000, min(ctx, ctx * scale)) // 1000 * 1000)
print(new)
EOF
)
  NOTE="pair 1 took ${pair_s}s at context $CTX: 5 pairs do not fit the ${BUDGET_S}s budget, so pairs 2.. use context $CTX2 (computed from pair 1's phase times) in runs-ctx$CTX2/, and pair 1 at $CTX is reported alone"
  echo "$NOTE" | tee -a "$OUT/info.txt"
fi
ROOT2="$OUT/runs"
[ "$CTX2" != "$CTX" ] && ROOT2="$OUT/runs-ctx$CTX2" && mkdir -p "$ROOT2"
n=1
[ "$CTX2" != "$CTX" ] && n=0
while [ "$n" -lt "$PAIRS" ]; do
  n=$(( n + 1 ))
  elapsed=$(( $(date +%s) - T_START ))
  est=$pair_s
  [ "$CTX2" != "$CTX" ] && est=$(( pair_s * CTX2 / CTX + 10 ))
  if [ $(( elapsed + est )) -gt "$BUDGET_S" ]; then
    echo "stopping before pair $n: ${elapsed}s used of ${BUDGET_S}s" | tee -a "$OUT/info.txt"; break
  fi
  run_pair "$ROOT2" "$n" "$CTX2"
  [ "$CTX2" != "$CTX" ] && pair_s=$(( $(date +%s) - T_START - elapsed ))
done

echo "== results"
$PY bench/tracer-overhead.py "$OUT/runs" --out "$OUT/issue4-results-ctx$CTX.md" --json "$OUT/issue4-results-ctx$CTX.json" --command "${CMD//CTX/$CTX}" --note "$(cat "$OUT/info.txt" | grep -E '^build:' )" > /dev/null
if [ "$ROOT2" != "$OUT/runs" ]; then
  $PY bench/tracer-overhead.py "$ROOT2" --out "$OUT/issue4-results-ctx$CTX2.md" --json "$OUT/issue4-results-ctx$CTX2.json" --command "${CMD//CTX/$CTX2}" --note "$NOTE" > /dev/null
fi
{
  echo "# Issue 4 results ($(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
  echo; echo '```'; cat "$OUT/info.txt"; echo '```'; echo
  [ "$ROOT2" != "$OUT/runs" ] && cat "$OUT/issue4-results-ctx$CTX2.md" && echo
  cat "$OUT/issue4-results-ctx$CTX.md"
} > "$OUT/issue4-results.md"
# Keep what comes back small: event logs compressed, trace files dropped (they are decoded).
find "$OUT" -path '*/trace' -type d -prune -exec rm -rf {} +
tar -C "$OUT" -czf "$OUT/issue4-runs.tar.gz" runs $( [ "$ROOT2" != "$OUT/runs" ] && basename "$ROOT2" ) && rm -rf "$OUT/runs" "$ROOT2"
cat "$OUT/issue4-results.md"
echo "total wall: $(( $(date +%s) - T_START ))s"
