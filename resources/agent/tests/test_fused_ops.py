"""The decode step's fused ops (engine/fused_ops.py) against the unfused ops they replace.

References are the model's own unfused code paths: `rope` + `PagedKVCache.write_rows`,
`x + y` + `rms_norm`, `F.silu(gate) * up`. fp32, random inputs, shapes that are not powers of two
(head_dim 24, 6 query heads over 3 KV heads, hidden 72), a pool filled
with NaN so that every row the fused write must not touch is checked to stay NaN, and rows the
reference writes compared byte for byte after the same write. Tolerance 1e-6 absolute (fp32
rounding; a wrong head, half or row is off by O(1)). Runs where the Triton kernels run: CUDA,
or the CPU under TRITON_INTERPRET=1 (`npm test`'s pytest-triton step); skips elsewhere.
"""

from __future__ import annotations

import os
import sys

import torch

try:
    import pytest
except ImportError:
    pytest = None  # type: ignore[assignment]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from env_switch import env_set  # noqa: E402
from kvscope_agent.clock import RunClock  # noqa: E402
from kvscope_agent.engine import fused_ops  # noqa: E402
from kvscope_agent.engine.kv_cache import PagedKVCache  # noqa: E402
from kvscope_agent.engine.model import rms_norm, rope  # noqa: E402
from kvscope_agent.presets import ModelConfig  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = 1e-6


def need(device: str) -> None:
    ok, why = fused_ops.available(device)
    if not ok:
        if pytest is not None:
            pytest.skip(f"fused ops not available here: {why}")
        raise RuntimeError(f"skip: {why}")


def _skip(why: str) -> None:
    if pytest is not None:
        pytest.skip(why)
    raise RuntimeError(f"skip: {why}")


def devices(fn):  # type: ignore[no-untyped-def]
    return pytest.mark.parametrize("device", DEVICES)(fn) if pytest is not None else fn


@devices
def test_rope_write_equals_rope_and_write_rows(device):
    need(device)
    kinds = ["native"] + (["fp8"] if hasattr(torch, "float8_e4m3fn") else [])
    for kv in kinds:
        for kvh, heads, hd, n in [(2, 4, 16, 1), (3, 6, 24, 5), (1, 8, 32, 3)]:
            cfg = ModelConfig("t", layers=2, hidden=heads * hd, heads=heads, kv_heads=kvh, ffn=16, vocab=16,
                              max_position=256)
            dev = torch.device(device)
            cache = PagedKVCache(cfg, dev, torch.float32, kv, 4, 8, 0, RunClock().now)
            if cache.fp8:
                cache.pool.view(torch.uint8).fill_(0x7F)  # e4m3fn NaN
            else:
                cache.pool.fill_(float("nan"))
            g = torch.Generator(device="cpu")
            g.manual_seed(kvh * 100 + n)
            qkv = (torch.randn(n, (heads + 2 * kvh) * hd, generator=g) * 3).to(dev)
            pos = torch.randint(0, 200, (n,), generator=g).to(dev)
            inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
            ang = pos.float()[:, None] * inv[None, :]
            ang = torch.cat((ang, ang), -1)[:, None, :]
            cos, sin = ang.cos(), ang.sin()
            # Scattered rows of two layers' blocks, K and V of each token.
            rows = cache.request_rows([5, 2, 7])
            sel = torch.randperm(12, generator=g)[:n].to(dev)
            index = torch.stack((rows[1, 2 * sel], rows[1, 2 * sel + 1]), dim=1).reshape(-1)
            before = cache.pool.clone()
            got_q = fused_ops.rope_write(qkv, cos, sin, cache, index, heads)
            got_pool = cache.pool.clone()
            cache.pool.copy_(before)
            q_size, kv_size = heads * hd, kvh * hd
            qk = rope(qkv[:, : q_size + kv_size].reshape(n, heads + kvh, hd), cos, sin)
            cache.write_rows(index, qk[:, heads:], qkv[:, q_size + kv_size :].reshape(n, kvh, hd))
            assert torch.allclose(got_q, qk[:, :heads], atol=ATOL, rtol=0), (got_q - qk[:, :heads]).abs().max()
            a, b = got_pool.float(), cache.pool.float()
            assert torch.equal(a.isnan(), b.isnan())  # the same rows written, no other touched
            assert b.isfinite().sum() == 2 * n * kv_size
            if cache.fp8:
                # The same e4m3 bytes as fp8.kv_to_storage makes, but for a value within fp32
                # rounding (~1e-7) of a rounding boundary, which may land one e4m3 step away.
                fa, fb = a[a.isfinite()], b[b.isfinite()]
                assert ((fa - fb).abs() <= 0.125 * fb.abs() + 2 ** -9).all()
                assert (fa != fb).float().mean() < 0.01, (fa != fb).float().mean()
            else:
                assert torch.allclose(a[a.isfinite()], b[b.isfinite()], atol=ATOL, rtol=0)


@devices
def test_fp8_kv_write_is_bit_exact_with_kv_to_storage(device):
    """With RoPE the identity (cos 1, sin 0) the fused write stores exactly the bytes of
    fp8.kv_to_storage: round to nearest even (1.0625 -> 1, 17 -> 16), carries into the next
    binade (7.9 -> 8), saturation (460, 1e4 -> 448), subnormals (1e-3) and the sign of zero."""
    need(device)
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip(f"fp8 KV needs torch with float8 dtypes (this is torch {torch.__version__})")
    from kvscope_agent.engine.fp8 import kv_to_storage

    dev = torch.device(device)
    kvh, heads, hd = 2, 2, 64
    cfg = ModelConfig("t", layers=1, hidden=heads * hd, heads=heads, kv_heads=kvh, ffn=16, vocab=16, max_position=64)
    cache = PagedKVCache(cfg, dev, torch.float32, "fp8", 4, 2, 0, RunClock().now)
    g = torch.Generator(device="cpu")
    g.manual_seed(8)
    special = torch.tensor([1.0625, 17.0, 7.9, -7.95, 460.0, 1e4, -1e4, 1e-3, -1e-4, 0.0, -0.0, 2.0 ** -9, 3 * 2.0 ** -10])
    n = 4
    kv = torch.cat([special, torch.randn(n * 2 * kvh * hd - special.numel(), generator=g) * 20]).view(n, 2 * kvh * hd)
    qkv = torch.cat([torch.zeros(n, heads * hd), kv], dim=1).to(dev)
    ones, zeros = torch.ones(n, 1, hd, device=dev), torch.zeros(n, 1, hd, device=dev)
    index = torch.arange(2 * n, device=dev)
    fused_ops.rope_write(qkv, ones, zeros, cache, index, heads)
    want = kv_to_storage(kv.reshape(2 * n, kvh * hd)).view(torch.uint8)
    got = cache.rows[: 2 * n].cpu()
    assert torch.equal(got, want), int((got != want).sum())


@devices
def test_add_rms_norm_and_silu_mul_equal_the_unfused_ops(device):
    need(device)
    dev = torch.device(device)
    g = torch.Generator(device="cpu")
    g.manual_seed(4)
    for n, hidden in [(1, 64), (3, 72), (5, 4096)]:
        x = torch.randn(n, hidden, generator=g).to(dev)
        y = torch.randn(n, hidden, generator=g).to(dev)
        w = (1 + 0.1 * torch.randn(hidden, generator=g)).to(dev)
        x2, h = fused_ops.add_rms_norm(x, y, w, 1e-5)
        assert torch.allclose(x2, x + y, atol=ATOL, rtol=0)
        assert torch.allclose(h, rms_norm(x + y, w, 1e-5), atol=1e-5, rtol=0), (h - rms_norm(x + y, w, 1e-5)).abs().max()
        x3, h0 = fused_ops.add_rms_norm(x, None, w, 1e-5)
        assert x3 is x and torch.allclose(h0, rms_norm(x, w, 1e-5), atol=1e-5, rtol=0)
        ffn = hidden + 8  # not a multiple of the kernel's block
        gu = torch.randn(n, 2 * ffn, generator=g).to(dev) * 4
        got = fused_ops.silu_mul(gu, ffn)
        want = torch.nn.functional.silu(gu[:, :ffn]) * gu[:, ffn:]
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # The check can fail: the norm of x alone is not the norm of x + y.
    assert not torch.allclose(fused_ops.add_rms_norm(x, y, w, 1e-5)[1], rms_norm(x, w, 1e-5), atol=1e-2)


def test_switch_turns_the_fused_ops_off():
    with env_set(fused_ops.ENV_SWITCH, "off"):
        ok, why = fused_ops.available("cpu")
    assert not ok and fused_ops.ENV_SWITCH in why


@devices
def test_fp8_activation_quantisation_is_bit_exact_with_quantize_per_tensor(device):
    """`quantize_e4m3` (one pass after amax) gives `fp8.quantize_per_tensor`'s e4m3 bytes and
    scale: bf16 (the quotient rounded to bf16 before e4m3, as torch's bf16 division is) and
    fp32, magnitudes from 1e-4 (subnormal e4m3 for the small values) to 1e4, sizes that are not
    a multiple of the kernel's block, and the amax element itself (448 exactly)."""
    need(device)
    if not hasattr(torch, "float8_e4m3fn"):
        _skip(f"FP8 needs torch with float8 dtypes (this is torch {torch.__version__})")
    from kvscope_agent.engine import fp8

    dev = torch.device(device)
    g = torch.Generator(device="cpu")
    g.manual_seed(7)
    for dtype in (torch.bfloat16, torch.float32):
        for scale, shape in [(1e-4, (3, 48)), (1.0, (37, 300)), (1e4, (129, 64))]:
            x = (torch.randn(shape, generator=g) * scale).to(dev, dtype)
            x[1, 2] = -7 * scale
            out = torch.full((), float("nan"), dtype=torch.float32, device=dev)
            q, s = fused_ops.quantize_e4m3(x, out)
            want_q, want_s = fp8.quantize_per_tensor(x)
            assert s.data_ptr() == out.data_ptr() and float(s) == float(want_s), (dtype, scale, float(s), float(want_s))
            diff = int((q.view(torch.uint8) != want_q.view(torch.uint8)).sum())
            assert diff == 0, (dtype, scale, diff)


def test_prefill_sized_fp8_products_take_the_fused_quantisation():
    """On CUDA an FP8 product of a prefill chunk's rows quantises through the fused kernel and
    gives the same output as through `quantize_per_tensor` (a decode-sized one never takes it)."""
    if not torch.cuda.is_available() or not hasattr(torch, "float8_e4m3fn"):
        _skip("needs CUDA and torch with float8 dtypes")
    from kvscope_agent.engine import fp8

    dev = torch.device("cuda")
    need("cuda")
    ok, why = fp8.supported(dev)
    if not ok:
        _skip(why)
    g = torch.Generator(device=dev)
    g.manual_seed(3)
    lin = fp8.Fp8Linear.from_random(256, 512, dev, g)
    x = torch.randn(fp8.FUSED_QUANT_MIN_ROWS, 256, device=dev, generator=g).to(torch.bfloat16)
    calls = []
    real = fused_ops.quantize_e4m3
    fused_ops.quantize_e4m3 = lambda a, b: calls.append(a.shape[0]) or real(a, b)
    saved = fp8.FUSED_QUANT_MIN_ROWS
    try:
        fused = lin(x)
        lin(x[:8])
        assert calls == [fp8.FUSED_QUANT_MIN_ROWS]
        fp8.FUSED_QUANT_MIN_ROWS = 1 << 30
        assert torch.equal(fused, lin(x))
    finally:
        fused_ops.quantize_e4m3 = real
        fp8.FUSED_QUANT_MIN_ROWS = saved


def test_the_start_up_probe_passes_the_kernels_and_catches_a_wrong_one():
    """`available` on CUDA runs `_probe` once and keeps the unfused ops if it fails: the probe must
    pass the real kernels (bf16: they and the unfused ops round at different points) and fail a
    kernel that is wrong, here SiLU × up with its halves swapped."""
    need("cpu")
    dev = torch.device("cpu")
    assert fused_ops._probe(dev) < 5e-2
    real = fused_ops.silu_mul
    try:
        fused_ops.silu_mul = lambda gu, ffn: real(torch.cat((gu[:, ffn:], gu[:, :ffn]), dim=1), ffn)
        assert fused_ops._probe(dev) > 0.1
    finally:
        fused_ops.silu_mul = real
    if hasattr(torch, "float8_e4m3fn"):  # a quantisation one e4m3 step off in one place
        quant = fused_ops.quantize_e4m3

        def off_by_one(x, out):  # type: ignore[no-untyped-def]
            q, s = quant(x, out)
            q.view(torch.uint8)[0, 0] += 1
            return q, s

        try:
            fused_ops.quantize_e4m3 = off_by_one
            assert fused_ops._probe(dev) > 0.1
        finally:
            fused_ops.quantize_e4m3 = quant


if __name__ == "__main__":
    failed = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            for dev in DEVICES if "device" in fn.__code__.co_varnames[: fn.__code__.co_argcount] else [None]:
                try:
                    fn(dev) if dev else fn()
                    print(f"PASS {name}[{dev}]")
                except BaseException as e:  # noqa: BLE001  (pytest.skip raises a BaseException)
                    if (pytest is not None and isinstance(e, pytest.skip.Exception)) or (
                            isinstance(e, RuntimeError) and str(e).startswith("skip:")):
                        print(f"SKIP {name}[{dev}]: {e}")
                        continue
                    if not isinstance(e, Exception):
                        raise
                    failed += 1
                    print(f"FAIL {name}[{dev}]: {type(e).__name__}: {e}")
    print(f"torch {torch.__version__}: {failed} failed")
    sys.exit(1 if failed else 0)

