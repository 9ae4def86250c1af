#!/bin/bash
# Side-by-side timing of the Perfetto export: the code at BASE (a commit) against the working tree,
# on one log, children run alternately so both see the same machine load.
#   bench/export-ab.sh BASE LOG [PAIRS=5]
# LOG: an events.jsonl, e.g. one made by `node scripts/run-ts.mjs bench/export-perfetto.bench.ts`
# (it prints the temp folder). Prints wall, export CPU (all threads), main-thread CPU, peak RSS, load.
set -euo pipefail
BASE=$1 LOG=$2 PAIRS=${3:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(mktemp -d /tmp/kvscope-ab-XXXXXX)
git -C "$ROOT" archive "$BASE" src scripts test/helpers test/fixtures package.json | tar -x -C "$DIR"
ln -s "$ROOT/node_modules" "$DIR/node_modules"
# The current bench file in both, so both report the same fields.
mkdir -p "$DIR/bench" && cp "$ROOT/bench/export-perfetto.bench.ts" "$DIR/bench/"
cp "$LOG" "$DIR/events.jsonl"
for i in $(seq 1 "$PAIRS"); do
  (cd "$DIR" && node scripts/run-ts.mjs bench/export-perfetto.bench.ts --child "$DIR/events.jsonl" | sed 's/^/base /')
  (cd "$ROOT" && node scripts/run-ts.mjs bench/export-perfetto.bench.ts --child "$LOG" | sed 's/^/new  /')
done | node -e '
let buf = ""; process.stdin.on("data", (d) => (buf += d)).on("end", () => {
  for (const l of buf.trim().split("\n")) {
    const tag = l.slice(0, 4), d = JSON.parse(l.slice(5));
    console.log(`${tag} wall ${d.seconds.toFixed(2)} cpu ${d.exportCpuSeconds.toFixed(2)} main ${d.mainThreadCpuSeconds?.toFixed(2)} rss ${d.rssMB.toFixed(0)} load ${d.load1.toFixed(2)} out ${d.outBytes} B`);
  }
});'
md5sum "$DIR/events.jsonl.trace.json" "$LOG.trace.json"
rm -rf "$DIR"
