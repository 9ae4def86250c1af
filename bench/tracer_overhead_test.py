"""bench/tracer-overhead.py (the tracing overhead's GPU numbers) on real agent logs from CPU runs.

CPU runs have no CUPTI, so the traced log of each pair is the real run's log with one `cupti`
xfer added per engine-reported copy (same bytes and times, as CUPTI reports the copies the
engine makes) plus one small token-id copy, written as the collector writes them: after the
copy, possibly past the `rounds end` line. What the script must compute follows from the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.dirname(os.path.abspath(__file__))
AGENT_ROOT = os.path.join(os.path.dirname(BENCH), "resources", "agent")
SCRIPT = os.path.join(BENCH, "tracer-overhead.py")


def _cpu_run(out: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": AGENT_ROOT}
    cmd = [sys.executable, "-m", "kvscope_agent", "run", "--device", "cpu", "--model", "tiny",
           "--users", "4", "--rounds", "2", "--context-tokens", "256", "--gpu-kv-bytes", "700000",
           "--host-kv-bytes", "10000000", "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"the agent's CPU run failed, nothing to analyse: {proc.stderr[-500:]}")
    with open(os.path.join(out, "events.jsonl")) as f:
        return [json.loads(line) for line in f]


def _as_traced(events: list[dict]) -> list[dict]:
    out: list[dict] = []
    delayed: list[dict] = []
    for e in events:
        out.append(e)
        if e["type"] == "xfer" and e["source"] == "engine":
            cupti = {k: e[k] for k in ("dir", "bytes", "start", "end", "device", "stream")}
            cupti.update(type="xfer", t=e["t"], src_mem=e["src_mem"], dst_mem=e["dst_mem"],
                         source="cupti", pid=1)
            delayed.append(cupti)
            delayed.append({**cupti, "dir": "h2d", "bytes": 1024, "src_mem": "pageable",
                            "dst_mem": "device", "start": e["start"], "end": e["start"] + 1000})
        if e["type"] == "phase" and e["name"] == "rounds" and e["state"] == "end":
            # The collector writes copies ~0.1 s late: the last ones land after this line.
            out.extend(delayed[-2:])
            delayed = delayed[:-2]
        elif len(delayed) > 2:
            out.extend(delayed[:-2])
            delayed = delayed[-2:]
    out[-1:-1] = delayed
    for seq, e in enumerate(out):
        e["seq"] = seq
    return out


def test_overhead_and_agreement_from_logs(tmp_path) -> None:
    runs = tmp_path / "runs"
    originals = {}
    for i in (1, 2):
        for mode in ("on", "off"):
            d = runs / f"pair-{i}" / mode
            events = _cpu_run(str(d))
            originals[(i, mode)] = events
            if mode == "on":
                (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in _as_traced(events)))
    # An attribution config beside them (tracer-overhead.sh CONFIGS="... traceslow"): its logs here are
    # the pair's "on" logs, so its ratios to "off" must equal the on/off ones.
    for i in (1, 2):
        slow = runs / f"pair-{i}" / "traceslow"
        slow.mkdir()
        (slow / "events.jsonl").write_text((runs / f"pair-{i}" / "on" / "events.jsonl").read_text())
    proc = subprocess.run([sys.executable, SCRIPT, str(runs), "--json", str(tmp_path / "r.json"),
                           "--out", str(tmp_path / "r.md"), "--command", "test"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["pairs_ok"] == 2
    assert r["by_config"]["traceslow"]["e2e_ratio"] == r["e2e_ratio"]
    want = sorted(
        next(e for e in originals[(i, "on")] if e["type"] == "run.end")["summary"]["e2e_ns"]
        / next(e for e in originals[(i, "off")] if e["type"] == "run.end")["summary"]["e2e_ns"]
        for i in (1, 2)
    )
    assert r["e2e_ratio"]["min"] == pytest.approx(want[0])
    assert r["e2e_ratio"]["max"] == pytest.approx(want[1])
    on1 = originals[(1, "on")]
    begin = next(e["t"] for e in on1 if e["type"] == "phase" and e["name"] == "rounds" and e["state"] == "begin")
    end = next(e["t"] for e in on1 if e["type"] == "phase" and e["name"] == "rounds" and e["state"] == "end")
    bb = next(e["block_bytes"] for e in on1 if e["type"] == "pool" and e["pool"] == "gpu")
    onboarded = sum(len(e["ids"]) for e in on1 if e["type"] == "blocks" and e["op"] == "onboard" and begin <= e["t"] <= end)
    assert onboarded > 0, "the CPU run must onboard for this test to mean anything"
    ag = r["runs"][0]["on"]["agreement"]["h2d"]
    assert ag["blocks_onboarded"] == onboarded
    assert ag["block_bytes_total"] == onboarded * bb
    assert ag["covers"] is True
    # The excess is exactly the small copies added beside the block copies (one per engine copy
    # whose start is inside the window).
    n_small = sum(1 for e in on1 if e["type"] == "xfer" and e["source"] == "engine" and begin <= e["start"] <= end)
    assert ag["excess_bytes"] == 1024 * n_small == ag["copies_smaller_than_a_block_bytes"]
    assert ag["cupti_bytes"] == ag["engine_reported_bytes"] + 1024 * n_small
    # Some copies were written after `rounds end`: by position they undercount.
    assert ag["cupti_bytes_by_line_position"] < ag["cupti_bytes"]
    text = (tmp_path / "r.md").read_text()
    assert "E2E ratio on/off: median" in text and "| pair-1 | h2d |" in text
    assert "E2E ratio tracing only, flush and poll at 200 ms/off: median" in text


def test_steps_script_reads_modes_and_step_times(tmp_path) -> None:
    script = os.path.join(BENCH, "tracer-steps.py")
    off = tmp_path / "off"
    events = _cpu_run(str(off))
    log = off / "events.jsonl"
    proc = subprocess.run([sys.executable, script, str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    steps = [round(e["step_ns_mean"] / 1e6, 1) for e in events
             if e["type"] == "round" and e["round"] >= 1 and "step_ns_mean" in e]
    if not steps:
        pytest.skip("the agent's round lines carry no step_ns_mean")
    row = next(l for l in proc.stdout.splitlines() if l.startswith("| off |") or "| off |" in l)
    # A CPU run has neither tracing nor sampling on: mode "off", its own step times listed.
    assert " ".join(str(s) for s in steps) in row
