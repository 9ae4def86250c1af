# Shared by bench/gpu/whatif-*.sh (sourced, not run): the machine record, the agent command, the
# dry-run workload, packing the runs for the device tool (at most 8 files of 16 MiB come back).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
: "${OUT:?set OUT to a writable folder}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/resources/agent" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
START=$(date +%s)
WORK=$(mktemp -d)
RUNS=$WORK/runs
DRY=${DRY_RUN:-0}
# DRY_RUN=1: the same commands on the CPU with the tiny preset and a small workload (later options
# win over earlier ones), to check the script end to end where there is no GPU.
if [ "$DRY" = 1 ]; then
  AGENT_DRY=(--device cpu --model tiny --context-tokens 256 --new-tokens 16 --output-tokens 8 --trace off --sample-ms 0)
  SRC_PROFILE=(--source-profile "${DRY_PROFILE:-h200}")
else
  AGENT_DRY=()
  SRC_PROFILE=()
fi

machine_record() {  # card, driver, torch, commit, date into $OUT/$1
  {
    date -u +"date %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1 | head -2
    "$PY" -c 'import sys; print("python", sys.version.split()[0])'
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
    git rev-parse HEAD 2>/dev/null | sed 's/^/commit /'
    git status --porcelain 2>/dev/null | head -5 | sed 's/^/dirty /'
  } > "$OUT/$1"
  cat "$OUT/$1"
}

eight_b_two_user_pool() {  # MODEL and GPU_KV: the 8B preset, a GPU pool for 2 users' last requests
  # (the seed's H100 setting, as bench/gpu/offload-sweep-8b.sh); the tiny preset on the CPU for a dry run
  local model=llama-3.1-8b ctx=16000 new=64 outt=64 elt=2
  [ "$DRY" = 1 ] && { model=tiny; ctx=256; new=16; outt=8; elt=4; }
  MODEL=(--model "$model")
  GPU_KV=$("$PY" -c "from kvscope_agent.presets import PRESETS
c, r = PRESETS['$model'], $ROUNDS
print(2 * -(-($ctx + r * ($new + $outt) + $outt - 1) // 32) * 32 * c.kv_bytes_per_token($elt))")
}

left_s() { echo $(( ${BUDGET_S:-560} - ($(date +%s) - START) )); }

run_sweep() {  # run_sweep NAME LIMIT_S agent-args...: one sweep into $RUNS/NAME, stopped at LIMIT_S
  local name=$1 limit=$2; shift 2
  local cmd=("$PY" -m kvscope_agent sweep "$@" --deadline-s $(( limit > 60 ? limit - 45 : 1 )) --out "$RUNS/$name" "${AGENT_DRY[@]}")
  echo "== $name (${limit} s at most): ${cmd[*]}"
  timeout --signal=TERM --kill-after=15 "$limit" "${cmd[@]}" > "$OUT/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - START )) s"
  grep -E "^sweep|^round|error|Error|Traceback|cancelled" "$OUT/$name.log" | tail -30
  for f in "$RUNS/$name"/users-*/events.jsonl; do
    [ -f "$f" ] && echo "check ${f#$RUNS/}: $("$PY" -m kvscope_agent check "$f" 2>&1 | tail -1)"
  done
}

pack_runs() {  # pack_runs NAME: every run's events.jsonl as $OUT/NAME.tar.gz (xz, then 15 MiB parts, if large)
  local tgz="$OUT/$1.tar.gz"
  find "$RUNS" -path '*/trace' -prune -o -type f -name events.jsonl -print | sed "s|^$RUNS/||" > "$WORK/list"
  tar czf "$tgz" -C "$RUNS" -T "$WORK/list"
  if [ "$(stat -c %s "$tgz")" -gt $(( 15 * 1024 * 1024 )) ]; then
    rm -f "$tgz"; tar cJf "$OUT/$1.tar.xz" -C "$RUNS" -T "$WORK/list"
    if [ "$(stat -c %s "$OUT/$1.tar.xz")" -gt $(( 15 * 1024 * 1024 )) ]; then
      split -b 15M -d "$OUT/$1.tar.xz" "$OUT/$1.tar.xz." && rm -f "$OUT/$1.tar.xz"
    fi
  fi
  ls -la "$OUT"
  echo "total $(( $(date +%s) - START )) s"
}
