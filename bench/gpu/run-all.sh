#!/usr/bin/env bash
# Runs several GPU scripts in one device call and packs everything they wrote into one archive
# (the device tool returns at most 8 files). Usage, from the repo root on the GPU host:
#   bash bench/gpu/run-all.sh <seconds-per-script> script1.sh [script2.sh ...]
# Each script gets its own $OUT (a subfolder), a time limit, and a log; a failure or timeout in one
# does not stop the next. The packed result is $OUT/results.tar.gz, plus each script's log tail.
set -u
per=${1:?seconds per script}; shift
top=${OUT:?OUT must be set}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$top/work"
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1
  python3 -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  nproc; free -g | head -2
} > "$top/work/machine.txt"
cat "$top/work/machine.txt"
for s in "$@"; do
  name=$(basename "$s" .sh)
  mkdir -p "$top/work/$name"
  echo "=== $name (limit ${per}s) ==="
  start=$(date +%s)
  OUT="$top/work/$name" timeout --signal=TERM --kill-after=15 "$per" bash "$s" > "$top/work/$name.log" 2>&1
  rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - start ))s ===" | tee -a "$top/work/$name.log"
  tail -n 25 "$top/work/$name.log"
done
# Large outputs (run archives, samples) travel as their own files; the device returns files of
# up to 16 MiB each and 8 in all, so the rest goes into one archive.
find "$top/work" -type f -size +4M | while read -r f; do
  rel=${f#"$top/work/"}
  mv "$f" "$top/$(echo "$rel" | tr '/' '_')"
done
tar -C "$top/work" -czf "$top/results.tar.gz" .
ls -la "$top"
