#!/usr/bin/env bash
# CUDA-graph decode on the GPU host, before the long sweeps (one device call, ~3 min on an H100):
# (1) the engine tests on CUDA (graph replays give the eager step's greedy tokens, fp32);
# (2) llama-3.1-8b, users 4, 16,000-token contexts, 2 timed rounds, GPU pool of 2 users, host pool
#     55e9, tracing and sampling off: --decode-graphs off, then on (step ms per round side by side);
# (3) llama-3.1-70b-fp8, users 2, 4,000-token contexts, 1 round, 16 output tokens, graphs on then
#     off: FP8 products and the FP8 KV pool inside a captured graph.
# From the repo root: OUT=/some/dir bash bench/gpu/graphs-check.sh
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
EXTRA=${GRAPHS_EXTRA:-}
echo "== engine tests"
(cd resources/agent && timeout 120 $PY tests/test_engine.py) > "$OUT/engine-tests.log" 2>&1
echo "rc=$?"; grep -v '^PASS' "$OUT/engine-tests.log" | tail -n 20
BB=4194304; PER=541   # llama-3.1-8b bf16 block bytes (32 tokens), blocks of a user's last request
one() {  # $1 name, then agent options
  local name=$1; shift
  local t0=$(date +%s)
  timeout 200 $PY -m kvscope_agent run --trace off --sample-ms 0 $EXTRA "$@" --out "$OUT/runs/$name" > "$OUT/runs/$name.log" 2>&1
  echo "$name rc=$? wall_s=$(( $(date +%s) - t0 ))"
  grep -E '^round|warn|error|Traceback' "$OUT/runs/$name.log" | tail -n 8
}
for g in off on; do
  one "8b-users4-graphs-$g" --model llama-3.1-8b --users 4 --rounds 2 --context-tokens 16000 \
    --gpu-kv-bytes $(( 2 * PER * BB )) --host-kv-bytes 55e9 --decode-graphs "$g"
done
for g in on off; do
  one "70b-users2-graphs-$g" --model llama-3.1-70b-fp8 --users 2 --rounds 1 --context-tokens 4000 \
    --output-tokens 16 --host-kv-bytes 8e9 --decode-graphs "$g"
done
for f in "$OUT"/runs/*/events.jsonl; do gzip -c "$f" > "$OUT/runs/$(basename "$(dirname "$f")").jsonl.gz"; rm -rf "$(dirname "$f")"; done
$PY - "$OUT"/runs/*.jsonl.gz <<'P'
import gzip, json, sys
for path in sys.argv[1:]:
    steps, summ = [], {}
    for line in gzip.open(path, "rt"):
        e = json.loads(line)
        if e["type"] == "round":
            steps.append((e["round"], e["steps"], round(e["step_ns_mean"] / 1e6, 1), round(e["e2e_ns"] / 1e9, 2)))
        elif e["type"] == "run.end":
            summ = e.get("summary") or {}
            st = e["status"]
    print(path.split("/")[-1], st, "rounds (round, steps, step ms, e2e s):", steps, "decode:", summ.get("decode"),
          "ttft ms:", (summ.get("ttft_ns_mean") or 0) / 1e6)
P
