#!/usr/bin/env bash
# One-call GPU smoke test of the agent's built-in engine on a new host or PyTorch
# (OUT=/some/dir bash bench/gpu/smoke-engine.sh): engine tests under the host's PyTorch (CPU +
# CUDA), a traced tiny run on CUDA, the plain copy baseline and a short 8B sweep (users 2,4; 2
# rounds; host pool and recompute), a tiny FP8 model from a config.json, then CPU run tests if time
# is left. Wall budget SMOKE_BUDGET_S (default 225 s). Everything lands in $OUT/smoke-engine.tar.gz.
# CUDA only (no CPU dry run: `bash -n` checks it off the GPU). Last run: bench/agent-smoke-h100.md.
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${OUT:?set OUT to a writable folder}"
export PYTHONPATH=resources/agent PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
S=$(mktemp -d); T0=$(date +%s); BUDGET=${SMOKE_BUDGET_S:-225}
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
lim() { local l=$(( BUDGET - ($(date +%s) - T0) )); [ "$1" -lt "$l" ] && echo "$1" || echo $(( l > 1 ? l : 1 )); }
{ nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv
  $PY -c "import torch;print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > $S/env.txt 2>&1
cat $S/env.txt
el "test_engine"; timeout "$(lim 45)" $PY resources/agent/tests/test_engine.py > $S/test_engine.txt 2>&1; echo "rc $?"; grep -E "PASS|FAIL|failed|Error" $S/test_engine.txt | head -20
el "tiny cuda traced"
timeout "$(lim 40)" $PY -m kvscope_agent run --device cuda --model tiny --users 3 --rounds 2 --context-tokens 300 --new-tokens 16 --output-tokens 8 --block-tokens 16 --gpu-kv-bytes 204800 --host-kv-bytes 1e8 --out $S/tiny-cuda > $S/tiny-cuda.log 2>&1; echo "rc $?"; tail -4 $S/tiny-cuda.log
$PY -m kvscope_agent check $S/tiny-cuda/events.jsonl 2>&1 | tail -4
grep -c '"source":"cupti"' $S/tiny-cuda/events.jsonl; grep -o '"trace":{[^}]*}' $S/tiny-cuda/events.jsonl | head -1 | cut -c1-300
el "copy baseline"; timeout "$(lim 25)" $PY bench/agent-copy-bandwidth.py --block-bytes 4194304 --blocks 542 --out $S/copy.json | tr -d '\n '; echo
el "8b sweep"
timeout "$(lim 100)" $PY -m kvscope_agent sweep --model llama-3.1-8b --users 4,2 --rounds 2 --context-tokens 16000 --host-kv-bytes 55e9,0 --gpu-kv-bytes 4546625536 --deadline-s 55 --out $S/8b > $S/8b.log 2>&1; echo "rc $?"
grep -E "^sweep|^round|rror|Trace|deadline" $S/8b.log | head -40
for f in $S/8b/*/*/events.jsonl; do echo "$f: $($PY -m kvscope_agent check $f 2>&1 | tail -1)"; grep -o '"summary":.*' $f | cut -c1-700; done
$PY bench/offload-sweep-results.py $S/8b --copy $S/copy.json --out $S --command "bash bench/gpu/smoke-engine.sh (2 rounds)" 2>&1 | tail -22
mkdir -p $S/fp8cfg; echo '{"num_hidden_layers":2,"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":512,"vocab_size":1024,"max_position_embeddings":8192,"quantization_config":{"quant_method":"fp8"}}' > $S/fp8cfg/config.json
el "tiny fp8"
timeout "$(lim 30)" $PY -m kvscope_agent run --device cuda --model $S/fp8cfg/config.json --users 3 --rounds 2 --context-tokens 300 --new-tokens 16 --output-tokens 8 --block-tokens 16 --gpu-kv-bytes 409600 --host-kv-bytes 1e8 --trace off --out $S/fp8 > $S/fp8.log 2>&1; echo "rc $?"; tail -3 $S/fp8.log
$PY -m kvscope_agent check $S/fp8/events.jsonl 2>&1 | tail -3
if [ $(( BUDGET - ($(date +%s) - T0) )) -gt 35 ] && $PY -c "import pytest" 2>/dev/null; then
  el "test_run (subset, cpu)"; timeout "$(lim 60)" $PY -m pytest -q -x resources/agent/tests/test_run.py -k "short_pool or no_host or sigterm" > $S/test_run.txt 2>&1; echo "rc $?"; tail -3 $S/test_run.txt
else echo "test_run skipped (no pytest or no time)"; fi
el "done"
tar czf "$OUT/smoke-engine.tar.gz" -C $S . ; ls -la $OUT
