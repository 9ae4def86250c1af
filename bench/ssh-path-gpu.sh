#!/usr/bin/env bash
# The user's real path on a GPU host, in one command: an OpenSSH server on loopback of the GPU
# machine, an ssh-config alias for it, and the built CLI driving it as a user would:
#   1. kvscope hosts --probe                       what the probe finds over a non-login shell
#   2. kvscope run (default interpreter)           what a user sees when that python3 lacks torch
#   3. kvscope run --python <the one with torch>   8B preset, 16,000-token contexts, users 4, a few
#      rounds, tracing and sampling on, a GPU pool small enough that blocks move
# and records: the probe, the default-interpreter run's message, deploy/tracer times, the run's
# validate summary, local log == host log (sha256), streaming latency p50/p95 (a watcher on the
# same machine times each line's appearance on both sides), CUPTI bytes against block bytes.
#
#   bash bench/ssh-path-gpu.sh              (from the repo root; env OUT: where the record goes)
#
# Carried (ignored folder CARRY, default .ssh-gpu, made by bench/ssh-path-prepare.sh): node.xz
# (this machine's Node binary), node_modules.tar.xz (production dependencies), Debian's
# openssh-server/-client/-sftp-server .debs and the libraries they may miss. dist-cli/ (npm run
# build:cli) travels beside it. Env: USERS (4), ROUNDS (3), CTX (16000), MODEL (llama-3.1-8b),
# GPU_KV_BYTES (6e9: below 4 users' KV, so blocks go to the host and back), PORT (2222), COMMIT,
# TORCH_PY (default: the python3 of this shell that imports torch), DEVICE (cpu for a dry run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ssh-path-out}
CARRY=${CARRY:-.ssh-gpu}
USERS=${USERS:-4}
ROUNDS=${ROUNDS:-3}
CTX=${CTX:-16000}
MODEL=${MODEL:-llama-3.1-8b}
GPU_KV_BYTES=${GPU_KV_BYTES:-6e9}
PORT=${PORT:-2222}
R=$OUT/ssh-path
W=/tmp/kvscope-ssh-path
rm -rf "$W" && mkdir -p "$R" "$W/runs"
t0=$(date +%s.%N)
log() { printf '[%7.2f s] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a-b}')" "$*" | tee -a "$R/steps.log"; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
env_rec() { echo "$1=$2" >> "$R/env.txt"; }

env_rec DATE "$(date -u +%FT%TZ)"
env_rec COMMIT "${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
env_rec GPU "$(nvidia-smi --query-gpu=name,memory.total,pcie.link.gen.max,pcie.link.width.max,driver_version --format=csv,noheader 2>/dev/null | head -1)"
env_rec OS "$(. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME")"

# --- Node and the CLI's dependencies ---------------------------------------------------------
xz -dc "$CARRY/node.xz" > "$W/node" && chmod +x "$W/node" || { log "no node binary in $CARRY"; exit 1; }
[ -d node_modules ] || tar -xJf "$CARRY/node_modules.tar.xz" -C .
[ -f dist-cli/kvscope.mjs ] || { log "dist-cli/kvscope.mjs missing: run npm run build:cli and carry dist-cli"; exit 1; }
NODE="$W/node"
log "node $($NODE --version)"

# --- OpenSSH on loopback ---------------------------------------------------------------------
SSHD=$(command -v sshd || ls /usr/sbin/sshd 2>/dev/null || true)
KEYGEN=$(command -v ssh-keygen || true)
SFTP=$(ls /usr/lib/openssh/sftp-server 2>/dev/null || true)
if [ -z "$SSHD" ] || [ -z "$KEYGEN" ] || [ -z "$SFTP" ]; then
  mkdir -p "$W/root"
  for f in "$CARRY"/*.deb; do dpkg-deb -x "$f" "$W/root" 2>/dev/null || dpkg -x "$f" "$W/root"; done
  [ -n "$SSHD" ] || SSHD=$W/root/usr/sbin/sshd
  [ -n "$KEYGEN" ] || KEYGEN=$W/root/usr/bin/ssh-keygen
  [ -n "$SFTP" ] || SFTP=$W/root/usr/lib/openssh/sftp-server
  # Debian's libraries only for what this system lacks (ldd says "not found").
  LIBS=$W/root/usr/lib/x86_64-linux-gnu:$W/root/lib/x86_64-linux-gnu
  if ldd "$SSHD" | grep -q "not found"; then export SSHD_LD=$LIBS; fi
  log "sshd brought along: $(ldd "$SSHD" | grep -c 'not found') libraries missing before the carried ones"
fi
env_rec SSHD "$SSHD"
run_ssh_tool() { if [ -n "${SSHD_LD:-}" ]; then LD_LIBRARY_PATH=$SSHD_LD "$@"; else "$@"; fi; }
id sshd >/dev/null 2>&1 || useradd -r -M -d /run/sshd -s /usr/sbin/nologin sshd 2>/dev/null \
  || echo 'sshd:x:997:65534::/run/sshd:/usr/sbin/nologin' >> /etc/passwd
mkdir -p /run/sshd && chmod 755 /run/sshd
run_ssh_tool "$KEYGEN" -q -t ed25519 -N '' -f "$W/host_key" || { log "ssh-keygen failed"; exit 1; }
run_ssh_tool "$KEYGEN" -q -t ed25519 -N '' -f "$W/client_key"
cp "$W/client_key.pub" "$W/authorized_keys"
cat > "$W/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $W/host_key
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin yes
Subsystem sftp $SFTP
LogLevel ERROR
EOF
# `env` execs sshd in the background job itself, so $! is sshd's pid; no background process may
# keep this script's stdout open (a caller's pipe would then never see its end).
env ${SSHD_LD:+LD_LIBRARY_PATH="$SSHD_LD"} "$SSHD" -D -e -f "$W/sshd_config" > /dev/null 2> "$R/sshd.err" &
SSHD_PID=$!
trap 'kill $SSHD_PID 2>/dev/null; pkill -f "$W/sshd_config" 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
(exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null || { log "sshd did not listen: $(cat "$R/sshd.err")"; exit 1; }
log "sshd listening on 127.0.0.1:$PORT"
cat > "$W/ssh_config" <<EOF
Host gpuhost
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $W/client_key
EOF
: > "$W/known_hosts"
K=("$NODE" bin/kvscope.js)
HOSTOPTS=(--ssh-config "$W/ssh_config" --known-hosts "$W/known_hosts" --accept-new)

# What a non-login SSH shell sees (the shell the app's commands run in).
SSH_PY=$("${K[@]}" hosts --probe --host gpuhost "${HOSTOPTS[@]}" --json 2> "$R/probe.err" | tee "$R/probe.json" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); p=(d[0].get("probe") or {}); print(p.get("python") or p.get("python_version") or p)' 2>/dev/null)
log "probe done (rc ${PIPESTATUS[0]}): $(head -c 300 "$R/probe.json" | tr '\n' ' ')"
env_rec SSH_PYTHON3 "$(echo "$SSH_PY" | head -c 300)"
"${K[@]}" hosts --probe --host gpuhost "${HOSTOPTS[@]}" > "$R/probe.txt" 2>&1

# --- 2. the default interpreter ---------------------------------------------------------------
log "run with the default interpreter"
timeout 300 "${K[@]}" run --host gpuhost "${HOSTOPTS[@]}" --model tiny --users 2 --rounds 1 --context-tokens 512 \
  --out "$W/runs/default-python-$(date +%s)" > "$R/default-python.out" 2> "$R/default-python.err"
echo $? > "$R/default-python.rc"
log "default interpreter: rc $(cat "$R/default-python.rc"): $(tail -3 "$R/default-python.err" | tr '\n' ' ' | head -c 400)"

# --- 3. the traced 8B run with the interpreter that has torch --------------------------------
TORCH_PY=${TORCH_PY:-$(python3 -c 'import sys, torch; print(sys.executable)' 2>/dev/null)}
env_rec TORCH_PY "$TORCH_PY"
TRACED=$W/runs/traced-$(date +%s)
LOCAL_LOG=$TRACED/events.jsonl
env_rec LOCAL_LOG "$LOCAL_LOG"
python3 bench/ssh-path-report.py watch --host-glob "/root/.cache/kvscope/runs/*/events.jsonl" \
  --local "$LOCAL_LOG" --out "$R/watch.json" --max-s 560 > /dev/null 2> "$R/watch.err" &
WATCH=$!
log "traced run: $MODEL users $USERS rounds $ROUNDS ctx $CTX, --python $TORCH_PY"
timeout 480 "${K[@]}" run --host gpuhost "${HOSTOPTS[@]}" --python "$TORCH_PY" --model "$MODEL" --users "$USERS" \
  --rounds "$ROUNDS" --context-tokens "$CTX" --trace on --sample-ms 100 --gpu-kv-bytes "$GPU_KV_BYTES" ${DEVICE:+--device "$DEVICE"} \
  --out "$TRACED" > "$R/traced.out" 2> >(stamp > "$R/traced.err")
echo $? > "$R/traced.rc"
log "traced run rc $(cat "$R/traced.rc"): $(tail -2 "$R/traced.err" | tr '\n' ' ' | head -c 300)"
sleep 1
kill -TERM $WATCH 2>/dev/null; wait $WATCH 2>/dev/null
HOST_DIR=$(grep -o 'in /[^ ]*' "$R/traced.err" | head -1 | cut -c4-)
env_rec HOST_LOG "$HOST_DIR/events.jsonl"
"${K[@]}" validate "$TRACED" > "$R/validate.txt" 2>&1
log "validate rc $?: $(head -5 "$R/validate.txt" | tr '\n' ' ' | head -c 300)"
python3 bench/ssh-path-report.py report --record "$R" | tee -a "$R/steps.log"
gzip -c "$LOCAL_LOG" > "$OUT/ssh-path-traced.jsonl.gz" 2>/dev/null
tar -czf "$OUT/ssh-path-record.tar.gz" -C "$OUT" ssh-path 2>/dev/null
log "done"
