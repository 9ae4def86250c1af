"""Where a traced run's extra host time goes, step kind by step kind: engine step traces
(KVSCOPE_STEP_TRACE, engine/scheduler.py) of runs of one configuration against another's, e.g.
the tracing overhead's traced and untraced runs (`STEP_TRACE=1 bash bench/gpu/tracer-overhead.sh` writes
runs/pair-N/<config>-steps.jsonl). Timed rounds only (a step whose pieces are all round 0 is left
out). Per kind: steps per run, and per step the mean host time launching, waiting for the device
(sync) and in all; then the difference B − A in total step time per run, so the kind that carries
a configuration's cost stands out (on the H200 of 2026-11-28 tracing cost ~9 ms an admission and
~0.4 ms a step on average, bench/results/h200-2026-11-28).

    python3 bench/step-trace-compare.py --a 'runs/pair-*/off-steps.jsonl' --b 'runs/pair-*/trace-steps.jsonl'
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
from collections import defaultdict

KINDS = ("admitting prefill", "prefill chunk", "decode, graph", "decode, eager",
         "decode before copies", "decode after prefill")


def step_kind(e: dict) -> str | None:
    """The kind of one step record, None for a record that is no step (a run header)."""
    pieces = e.get("pieces")
    if not pieces:
        return None
    if e.get("decode") == "before_copies":
        return "decode before copies"
    if e.get("decode") == "after_prefill":
        return "decode after prefill"
    if any(p[3] > 1 for p in pieces):
        return "admitting prefill" if e.get("admitted") else "prefill chunk"
    return "decode, eager" if "layer_ms" in e else "decode, graph"


def load(paths: list[str]) -> tuple[int, dict[str, list[dict]]]:
    """(runs, steps by kind) over every file, timed rounds only. A file may hold several runs
    (a {"run": ...} header starts each)."""
    runs = 0
    by: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            headers = 0
            for line in f:
                e = json.loads(line)
                if "run" in e:
                    headers += 1
                    continue
                k = step_kind(e)
                if k is None or all(p[1] < 1 for p in e["pieces"]):
                    continue
                by[k].append(e)
            runs += max(headers, 1)
    return runs, by


def summarise(a_paths: list[str], b_paths: list[str], a_name: str = "A", b_name: str = "B") -> str:
    if not a_paths or not b_paths:
        raise SystemExit(f"no step traces matched for {a_name if not a_paths else b_name}")
    na, a = load(a_paths)
    nb, b = load(b_paths)
    ms = lambda xs, k: sum(x.get(k, 0) for x in xs) / len(xs) / 1e6 if xs else 0.0  # noqa: E731
    out = [f"{a_name}: {na} run(s), {len(a_paths)} file(s); {b_name}: {nb} run(s), {len(b_paths)} file(s). "
           "Per step: mean ms; total: s of step time per run.", "",
           f"| kind | steps/run {a_name} | {b_name} | launch {a_name} | {b_name} | sync {a_name} | {b_name} | "
           f"step {a_name} | {b_name} | total {a_name} | {b_name} | {b_name} − {a_name} s/run |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in KINDS:
        xa, xb = a.get(k, []), b.get(k, [])
        if not xa and not xb:
            continue
        ta = sum(x.get("step_ns", 0) for x in xa) / 1e9 / na
        tb = sum(x.get("step_ns", 0) for x in xb) / 1e9 / nb
        out.append(f"| {k} | {len(xa) / na:.1f} | {len(xb) / nb:.1f} | {ms(xa, 'launch_ns'):.2f} | "
                   f"{ms(xb, 'launch_ns'):.2f} | {ms(xa, 'sync_ns'):.2f} | {ms(xb, 'sync_ns'):.2f} | "
                   f"{ms(xa, 'step_ns'):.2f} | {ms(xb, 'step_ns'):.2f} | {ta:.3f} | {tb:.3f} | {tb - ta:+.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="glob of the baseline's step traces")
    ap.add_argument("--b", required=True, help="glob of the compared configuration's step traces")
    ap.add_argument("--a-name", default="A")
    ap.add_argument("--b-name", default="B")
    ns = ap.parse_args()
    print(summarise(sorted(glob.glob(ns.a)), sorted(glob.glob(ns.b)), ns.a_name, ns.b_name))


if __name__ == "__main__":
    main()
