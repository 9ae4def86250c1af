"""Attention that reads the paged KV pool in place: a Triton kernel for decode and for prefill
over a cached prefix, with no gather copy.

Why: the gather path (`kv_cache.PagedKVCache.gather_rows` + two matrix products, or SDPA) copies
every request's whole K/V into a contiguous buffer each layer of each step and reads it back: at
16,000-token contexts that is three passes over the KV bytes where one suffices, the grey D2D
track that is never idle in the timeline, and on FP8 KV a bf16 copy twice the size.

The kernel (flash-decoding):
  * one program per (request, KV head, query tile, split of the keys): it loads each K/V tile
    once for every query head of its group (grouped-query attention: the tile is shared, the
    query heads are rows of the matrix product) and for every query token of its tile;
  * K/V are read from `cache.rows` through the request's block table ([B, max_blocks] int32:
    token p of layer l lives at row ((table[p // bt] * layers + l) * 2 + kv) * bt + p % bt), as
    the compute dtype or as float8_e4m3fn bytes converted in registers (unit scale, as
    `fp8.kv_from_storage`);
  * key lengths come from a device tensor and the grid depends only on shapes, so a decode step
    captured in a CUDA graph replays at any length up to its bucket: no host sync, no recapture;
  * the keys are split across programs (`splits`) so that a batch of one request still fills the
    GPU; each split leaves its normalised partial output and log-sum-exp, and a second small
    kernel combines them. With one split the first kernel writes the output itself.
  * queries are bottom-right aligned: query i of n sits at position kv_len - n + i and sees keys
    0..kv_len - n + i. A decode step is n = 1; a prefill chunk over a cached prefix is n > 1.

Used where `available(device)` says so: on CUDA when Triton imports (it ships with PyTorch's CUDA
builds) and a probe product matches the reference, and on the CPU only under Triton's interpreter
(TRITON_INTERPRET=1, how the tests run it). KVSCOPE_PAGED_ATTENTION=off turns it off. Everywhere
else (no Triton, torch 1.13, a CPU run) the gather path runs, and it stays the reference the
kernel is tested against (tests/test_paged_attention.py).
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from typing import Any

import torch

ENV_SWITCH = "KVSCOPE_PAGED_ATTENTION"  # "off" turns the kernel off (the gather path runs)

# Tiles: keys per inner iteration, query rows (token × head of a group) per program.
# Decode, per KV storage ("native": the compute dtype; "fp8": e4m3 bytes). "f16": 1 runs the
# products in fp16 where the queries are bf16/fp16 and the KV e4m3 (one conversion instruction per
# two bytes; paged_attention_fwd's F16). "programs_per_sm": splits are chosen so that about this
# many programs per SM run.
# native (H100, 2026-12-07): 3 stages of a 64-token bf16 K and V tile in flight (48 KiB), 2.0-2.5
# TB/s of KV. fp8: the native tiles in bf16 products read 1.1-1.3 TB/s there: a tile of
# half the bytes took as long (the e4m3 -> bf16 conversion and per-tile costs, not bytes, set
# the pace), so twice the keys a tile and the fp16 products; bench/fp8-decode-tune.py times the
# alternatives (put its best line here).
DECODE_CONFIGS = {
    "native": {"block_n": 64, "num_warps": 4, "num_stages": 3, "programs_per_sm": 4},
    "fp8": {"f16": 1, "block_n": 128, "num_warps": 4, "num_stages": 2, "programs_per_sm": 4},
}
# The prefill kernel's (`paged_prefill_fwd`: a chunk of queries over a cached prefix, no key
# splits) per (query heads per KV head, KV storage), the one table to edit after a tuning run
# (bench/prefill-attention-tune.py prints its best rows in this form); `prefill_config` falls back
# to the (None, kv) row, then (None, None). The flash-attention forward shape: 128 query rows (the
# whole GQA group of 128 / group tokens) × 64 keys, 8 warps (two warp groups of 64 rows), 3 stages
# of K/V in flight. "f16": 1, as in DECODE_CONFIGS, runs FP8 KV's products in fp16 (e4m3 → fp16
# is one instruction a pair, → bf16 goes through fp32; exact either way: see the kernel).
PREFILL_CONFIGS: dict[tuple[int | None, str | None], dict[str, Any]] = {
    (None, None): {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3},
    (4, "native"): {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3},  # llama-3.1-8b
    (None, "fp8"): {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3, "f16": 1},
    (8, "fp8"): {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3, "f16": 1},  # llama-3.1-70b-fp8
}
MIN_SPLIT_TOKENS = 256  # a split reads at least this many keys (fewer: the combine costs more)
MAX_SPLITS = 64

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "kernels": (triton, tl, fwd, combine); "avail": {device str: (ok, why)}


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def _kernels() -> tuple[Any, ...]:
    """(triton, tl, forward kernel, combine kernel, the kernels' module), defined at first use (Triton decides at
    definition whether a kernel is compiled or interpreted: TRITON_INTERPRET is read then).
    Raises ImportError without Triton."""
    with _lock:
        k = _state.get("kernels")
        if k is None:
            from . import triton_kernels as pk  # imports triton

            k = _state["kernels"] = (pk.triton, pk.tl, pk.paged_attention_fwd, pk.paged_attention_combine, pk)
        return k


# ---- where it runs -----------------------------------------------------------------------------


def available(device: Any) -> tuple[bool, str]:
    """Whether `attend` runs on `device`, and why (not). Cached per device; on CUDA the first
    call compiles and checks a small product against the gather reference."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false"):
        return False, f"turned off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})"
    dev = torch.device(device)
    key = str(dev)
    cached = _state.setdefault("avail", {}).get(key)
    if cached is not None:
        return cached
    res = _check(dev)
    _state["avail"][key] = res
    return res


def triton_here(dev: torch.device) -> tuple[bool, str]:
    """Whether the engine's Triton kernels (triton_kernels.py) can be defined and launched on
    `dev`, before any probe: Triton importable, CUDA (not ROCm), or the CPU under
    TRITON_INTERPRET=1. Shared by every kernel family's `available` (fp8_gemv.py too)."""
    if importlib.util.find_spec("triton") is None:
        return False, f"Triton is not importable with PyTorch {torch.__version__} (not installed)"
    if dev.type == "cpu" and not _interpreting():
        return False, "CPU: the Triton kernel runs on CUDA (on the CPU only under TRITON_INTERPRET=1, for tests)"
    if dev.type not in ("cpu", "cuda"):
        return False, f"device {dev.type}: the kernel is written for CUDA"
    if dev.type == "cuda" and getattr(torch.version, "hip", None):
        return False, "ROCm build: the kernel's FP8 path is written for NVIDIA e4m3fn"
    try:
        triton = _kernels()[0]
    except ImportError as e:
        return False, f"Triton is not importable with PyTorch {torch.__version__} ({e})"
    except Exception as e:  # noqa: BLE001 - a broken Triton install must not stop the engine
        return False, f"Triton kernels could not be defined: {type(e).__name__}: {e}"
    if dev.type == "cpu":
        return True, f"Triton {triton.__version__} interpreter (TRITON_INTERPRET=1) on the CPU"
    return True, f"Triton {triton.__version__}"


def _check(dev: torch.device) -> tuple[bool, str]:
    ok, why = triton_here(dev)
    if not ok or dev.type == "cpu":
        return ok, why
    triton = _kernels()[0]
    try:
        err = _probe(dev)
    except Exception as e:  # noqa: BLE001 - compile or launch failure: the gather path runs
        return False, f"Triton {triton.__version__} probe failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not err < 5e-2:  # bf16 rounding is ~1e-2 at most here; a wrong kernel is off by O(1)
        return False, f"Triton {triton.__version__} probe disagreed with the reference (max error {err})"
    return True, f"Triton {triton.__version__} paged attention on {torch.cuda.get_device_name(dev)}"


def _probe(dev: torch.device, dtype: torch.dtype = torch.bfloat16) -> float:
    """Max abs error of the kernels against the gather path (`model.attention` over
    `PagedKVCache.read`) on a small scattered pool, over every launch the engine makes: a prefill
    chunk of 3 tokens over 47 through the prefill kernel (one split) and through the general
    kernel (two splits), and a decode step; over a bf16 pool and, where torch has float8, an FP8
    one (its products in fp16). A kernel that does not compile here fails the probe, not a run.
    `dtype`: the queries' and the bf16 pool's (fp32 for the CPU interpreter, which has no bf16)."""
    from ..presets import ModelConfig
    from .kv_cache import PagedKVCache
    from .model import attention

    cfg = ModelConfig("probe", layers=2, hidden=512, heads=8, kv_heads=2, ffn=64, vocab=16, max_position=64)
    table = [5, 2, 7, 0]
    rows = torch.tensor([table], dtype=torch.int32, device=dev)
    lens = torch.full((1,), 50, dtype=torch.int32, device=dev)
    err = 0.0
    for kv in ("native", "fp8") if hasattr(torch, "float8_e4m3fn") else ("native",):
        cache = PagedKVCache(cfg, dev, dtype, kv, 16, 8, 0, clock_now=lambda: 0)
        g = torch.Generator(device="cpu")
        g.manual_seed(0)
        init = torch.randn(cache.pool.shape, generator=g)
        cache.pool.copy_(init.to(cache.pool.dtype) if kv == "fp8" else init)
        k, v = cache.read(1, cache.request_rows(table), 50, dtype)
        for n, splits in ((3, 1), (3, 2), (1, None)):
            q = torch.randn(1, n, cfg.heads, cfg.head_dim, generator=g).to(dev, dtype)
            got = attend(q, cache, 1, rows, lens, splits=splits, max_keys=50)
            want = attention(q[0], k, v, 50 - n)
            err = max(err, float((got[0].float() - want.float()).abs().max()))
    return err


# ---- launching ---------------------------------------------------------------------------------


def _sm_count(dev: torch.device) -> int:
    if dev.type != "cuda":
        return 4
    key = ("sms", str(dev))
    n = _state.get(key)
    if n is None:
        n = _state[key] = int(torch.cuda.get_device_properties(dev).multi_processor_count)
    return n


def decode_config(fp8: bool) -> dict[str, Any]:
    """The decode launch's configuration for this KV storage (DECODE_CONFIGS)."""
    return DECODE_CONFIGS["fp8" if fp8 else "native"]


def prefill_config(group: int, fp8: bool) -> dict[str, Any]:
    """The prefill kernel's configuration for `group` query heads per KV head over bf16/fp32
    (fp8=False) or FP8 KV: PREFILL_CONFIGS' row for both, else for the KV storage, else the
    default row."""
    kv = "fp8" if fp8 else "native"
    for key in ((group, kv), (None, kv), (None, None)):
        if key in PREFILL_CONFIGS:
            return dict(PREFILL_CONFIGS[key])
    raise KeyError("PREFILL_CONFIGS needs a (None, None) row")


def plan(batch: int, n_query: int, heads: int, kv_heads: int, max_keys: int, device: Any,
         fp8: bool = False) -> tuple[int, int]:
    """(query rows per program, key splits) for a launch: shapes only, so a captured graph keeps
    them. Decode: splits so that ~programs_per_sm (decode_config(fp8)) programs per SM run, each over ≥
    MIN_SPLIT_TOKENS keys. Prefill: split only a chunk whose query tiles leave SMs idle (a split
    costs its partial outputs' fp32 round trip); its rows per program from `prefill_config`."""
    group = heads // kv_heads
    if n_query == 1:
        block_m = max(16, _next_pow2(group))
    else:
        rows = prefill_config(group, fp8)["block_m"]
        block_m = max(16, min(rows, _next_pow2(n_query * group)), _next_pow2(group))
    tiles = -(-n_query // (block_m // group))
    programs = batch * kv_heads * tiles
    target = (decode_config(fp8)["programs_per_sm"] if n_query == 1 else 1) * _sm_count(torch.device(device))
    splits = max(1, min(MAX_SPLITS, -(-target // programs), -(-max(1, max_keys) // MIN_SPLIT_TOKENS)))
    return block_m, splits


def _launch(q: torch.Tensor, rows: torch.Tensor, table: torch.Tensor, lens: torch.Tensor, *, layer: int,
            layers: int, block_tokens: int, kv_heads: int, fp8: bool, splits: int, block_m: int | None = None,
            out: torch.Tensor | None = None, config: dict[str, Any] | None = None) -> torch.Tensor:
    """One launch (`attend` says what it computes). A chunk (n > 1) with one split runs the
    prefill kernel (`paged_prefill_fwd`) unless `config` says {"kernel": "general"}; decode, and a
    chunk split over its keys, the general one (`paged_attention_fwd` + the combine). `config`
    overrides `decode_config` / `prefill_config`'s keys (block_n, num_warps, num_stages, f16)."""
    _, _, fwd, combine, kernels = _kernels()
    b, n, heads, hd = q.shape
    group = heads // kv_heads
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not divide into {kv_heads} KV heads")
    if q.stride(3) != 1:
        raise ValueError("q's last dimension must be contiguous")
    if block_m is None:
        block_m = plan(b, n, heads, kv_heads, 1, q.device, fp8=fp8)[0]
    if out is None:
        out = torch.empty((b, n, heads, hd), dtype=q.dtype, device=q.device)
    cfg = dict(decode_config(fp8) if n == 1 else prefill_config(group, fp8))
    if config:
        cfg.update(config)
    tiles = -(-n // (block_m // group))
    block_d = max(16, _next_pow2(hd))
    qk_scale = (1.0 / math.sqrt(hd)) * 1.4426950408889634  # exp2 of scores × this is exp of scores / √d
    f16 = bool(cfg.get("f16")) and fp8 and q.dtype in (torch.bfloat16, torch.float16)  # FP8 KV's products in fp16
    if n > 1 and splits == 1 and cfg.get("kernel", "prefill") != "general":
        kernels.paged_prefill_fwd[(b * kv_heads, tiles)](
            q, rows, table, lens, out,
            q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2), table.stride(0),
            n, layer * 2 * block_tokens * kv_heads * hd, layers * 2 * block_tokens * kv_heads * hd, qk_scale,
            GROUP=group, KV_HEADS=kv_heads, HEAD_DIM=hd, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=cfg["block_n"],
            BLOCK_TOKENS=block_tokens, KV_FP8=fp8,
            F16=f16,
            IEEE=q.dtype == torch.float32, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return out
    split = splits > 1
    if split:
        mid_o = torch.empty((b, n, heads, splits, hd), dtype=torch.float32, device=q.device)
        mid_lse = torch.empty((b, n, heads, splits), dtype=torch.float32, device=q.device)
    else:
        mid_o = mid_lse = out  # unused
    fwd[(b * kv_heads, tiles, splits)](
        q, rows, table, lens, out, mid_o, mid_lse,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2), table.stride(0),
        n, layer * 2 * block_tokens, layers * 2 * block_tokens, qk_scale, splits,
        HEADS=heads, GROUP=group, KV_HEADS=kv_heads, HEAD_DIM=hd, BLOCK_D=block_d, BLOCK_M=block_m,
        BLOCK_N=cfg["block_n"], BLOCK_TOKENS=block_tokens, KV_FP8=fp8, SPLIT=split,
        IEEE=q.dtype == torch.float32, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        F16=f16,
    )
    if split:
        combine[(b * n * heads,)](
            mid_o, mid_lse, out, out.stride(0), out.stride(1), out.stride(2), n, splits,
            HEADS=heads, HEAD_DIM=hd, BLOCK_D=block_d, BLOCK_S=max(2, _next_pow2(splits)), num_warps=1,
        )
    return out


def attend(q: torch.Tensor, cache: Any, layer: int, table: torch.Tensor, lens: torch.Tensor,
           splits: int | None = None, max_keys: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q [B, n, heads, head_dim] (n query tokens per request, bottom-right aligned:
    token i at position lens[b] - n + i) over layer `layer` of the paged pool `cache`
    (`kv_cache.PagedKVCache`), request b's blocks being table[b] ([B, max_blocks] int32) and its
    key count lens[b] ([B] int32, on the device). `splits` (default: from `plan` with
    `max_keys`, the host's bound on lens) fixes the launch for a graph. Returns [B, n, heads, d]
    in q's dtype (into `out` when given)."""
    b, n, heads, _ = q.shape
    kvh = cache.cfg.kv_heads
    block_m, planned = plan(b, n, heads, kvh, max_keys if max_keys is not None else n, q.device, fp8=cache.fp8)
    return _launch(q, cache.rows, table, lens, layer=layer, layers=cache.cfg.layers, block_tokens=cache.block_tokens,
                   kv_heads=kvh, fp8=cache.fp8, splits=splits if splits is not None else planned, block_m=block_m, out=out)
