#!/usr/bin/env bash
# GPU smoke test of the transfer tracer and the telemetry sampler, < 90 s wall. From the repo root:
#   OUT=/some/dir bash bench/gpu/smoke-tracer.sh
# Builds the CUPTI library on this host, runs bench/tracer-smoke.py under CUDA_INJECTION64_PATH,
# and records the nvidia-smi outputs the telemetry parsers read (as fixtures, under $OUT).
set -u
OUT=${OUT:?OUT must be set}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/resources/agent${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
date -u +"date: %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/smoke-info.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/smoke-info.txt"

echo "== build-tracer"
t0=$(date +%s%N)
LIB=$($PY -m kvscope_agent build-tracer --out /tmp/kvscope-tracer-smoke 2> "$OUT/build.err")
rc=$?
t1=$(date +%s%N)
cat "$OUT/build.err"
echo "build rc=$rc path=$LIB ms=$(( (t1 - t0) / 1000000 ))" | tee -a "$OUT/smoke-info.txt"
t0=$(date +%s%N); $PY -m kvscope_agent build-tracer --out /tmp/kvscope-tracer-smoke > /dev/null 2>&1; t1=$(date +%s%N)
echo "cached rebuild ms=$(( (t1 - t0) / 1000000 ))" | tee -a "$OUT/smoke-info.txt"

if [ "$rc" = 0 ]; then
  echo "== traced copy workload"
  TR=/tmp/kvscope-trace-smoke; rm -rf "$TR"; mkdir -p "$TR"
  CUDA_INJECTION64_PATH="$LIB" KVSCOPE_TRACE_DIR="$TR" timeout 70 $PY bench/tracer-smoke.py "$OUT" 2>&1 | tail -n 120
  echo "workload rc=${PIPESTATUS[0]}"
  ls -la "$TR" | tee -a "$OUT/smoke-info.txt"
  cp -r "$TR" "$OUT/trace"  # the raw per-process files, to decode again offline
fi

echo "== the agent's own run with tracing + sampling (tiny model, GPU pool short: offload/onboard)"
for mode in on off; do
  d="$OUT/tiny-runs/pair-1/$mode"; mkdir -p "$(dirname "$d")"
  extra="--trace off --sample-ms 0"; [ "$mode" = on ] && extra="--trace on --sample-ms 100"
  timeout 60 $PY -m kvscope_agent run --model tiny --device cuda --users 3 --rounds 3 \
    --context-tokens 2048 --gpu-kv-bytes 1.2e6 --host-kv-bytes 10e6 $extra --out "$d" > "$d.log" 2>&1
  echo "tiny run $mode rc=$?"; tail -n 4 "$d.log"
done
$PY -m kvscope_agent check "$OUT/tiny-runs/pair-1/on/events.jsonl" 2>&1 | tail -n 8
$PY bench/tracer-overhead.py "$OUT/tiny-runs" --json "$OUT/tiny-runs.json" 2>&1 | sed -n '/Telemetry/,$p'
rm -rf "$OUT"/tiny-runs/pair-1/*/trace

echo "== nvidia-smi outputs (fixtures)"
Q=$($PY -c 'from kvscope_agent import telemetry as t; print(",".join(t.SAMPLE_FIELDS))')
P=$($PY -c 'from kvscope_agent import telemetry as t; print(",".join(t.PROBE_FIELDS))')
echo "+ nvidia-smi --query-gpu=$Q --format=csv,noheader,nounits -lms 100 (3 s)" > "$OUT/fixtures-query-gpu-sample.txt"
timeout 3 nvidia-smi --query-gpu="$Q" --format=csv,noheader,nounits -lms 100 >> "$OUT/fixtures-query-gpu-sample.txt" 2>&1
echo "lines in 3 s at -lms 100: $(($(wc -l < "$OUT/fixtures-query-gpu-sample.txt") - 1))" | tee -a "$OUT/smoke-info.txt"
{ echo "+ nvidia-smi --query-gpu=$P --format=csv,noheader,nounits"; nvidia-smi --query-gpu="$P" --format=csv,noheader,nounits 2>&1; } > "$OUT/fixtures-query-gpu-probe.txt"
{ echo "+ nvidia-smi --query-gpu=index,c2c.mode --format=csv,noheader,nounits"; nvidia-smi --query-gpu=index,c2c.mode --format=csv,noheader,nounits 2>&1; } > "$OUT/fixtures-c2c.txt"
{ echo "+ nvidia-smi -q"; nvidia-smi -q 2>&1; } > "$OUT/fixtures-q.txt"
{ echo "+ nvidia-smi dmon -s t -c 3"; timeout 8 nvidia-smi dmon -s t -c 3 2>&1; } > "$OUT/fixtures-dmon-t.txt"
# Is nvidia-smi's loop output line-buffered into a pipe? (The sampler uses a pty in case not.)
$PY - <<'EOF' 2>&1 | tee -a "$OUT/smoke-info.txt"
import subprocess, time
p = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,memory.used", "--format=csv,noheader,nounits", "-lms", "100"], stdout=subprocess.PIPE)
t0 = time.monotonic(); arr = []
while time.monotonic() - t0 < 1.5:
    line = p.stdout.readline()
    if not line: break
    arr.append(round((time.monotonic() - t0) * 1000))
p.terminate(); p.wait()
print("pipe: line arrival ms", arr[:15])
t0 = time.monotonic()
for _ in range(5):
    subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu,power.draw,clocks.sm", "--format=csv,noheader,nounits"], capture_output=True)
print(f"one nvidia-smi --query-gpu call: {(time.monotonic() - t0) / 5 * 1000:.0f} ms")
EOF
$PY -c 'import json; from kvscope_agent import telemetry; print(json.dumps(telemetry.probe_host([0])))' > "$OUT/probe-host.json" 2>&1
cat "$OUT/probe-host.json"
head -5 "$OUT/fixtures-query-gpu-sample.txt" "$OUT/fixtures-query-gpu-probe.txt" "$OUT/fixtures-c2c.txt" "$OUT/fixtures-dmon-t.txt"
grep -n -A12 "GPU Link Info" "$OUT/fixtures-q.txt" | head -20
cat "$OUT/smoke-info.txt"
