"""The 70B FP8 preset's memory on an 80 GB GPU: bench/memory-plan-70b.py (the numbers in
docs/h100-70b.md) follows the agent, and the weight build's chunks leave no memory reserved but
free (bench/weight-build-fragmentation-70b.py)."""

from __future__ import annotations

from script_loader import load_script  # first: it puts the agent on sys.path

from kvscope_agent.engine.fp8 import default_chunk_elements  # noqa: E402
from kvscope_agent.presets import PRESETS  # noqa: E402
from kvscope_agent.workload import Workload  # noqa: E402


def test_memory_plan_follows_the_agent() -> None:
    """docs/h100-70b.md's numbers come from bench/memory-plan-70b.py; it must agree with the
    agent's preset and workload (what the engine will actually reserve)."""
    mp = load_script("memory-plan-70b.py")
    p = mp.plan(512, 0.9, 16000, 10, 64, 64, 32, 2048, 16)
    cfg = PRESETS["llama-3.1-70b-fp8"]
    assert cfg.weight_format == "fp8" and cfg.kv_dtype == "fp8"
    # every linear weight is one byte; embeddings and lm_head two; the agent counts the same params
    assert p["params_fp8"] + (p["embed_bytes"] + p["lm_head_bytes"]) // 2 + (2 * cfg.layers + 1) * cfg.hidden == cfg.param_count()
    assert p["kv_bytes_per_token"] == 80 * 2 * 8 * 128
    assert p["max_request_tokens"] == Workload(1, 10, 16000, 64, 64, cfg.vocab, 0).max_request_tokens()
    assert p["pool_blocks"] * p["block_bytes"] <= p["pool_bytes"] < (p["pool_blocks"] + 1) * p["block_bytes"]
    assert 70e9 < p["weights_bytes"] < 75e9


def test_weight_build_chunks_leave_no_reserved_memory() -> None:
    """The 70B build on the H100 ended with ~4.6 GB more in use than its weights (a 715-block KV
    pool); bench/weight-build-fragmentation-70b.py replays the build on a model of the caching
    allocator. The first chunk size reproduces the loss; fp8.default_chunk_elements must not."""
    sim = load_script("weight-build-fragmentation-70b.py")
    assert sim.reserved_but_free(lambda k, n: 1 << 26, e4m3_temp=True, layers=20) > 0.5e9
    assert sim.reserved_but_free(default_chunk_elements, e4m3_temp=False, layers=20) < 0.1e9
    for k, n in ((8192, 10240), (8192, 8192), (8192, 57344), (28672, 8192), (4096, 4096), (64, 32)):
        assert default_chunk_elements(k, n) * 4 <= n * k // 2 or default_chunk_elements(k, n) == k
