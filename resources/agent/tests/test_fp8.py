"""FP8 weights, FP8 matrix multiply and FP8 KV storage (kvscope_agent.engine.fp8).

Where PyTorch has float8 tensors (2.1+), CPU tests check quantisation, scales, layouts and the KV
round trip through the emulated product; CUDA tests check the real torch._scaled_mm path when a
GPU of compute capability 8.9+ is present. Debian's PyTorch 1.13 has no float8 dtype: there only
the "unsupported" behaviour is checked and the rest skips saying so. Tolerances are the module's
documented ones (FP8_LINEAR_RTOL, FP8_LINEAR_MIN_ERR; derivation in fp8.py's docstring).

The GPU host's Python may lack pytest, so `python3 tests/test_fp8.py` runs these tests too.
"""

from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvscope_agent.engine import fp8  # noqa: E402

try:
    import pytest

    _Skip = pytest.skip.Exception
except ImportError:  # standalone run on a host without pytest (see __main__)
    pytest = None  # type: ignore[assignment]

    class _Skip(Exception):  # type: ignore[no-redef]
        pass


HAS_FLOAT8 = getattr(torch, "float8_e4m3fn", None) is not None
NO_FLOAT8 = f"PyTorch {torch.__version__} has no torch.float8_e4m3fn (Debian's 1.13): FP8 tensors need PyTorch >= 2.1"


def _skip(reason: str) -> None:
    raise _Skip(reason)


def _need_float8() -> None:
    if not HAS_FLOAT8:
        _skip(NO_FLOAT8)


def _need_fp8_gpu() -> None:
    _need_float8()
    if not torch.cuda.is_available():
        _skip("no CUDA GPU here: the real torch._scaled_mm path needs an NVIDIA GPU of compute capability 8.9+")
    ok, why = fp8.supported("cuda")
    if not ok:
        _skip(f"FP8 GPU path not available: {why}")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ||out - ref|| / ||ref||, in float64."""
    o, r = out.double(), ref.double()
    return float(torch.linalg.norm(o - r) / torch.linalg.norm(r))


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# -- without float8 (runs on PyTorch 1.13) ----------------------------------------------------


def test_supported_says_why_not_on_cpu() -> None:
    ok, why = fp8.supported("cpu")
    assert ok is False
    if HAS_FLOAT8:
        assert "needs an NVIDIA GPU of compute capability 8.9+" in why, why
    else:
        assert "has no torch.float8_e4m3fn" in why and torch.__version__ in why, why


def test_unsupported_raises_clear_error_without_float8() -> None:
    if HAS_FLOAT8:
        _skip(f"PyTorch {torch.__version__} has float8: the missing-dtype error cannot happen here")
    for call in (
        lambda: fp8.Fp8Linear.from_random(64, 64, "cpu", None),
        lambda: fp8.kv_to_storage(torch.zeros(4)),
        lambda: fp8.quantize_per_tensor(torch.zeros(4)),
    ):
        try:
            call()
        except fp8.Fp8Unsupported as e:
            assert "float8_e4m3fn" in str(e) and ">= 2.1" in str(e)
        else:
            raise AssertionError("expected Fp8Unsupported on a PyTorch without float8")


# -- CPU with float8 (emulated product: scales and layouts) --------------------------------------


def _check_linear(layer: fp8.Fp8Linear, w_ref: torch.Tensor, x: torch.Tensor) -> float:
    out = layer(x)
    assert out.shape == (*x.shape[:-1], layer.out_features)
    ref = x.double() @ w_ref.double().t()
    err = rel_err(out, ref)
    assert fp8.FP8_LINEAR_MIN_ERR < err < fp8.FP8_LINEAR_RTOL, f"relative error {err:.4f}"
    return err


def test_cpu_from_weight_within_tolerance_tensor_and_channel() -> None:
    _need_float8()
    g = _gen(1)
    k, n = 256, 384
    w = torch.randn(n, k, generator=g) / math.sqrt(k)
    for scaling in ("tensor", "channel"):
        layer = fp8.Fp8Linear.from_weight(w, scaling=scaling)
        layer.decode_gemv = False  # the activation-quantised path (decode rows: tests/test_fp8_gemv.py)
        assert layer.weight.dtype == torch.float8_e4m3fn
        assert layer.scale.dtype == torch.float32
        assert layer.per_channel == (scaling == "channel")
        x = torch.randn(2, 3, k, generator=g)  # fresh inputs, leading dims
        _check_linear(layer, w, x)


def test_cpu_from_random_distribution_and_exact_amax() -> None:
    _need_float8()
    k, n = 512, 160
    for scaling in ("tensor", "channel"):
        # chunk_elements forces 10 chunks: the two passes (tensor) must see the same values
        layer = fp8.Fp8Linear.from_random(k, n, "cpu", _gen(7), scaling=scaling, chunk_elements=16 * k)
        q = layer.weight.float()
        assert not torch.isnan(q).any()
        if scaling == "tensor":
            # pass 2 redrew exactly pass 1's values: the largest maps to 448, none beyond
            assert float(q.abs().max()) == fp8.E4M3_MAX
        else:
            assert torch.all(q.abs().amax(dim=1) == fp8.E4M3_MAX)
        wd = layer.dequantized_weight()
        assert abs(float(wd.std()) * math.sqrt(k) - 1.0) < 0.05
        assert abs(float(wd.mean())) < 0.01 / math.sqrt(k) * 10
        again = fp8.Fp8Linear.from_random(k, n, "cpu", _gen(7), scaling=scaling, chunk_elements=16 * k)
        assert torch.equal(again.weight.view(torch.uint8), layer.weight.view(torch.uint8))
        other = fp8.Fp8Linear.from_random(k, n, "cpu", _gen(8), scaling=scaling)
        assert not torch.equal(other.weight.view(torch.uint8), layer.weight.view(torch.uint8))
        # the product against its own dequantised weight: only activation quantisation remains
        layer.decode_gemv = False  # (8 rows would take the weight-only kernel where it runs)
        x = torch.randn(8, k, generator=_gen(9))
        err = rel_err(layer(x), x.double() @ wd.double().t())
        assert 0.01 < err < 0.04, err


def test_cpu_activation_scale_is_exact_in_the_input_dtype() -> None:
    _need_float8()
    x = (torch.randn(64, 256, generator=_gen(4)) * 3.7).to(torch.bfloat16)
    q, s = fp8.quantize_per_tensor(x)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.dim() == 0
    # the scale is a bf16 value, so x / scale used exactly the scale the product is rescaled by
    assert float(s.to(torch.bfloat16).float()) == float(s)
    assert float(q.float().abs().max()) == fp8.E4M3_MAX and not torch.isnan(q.float()).any()
    assert rel_err(q.float() * s, x.float()) < 0.035
    buf = torch.empty((), dtype=torch.float32)
    q2, s2 = fp8.quantize_per_tensor(x, buf)
    assert s2 is buf and float(buf) == float(s) and torch.equal(q2.view(torch.uint8), q.view(torch.uint8))


def test_cpu_zero_input_gives_zero_output() -> None:
    _need_float8()
    layer = fp8.Fp8Linear.from_random(64, 32, "cpu", _gen(3))
    out = layer(torch.zeros(5, 64))
    assert torch.equal(out, torch.zeros(5, 32))


def test_cpu_bad_shapes_rejected() -> None:
    _need_float8()
    for k, n in ((60, 64), (64, 40)):
        try:
            fp8.Fp8Linear.from_random(k, n, "cpu", _gen(0))
        except ValueError as e:
            assert "divisible by 16" in str(e)
        else:
            raise AssertionError(f"{k}->{n} accepted")
    layer = fp8.Fp8Linear.from_random(64, 32, "cpu", _gen(0))
    try:
        layer(torch.zeros(3, 48))
    except ValueError as e:
        assert "(..., 64)" in str(e)
    else:
        raise AssertionError("wrong in_features accepted")
    try:
        fp8.Fp8Linear.from_random(64, 32, "cpu", _gen(0), scaling="block")
    except ValueError as e:
        assert "scaling" in str(e)
    else:
        raise AssertionError("unknown scaling accepted")


def test_cpu_module_to_dtype_keeps_fp8_weight() -> None:
    _need_float8()
    model = torch.nn.Sequential(fp8.Fp8Linear.from_random(64, 32, "cpu", _gen(0), scaling="channel"))
    before = model[0].weight.view(torch.uint8).clone()
    model.to(torch.bfloat16)
    assert model[0].weight.dtype == torch.float8_e4m3fn
    assert model[0].scale.dtype == torch.float32
    assert torch.equal(model[0].weight.view(torch.uint8), before)


def test_cpu_kv_storage_round_trip_and_saturation() -> None:
    _need_float8()
    kv = torch.randn(32, 2, 8, 128, generator=_gen(11)).to(torch.bfloat16)
    st = fp8.kv_to_storage(kv)
    assert st.dtype == torch.float8_e4m3fn and st.shape == kv.shape and st.element_size() == 1
    back = fp8.kv_from_storage(st, torch.bfloat16)
    assert back.dtype == torch.bfloat16
    err = rel_err(back, kv)
    assert 0.01 < err < 0.035, err  # e4m3 rounding of N(0,1): ≈ 0.027
    # storage -> bf16 -> storage is bit-exact (every e4m3 value is a bf16 value)
    assert torch.equal(fp8.kv_to_storage(back).view(torch.uint8), st.view(torch.uint8))
    edge = torch.tensor([1000.0, -1000.0, float("inf"), float("-inf"), 448.0, 0.0, float("nan")])
    out = fp8.kv_from_storage(fp8.kv_to_storage(edge), torch.float32)
    assert out[:6].tolist() == [448.0, -448.0, 448.0, -448.0, 448.0, 0.0]
    assert math.isnan(float(out[6]))
    try:
        fp8.kv_from_storage(kv, torch.float32)
    except ValueError as e:
        assert "float8_e4m3fn" in str(e)
    else:
        raise AssertionError("bf16 accepted as FP8 storage")


# -- CUDA: the real torch._scaled_mm path ------------------------------------------------------


def test_gpu_scaled_mm_within_tolerance() -> None:
    _need_fp8_gpu()
    g = _gen(21, "cuda")
    k, n = 1024, 2048
    w = torch.randn(n, k, generator=g, device="cuda") / math.sqrt(k)
    for scaling in ("tensor", "channel"):
        for fast in (False, True):
            layer = fp8.Fp8Linear.from_weight(w, scaling=scaling, fast_accum=fast)
            layer.decode_gemv = False  # torch._scaled_mm at every size (decode rows: tests/test_fp8_gemv.py)
            for shape in ((5, k), (2, 64, k), (0, k)):  # M not a multiple of 16, leading dims, empty
                x = torch.randn(*shape, generator=g, device="cuda").to(torch.bfloat16)
                out = layer(x)
                assert out.dtype == torch.bfloat16 and out.shape == (*shape[:-1], n)
                if x.numel():
                    err = rel_err(out, x.double() @ w.double().t())
                    assert fp8.FP8_LINEAR_MIN_ERR < err < fp8.FP8_LINEAR_RTOL, (scaling, fast, shape, err)


def test_gpu_from_random_matches_cpu_emulation() -> None:
    _need_fp8_gpu()
    layer = fp8.Fp8Linear.from_random(512, 256, "cuda", _gen(5, "cuda"), scaling="channel")
    layer.decode_gemv = False  # torch._scaled_mm against its emulation
    assert layer.weight.device.type == "cuda"
    x = torch.randn(16, 512, device="cuda").to(torch.bfloat16)
    gpu = layer(x).float().cpu()
    cpu_layer = fp8.Fp8Linear(layer.weight.cpu(), layer.scale.cpu())
    cpu_layer.decode_gemv = False
    # the same bf16 input on both sides, so the same activation scale and e4m3 values; what is
    # left is accumulation order and bf16 output rounding (an fp32 input would take another
    # scale and other roundings: 0.016 apart on the H100)
    emu = cpu_layer(x.cpu()).float()
    assert rel_err(gpu, emu) < 0.01
    # a second call reuses the layer's activation-scale buffer: results must not change
    assert torch.equal(layer(x).float().cpu(), gpu)


if __name__ == "__main__":
    passed = failed = skipped = 0
    for name, fn in sorted(globals().items()):
        if not (name.startswith("test_") and callable(fn)):
            continue
        try:
            fn()
            passed += 1
            print(f"PASS {name}")
        except _Skip as e:
            skipped += 1
            print(f"SKIP {name}: {e}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)
