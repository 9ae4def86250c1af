"""Summarise an engine step trace (KVSCOPE_STEP_TRACE, engine/scheduler.py) by run: for the
steps that admitted a request in the timed rounds, the host time spent launching the step and
waiting for it (sync), split by whether the step also carried another user's decode token
("mixed") or only the admitted request's prefill ("alone"; since 9bb4e06 the decoders of an
admission that copies take a step of their own, counted in a second table). A launch much longer
than the request's copies means the CPU was held while queueing the step: on the H100 a mixed
step's decode attention held it until the copies ended (bench/results/h100-2026-11-28e).

    python3 bench/step-trace-summary.py steps.jsonl[.gz]
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from collections import defaultdict


def main(path: str) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    runs: dict[str, dict[str, list[dict]]] = {}
    split: dict[str, dict[str, int]] = {}  # decode steps split off an admission, by order
    run = "?"
    with opener(path, "rt") as f:
        for line in f:
            e = json.loads(line)
            if "run" in e:
                run = e["run"]
                runs.setdefault(run, defaultdict(list))
                continue
            if "decode" in e:
                d = split.setdefault(run, {"before_copies": 0, "after_prefill": 0})
                d[e["decode"]] = d.get(e["decode"], 0) + 1
            if not e.get("admitted") or not e.get("pieces"):
                continue
            prefill = [p for p in e["pieces"] if p[3] > 1]
            if not prefill or prefill[0][1] < 1:  # timed rounds only
                continue
            kind = "mixed" if len(e["pieces"]) > len(prefill) else "alone"
            runs.setdefault(run, defaultdict(list))[kind].append(e)
    print("| run | steps | kind | n | launch ms p50 | max | sync ms p50 | step ms p50 | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run, kinds in runs.items():
        for kind in ("alone", "mixed"):
            xs = kinds.get(kind, [])
            if not xs:
                continue
            ms = lambda k: [x.get(k, 0) / 1e6 for x in xs]  # noqa: E731
            print(f"| {run} | admitting | {kind} | {len(xs)} | {statistics.median(ms('launch_ns')):.1f} | "
                  f"{max(ms('launch_ns')):.1f} | {statistics.median(ms('sync_ns')):.1f} | "
                  f"{statistics.median(ms('step_ns')):.1f} | {max(ms('step_ns')):.1f} |")
    if split:
        print("\nDecode steps split off an admission that copies (engine/scheduler.py, run_requests):\n")
        print("| run | before the copies | after the prefill (would capture a graph or sync) |")
        print("|---|---|---|")
        for run, d in split.items():
            print(f"| {run} | {d['before_copies']} | {d['after_prefill']} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
