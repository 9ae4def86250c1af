"""bench/prefill-attention-tune.py's arithmetic and its link to the engine's one table of prefill
configurations (the GPU timing itself runs on a GPU host; its CPU dry run under Triton's
interpreter is in the script's docstring)."""

from __future__ import annotations

import ast

from script_loader import load_script  # first: it puts the agent on sys.path

from kvscope_agent.engine import paged_attention as pa  # noqa: E402
from kvscope_agent.presets import PRESETS  # noqa: E402


def test_the_grid_holds_the_engines_defaults() -> None:
    """Every configuration the engine runs for the two presets is one the tuning run times (so its
    table shows the default beside the rest), and the shapes are the presets'."""
    tune = load_script("prefill-attention-tune.py")
    for name, (preset, kv) in tune.MODELS.items():
        if name.startswith("tiny"):
            continue
        cfg = PRESETS[preset]
        group = cfg.heads // cfg.kv_heads
        assert kv == cfg.kv_dtype
        default = pa.prefill_config(group, kv == "fp8")
        assert default in tune.configs(kv, tune.GRID, tune.GRID_FP8_BF16), (name, default)


def test_a_printed_row_is_the_table_entry_the_engine_reads() -> None:
    """The best configuration printed as a PREFILL_CONFIGS row parses back to the same key and
    configuration, and `prefill_config` returns it once it is in the table."""
    tables = load_script("apply-tuned-configs.py")  # what prefill-attention-tune.py prints its rows with
    c = {"block_m": 64, "block_n": 128, "num_warps": 4, "num_stages": 2, "f16": 1}
    row = tables.prefill_row(8, "fp8", c)
    (key, value), = ast.literal_eval("{" + row.strip() + "}").items()
    assert key == (8, "fp8") and value == c
    saved = pa.PREFILL_CONFIGS.copy()
    try:
        pa.PREFILL_CONFIGS[key] = value
        assert pa.prefill_config(8, True) == c
        assert pa.prefill_config(4, True) == saved[(None, "fp8")]  # another group: the KV storage's row
        assert pa.prefill_config(3, False) == saved[(None, None)]
    finally:
        pa.PREFILL_CONFIGS.clear()
        pa.PREFILL_CONFIGS.update(saved)


def test_best_skips_wrong_and_failed_configurations() -> None:
    """The fastest configuration whose output matched the gather path wins; a faster one that was
    off (WRONG), one that did not compile, and the general kernel or the gather path never do."""
    tune = load_script("prefill-attention-tune.py")

    def row(kind: str, ms: float | None, ok: bool = True) -> dict:
        return {"config": {"block_m": 128, "ms": ms}, "kind": kind, "ok": ok, "ms": {} if ms is None else {"100": ms}}

    rows = [row("prefill", 3.0), row("prefill", 1.0, ok=False), row("prefill", None, ok=False),
            row("general", 0.5), row("gather", 0.4), row("prefill", 2.0)]
    assert tune.best(rows, 100) is rows[5]
    assert tune.best([rows[1], rows[2]], 100) is None


def test_chunk_flops_count_the_visible_pairs() -> None:
    """4 · heads · head_dim per visible query-key pair: n queries over a prefix see prefix + 1 ..
    prefix + n keys; the 8B chunk of the 2026-12-07 roofline (2,048 over 13,952, 32 layers) is
    the 16.08 TFLOP it reported."""
    tune = load_script("prefill-attention-tune.py")
    assert tune.chunk_flops(1, 1, 3, 5) == 4 * (6 + 7 + 8)
    assert abs(32 * tune.chunk_flops(32, 128, 2048, 13952) - 16080894427136.0) < 1.0
