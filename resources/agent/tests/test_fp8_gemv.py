"""The weight-only FP8 decode product (engine/fp8_gemv.py) and where `Fp8Linear` uses it.

Reference: x @ (W_q · s)ᵀ in fp32 from the same e4m3 bytes (the kernel quantises nothing else),
so the only differences are the order of fp32 summation (~1e-7 relative) and, for bf16 inputs,
one rounding of the output. Shapes: every row count 1..16, output and input sizes that are not
multiples of the tiles, per-tensor and per-channel scales, both kernel forms (tensor-core tiles,
per-row reductions), one split of K and several. Runs where the Triton kernels run: CUDA, or the
CPU under TRITON_INTERPRET=1 (`npm test`'s pytest-triton step); on the CPU the inputs are fp32
(Triton 3.6's interpreter multiplies bf16 matrices wrongly) but for the per-row form, which
converts to fp32 before multiplying. Elsewhere (Debian's torch 1.13: no float8; no Triton) the
kernel tests skip, naming what is missing.
"""

from __future__ import annotations

import os
import sys

import torch

try:
    import pytest
except ImportError:  # the GPU host's Python may lack pytest: `python3 tests/test_fp8_gemv.py`
    pytest = None  # type: ignore[assignment]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from env_switch import env_set  # noqa: E402
from kvscope_agent.engine import fp8_gemv  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HAS_FLOAT8 = hasattr(torch, "float8_e4m3fn")
RTOL_FP32 = 1e-5  # of the largest output: fp32 summation order (a wrong row, column or scale is O(1))


class _Skipped(Exception):
    pass


def _skip(reason: str) -> None:
    if pytest is not None and __name__ != "__main__":  # the standalone runner counts _Skipped
        pytest.skip(reason)
    raise _Skipped(reason)


def need(device: str) -> None:
    if not HAS_FLOAT8:
        _skip(f"PyTorch {torch.__version__} has no torch.float8_e4m3fn (Debian's 1.13): FP8 weights need >= 2.1")
    ok, why = fp8_gemv.available(device)
    if not ok:
        _skip(f"FP8 GEMV not available here: {why}")


def devices(fn):  # type: ignore[no-untyped-def]
    return pytest.mark.parametrize("device", DEVICES)(fn) if pytest is not None else fn


def weights(n: int, k: int, per_channel: bool, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e4m3 weight (n, k), float32 scale, the dequantised fp32 weight): e4m3 values over their
    whole range (|w| up to 448, subnormals too), scales away from 1."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * 60).clamp(-448, 448).to(torch.float8_e4m3fn)
    s = torch.rand(n, generator=g) * 0.02 + 0.001 if per_channel else torch.tensor(0.0037)
    wd = w.float() * (s[:, None] if per_channel else s)
    return w.to(device), s.to(device), wd.to(device)


def rel_max(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


@devices
def test_every_row_count_equals_the_dequantised_product(device):
    """M = 1..16 with each M's own line of GEMV_CONFIGS, odd N and K, scales alternating per
    tensor and per channel, fp32 inputs: within fp32 summation order of x @ Wdqᵀ."""
    need(device)
    g = torch.Generator(device="cpu")
    g.manual_seed(1)
    for m in range(1, fp8_gemv.MAX_ROWS + 1):
        n, k = 24 + 7 * m, 200 + 13 * m
        w, s, wd = weights(n, k, m % 2 == 1, m, device)
        x = torch.randn(m, k, generator=g).to(device)
        got = fp8_gemv.gemv(x, w, s)
        assert got.shape == (m, n) and got.dtype == torch.float32
        err = rel_max(got, x @ wd.t())
        assert err < RTOL_FP32, (m, err)


@devices
def test_both_kernel_forms_split_or_not_equal_the_dequantised_product(device):
    """Tensor-core tiles and per-row reductions, K in one split and in several (the partial sums
    reduced by the second kernel), K a multiple of block_k and not, tiles wider than N."""
    need(device)
    g = torch.Generator(device="cpu")
    g.manual_seed(2)
    cases = [(1, 40, 96, 0, 1), (3, 50, 300, 0, 3), (2, 17, 1000, 0, 4), (5, 33, 130, 1, 1), (16, 64, 512, 1, 3),
             (9, 100, 256, 1, 2)]
    for i, (m, n, k, dot, splits) in enumerate(cases):
        for per_channel in (False, True):
            w, s, wd = weights(n, k, per_channel, 10 + i, device)
            x = torch.randn(m, k, generator=g).to(device)
            out = torch.full((m, n), float("nan"), device=device)
            got = fp8_gemv.gemv(x, w, s, config={"dot": dot, "block_k": 64, "block_n": 16}, splits=splits, out=out)
            assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
            err = rel_max(got, x @ wd.t())
            assert err < RTOL_FP32, (m, n, k, dot, splits, per_channel, err)


@devices
def test_bf16_inputs_round_once(device):
    """bf16 activations in, bf16 out: the fp32 result rounded once (≤ half a bf16 ulp of each
    output, plus summation order; on the CPU a whole ulp: the interpreter's cast to bf16
    truncates). Per-row form on the CPU; both forms on CUDA."""
    need(device)
    g = torch.Generator(device="cpu")
    g.manual_seed(3)
    forms = [0, 1] if device == "cuda" else [0]
    for dot in forms:
        for m in (1, 2, 7):
            w, s, wd = weights(72, 320, True, m, device)
            x = torch.randn(m, 320, generator=g).to(device, torch.bfloat16)
            got = fp8_gemv.gemv(x, w, s, config={"dot": dot})
            assert got.dtype == torch.bfloat16
            want = x.float() @ wd.t()
            bound = want.abs() * (2.0 ** -8 if device == "cuda" else 2.0 ** -7) + RTOL_FP32 * want.abs().max()
            assert ((got.float() - want).abs() <= bound).all(), (dot, m, float((got.float() - want).abs().max()))


def test_split_plan_fills_the_gpu_from_shapes_only():
    """Splits depend on shapes only (a captured graph keeps them): the 70B projections at one row
    (block_n 16) have 512+ output tiles and take no split; wide tiles over few columns split K
    to reach PROGRAMS_PER_SM programs a SM, never below MIN_SPLIT_ITERS iterations a split; the
    splits cover K exactly."""
    saved = fp8_gemv._sm_count
    fp8_gemv._sm_count = lambda dev: 132  # an H100's SMs
    try:
        for n, k in [(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]:
            assert fp8_gemv.plan_split(n, k, fp8_gemv.config_for(1), "cpu")[0] == 1
        cfg = {"block_n": 64, "block_k": 256}
        splits, per = fp8_gemv.plan_split(8192, 8192, cfg, "cpu")
        assert splits == -(-fp8_gemv.PROGRAMS_PER_SM * 132 // 128) and per % 256 == 0
        assert (splits - 1) * per < 8192 <= splits * per
        splits, per = fp8_gemv.plan_split(64, 2048, cfg, "cpu")  # one tile: K limits the split
        assert splits == 2048 // (256 * fp8_gemv.MIN_SPLIT_ITERS) and per == 256 * fp8_gemv.MIN_SPLIT_ITERS
    finally:
        fp8_gemv._sm_count = saved


@devices
def test_fp8_linear_takes_the_kernel_for_decode_rows_only(device):
    """Fp8Linear: up to MAX_ROWS rows the weight-only kernel (x unquantised: the output equals
    x @ Wdqᵀ to fp32 rounding); more rows, the switch off, or `decode_gemv` False: the
    activation-quantised path (off by e4m3 rounding of x, ≈ 0.03)."""
    need(device)
    from kvscope_agent.engine import fp8

    layer = fp8.Fp8Linear.from_random(256, 96, device, None, scaling="channel")
    wd = layer.dequantized_weight()
    g = torch.Generator(device="cpu")
    g.manual_seed(4)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tol = RTOL_FP32 if dtype == torch.float32 else 2.0 ** -8

    def err(rows: int) -> float:
        x = torch.randn(rows, 256, generator=g).to(device, dtype)
        return rel_max(layer(x), x.float() @ wd.t())

    assert layer.uses_gemv(1) and layer.uses_gemv(fp8_gemv.MAX_ROWS) and not layer.uses_gemv(fp8_gemv.MAX_ROWS + 1)
    assert err(1) < tol and err(fp8_gemv.MAX_ROWS) < tol
    assert err(fp8_gemv.MAX_ROWS + 1) > 0.01
    layer.decode_gemv = False
    assert not layer.uses_gemv(1) and err(1) > 0.01
    layer.decode_gemv = True
    with env_set(fp8_gemv.ENV_SWITCH, "off"):
        assert not layer.uses_gemv(1) and err(1) > 0.01


@devices
def test_the_kernel_replays_inside_a_cuda_graph(device):
    """Captured in a CUDA graph (the decode step's), split and not: a replay on new inputs gives
    what an eager call gives."""
    need(device)
    if device != "cuda":
        _skip("CUDA graphs need a CUDA device")
    w, s, _ = weights(4096, 2048, True, 5, device)
    x = torch.randn(3, 2048, device=device, dtype=torch.bfloat16)
    for splits in (1, 4):
        fp8_gemv.gemv(x, w, s, splits=splits)  # compile outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fp8_gemv.gemv(x, w, s, splits=splits)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, fp8_gemv.gemv(x, w, s, splits=splits))


def test_available_names_what_is_missing():
    """Where the kernel cannot run, `available` says why: the switch, a PyTorch without float8,
    no Triton, a CPU without the interpreter; Fp8Linear then keeps torch._scaled_mm."""
    with env_set(fp8_gemv.ENV_SWITCH, "off"):
        ok, why = fp8_gemv.available("cpu")
    assert not ok and fp8_gemv.ENV_SWITCH in why
    ok, why = fp8_gemv._check(torch.device("cpu"))
    if not HAS_FLOAT8:
        assert not ok and "float8_e4m3fn" in why and torch.__version__ in why, why
    elif os.environ.get("TRITON_INTERPRET") != "1":
        assert not ok and ("TRITON_INTERPRET=1" in why or "Triton is not importable" in why), why
    else:
        assert ok and "interpreter" in why, why


def test_bad_inputs_are_refused_with_the_reason():
    if not HAS_FLOAT8:
        _skip(f"PyTorch {torch.__version__} has no torch.float8_e4m3fn: no FP8 weight to refuse inputs for")
    w = torch.zeros(32, 64).to(torch.float8_e4m3fn)
    s = torch.tensor(1.0)
    for x, wt, sc, msg in [(torch.zeros(17, 64), w, s, "takes 1 to 16 rows, got 17"),
                           (torch.zeros(2, 48), w, s, "x (2, 48) against weight (32, 64)"),
                           (torch.zeros(2, 64), w, torch.ones(5), "5 elements for 32 output channels"),
                           (torch.zeros(2, 64), w.float(), s, "torch.float32")]:
        try:
            fp8_gemv.gemv(x, wt, sc)
        except ValueError as e:
            assert msg in str(e), (msg, str(e))
        else:
            raise AssertionError(f"accepted: {msg}")


if __name__ == "__main__":
    # Standalone run (no pytest, e.g. on the GPU host): every case; exit 1 on a failure.
    import traceback

    failed = passed = skipped = 0
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        runs = [(d,) for d in DEVICES] if "device" in fn.__code__.co_varnames[: fn.__code__.co_argcount] else [()]
        for args in runs:
            try:
                fn(*args)
                passed += 1
            except _Skipped as e:
                skipped += 1
                print(f"SKIP {name}{args}: {e}")
            except Exception:  # noqa: BLE001 - report every failure, keep going
                failed += 1
                print(f"FAIL {name}{args}")
                traceback.print_exc()
    print(f"torch {torch.__version__}: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)
