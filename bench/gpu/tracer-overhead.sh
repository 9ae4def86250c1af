#!/usr/bin/env bash
# Tracing and sampling overhead on the GPU host: tracer build time, nvidia-smi fixtures, and the
# overhead of tracing + sampling on the agent's 8B preset (GPU pool short enough to offload, 10 rounds, users 4):
# runs with `--trace on --sample-ms 100` and `--trace off --sample-ms 0`, alternating which goes
# first, PAIRS pairs (5) within BUDGET_S seconds (250) of wall time. From the repo root:
#   OUT=/some/dir bash bench/gpu/tracer-overhead.sh
# Target (bench/README.md): median E2E and TTFT ratios on/off <= 1.02, 0 records dropped.
# Dry run without a GPU (no tracer, no nvidia-smi: those steps print their errors): OUT=/tmp/to
#   PYTHON=/usr/bin/python3 MODEL=tiny KV_TOK=512 EXTRA_ARGS="--device cpu" CTX=256 OUT_TOKENS=8
#   ROUNDS=2 PAIRS=1 BUDGET_S=150 bash bench/gpu/tracer-overhead.sh
# Sizing: one untraced calibration run at the asked settings (CTX=16000 tokens, OUT_TOKENS=64)
# measures this host; if len(CONFIGS) x PAIRS such runs cannot fit what is left of the budget, the context
# shrinks first (down to 2000 tokens), then the output tokens (down to 16), then the pairs (down
# to 3), from the calibration run's own phase times. The results say what was used and why.
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-250}
CTX=${CTX:-16000}
OUT_TOKENS=${OUT_TOKENS:-64}
USERS=${USERS:-4}
ROUNDS=${ROUNDS:-10}
PAIRS=${PAIRS:-5}
# Configurations run in each pair, rotating which goes first: on = tracing + sampling, off =
# neither; to tell which one costs time add "trace" (tracing only) and "sample" (sampling only),
# e.g. CONFIGS="off trace sample on" (bench/tracer-overhead-h100.md says why); "smi" is sampling
# without NVML's PCIe reads (KVSCOPE_PCIE_MS=0); "traceslow" is tracing only with the library's
# flush and the collector's poll at 200 ms (KVSCOPE_TRACE_FLUSH_MS, KVSCOPE_TRACE_POLL_MS) instead
# of 100 and 50: if the cost is the flusher or the Python collector waking, it falls.
CONFIGS=${CONFIGS:-on off}
MODEL=${MODEL:-llama-3.1-8b}
KV_TOK=${KV_TOK:-131072}  # bytes of KV per token of llama-3.1-8b in bf16 (32 layers x K,V x 8 heads x 128 x 2 B)
EXTRA_ARGS=${EXTRA_ARGS:-}  # e.g. "--device cpu" for a dry run of this script without a GPU
T_START=$(date +%s)
date -u +"date: %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/info.txt"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv,noheader | tee -a "$OUT/info.txt"
$PY -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/info.txt"

echo "== build the tracer (fresh cache, then cached)"
rm -rf /tmp/kvscope-tracer-overhead-build
t0=$(date +%s%N)
LIB=$($PY -m kvscope_agent build-tracer --out /tmp/kvscope-tracer-overhead-build 2> "$OUT/build.err"); rc=$?
t1=$(date +%s%N)
$PY -m kvscope_agent build-tracer --out /tmp/kvscope-tracer-overhead-build > /dev/null 2>&1
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

# One run: $1 folder, $2 on|off, $3 context tokens, $4 output tokens, $5 timeout s. GPU pool =
# 2.2 users' contexts (so 4 users offload), host pool = 1.5x what all users ever hold.
one_run() {
  local dir=$1 mode=$2 ctx=$3 otok=$4 limit=${5:-200}
  local gpu_kv=$(( ctx * KV_TOK * 22 / 10 ))
  local host_kv=$(( USERS * (ctx + ROUNDS * (64 + otok) + 256) * KV_TOK * 3 / 2 ))
  local extra
  case "$mode" in
    on) extra=(--trace on --sample-ms 100) ;;
    trace) extra=(--trace on --sample-ms 0) ;;
    sample) extra=(--trace off --sample-ms 100) ;;
    smi) extra=(--trace off --sample-ms 100) ;;  # sampling without the PCIe reads (KVSCOPE_PCIE_MS=0)
    traceslow) extra=(--trace on --sample-ms 0) ;;  # with the 200 ms periods below
    *) extra=(--trace off --sample-ms 0) ;;
  esac
  mkdir -p "$(dirname "$dir")"
  local t0=$(date +%s%N)
  local pcie_ms=""
  [ "$mode" = smi ] && pcie_ms=0
  local flush_ms="" poll_ms=""
  [ "$mode" = traceslow ] && flush_ms=200 && poll_ms=200
  # STEP_TRACE=1: each run's engine step trace beside its folder (<config>-steps.jsonl, in the
  # runs tarball), for bench/step-trace-compare.py: which steps a configuration makes slower.
  local steps=""
  [ -n "${STEP_TRACE:-}" ] && steps="$dir-steps.jsonl"
  KVSCOPE_STEP_TRACE=$steps KVSCOPE_TRACE_FLUSH_MS=$flush_ms KVSCOPE_TRACE_POLL_MS=$poll_ms KVSCOPE_PCIE_MS=$pcie_ms timeout "$limit" $PY -m kvscope_agent run --model "$MODEL" $EXTRA_ARGS --users "$USERS" --rounds "$ROUNDS" \
    --context-tokens "$ctx" --output-tokens "$otok" --gpu-kv-bytes "$gpu_kv" --host-kv-bytes "$host_kv" \
    "${extra[@]}" --out "$dir" > "$dir.log" 2>&1
  local rc=$?
  echo "$dir $mode ctx=$ctx out=$otok rc=$rc wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))" | sed "s|$OUT/||" | tee -a "$OUT/info.txt"
  tail -n 2 "$dir.log"
}

echo "== calibration: one untraced run at context $CTX, $OUT_TOKENS output tokens"
left=$(( BUDGET_S - ($(date +%s) - T_START) ))
c0=$(date +%s)
one_run "$OUT/calibration" off "$CTX" "$OUT_TOKENS" $(( left / 3 ))
calib_s=$(( $(date +%s) - c0 ))
left=$(( BUDGET_S - ($(date +%s) - T_START) ))
read -r CTX2 OTOK2 PAIRS2 NOTE < <($PY - "$OUT/calibration/events.jsonl" "$calib_s" "$left" "$PAIRS" "$CTX" "$OUT_TOKENS" "$ROUNDS" "$(echo $CONFIGS | wc -w)" <<'EOF'
import json, sys
path, calib_s, left, pairs, ctx, otok, rounds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
per_pair = int(sys.argv[8])
ph, done_rounds, end_t = {}, 0, None
try:
    for line in open(path):
        e = json.loads(line)
        if e["type"] == "phase":
            ph.setdefault(e["name"], {})[e["state"]] = e["t"] / 1e9
        elif e["type"] == "round" and e["round"] >= 1:
            done_rounds += 1
        elif e["type"] == "run.end":
            end_t = e["t"] / 1e9
except OSError:
    pass
def dur(n):
    p = ph.get(n, {})
    return p["end"] - p["begin"] if "begin" in p and "end" in p else None
prefill = dur("context") or 0.0
rounds_s = dur("rounds")
# A calibration cut short by its time limit still tells the time per round it reached.
per_round = rounds_s / rounds if rounds_s else ((calib_s - prefill) / max(done_rounds, 1) if done_rounds else calib_s)
fixed = max(calib_s - prefill - per_round * rounds, 2.0)
def run_s(c, o):
    return fixed + prefill * c / ctx + per_round * rounds * (0.3 + 0.7 * o / otok)
budget = left * 0.9
c, o, p = ctx, otok, pairs
while per_pair * p * run_s(c, o) > budget and c > 2000:
    c = max(2000, c - 2000)
while per_pair * p * run_s(c, o) > budget and o > 16:
    o = max(16, o // 2)
while per_pair * p * run_s(c, o) > budget and p > 3:
    p -= 1
same = (c, o) == (ctx, otok)
note = "as asked" if (same and p == pairs) else (
    f"calibration run at context {ctx}, {otok} output tokens took {calib_s:.0f} s (prefill {prefill:.1f} s, "
    f"{per_round:.2f} s per round, {fixed:.1f} s fixed); to fit {left:.0f} s left of the budget the pairs use "
    f"context {c}, {o} output tokens, {p} pairs (predicted {run_s(c, o):.0f} s per run)")
print(c, o, p, note)
EOF
)
echo "sizing: ${NOTE}" | tee -a "$OUT/info.txt"

run_pair() {  # $1 pair number; the order of CONFIGS rotates by one each pair
  local d="$OUT/runs/pair-$1" cfgs=($CONFIGS) k=${#cfgs[@]} i
  for (( i = 0; i < k; i++ )); do
    local c=${cfgs[$(( (i + $1 - 1) % k ))]}
    [ -e "$d/$c/events.jsonl" ] || one_run "$d/$c" "$c" "$CTX2" "$OTOK2"
  done
}
n=0
while [ "$n" -lt "$PAIRS2" ]; do
  n=$(( n + 1 ))
  if [ "$n" = 1 ] && [ "$CTX2" = "$CTX" ] && [ "$OTOK2" = "$OUT_TOKENS" ] && grep -q '"status":"ok"' "$OUT/calibration/events.jsonl" 2>/dev/null; then
    # Same settings: the calibration run is pair 1's untraced run ("off" then "on" here).
    mkdir -p "$OUT/runs/pair-1" && mv "$OUT/calibration" "$OUT/runs/pair-1/off" && mv "$OUT/calibration.log" "$OUT/runs/pair-1/off.log"
    [ -f "$OUT/calibration-steps.jsonl" ] && mv "$OUT/calibration-steps.jsonl" "$OUT/runs/pair-1/off-steps.jsonl"
    echo "the calibration run is runs/pair-1/off" | tee -a "$OUT/info.txt"
    run_pair 1
    continue
  fi
  # Start a pair only if one more of the last pair's length still ends inside the budget (the
  # H100 call ran under a 262 s per-script limit that cut a pair begun too late).
  if [ $(( $(date +%s) - T_START + ${last_pair_s:-0} )) -gt "$BUDGET_S" ]; then
    echo "stopping before pair $n: ${last_pair_s:-0}s more would pass the ${BUDGET_S}s budget" | tee -a "$OUT/info.txt"; break
  fi
  p0=$(date +%s)
  run_pair "$n"
  last_pair_s=$(( $(date +%s) - p0 ))
done
if [ $(( $(date +%s) - T_START )) -lt $(( BUDGET_S - 60 )) ]; then
  echo "== GPU tests of the tracer (time left)"
  (cd resources/agent && timeout 120 $PY -m pytest -q -rs tests/test_tracer_gpu.py 2>&1 | tail -n 15) | tee "$OUT/test_tracer_gpu.txt"
fi
CMD="python3 -m kvscope_agent run --model $MODEL $EXTRA_ARGS --users $USERS --rounds $ROUNDS --context-tokens $CTX2 --output-tokens $OTOK2 --gpu-kv-bytes $(( CTX2 * KV_TOK * 22 / 10 )) --host-kv-bytes $(( USERS * (CTX2 + ROUNDS * (64 + OTOK2) + 256) * KV_TOK * 3 / 2 )) --trace on --sample-ms 100 | --trace off --sample-ms 0"

echo "== results"
$PY bench/tracer-overhead.py "$OUT/runs" --out "$OUT/pairs.md" --json "$OUT/tracer-overhead-results.json" \
  --command "$CMD" --note "sizing: $NOTE" --note "$(grep -E '^build:' "$OUT/info.txt")" > /dev/null
{
  echo "# Tracing overhead results ($(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
  echo; echo '```'; cat "$OUT/info.txt"; echo '```'; echo
  cat "$OUT/pairs.md"
  if [ -f "$OUT/test_tracer_gpu.txt" ]; then
    echo; echo "## tests/test_tracer_gpu.py on this GPU"; echo; echo '```'; cat "$OUT/test_tracer_gpu.txt"; echo '```'
  fi
} > "$OUT/tracer-overhead-results.md"
# Keep what comes back small: event logs compressed, trace files dropped (they are decoded).
find "$OUT" -path '*/trace' -type d -prune -exec rm -rf {} +
tar -C "$OUT" -czf "$OUT/runs.tar.gz" runs $( [ -d "$OUT/calibration" ] && echo calibration ) && rm -rf "$OUT/runs" "$OUT/calibration"
# The device tool returns at most 8 files: everything but the results goes into one archive (the
# 2026-11-28 call left 14 files and lost its results to that limit).
# Written outside $OUT first: tar of "." into a file inside it exits 1 ("file changed as we read
# it"), which on 2026-11-28c skipped the cleanup, so 14 files came back and the results did not.
EXTRAS=$(mktemp /tmp/tracer-overhead-extras.XXXXXX.tar.gz)
if ( cd "$OUT" && tar -czf "$EXTRAS" --exclude=tracer-overhead-results.md --exclude=runs.tar.gz --exclude=tracer-overhead-results.json . ); then
  ( cd "$OUT" && find . -maxdepth 1 -type f ! -name tracer-overhead-results.md ! -name runs.tar.gz ! -name tracer-overhead-results.json -delete \
      && find . -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + ) && chmod 644 "$EXTRAS" && mv "$EXTRAS" "$OUT/extras.tar.gz"
else
  echo "packing the extras failed; they stay as files" >&2
fi
cat "$OUT/tracer-overhead-results.md"
echo "total wall: $(( $(date +%s) - T_START ))s"
