"""Tests of bench/projection.py and bench/issue9_results.py.

    cd /work/main && /usr/bin/python3 -m pytest -q bench/projection_test.py

The arithmetic is checked on a hand-built log whose answers are worked out below; the end-to-end
path is checked on a real CPU run of the agent's `tiny` preset when the agent's `run` exists.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import issue9_results  # noqa: E402
import projection as pj  # noqa: E402

AGENT = os.path.join(HERE, "..", "resources", "agent")


def _line(seq: int, t: int, typ: str, **kw) -> str:
    return json.dumps({"seq": seq, "t": t, "type": typ, **kw})


def synthetic_log(path: str, with_xfers: bool = True, complete: bool = True, users: int = 2) -> None:
    """2 users, 2 rounds. Copies: A h2d [1000,3000] 1800 B; B d2h [13000,14000] 900 B;
    C h2d [12500,13500] 1000 B. Requests (queued, first_token, done):
    u0r1 (1000, 5000, 9000)  u1r1 (1000, 6000, 10000)  u0r2 (10000, 12000, 15000)  u1r2 (10000, 13000, 16000)."""
    ev = [
        ("run.start", 0, dict(run_id="r1", protocol=1, agent_version="t", engine={"name": "torch"},
                              config={"users": users, "rounds": 2, "context_tokens": 64, "new_tokens": 8, "output_tokens": 8, "block_tokens": 32},
                              host={"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}]}, clock={"unix_ns_at_t0": 1_800_000_000_000_000_000})),
        ("pool", 1, dict(pool="gpu", capacity_blocks=4, block_tokens=32, block_bytes=1000)),
        ("pool", 2, dict(pool="host", capacity_blocks=100, block_tokens=32, block_bytes=1000)),
    ]
    base = {(0, 1): (1000, 5000, 9000), (1, 1): (1000, 6000, 10000), (0, 2): (10000, 12000, 15000), (1, 2): (10000, 13000, 16000)}
    reqs = {(u, r): base[(u % 2, r)] for u in range(users) for r in (1, 2)}  # users past 2 repeat 0 and 1
    for (u, r), (q, f, d) in reqs.items():
        ev.append(("req", q, dict(user=u, round=r, phase="queued")))
        ev.append(("req", f, dict(user=u, round=r, phase="first_token")))
        if complete or (u, r) != (1, 2):
            ev.append(("req", d, dict(user=u, round=r, phase="done", prompt_tokens=80, output_tokens=8)))
    ev.append(("blocks", 3000, dict(op="onboard", ids=[1, 2], user=0, round=1)))
    ev.append(("blocks", 14000, dict(op="offload", ids=[3], user=1, round=2)))
    if with_xfers:
        for d, b, s, e in (("h2d", 1800, 1000, 3000), ("d2h", 900, 13000, 14000), ("h2d", 1000, 12500, 13500)):
            ev.append(("xfer", e, dict(dir=d, bytes=b, start=s, end=e, src_mem="pinned", dst_mem="device", device=0, stream=7, source="cupti")))
        # a device-to-device copy and an engine-sourced duplicate must be ignored
        ev.append(("xfer", 200, dict(dir="d2d", bytes=10**9, start=100, end=200, source="cupti")))
        ev.append(("xfer", 3000, dict(dir="h2d", bytes=10**9, start=1000, end=3000, source="engine")))
    ev.append(("run.end", 17000, dict(status="ok", summary={})))
    ev.sort(key=lambda e: e[1])
    with open(path, "w") as f:
        for i, (typ, t, kw) in enumerate(ev):
            f.write(_line(i, t, typ, **kw) + "\n")
        f.write("{not json\n")


def test_summary_and_projection_arithmetic(tmp_path) -> None:
    p = str(tmp_path / "events.jsonl")
    synthetic_log(p)
    run = pj.load(p)
    assert run.bad_lines and run.bad_lines[0][0] == len(open(p).read().splitlines())  # the trailing garbage line, by number
    m = pj.summarize(run)
    assert m["e2e_ns"] == 15000
    assert m["ttft"]["mean"] == 3500 and m["ttft"]["p50"] == 3500 and m["ttft"]["p99"] == pytest.approx(4970)
    assert m["bytes_h2d"] == 2800 and m["bytes_d2h"] == 900  # cupti only: the engine duplicate is ignored
    assert m["gbps_h2d"] == pytest.approx(2800 / 3000) and m["gbps_d2h"] == pytest.approx(0.9)
    assert m["xfer_source"] == "cupti"
    assert m["blocks"] == {"onboard": 2, "offload": 1}
    assert m["users_fit_gpu_at_context"] == 2 and m["users_fit_gpu_at_last_round"] == 1
    assert m["card"] == "NVIDIA H100 80GB HBM3" and m["date_utc"].startswith("2027-01-15")

    q = pj.project(run, 9e9)  # 9 bytes per ns
    # window [1000, 16000]: busy 2000 + 1500 (B and C merged) = 3500 ns, 3700 B -> 411.1 ns
    assert q["e2e_ns"] == pytest.approx(15000 - 3500 + 3700 / 9)
    assert q["link_ns_replaced_in_e2e"] == 3500
    # TTFTs: u0r1 4000-2000+200, u1r1 5000-2000+200, u0r2 2000, u1r2 3000-500+500/9 (C prorated)
    assert q["ttft"]["mean"] == pytest.approx((2200 + 3200 + 2000 + (2500 + 500 / 9)) / 4)
    # at the measured speed nothing changes
    same = pj.project(run, 1.0 / 1.0e-9 * (3700 / 3500))
    assert same["e2e_ns"] == pytest.approx(15000, rel=1e-9)


def test_incomplete_run_has_no_e2e_and_gz_reads(tmp_path) -> None:
    p = str(tmp_path / "events.jsonl")
    synthetic_log(p, complete=False)
    gz = str(tmp_path / "events.jsonl.gz")
    with open(p, "rb") as a, gzip.open(gz, "wb") as b:
        b.write(a.read())
    for path in (p, gz):
        m = pj.summarize(pj.load(path))
        assert m["e2e_ns"] is None and m["ttft"]["count"] == 4
        assert pj.project(pj.load(path), 900e9)["e2e_ns"] is None


def test_without_xfers_estimates_from_blocks(tmp_path) -> None:
    p = str(tmp_path / "events.jsonl")
    synthetic_log(p, with_xfers=False)
    q = pj.project(pj.load(p), 9e9)
    assert q["xfer_source"] == "estimated" and "estimated" in q["method"]
    on, off = 2000 / pj.H100_PINNED_H2D * 1e9, 1000 / pj.H100_PINNED_D2H * 1e9
    assert q["link_ns_replaced_in_e2e"] == int(on) + int(off)
    assert q["e2e_ns"] == pytest.approx(15000 - int(on) - int(off) + 3000 / 9)


def test_no_run_start_is_an_error(tmp_path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_text(_line(0, 0, "log", level="info", msg="x") + "\n")
    with pytest.raises(pj.LogError):
        pj.load(str(p))


def test_results_script_writes_md_json_sample(tmp_path) -> None:
    runs = tmp_path / "runs"
    for users in (2, 4):
        d = runs / f"users-{users}"
        d.mkdir(parents=True)
        synthetic_log(str(d / "events.jsonl"), users=users)
    out = tmp_path / "out"
    rc = issue9_results.main([str(runs), "--out", str(out), "--command", "bash bench/gpu/issue9.sh"])
    assert rc == 0
    md = (out / "issue9-results.md").read_text()
    assert "PROJECTION — not a measurement" in md and "1.9× TTFT" in md and "96 GB" in md
    assert "`bash bench/gpu/issue9.sh`" in md and "NVIDIA H100 80GB HBM3" in md
    assert "1 bad line(s)" in md
    doc = json.loads((out / "projection.json").read_text())
    assert doc["kind"] == "kvscope.projection" and doc["line_style"] == "dashed"
    assert [pt["users"] for pt in doc["points"]] == [2, 4]
    assert doc["points"][0]["measured"]["e2e_ns"] == 15000
    assert doc["points"][0]["projected"]["e2e_ns"] == pytest.approx(15000 - 3500 + 3700 / 900)
    with gzip.open(out / "sample-70b-fp8-h100.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["config"]["users"] == 4
    assert issue9_results.main([str(tmp_path / "nothing"), "--out", str(out)]) == 1


def test_real_cpu_run_of_tiny_preset(tmp_path) -> None:
    """End to end on a real log: the agent's engine on CPU, tiny preset, a GPU pool too short for
    two users so blocks offload and onboard."""
    if not os.path.isfile(os.path.join(AGENT, "kvscope_agent", "run.py")):
        pytest.skip("the agent's run command (resources/agent/kvscope_agent/run.py) is not in this checkout yet")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kvscope_agent", "run", "--model", "tiny", "--device", "cpu", "--users", "3",
           "--rounds", "2", "--context-tokens", "256", "--new-tokens", "16", "--output-tokens", "8",
           "--block-tokens", "32", "--gpu-kv-bytes", str(20 * 2 * 2 * 2 * 32 * 16 * 4), "--host-kv-bytes", "1e8", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": AGENT}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        pytest.fail(f"agent run failed ({r.returncode}): {r.stderr[-2000:]}")
    run = pj.load(str(out / "events.jsonl"))
    m = pj.summarize(run)
    assert m["status"] == "ok" and m["users"] == 3 and m["e2e_ns"] and m["ttft"]["count"] == 6
    assert m["bad_lines"] == 0
    q = pj.project(run, 900e9)
    assert q["e2e_ns"] is not None and q["e2e_ns"] <= m["e2e_ns"] + 1


def test_reads_runs_from_a_tarball(tmp_path) -> None:
    import tarfile

    d = tmp_path / "runs" / "users-3"
    d.mkdir(parents=True)
    synthetic_log(str(d / "events.jsonl"), users=3)
    tgz = tmp_path / "issue9-runs.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(str(tmp_path / "runs"), arcname="runs")
    got = [(p, r) for p, r in pj.iter_runs([str(tgz)])]
    assert len(got) == 1 and got[0][0].endswith("users-3/events.jsonl")
    assert pj.summarize(got[0][1])["users"] == 3


def test_memory_plan_follows_the_agent() -> None:
    """docs/h100-70b.md's numbers come from bench/issue9-memory-plan.py; it must agree with the
    agent's preset and workload (what the engine will actually reserve)."""
    import importlib.util

    sys.path.insert(0, AGENT)
    from kvscope_agent.presets import PRESETS
    from kvscope_agent.workload import Workload

    spec = importlib.util.spec_from_file_location("memplan", os.path.join(HERE, "issue9-memory-plan.py"))
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)  # type: ignore[union-attr]
    p = mp.plan(512, 0.9, 16000, 10, 64, 64, 32, 2048, 16)
    cfg = PRESETS["llama-3.1-70b-fp8"]
    assert cfg.weight_format == "fp8" and cfg.kv_dtype == "fp8"
    # every linear weight is one byte; embeddings and lm_head two; the agent counts the same params
    assert p["params_fp8"] + (p["embed_bytes"] + p["lm_head_bytes"]) // 2 + (2 * cfg.layers + 1) * cfg.hidden == cfg.param_count()
    assert p["kv_bytes_per_token"] == 80 * 2 * 8 * 128
    assert p["max_request_tokens"] == Workload(1, 10, 16000, 64, 64, cfg.vocab, 0).max_request_tokens()
    assert p["pool_blocks"] * p["block_bytes"] <= p["pool_bytes"] < (p["pool_blocks"] + 1) * p["block_bytes"]
    assert 70e9 < p["weights_bytes"] < 75e9


def test_achieved_bandwidth_counts_block_copies_only(tmp_path) -> None:
    p = tmp_path / "events.jsonl"
    mib = 1 << 20
    lines = [
        _line(0, 0, "run.start", run_id="b", protocol=1, config={"users": 1}),
        # two 8 MiB block copies, 100 us each, overlapping by 50 us -> 16 MiB over 150 us
        _line(1, 100_000, "xfer", dir="h2d", bytes=8 * mib, start=0, end=100_000, source="cupti"),
        _line(2, 150_000, "xfer", dir="h2d", bytes=8 * mib, start=50_000, end=150_000, source="cupti"),
        # a 64-byte token-id copy that took 10 us must not dilute it
        _line(3, 300_000, "xfer", dir="h2d", bytes=64, start=290_000, end=300_000, source="cupti"),
    ]
    p.write_text("\n".join(lines) + "\n")
    m = pj.summarize(pj.load(str(p)))
    assert m["bytes_h2d"] == 16 * mib + 64
    assert m["gbps_h2d"] == pytest.approx(16 * mib / 150_000)
    assert m["gbps_d2h"] is None and m["e2e_ns"] is None


def test_weight_build_chunks_leave_no_reserved_memory() -> None:
    """The 70B build on the H100 ended with ~4.6 GB more in use than its weights (a 715-block KV
    pool); bench/issue9-allocator-sim.py replays the build on a model of the caching allocator.
    The first chunk size reproduces the loss; fp8.default_chunk_elements must not."""
    import importlib.util

    sys.path.insert(0, AGENT)
    from kvscope_agent.engine.fp8 import default_chunk_elements

    spec = importlib.util.spec_from_file_location("allocsim", os.path.join(HERE, "issue9-allocator-sim.py"))
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)  # type: ignore[union-attr]
    assert sim.reserved_but_free(lambda k, n: 1 << 26, e4m3_temp=True, layers=20) > 0.5e9
    assert sim.reserved_but_free(default_chunk_elements, e4m3_temp=False, layers=20) < 0.1e9
    for k, n in ((8192, 10240), (8192, 8192), (8192, 57344), (28672, 8192), (4096, 4096), (64, 32)):
        assert default_chunk_elements(k, n) * 4 <= n * k // 2 or default_chunk_elements(k, n) == k


def test_partial_run_reports_its_complete_rounds_only(tmp_path) -> None:
    """A run cancelled in round 2 (u1r2 never done): E2E and TTFT over round 1 alone, kept out of
    the Compare points, and nothing claimed for the rounds it did not finish."""
    runs = tmp_path / "runs"
    for users, complete in ((2, True), (4, False)):
        d = runs / f"users-{users}"
        d.mkdir(parents=True)
        synthetic_log(str(d / "events.jsonl"), users=users, complete=complete)
    run = pj.load(str(runs / "users-4" / "events.jsonl"))
    m = pj.summarize(run)
    assert m["e2e_ns"] is None and m["rounds_done"] == 1
    assert m["e2e_ns_rounds_done"] == 10000 - 1000  # first queued of round 1 .. last done of round 1
    assert m["ttft_rounds_done"]["count"] == 4 and m["ttft"]["count"] == 8  # round 1's four requests only
    assert m["ttft_rounds_done"]["mean"] == pytest.approx((4000 + 5000 + 4000 + 5000) / 4)
    q = pj.project(run, 9e9)
    # round 1's window [1000, 10000] holds copy A only: 2000 ns busy, 1800 B
    assert q["e2e_ns_rounds_done"] == pytest.approx(9000 - 2000 + 1800 / 9) and q["link_ns_replaced_in_rounds_done"] == 2000
    out = tmp_path / "out"
    assert issue9_results.main([str(runs), "--out", str(out)]) == 0
    doc = json.loads((out / "projection.json").read_text())
    assert [pt["users"] for pt in doc["points"]] == [2]
    (pp,) = doc["partial_points"]
    assert pp["users"] == 4 and pp["rounds_done"] == 1 and pp["measured"]["e2e_ns"] == 9000
    md = (out / "issue9-results.md").read_text()
    assert "| 4 | ok (partial) | 1 of 2 | – |" in md and "none is extrapolated" in md
    # complete runs: rounds_done is every round and the window is the timed one
    full = pj.summarize(pj.load(str(runs / "users-2" / "events.jsonl")))
    assert full["rounds_done"] == 2 and full["e2e_ns_rounds_done"] == full["e2e_ns"] == 15000


def test_combined_runs_name_each_differing_config_and_pool(tmp_path) -> None:
    """Runs of two sessions read together (untraced users 2, traced users 4 with a 3-block pool):
    the config line and the pool section must say which run had what, not repeat the first run's."""
    runs = tmp_path / "runs"
    for users, trace, gpu_blocks in ((2, False, 4), (4, True, 3)):
        d = runs / f"users-{users}"
        d.mkdir(parents=True)
        p = d / "events.jsonl"
        synthetic_log(str(p), users=users)
        lines = p.read_text().splitlines()
        start, pool = json.loads(lines[0]), json.loads(lines[1])
        assert start["type"] == "run.start" and pool["type"] == "pool" and pool["pool"] == "gpu"
        start["config"]["trace"] = trace
        pool["capacity_blocks"] = gpu_blocks
        p.write_text("\n".join([json.dumps(start), json.dumps(pool), *lines[2:]]) + "\n")
    out = tmp_path / "out"
    assert issue9_results.main([str(runs), "--out", str(out)]) == 0
    md = (out / "issue9-results.md").read_text()
    assert "trace False (users 2), True (users 4)" in md
    assert "rounds 2," in md  # a field every run shares keeps its single value
    assert "GPU pool: 4 blocks" in md and "GPU pool of the other runs: users 4: 3 blocks" in md
