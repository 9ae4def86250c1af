"""Where the traced runs lose time: per-round decode step times of on/off runs, from event logs.

usage: python3 bench/tracer-steps.py LOG.jsonl[.gz] ...   (the mode comes from run.start's config)

For each run: the mean step time of each timed round (`round.step_ns_mean`), the rounds whose
step time sits in the slow mode (> SLOW_MS), the fastest round (a floor: what the step costs when
nothing else interferes), copy bandwidth of the engine's large copies, and CUPTI copy counts.
Everything comes from the logs.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
from typing import Any

SLOW_MS = 32.0  # between the two modes seen on the H100 (24-29 ms and 34-44 ms a step)


def load(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mode_of(ev: list[dict[str, Any]]) -> str:
    """on (tracing + sampling), trace, sample or off, from run.start's resolved config."""
    start = next((e for e in ev if e["type"] == "run.start"), None)
    if start is None:
        return "?"
    # What was on (capabilities), else what was asked for (config).
    caps, cfg = start.get("capabilities") or {}, start["config"]
    trace = bool((caps.get("trace") or {}).get("on", cfg.get("trace")))
    sample = bool((caps.get("telemetry") or {}).get("on", int(cfg.get("sample_ms") or 0) > 0))
    return {(True, True): "on", (True, False): "trace", (False, True): "sample"}.get((trace, sample), "off")


def summarize(path: str) -> dict[str, Any]:
    ev = load(path)
    rounds = [e for e in ev if e["type"] == "round" and e["round"] >= 1 and "step_ns_mean" in e]
    steps = [e["step_ns_mean"] / 1e6 for e in rounds]
    big = [e for e in ev if e["type"] == "xfer" and e["source"] == "engine" and e["bytes"] > 50e6
           and e["end"] > e["start"]]
    return {
        "run": os.path.basename(os.path.dirname(path)) if path.endswith("events.jsonl") else os.path.basename(path),
        "mode": mode_of(ev),
        "step_ms_by_round": [round(s, 1) for s in steps],
        "slow_rounds": sum(1 for s in steps if s > SLOW_MS),
        "rounds": len(steps),
        "step_ms_min": round(min(steps), 1) if steps else None,
        "step_ms_median": round(statistics.median(steps), 1) if steps else None,
        "engine_copy_gbps_median": round(statistics.median(e["bytes"] / (e["end"] - e["start"]) for e in big), 1) if big else None,
        "cupti_xfers": sum(1 for e in ev if e["type"] == "xfer" and e["source"] == "cupti"),
        "gpu_samples": sum(1 for e in ev if e["type"] == "gpu"),
    }


def main(paths: list[str]) -> int:
    rows = [summarize(p) for p in paths]
    print("| run | mode | step ms by round (1..R) | rounds > %g ms | fastest round ms | median ms | engine copy GB/s | cupti xfers | gpu samples |" % SLOW_MS)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['mode']} | {' '.join(str(s) for s in r['step_ms_by_round'])} | "
              f"{r['slow_rounds']}/{r['rounds']} | {r['step_ms_min']} | {r['step_ms_median']} | "
              f"{r['engine_copy_gbps_median']} | {r['cupti_xfers']} | {r['gpu_samples']} |")
    for mode in ("on", "trace", "sample", "off"):
        sel = [r for r in rows if r["mode"] == mode]
        if sel:
            slow = sum(r["slow_rounds"] for r in sel)
            total = sum(r["rounds"] for r in sel)
            floor = min(r["step_ms_min"] for r in sel if r["step_ms_min"] is not None)
            print(f"\n{mode}: {slow}/{total} rounds in the slow mode; fastest round {floor} ms a step")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
