"""Per run, from event logs: CUPTI records dropped, copies traced, telemetry rate and worst gap,
and docs/protocol.md "Transfers and blocks agree" during `rounds` (bench/tracer-overhead.py's rules).

usage: python3 bench/tracer-runs.py LOG.jsonl[.gz] ...
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import sys
import tempfile

_spec = importlib.util.spec_from_file_location(
    "tracer_overhead", os.path.join(os.path.dirname(os.path.abspath(__file__)), "tracer-overhead.py"))
assert _spec and _spec.loader
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)


def metrics(path: str) -> dict:
    if not path.endswith(".gz"):
        return overhead.run_metrics(path)
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as out, gzip.open(path, "rb") as src:
        shutil.copyfileobj(src, out)
    try:
        return overhead.run_metrics(out.name)
    finally:
        os.unlink(out.name)


def main(paths: list[str]) -> int:
    print("| run | status | cupti copies | dropped | samples/s | worst gap ms | h2d covers (excess B) | d2h covers (excess B) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in paths:
        m = metrics(p)
        tel = list((m.get("telemetry") or {}).values())
        rate = ", ".join(f"{t['per_s']:.2f}" for t in tel if t["per_s"]) or "-"
        gap = ", ".join(f"{t['gap_ms_max']:.0f}" for t in tel if t["gap_ms_max"] is not None) or "-"
        ag = m.get("agreement") or {}
        cells = [f"{ag[d]['covers']} ({ag[d]['excess_bytes']})" if d in ag else "-" for d in ("h2d", "d2h")]
        dropped = "-" if m.get("dropped") is None else m["dropped"]
        print(f"| {os.path.basename(p)} | {m.get('status')} | {m['cupti_xfers']} | {dropped} | {rate} | {gap} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
