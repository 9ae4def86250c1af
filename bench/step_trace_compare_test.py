"""bench/step-trace-compare.py: step traces of two configurations, compared kind by kind (where a
traced run's extra host time goes, as on the H200 of 2026-11-28)."""

from __future__ import annotations

import json
import os

import pytest

from script_loader import load_script


def _step(pieces, step_ms, launch_ms=0.0, sync_ms=0.0, **kw):
    return {"pieces": pieces, "step_ns": int(step_ms * 1e6), "launch_ns": int(launch_ms * 1e6),
            "sync_ns": int(sync_ms * 1e6), **kw}


def _write(path, runs):
    with open(path, "w") as f:
        for i, steps in enumerate(runs):
            f.write(json.dumps({"run": f"r{i}"}) + "\n")
            for s in steps:
                f.write(json.dumps(s) + "\n")
    return str(path)


def test_step_kinds():
    m = load_script("step-trace-compare.py")
    assert m.step_kind({"run": "x"}) is None
    assert m.step_kind(_step([[0, 1, 0, 64]], 1, admitted=True, layer_ms=[0.0])) == "admitting prefill"
    assert m.step_kind(_step([[0, 1, 64, 2048]], 1, layer_ms=[0.0])) == "prefill chunk"
    assert m.step_kind(_step([[0, 1, 9, 1], [1, 1, 9, 1]], 1)) == "decode, graph"
    assert m.step_kind(_step([[0, 1, 9, 1]], 1, layer_ms=[0.0])) == "decode, eager"
    assert m.step_kind(_step([[0, 1, 9, 1]], 1, decode="before_copies")) == "decode before copies"
    assert m.step_kind(_step([[0, 1, 9, 1]], 1, decode="after_prefill")) == "decode after prefill"


def test_the_kind_that_carries_the_cost_stands_out(tmp_path):
    m = load_script("step-trace-compare.py")
    admit = lambda ms: _step([[1, 1, 0, 64]], ms, launch_ms=ms / 2, sync_ms=ms / 2, admitted=True, layer_ms=[0.0])  # noqa: E731
    decode = lambda ms: _step([[0, 1, 9, 1]], ms, launch_ms=ms)  # noqa: E731
    warm = _step([[0, 0, 0, 2048]], 500.0, admitted=True, layer_ms=[0.0])  # round 0: left out
    a = _write(tmp_path / "a.jsonl", [[warm, admit(20.0), decode(1.0), decode(1.0)]] * 2)
    b = _write(tmp_path / "b.jsonl", [[warm, admit(30.0), decode(1.0), decode(1.0)]] * 2)
    table = m.summarise([a], [b], "off", "trace")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| kind")}
    assert set(rows) == {"admitting prefill", "decode, graph"}
    # 1 admitting step a run: 20 → 30 ms, +0.010 s a run; decode steps unchanged.
    assert rows["admitting prefill"][:2] == ["1.0", "1.0"]
    assert rows["admitting prefill"][6:8] == ["20.00", "30.00"] and rows["admitting prefill"][-1] == "+0.010"
    assert rows["decode, graph"][-1] == "+0.000"
    assert table.startswith("off: 2 run(s), 1 file(s); trace: 2 run(s), 1 file(s).")


def test_nothing_matched_is_an_error():
    with pytest.raises(SystemExit, match="no step traces matched for B"):
        load_script("step-trace-compare.py").summarise(["x"], [])
