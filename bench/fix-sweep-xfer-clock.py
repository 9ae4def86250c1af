#!/usr/bin/env python3
"""Put the engine's copy records of a sweep's later runs back on their own run clock.

    python3 bench/fix-sweep-xfer-clock.py ROOT --out DIR
    python3 bench/fix-sweep-xfer-clock.py --self-check

Why: before commit 21227ab the agent's sweep built its pools once, with the first run's clock,
so in every later run of the same sweep process the engine's `xfer` lines (source "engine") carry
`start`/`end` in ns since the FIRST run's t0, not their own: late by exactly
(this run's `run.start.clock.t0_monotonic_ns` − the first run's). The 70B sweep of 2026-11-28
(bench/results/h100-2026-11-28b/issue9) shows it: users 4's copies at 243 s against its requests at
33 s. `t` of every line, and the `blocks`, `req` and `round` lines, were right; CUPTI's records are
mapped per run by the collector and are left alone.

ROOT holds the runs of ONE sweep process (every events.jsonl / events.jsonl.gz below it; unpack a
results tarball first). The earliest run.start `t0_monotonic_ns` is taken as the clock the pools
kept; each run's engine copies are shifted back by (its t0 − that). Every shifted line gets a new
optional key `clock_fix_ns` (what was added to start and end, ≤ 0), as PROTOCOL.md allows, so a
corrected log says so itself. Corrected copies are written gzipped to DIR with the same relative
paths (DIR/users-4/events.jsonl.gz).

Check, per run, before and after: every engine copy must satisfy
run.start.t ≤ start ≤ end ≤ the line's own t (a copy is reported after it ended). The counts are
printed; if any copy still breaks it after the correction (or the runs are not one sweep: argv or
GPU differ), nothing is written and the exit status is 1.

Standard library only (/usr/bin/python3 is enough).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Optional


class SweepError(ValueError):
    """The input is not one readable sweep (reported, nothing written)."""


@dataclass
class Run:
    path: str  # the events file
    rel: str  # path relative to ROOT
    run_id: str = ""
    t_start: int = 0  # run.start's own t
    t0_monotonic_ns: Optional[int] = None
    argv: Optional[list] = None
    gpu_uuids: tuple = ()
    users: Optional[int] = None
    reused_log: bool = False  # "weights and pools reused from the previous run of this sweep"
    shift_ns: int = 0
    notes: list = field(default_factory=list)


def _open_text(path: str) -> io.TextIOBase:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def find_events(root: str) -> list:
    if not os.path.isdir(root):
        raise SweepError(f"{root}: not a directory (unpack a results tarball first)")
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f in ("events.jsonl", "events.jsonl.gz"):
                out.append(os.path.join(d, f))
    if not out:
        raise SweepError(f"{root}: no events.jsonl or events.jsonl.gz below it")
    return out


def read_head(path: str, root: str) -> Run:
    """run.start and the few log lines that identify the run and its sweep."""
    run = Run(path=path, rel=os.path.relpath(path, root))
    seen_start = False
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if '"run.start"' not in line and '"log"' not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if e.get("type") == "run.start" and not seen_start:
                seen_start = True
                run.run_id = str(e.get("run_id", ""))
                run.t_start = int(e.get("t") or 0)
                clock = e.get("clock") or {}
                t0 = clock.get("t0_monotonic_ns")
                run.t0_monotonic_ns = int(t0) if isinstance(t0, int) else None
                run.argv = e.get("argv")
                run.gpu_uuids = tuple(str(g.get("uuid")) for g in ((e.get("host") or {}).get("gpus") or []))
                run.users = (e.get("config") or {}).get("users")
            elif e.get("type") == "log" and "reused from the previous run" in str(e.get("msg", "")):
                run.reused_log = True
    if not seen_start:
        raise SweepError(f"{path}: no run.start line")
    if run.t0_monotonic_ns is None:
        raise SweepError(f"{path}: run.start has no clock.t0_monotonic_ns (written by an agent older than this fix needs)")
    return run


def plan(root: str) -> list:
    """The sweep's runs, each with the shift its engine copies need; SweepError if they are not one sweep."""
    runs = [read_head(p, root) for p in find_events(root)]
    argvs = {json.dumps(r.argv) for r in runs}
    if len(argvs) > 1:
        raise SweepError(
            "the runs under ROOT come from different commands, so not from one sweep process: "
            + "; ".join(f"{r.rel}: {' '.join(map(str, r.argv or []))}" for r in runs)
        )
    uuids = {r.gpu_uuids for r in runs}
    if len(uuids) > 1:
        raise SweepError("the runs under ROOT were recorded on different GPUs: " + "; ".join(f"{r.rel}: {r.gpu_uuids}" for r in runs))
    first = min(runs, key=lambda r: r.t0_monotonic_ns)
    for r in runs:
        r.shift_ns = r.t0_monotonic_ns - first.t0_monotonic_ns
        if r is not first and not r.reused_log:
            # the bug only hits runs that reused the first run's pools; say so when the log can't confirm it
            r.notes.append("no 'reused from the previous run' log line: this run may have built its own pools")
    runs.sort(key=lambda r: r.t0_monotonic_ns)
    return runs


def _outside(t_start: int, e: dict) -> bool:
    s, en, t = e.get("start"), e.get("end"), e.get("t")
    if not all(isinstance(v, int) for v in (s, en, t)):
        return True
    return not (t_start <= s <= en <= t)


def correct_run(run: Run, dst: str) -> dict:
    """Write the corrected log to dst (gzip); counts of engine copies outside their window before/after."""
    stats = {"engine_copies": 0, "outside_before": 0, "outside_after": 0, "lines": 0, "unparsed_lines": 0, "first_bad_after": None}
    with _open_text(run.path) as f, gzip.open(dst, "wt", encoding="utf-8", compresslevel=9) as out:
        for line in f:
            stats["lines"] += 1
            if '"xfer"' not in line:
                out.write(line if line.endswith("\n") else line + "\n")
                continue
            try:
                e = json.loads(line)
            except ValueError:
                stats["unparsed_lines"] += 1  # kept as it was; the validator reports it
                out.write(line if line.endswith("\n") else line + "\n")
                continue
            if not (isinstance(e, dict) and e.get("type") == "xfer" and e.get("source") == "engine"):
                out.write(line if line.endswith("\n") else line + "\n")
                continue
            stats["engine_copies"] += 1
            stats["outside_before"] += _outside(run.t_start, e)
            if run.shift_ns and isinstance(e.get("start"), int) and isinstance(e.get("end"), int):
                e["start"] -= run.shift_ns
                e["end"] -= run.shift_ns
                e["clock_fix_ns"] = -run.shift_ns
            if _outside(run.t_start, e):
                stats["outside_after"] += 1
                if stats["first_bad_after"] is None:
                    stats["first_bad_after"] = {k: e.get(k) for k in ("seq", "t", "start", "end", "dir", "bytes")}
            out.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n")
    return stats


def fix(root: str, out_dir: str, log=print) -> int:
    """0 when every run's engine copies lie in their window after the correction (files written), else 1."""
    try:
        runs = plan(root)
    except (SweepError, OSError) as ex:
        log(f"fix-sweep-xfer-clock: {ex}")
        return 1
    tmp = tempfile.mkdtemp(prefix="kvscope-xferfix-")
    ok = True
    try:
        log(f"sweep under {root}: {len(runs)} run(s); pools' clock = the first run's t0_monotonic_ns {runs[0].t0_monotonic_ns} ({runs[0].rel})")
        for r in runs:
            rel = r.rel if r.rel.endswith(".gz") else r.rel + ".gz"
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            s = correct_run(r, dst)
            log(
                f"  {r.rel}: users {r.users}, run {r.run_id[:8]}, shift −{r.shift_ns / 1e9:.3f} s; "
                f"{s['engine_copies']} engine copies, outside [run.start, own t] before: {s['outside_before']}, after: {s['outside_after']}"
                + (f"; {s['unparsed_lines']} unparsable xfer line(s) kept as they were" if s["unparsed_lines"] else "")
            )
            for n in r.notes:
                log(f"    note: {n}")
            if s["outside_after"]:
                ok = False
                log(f"    REFUSED: first copy still outside after correction: {s['first_bad_after']}")
        if not ok:
            log("fix-sweep-xfer-clock: not written: some engine copies still lie outside their run after the correction")
            return 1
        os.makedirs(out_dir, exist_ok=True)
        for r in runs:
            rel = r.rel if r.rel.endswith(".gz") else r.rel + ".gz"
            os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
            shutil.move(os.path.join(tmp, rel), os.path.join(out_dir, rel))
            log(f"  wrote {os.path.join(out_dir, rel)}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# self-check on a synthetic two-run sweep (no pytest needed)


def _synthetic_run(path: str, users: int, t0: int, pool_t0: int, argv: list, reused: bool, copy_at: list) -> None:
    """A minimal run whose engine copies sit at copy_at (ns on its own clock) but are written on pool_t0's clock."""
    lines = [
        {"type": "run.start", "t": 1000, "run_id": f"r{users}", "protocol": 1, "config": {"users": users},
         "host": {"gpus": [{"uuid": "GPU-x"}]}, "clock": {"unix_ns_at_t0": 1, "t0_monotonic_ns": t0}, "argv": argv},
    ]
    if reused:
        lines.append({"type": "log", "t": 2000, "level": "info", "msg": "weights and pools reused from the previous run of this sweep"})
    for a, b in copy_at:
        off = t0 - pool_t0
        lines.append({"type": "xfer", "t": b + 500, "dir": "d2h", "bytes": 5242880, "start": a + off, "end": b + off, "source": "engine"})
        lines.append({"type": "xfer", "t": b + 600, "dir": "h2d", "bytes": 64, "start": a, "end": b, "source": "cupti"})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, e in enumerate(lines):
            f.write(json.dumps({"seq": i, **e}) + "\n")


def _read(path: str) -> list:
    with _open_text(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def self_check() -> int:
    quiet: list = []
    with tempfile.TemporaryDirectory() as d:
        argv = ["sweep", "--users", "2,4"]
        root, out = os.path.join(d, "sweep"), os.path.join(d, "fixed")
        _synthetic_run(os.path.join(root, "users-2", "events.jsonl"), 2, 5_000_000_000, 5_000_000_000, argv, False, [(10_000, 20_000)])
        _synthetic_run(os.path.join(root, "users-4", "events.jsonl"), 4, 9_000_000_000, 5_000_000_000, argv, True, [(30_000, 40_000), (50_000, 70_000)])
        assert fix(root, out, quiet.append) == 0, quiet
        u4 = [e for e in _read(os.path.join(out, "users-4", "events.jsonl.gz")) if e["type"] == "xfer"]
        eng = [(e["start"], e["end"], e.get("clock_fix_ns")) for e in u4 if e["source"] == "engine"]
        assert eng == [(30_000, 40_000, -4_000_000_000), (50_000, 70_000, -4_000_000_000)], eng
        assert all(e["start"] in (30_000, 50_000) and "clock_fix_ns" not in e for e in u4 if e["source"] == "cupti"), u4
        u2 = [e for e in _read(os.path.join(out, "users-2", "events.jsonl.gz")) if e["type"] == "xfer" and e["source"] == "engine"]
        assert [(e["start"], e["end"]) for e in u2] == [(10_000, 20_000)] and "clock_fix_ns" not in u2[0], u2
        assert any("before: 2, after: 0" in m for m in quiet), quiet
        # a copy that no shift puts inside its run: refused, nothing written
        bad_root, bad_out = os.path.join(d, "bad"), os.path.join(d, "bad-out")
        _synthetic_run(os.path.join(bad_root, "users-2", "events.jsonl"), 2, 5_000_000_000, 5_000_000_000, argv, False, [])
        _synthetic_run(os.path.join(bad_root, "users-4", "events.jsonl"), 4, 9_000_000_000, 5_000_000_000, argv, True, [(500, 40_000)])
        quiet.clear()
        assert fix(bad_root, bad_out, quiet.append) == 1 and not os.path.exists(bad_out), quiet
        # runs of two different sweeps: refused
        mix = os.path.join(d, "mix")
        _synthetic_run(os.path.join(mix, "a", "users-2", "events.jsonl"), 2, 5_000_000_000, 5_000_000_000, argv, False, [])
        _synthetic_run(os.path.join(mix, "b", "users-4", "events.jsonl"), 4, 9_000_000_000, 9_000_000_000, ["sweep", "--users", "4"], False, [])
        quiet.clear()
        assert fix(mix, os.path.join(d, "mix-out"), quiet.append) == 1 and "different commands" in quiet[0], quiet
    print("self-check ok: two-run sweep corrected (later run shifted back 4 s, CUPTI and first run untouched); "
          "an uncorrectable copy and a mixed folder refused, nothing written")
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("root", nargs="?", help="folder holding one sweep's users-N/events.jsonl[.gz]")
    ap.add_argument("--out", help="where to write the corrected users-N/events.jsonl.gz")
    ap.add_argument("--self-check", action="store_true", help="run the built-in check on a synthetic two-run sweep")
    a = ap.parse_args(argv)
    if a.self_check:
        return self_check()
    if not a.root or not a.out:
        ap.error("ROOT and --out are required (or --self-check)")
    if os.path.abspath(a.out) == os.path.abspath(a.root):
        ap.error("--out must differ from ROOT: the raw logs are kept")
    return fix(a.root, a.out)


if __name__ == "__main__":
    sys.exit(main())
