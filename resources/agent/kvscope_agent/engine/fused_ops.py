"""The step's small ops fused into Triton kernels (`triton_kernels.py`), where they run.

Why: a decode step is a few GEMVs over the weights and, per layer, a score of small elementwise
ops on [batch, hidden] tensors, each a kernel launch that costs ~1-3 µs of GPU time even inside a
CUDA graph, with nothing to overlap it. Per layer the unfused step issues RoPE (neg, cat, two
multiplies, add), the K/V write (two copies, stack, index_copy; FP8 KV a clamp and a cast more),
two residual adds, two norms, SiLU and the gate multiply: ~20 launches, ~0.6 ms a step for the 8B
preset's 32 layers against a ~6 ms bound. Fused:
  * `rope_write`: RoPE on the query and key heads of the fused QKV projection's output, the
    query out, the key and value into their pool rows (FP8 KV saturated and converted there): 1;
  * `add_rms_norm`: the residual add and the next RMS norm (the first norm of the next layer, or
    the final one, takes the feed-forward's residual add): 1 instead of 2, twice a layer;
  * `silu_mul`: silu(gate) × up: 1 instead of 2;
  * `quantize_e4m3`: an FP8 product's activation quantisation (`fp8.quantize_activations`, prefill
    chunks): the division and the e4m3 cast in one pass, 2 kernels instead of 5.
Numerics: computed in fp32, rounded once to the compute dtype (the unfused ops round each
intermediate in bf16 on the GPU: they differ by bf16 rounding; in fp32 they agree to ~1e-7).

`available(device)`: where the Triton kernels run (`paged_attention.available`) and
KVSCOPE_FUSED_OPS is not "off". Elsewhere the model runs the unfused ops (`model.py`), which stay
the reference (tests/test_fused_ops.py).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from . import paged_attention

ENV_SWITCH = "KVSCOPE_FUSED_OPS"


_checked: dict[str, tuple[bool, str]] = {}


def available(device: Any) -> tuple[bool, str]:
    """Whether the fused ops run on `device`, and why (not). On CUDA the first call compiles each
    kernel and checks it against the unfused ops on small inputs (cached per device): a kernel
    that fails to build or disagrees leaves the unfused ops running, with the reason in the log."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false"):
        return False, f"turned off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})"
    ok, why = paged_attention.available(device)
    if not ok:
        return False, why
    dev = torch.device(device)
    if dev.type != "cuda":
        return True, "fused with Triton"
    key = str(dev)
    if key not in _checked:
        try:
            err = _probe(dev)
        except Exception as e:  # noqa: BLE001 - compile or launch failure: the unfused ops run
            msg = str(e).splitlines()[0] if str(e) else ""
            _checked[key] = (False, f"fused Triton ops probe failed: {type(e).__name__}: {msg}")
        else:
            _checked[key] = ((True, "fused with Triton") if err < 5e-2 else
                             (False, f"fused Triton ops disagreed with the unfused ops (max relative error {err:.3g})"))
    return _checked[key]


def _probe(dev: torch.device) -> float:
    """Max relative error of each fused op against the unfused ops it replaces (model.py), on small
    random bf16 inputs: residual add + norm, SiLU × up, RoPE + K/V write into a scattered pool."""
    import torch.nn.functional as F

    from ..presets import ModelConfig
    from .kv_cache import PagedKVCache
    from .model import rms_norm, rope

    g = torch.Generator(device="cpu")
    g.manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dev, torch.bfloat16)

    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        # Relative to the reference's largest value: the two round in bf16 at different points,
        # so they differ by an ulp of the largest values (a wrong kernel is off by O(1)).
        return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6))

    n, hidden, ffn = 3, 512, 96
    x, y, w = rnd(n, hidden), rnd(n, hidden), rnd(hidden)
    xs, h = add_rms_norm(x, y, w, 1e-5)
    err = max(diff(xs, x + y), diff(h, rms_norm(x + y, w, 1e-5)))
    gu = rnd(n, 2 * ffn)
    err = max(err, diff(silu_mul(gu, ffn), F.silu(gu[:, :ffn]) * gu[:, ffn:]))
    cfg = ModelConfig("probe", layers=2, hidden=512, heads=8, kv_heads=2, ffn=64, vocab=16, max_position=64)
    cache = PagedKVCache(cfg, dev, torch.bfloat16, "native", 16, 8, 0, clock_now=lambda: 0)
    hd, heads, kvh = cfg.head_dim, cfg.heads, cfg.kv_heads
    qkv = rnd(n, (heads + 2 * kvh) * hd)
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    ang = torch.arange(5, 5 + n, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), dim=-1)[:, None, :]
    cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
    index = cache.request_rows([5, 2])[1, 10 : 10 + 2 * n].contiguous()  # layer 1, positions 5..7
    q = rope_write(qkv, cos, sin, cache, index, heads)
    qk = rope(qkv[:, : (heads + kvh) * hd].reshape(n, heads + kvh, hd), cos, sin)
    v = qkv[:, (heads + kvh) * hd :].reshape(n, kvh, hd)
    want = torch.stack((qk[:, heads:].reshape(n, -1), v.reshape(n, -1)), dim=1).reshape(2 * n, -1)
    err = max(err, diff(q, qk[:, :heads]), diff(cache.gather_rows(index, torch.bfloat16), want))
    if hasattr(torch, "float8_e4m3fn"):  # the FP8 activation quantisation: the same bytes, or wrong
        from .fp8 import quantize_per_tensor

        a = rnd(5, 272) * 3
        got, s_got = quantize_e4m3(a, torch.empty((), dtype=torch.float32, device=dev))
        want_q, s_want = quantize_per_tensor(a)
        same = torch.equal(got.view(torch.uint8), want_q.view(torch.uint8)) and float(s_got) == float(s_want)
        err = max(err, 0.0 if same else 1.0)
    return err


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def rope_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any, index: torch.Tensor,
               heads: int) -> torch.Tensor:
    """qkv [n, (heads + 2 kv_heads) × head_dim] (the fused projection's output), cos / sin
    [n, 1, head_dim] (model._rope_tables): the queries with RoPE, [n, heads, head_dim]; the keys
    (with RoPE) and values written to pool rows index [2n] (K, V of token 0, K, V of token 1, ...),
    as `PagedKVCache.write_rows` writes them."""
    kernels = paged_attention._kernels()
    pk = kernels[4]
    cfg = cache.cfg
    n = qkv.shape[0]
    hd, kvh = cfg.head_dim, cfg.kv_heads
    if qkv.stride(1) != 1 or qkv.shape[1] != (heads + 2 * kvh) * hd:
        raise ValueError(f"qkv must be [n, {(heads + 2 * kvh) * hd}] with unit stride, got {tuple(qkv.shape)}")
    q = torch.empty((n, heads, hd), dtype=qkv.dtype, device=qkv.device)
    if n == 0:
        return q
    cos2, sin2 = cos.reshape(n, hd), sin.reshape(n, hd)
    block_h = 8
    pk.rope_write_kv[(n, -(-(heads + 2 * kvh) // block_h))](
        qkv, cos2, sin2, index, q, cache.rows, qkv.stride(0), cos2.stride(0), q.stride(0), q.stride(1),
        HEADS=heads, KV_HEADS=kvh, HEAD_DIM=hd, BLOCK_D=max(16, _next_pow2(hd)), BLOCK_H=block_h, KV_FP8=cache.fp8,
        num_warps=4,
    )
    return q


def add_rms_norm(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + y, rms_norm(x + y) × weight) for rows of x [n, hidden]; y None: (x, rms_norm(x))."""
    pk = paged_attention._kernels()[4]
    n, hidden = x.shape
    h = torch.empty_like(x)
    if y is None:
        x_out, y_arg, sy = x, x, 0
    else:
        x_out, y_arg, sy = torch.empty_like(x), y, y.stride(0)
    if n:
        block = _next_pow2(hidden)
        pk.add_rms_norm[(n,)](x, y_arg, weight, x_out, h, x.stride(0), sy, x_out.stride(0), h.stride(0), hidden, eps,
                              HAS_Y=y is not None, BLOCK=block, num_warps=max(1, min(16, block // 512)))
    return x_out, h


def silu_mul(gu: torch.Tensor, ffn: int) -> torch.Tensor:
    """silu(gu[:, :ffn]) × gu[:, ffn:], [n, ffn]."""
    pk = paged_attention._kernels()[4]
    n = gu.shape[0]
    out = torch.empty((n, ffn), dtype=gu.dtype, device=gu.device)
    if n:
        block = 1024
        pk.silu_mul[(n, -(-ffn // block))](gu, out, gu.stride(0), out.stride(0), ffn, BLOCK=block, num_warps=4)
    return out


def quantize_e4m3(x: torch.Tensor, scale_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`fp8.quantize_per_tensor(x, scale_out)` (x bf16 or fp32, contiguous) with the division
    and the e4m3 cast as one kernel (`quantize_e4m3`), the same bytes (tests/test_fused_ops.py):
    5 bytes of HBM traffic an element (amax's read, the pass's read and write) against 9 (x /
    scale is written in bf16 and read back for the cast). For the 70B preset's four products of a
    2,048-token chunk that is ~0.55 GB a layer against ~1 GB, ~0.1 s of a 16,000-token prefill on
    an H100."""
    from .fp8 import per_tensor_scale

    pk = paged_attention._kernels()[4]
    if x.dtype not in (torch.bfloat16, torch.float32) or not x.is_contiguous():
        raise ValueError(f"quantize_e4m3 takes a contiguous bf16 or fp32 tensor, got {x.dtype}"
                         f"{'' if x.is_contiguous() else ' (not contiguous)'}")
    scale = per_tensor_scale(x)
    q = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    n = x.numel()
    block = 4096
    pk.quantize_e4m3[(max(1, -(-n // block)),)](x, scale, q, scale_out, n, ROUND_BF16=x.dtype == torch.bfloat16,
                                               BLOCK=block, num_warps=8)
    return q.view(torch.float8_e4m3fn), scale_out
