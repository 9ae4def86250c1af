"""Transfer tracing on a real GPU: known copies traced exactly, and the agent's own run agreeing
with its block moves (docs/protocol.md "Transfers and blocks agree"). Skipped without a CUDA device,
a C compiler or CUPTI. On the H100: `cd resources/agent && python3 -m pytest -q tests/test_tracer_gpu.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from kvscope_agent.tracer import build

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(AGENT_ROOT))


def _cuda_or_skip() -> None:
    try:
        import torch
    except ImportError:
        pytest.skip("no torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: these tests trace real copies on a GPU")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> str:
    _cuda_or_skip()
    try:
        path, _, _, _ = build.build(str(tmp_path_factory.mktemp("tracer")))
    except build.TracerBuildError as e:
        pytest.skip(f"cannot build the tracer: missing {e.missing}")
    return path


_COPIES = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import torch
from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.tracer import collector
clock = RunClock()
writer = EventWriter(sys.argv[2], clock)
col = collector.start_collector(writer, clock, os.environ["KVSCOPE_TRACE_DIR"])
mib = 1 << 20
h = torch.empty(64 * mib, dtype=torch.uint8, pin_memory=True)
d = torch.empty(64 * mib, dtype=torch.uint8, device="cuda")
for _ in range(3):
    d.copy_(h, non_blocking=True)
for _ in range(2):
    h.copy_(d, non_blocking=True)
blocks = torch.empty((64, 4 * mib), dtype=torch.uint8, pin_memory=True)
dst = torch.empty((64, 4 * mib), dtype=torch.uint8, device="cuda")
for i in range(64):
    dst[i].copy_(blocks[i], non_blocking=True)
torch.cuda.synchronize()
print(json.dumps(col.stop()))
writer.close()
"""


def test_known_copies_are_traced_exactly(library: str, tmp_path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {**os.environ, "CUDA_INJECTION64_PATH": library, "KVSCOPE_TRACE_DIR": str(trace)}
    log = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-c", _COPIES, AGENT_ROOT, str(log)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    totals = json.loads(proc.stdout.splitlines()[-1])
    mib = 1 << 20
    assert totals["dropped"] == 0 and totals["errors"] == []
    assert totals["bytes_by_dir"]["h2d"] == 3 * 64 * mib + 64 * 4 * mib
    assert totals["bytes_by_dir"]["d2h"] == 2 * 64 * mib
    xfers = [json.loads(l) for l in log.read_text().splitlines() if '"type":"xfer"' in l]
    blocks = [x for x in xfers if x["bytes"] == 4 * mib]
    assert len(blocks) == 64
    assert all(x["src_mem"] == "pinned" and x["dst_mem"] == "device" for x in blocks)
    # A 4 MiB pinned copy over PCIe takes tens of microseconds, not nothing and not seconds.
    assert all(20_000 < x["end"] - x["start"] < 20_000_000 for x in blocks)


def test_agent_run_transfers_agree_with_blocks(library: str, tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": AGENT_ROOT}
    proc = subprocess.run(
        [sys.executable, "-m", "kvscope_agent", "run", "--model", "tiny", "--device", "cuda",
         "--users", "3", "--rounds", "3", "--context-tokens", "2048", "--gpu-kv-bytes", "1.2e6",
         "--host-kv-bytes", "10e6", "--trace", "on", "--sample-ms", "100", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["type"] == "run.start")
    assert start["capabilities"]["trace"]["on"], start["capabilities"]
    # The default since the H100 overhead runs: graph launches traced whole (kvscope_cupti.c).
    assert start["capabilities"]["trace"]["cuda_graphs"] == "launch", start["capabilities"]
    spec = importlib.util.spec_from_file_location("tracer_overhead", os.path.join(REPO, "bench", "tracer-overhead.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ag = mod.agreement(events)
    for d, op in (("h2d", "onboard"), ("d2h", "offload")):
        x = ag[d]
        assert x[f"blocks_{op}ed"] > 0, f"the short GPU pool must {op} blocks"
        assert x["covers"], x
        # Anything beyond the blocks is the engine's small copies, never a whole block more.
        assert x["excess_bytes"] == x["copies_smaller_than_a_block_bytes"], x
    check = subprocess.run([sys.executable, "-m", "kvscope_agent", "check", str(out / "events.jsonl")],
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-2000:]
    gpu = [e for e in events if e["type"] == "gpu"]
    assert gpu and all(e["source"] in ("nvidia-smi", "nvml") for e in gpu)
