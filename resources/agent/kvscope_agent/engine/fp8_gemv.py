"""Decode-size products with FP8 weights: a weight-only Triton kernel (`triton_kernels.fp8_gemv`).

Why: a decode step multiplies 1-16 rows of activations by every weight matrix once, so its time
is the weight bytes over HBM bandwidth. `Fp8Linear`'s general path quantises the activations per
tensor before each torch._scaled_mm (an amax reduction, the scale, the division, the cast: five
or six small kernels) and cuBLASLt's FP8 kernels are built for tiles of 64+ rows: on the H100 the
70B FP8 decode step spent ~30 ms where its 70.5 GB of weights need 23.3 ms
(bench/results/h100-2026-12-07), about 320 products and ~2,000 small kernels a step.

What it computes: out = x @ (W_q · s)ᵀ with x (M, K) bf16/fp16/fp32 as it is (no activation
quantisation), W_q (N, K) e4m3 row-major (`Fp8Linear.weight`), s per tensor or per output
channel, each weight byte converted in registers, fp32 accumulation, out in x's dtype. Each
program owns BLOCK_N output columns and one split of K; with more than one split the fp32
partial sums go through a small second kernel. Every launch parameter comes from shapes, so the
decode step's CUDA graph captures it (no host sync; the partial buffer comes from the graph's
pool).

Numerics: only the weights are quantised, so the error against the unquantised product is the
weights' e4m3 rounding (≈ 0.027 relative, fp8.py's docstring), about √2 less than the general
path's; against x @ dequantised W in fp32 it is fp32 summation order plus one rounding to x's
dtype (tests/test_fp8_gemv.py holds it to that).

Configurations (`GEMV_CONFIGS`, one line per row count; bench/fp8-decode-tune.py times the
alternatives on a GPU and prints the table to paste): block_n output columns a program,
block_k bytes of a weight row an iteration, "dot" 1 for a tensor-core product of the tile
(weights converted to x's dtype; rows padded to 16) or 0 for per-row multiply-add reductions.
`available(device)`: CUDA with Triton (probed once against the reference), or the CPU under
TRITON_INTERPRET=1 (tests); KVSCOPE_FP8_GEMV=off turns it off. Elsewhere `Fp8Linear` keeps its
general path for every size.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from . import paged_attention

ENV_SWITCH = "KVSCOPE_FP8_GEMV"
MAX_ROWS = 16  # products of more rows (a prefill chunk) take torch._scaled_mm

# (rows up to, configuration): the first line whose row count covers M. Expected best on an
# H100 (not yet measured there; bench/fp8-decode-tune.py): per-row reductions over narrow tiles
# for 1-4 rows (many programs: 512+ for every 70B projection at block_n 16), tensor-core tiles
# for more rows, where a multiply-add per byte and row would cost more than the bytes.
GEMV_CONFIGS: list[tuple[int, dict[str, int]]] = [
    (1, {"block_n": 16, "block_k": 512, "num_warps": 4, "num_stages": 3, "dot": 0}),
    (2, {"block_n": 16, "block_k": 512, "num_warps": 4, "num_stages": 3, "dot": 0}),
    (4, {"block_n": 32, "block_k": 256, "num_warps": 4, "num_stages": 3, "dot": 0}),
    (16, {"block_n": 64, "block_k": 256, "num_warps": 4, "num_stages": 3, "dot": 1}),
]
PROGRAMS_PER_SM = 3  # K is split when the output tiles alone give fewer programs than this a SM
MIN_SPLIT_ITERS = 4  # ... and never into splits of fewer than this many block_k iterations

_avail: dict[Any, tuple[bool, str]] = {}


def config_for(rows: int) -> dict[str, int]:
    for upto, cfg in GEMV_CONFIGS:
        if rows <= upto:
            return cfg
    raise ValueError(f"fp8 GEMV takes at most {MAX_ROWS} rows, got {rows}")


def available(device: Any) -> tuple[bool, str]:
    """Whether `gemv` runs on `device`, and why (not); cached per device. On CUDA the first call
    compiles the kernel and checks one product against the reference (a host sync: call it
    before any graph capture, as `LlamaModel` does)."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false"):
        return False, f"turned off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})"
    dev = torch.device(device)
    res = _avail.get(dev)
    if res is None:
        res = _avail[dev] = _check(dev)
    return res


def _check(dev: torch.device) -> tuple[bool, str]:
    if not hasattr(torch, "float8_e4m3fn"):
        return False, f"PyTorch {torch.__version__} has no torch.float8_e4m3fn dtype"
    ok, why = paged_attention.triton_here(dev)
    if not ok or dev.type == "cpu":
        return ok, why
    try:
        err = _probe(dev)
    except Exception as e:  # noqa: BLE001 - compile or launch failure: torch._scaled_mm runs
        return False, f"{why}: FP8 GEMV probe failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not err < 1e-2:  # bf16 output rounding is ~4e-3 relative; a wrong kernel is off by O(1)
        return False, f"{why}: FP8 GEMV probe disagreed with the reference (relative error {err:.3g})"
    return True, f"{why}: weight-only FP8 GEMV for up to {MAX_ROWS} rows on {torch.cuda.get_device_name(dev)}"


def _probe(dev: torch.device) -> float:
    """Largest relative error of 1, 3 and 9 rows against x @ dequantised W (per-channel scales,
    N and K not multiples of the tiles)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(0)
    n, k = 200, 1000
    w = (torch.randn(n, k, generator=g) * 40).to(torch.float8_e4m3fn)
    s = torch.rand(n, generator=g) + 0.5
    wd = w.float() * s[:, None]
    err = 0.0
    for m in (1, 3, 9):
        x = torch.randn(m, k, generator=g).to(torch.bfloat16)
        got = gemv(x.to(dev), w.to(dev), s.to(dev)).float().cpu()
        want = x.float() @ wd.t()
        err = max(err, float((got - want).abs().max() / want.abs().max()))
    return err


def _sm_count(dev: torch.device) -> int:
    return paged_attention._sm_count(dev)


def plan_split(n: int, k: int, cfg: dict[str, int], device: Any) -> tuple[int, int]:
    """(splits of K, K elements a split, a multiple of block_k) for an (n, k) weight: split only
    where the output tiles leave SMs without PROGRAMS_PER_SM programs, each split at least
    MIN_SPLIT_ITERS iterations."""
    bk = cfg["block_k"]
    tiles = -(-n // cfg["block_n"])
    target = PROGRAMS_PER_SM * _sm_count(torch.device(device))
    want = max(1, min(-(-target // tiles), k // (bk * MIN_SPLIT_ITERS)))
    per = -(-(-(-k // want)) // bk) * bk
    return -(-k // per), per


def gemv(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, *, config: Optional[dict[str, int]] = None,
         splits: Optional[int] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (M, K) (M ≤ MAX_ROWS, unit stride along K) @ (weight (N, K) e4m3 · scale)ᵀ -> (M, N) in
    x's dtype. scale: float32, 0-dim / one element (per tensor) or (N,) (per output channel).
    `config` overrides the table's line for M (GEMV_CONFIGS), `splits` the planned split of K."""
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k or weight.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8 GEMV: x {tuple(x.shape)} against weight {tuple(weight.shape)} {weight.dtype}")
    if not 0 < m <= MAX_ROWS:
        raise ValueError(f"fp8 GEMV takes 1 to {MAX_ROWS} rows, got {m}")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("fp8 GEMV needs x and weight with unit stride along K")
    per_channel = scale.numel() != 1
    if per_channel and scale.numel() != n:
        raise ValueError(f"fp8 GEMV scale has {scale.numel()} elements for {n} output channels")
    cfg = dict(config_for(m))
    if config:
        cfg.update(config)
    if splits is None:
        splits, per = plan_split(n, k, cfg, x.device)
    else:
        per = -(-(-(-k // max(1, splits))) // cfg["block_k"]) * cfg["block_k"]
        splits = -(-k // per)
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    pk = paged_attention._kernels()[4]
    dot = bool(cfg["dot"])
    part = torch.empty((splits, m, n), dtype=torch.float32, device=x.device) if splits > 1 else out
    bn = cfg["block_n"]
    pk.fp8_gemv[(-(-n // bn), splits)](
        x, weight.view(torch.uint8), scale.reshape(-1), out, part, m, n, k, x.stride(0), weight.stride(0),
        out.stride(0), per,
        ROWS=0 if dot else m, BLOCK_M=16 if dot else max(2, paged_attention._next_pow2(m)), BLOCK_N=bn,
        BLOCK_K=cfg["block_k"],
        PER_CHANNEL=per_channel, SPLIT=splits > 1, DOT=dot, EVEN_K=k % cfg["block_k"] == 0,
        IEEE=x.dtype == torch.float32, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if splits > 1:
        block = 256
        pk.fp8_gemv_reduce[(m, -(-n // block))](part, out, m, n, splits, out.stride(0), BLOCK=block,
                                                BLOCK_S=max(2, paged_attention._next_pow2(splits)), num_warps=4)
    return out
