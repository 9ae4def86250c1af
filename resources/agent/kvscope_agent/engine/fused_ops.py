"""The decode step's small ops fused into Triton kernels (`triton_kernels.py`), where they run.

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
  * `silu_mul`: silu(gate) × up: 1 instead of 2.
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


def available(device: Any) -> tuple[bool, str]:
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false"):
        return False, f"turned off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})"
    ok, why = paged_attention.available(device)
    return ok, ("fused with Triton" if ok else why)


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
