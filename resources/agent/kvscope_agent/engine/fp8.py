"""FP8 (e4m3) weights, FP8 matrix multiply and FP8 KV storage for the built-in torch engine.

The `llama-3.1-70b-fp8` preset reproduces the seed's setting (TensorRT-LLM built with
`--quantization FP8`): linear-layer weights stored as float8_e4m3fn with float32 scales, multiplied
through the FP8 tensor-core path PyTorch exposes on Ada/Hopper (`torch._scaled_mm`), and a KV cache
stored as float8_e4m3fn and converted to the attention dtype when read.

What is where:
- `Fp8Linear`: y = x @ W.T with W in e4m3 and a per-tensor (default, as TensorRT-LLM's `FP8`
  quantisation, whose weight and activation scales are per tensor) or per-output-channel float32
  scale. Activations are quantised dynamically, one scale per call (per tensor), so no calibration
  is needed for random weights. Decode sizes (up to `fp8_gemv.MAX_ROWS` rows) take the
  weight-only kernel of fp8_gemv.py instead where it runs: activations as they are, only the
  weights in e4m3 (the product is bandwidth-bound there; quantising the activations cost more
  kernels than the product).
- `kv_to_storage` / `kv_from_storage`: KV values to and from e4m3 with a unit scale (see there).
- `supported(device)`: whether the real FP8 matrix path exists here, with a reason to show.

This module imports on every PyTorch (the agent also runs on Debian's 1.13, which has no float8
dtype); float8 is only touched inside functions, which raise `Fp8Unsupported` where it is missing.

Numerics (documented tolerance; tests/test_fp8.py and bench/gpu/smoke-fp8.sh check them): e4m3 has
3 mantissa bits, so round-to-nearest leaves a relative error uniform in ±2^-4 of the value's binade,
RMS ≈ 0.0265 over normally distributed values (the scale barely matters for a floating format as
long as values stay in the normal range, 2^-6..448). Quantising both operands of a dot product
gives a relative Frobenius error of the output ≈ √2 × 0.0265 ≈ 0.037 against an fp32 product of
the unquantised operands (simulated: 0.0375 for K = 256..8192). `FP8_LINEAR_RTOL` = 0.05 is the
bound the tests hold; a bf16 product of the same operands is ≈ 0.003 off, so an error below
`FP8_LINEAR_MIN_ERR` = 0.02 means the FP8 path was not actually taken.
"""

from __future__ import annotations

import math
import threading
from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import fp8_gemv

E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value; e4m3fn has no infinity (S.1111.111 is NaN)."""

KV_SCALE = 1.0
"""Scale of the FP8 KV cache: stored = clamp(kv / KV_SCALE, ±448). See `kv_to_storage`."""

FP8_LINEAR_RTOL = 0.05
"""Relative Frobenius error of `Fp8Linear` vs an fp32 product of the unquantised operands that the
tests accept (expected ≈ 0.037, see the module docstring)."""

FP8_LINEAR_MIN_ERR = 0.02
"""Below this, the output was not quantised: the FP8 path was bypassed (bf16 gives ≈ 0.003)."""

_AMAX_EPS = 1e-12  # keeps an all-zero tensor's scale finite (0 / eps = 0 stays exact)

DeviceLike = Union[str, torch.device, int]


class Fp8Unsupported(RuntimeError):
    """FP8 weights or KV cannot be used here; the message names the GPU and the missing piece."""


def _torch_version() -> Tuple[int, int]:
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):  # a dev build with an odd tag: assume current
        return (99, 0)


def fp8_dtype() -> torch.dtype:
    """torch.float8_e4m3fn, or `Fp8Unsupported` on PyTorch < 2.1 (Debian's 1.13 has none)."""
    dt = getattr(torch, "float8_e4m3fn", None)
    if dt is None:
        raise Fp8Unsupported(
            f"PyTorch {torch.__version__} has no torch.float8_e4m3fn dtype (FP8 needs PyTorch >= 2.1)"
        )
    return dt


def _device_index(dev: torch.device) -> int:
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _describe_gpu(index: int) -> Tuple[str, Tuple[int, int]]:
    name = torch.cuda.get_device_name(index)
    cap = torch.cuda.get_device_capability(index)
    return name, (int(cap[0]), int(cap[1]))


# ---------------------------------------------------------------------------------------------
# torch._scaled_mm across PyTorch 2.x
#
# Signatures this wrapper covers (checked against PyTorch's native_functions.yaml / Blas.cpp):
# - 2.1-2.3: `_scaled_mm(a, b, *, bias=None, out_dtype=None, scale_a=None, scale_b=None,
#   scale_result=None, use_fast_accum=False) -> (Tensor, Tensor amax)`; scales are float32
#   scalars only; both dims of `a` had to be multiples of 16.
# - 2.4: scale_a / scale_b became required (positional or keyword) and the amax output went away:
#   returns one Tensor.
# - 2.5+: row-wise scales (scale_a (M, 1), scale_b (1, N), float32, contiguous; sm_90, bf16
#   output in 2.5) beside tensor-wise; only K and N must be multiples of 16; M is free.
# - 2.9+: `torch.nn.functional.scaled_mm` appears as the public successor; `_scaled_mm` stays.
# Always: `a` row-major (M, K), `b` column-major (K, N) (cuBLASLt on sm_90 only does "TN"), which
# is exactly W.t() for W stored (N, K) contiguous; K and N multiples of 16; e4m3 × e4m3 allowed
# (e5m2 × e5m2 is not). Passing every argument by keyword works on all of them.
# ---------------------------------------------------------------------------------------------

_PAD_M = _torch_version() < (2, 4)  # set to True at run time too if a build still rejects M % 16
_probe_lock = threading.Lock()
_probe_cache: dict = {}  # (device index, "tensor"|"row") -> (ok, reason)


def _scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    out_dtype: torch.dtype,
    fast_accum: bool,
) -> torch.Tensor:
    out = torch._scaled_mm(  # type: ignore[attr-defined]
        a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype, use_fast_accum=fast_accum
    )
    if isinstance(out, tuple):  # PyTorch 2.1-2.3 also returned amax
        out = out[0]
    return out


def _probe(index: int, mode: str) -> Tuple[bool, str]:
    """Run one 32x32x32 FP8 product on the device and check it (cached per device and mode)."""
    key = (index, mode)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        dt = fp8_dtype()
        dev = torch.device("cuda", index)
        try:
            a = torch.full((32, 32), 0.5, device=dev).to(dt)
            w = torch.full((32, 32), 2.0, device=dev).to(dt)
            if mode == "row":
                sa = torch.full((32, 1), 1.0, device=dev, dtype=torch.float32)
                sb = torch.full((1, 32), 3.0, device=dev, dtype=torch.float32)
            else:
                sa = torch.tensor(1.0, device=dev)
                sb = torch.tensor(3.0, device=dev)
            out = _scaled_mm(a, w.t(), sa, sb, torch.bfloat16, False)
            got = float(out.float().mean().item())
            # 32 terms of 0.5 * 2.0, times scale 3.0 = 96 exactly in bf16
            res = (True, "ok") if got == 96.0 else (False, f"wrong result {got} (expected 96.0)")
        except (RuntimeError, TypeError, ValueError) as e:  # missing kernel, bad layout, old build
            res = (False, str(e).strip().splitlines()[0][:300])
        _probe_cache[key] = res
        return res


def supported(device: DeviceLike) -> Tuple[bool, str]:
    """Whether `Fp8Linear` can run its real FP8 matrix multiply on `device`, and why (not).

    True only for an NVIDIA GPU of compute capability 8.9+ (Ada, Hopper, newer) with a PyTorch that
    has float8_e4m3fn and torch._scaled_mm, after a 32x32 probe product on the card succeeded.
    On CPU it is False: `Fp8Linear` there only emulates the product (for tests). Call it after the
    agent has set CUDA_INJECTION64_PATH (it initialises CUDA).
    """
    ver = torch.__version__
    if getattr(torch, "float8_e4m3fn", None) is None:
        return False, f"PyTorch {ver} has no torch.float8_e4m3fn dtype (FP8 needs PyTorch >= 2.1)"
    if not hasattr(torch, "_scaled_mm"):
        return False, f"PyTorch {ver} has no torch._scaled_mm (the FP8 matrix multiply)"
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if dev.type != "cuda":
        return False, (
            f"device {dev.type}: FP8 matrix multiply needs an NVIDIA GPU of compute capability 8.9+ "
            "(Fp8Linear on CPU only emulates it, for tests)"
        )
    if getattr(torch.version, "hip", None):
        return False, "ROCm build: this engine's FP8 path is written for NVIDIA e4m3fn/cuBLASLt"
    if not torch.cuda.is_available():
        return False, f"device {dev}: CUDA is not available to PyTorch {ver}"
    index = _device_index(dev)
    name, cap = _describe_gpu(index)
    where = f"{name} (cuda:{index}, compute capability {cap[0]}.{cap[1]})"
    if cap < (8, 9):
        return False, f"{where} has no FP8 tensor cores: FP8 needs compute capability 8.9+ (Ada, Hopper)"
    ok, why = _probe(index, "tensor")
    if not ok:
        return False, f"{where}: torch._scaled_mm failed on a probe product: {why}"
    row_ok, _ = _probe(index, "row")
    rowwise = "row-wise and tensor-wise" if row_ok else "tensor-wise only"
    return True, f"{where}, PyTorch {ver}: FP8 e4m3 via torch._scaled_mm ({rowwise} scales)"


def _require(device: torch.device) -> None:
    ok, why = supported(device)
    if not ok:
        raise Fp8Unsupported(why)


# ---------------------------------------------------------------------------------------------
# quantisation helpers
# ---------------------------------------------------------------------------------------------


def quantize_per_tensor(
    x: torch.Tensor, scale_out: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """x -> (e4m3 tensor, float32 0-dim dequantisation scale) with amax(|x|) mapped to 448.

    amax is taken in x's own dtype (the max of |bf16| is a bf16 value, nothing is lost) by one
    reduction kernel, and the scale is kept in x's dtype too: `x / scale` would otherwise round a
    float32 scale to bf16 first (a 0-dim tensor does not promote a bf16 operand), and the product
    would be rescaled by a slightly different number than the one the quantisation used (up to
    2^-9 relative, the same for every output). The float32 scale handed back is that bf16 value
    widened, exactly. No clamp before the cast: |x / scale| <= 448 × (1 + 2^-8) < 464, which
    rounds to 448 in e4m3, never to NaN.

    `scale_out` (float32, 0-dim): write the scale there and return it, so the caller can pass
    torch._scaled_mm the same scale tensor on every call (see `Fp8Linear._forward_cuda`).
    """
    dt = fp8_dtype()
    scale = per_tensor_scale(x)
    q = (x / scale).to(dt)
    if scale_out is None:
        return q, scale.float()
    scale_out.copy_(scale)
    return q, scale_out


FUSED_QUANT_MIN_ROWS = 128
"""Activations of at least this many rows (prefill chunks) are quantised by `quantize_activations`
in one fused pass where the Triton kernels run; decode-sized ones by `quantize_per_tensor`."""


def quantize_activations(x: torch.Tensor, scale_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """`quantize_per_tensor(x, scale_out)` for x (M, K) contiguous: for a prefill-sized CUDA
    activation where the fused ops run, as `fused_ops.quantize_e4m3` (the same bytes in two
    kernels instead of five, ~45% less HBM traffic); otherwise quantize_per_tensor itself."""
    if x.is_cuda and x.shape[0] >= FUSED_QUANT_MIN_ROWS and x.dtype in (torch.bfloat16, torch.float32):
        from . import fused_ops

        if fused_ops.available(x.device)[0]:
            return fused_ops.quantize_e4m3(x, scale_out)
    return quantize_per_tensor(x, scale_out)


def per_tensor_scale(x: torch.Tensor) -> torch.Tensor:
    """`quantize_per_tensor`'s dequantisation scale, 0-dim in x's dtype (fp32 for other dtypes):
    amax(|x|) / 448, at least the dtype's smallest normal."""
    amax = torch.linalg.vector_norm(x, ord=float("inf"))
    if amax.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        amax = amax.float()
    return torch.clamp(amax / E4M3_MAX, min=torch.finfo(amax.dtype).tiny)


def _quantize_rows(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row (output channel) e4m3 quantisation of a 2-D float tensor: (q, float32 scales (N,))."""
    dt = fp8_dtype()
    s = torch.linalg.vector_norm(w.float(), ord=float("inf"), dim=1)
    s = torch.clamp(s, min=_AMAX_EPS) / E4M3_MAX
    q = (w.float() / s[:, None]).to(dt)
    return q, s


def default_chunk_elements(in_features: int, out_features: int) -> int:
    """fp32 values per chunk of `Fp8Linear.from_random`: at most 8 Mi (32 MiB) and at most an
    eighth of the weight's elements (half its e4m3 bytes), so no weight is ever carved out of a
    freed chunk block (see from_random; bench/weight-build-fragmentation-70b.py models it)."""
    return min(1 << 23, max(in_features, out_features * in_features // 8))


class Fp8Linear(nn.Module):
    """A bias-free linear layer with float8_e4m3fn weights: y = x @ (W_q * s_w).T.

    Buffers: `weight` (out_features, in_features) float8_e4m3fn, row-major, so `weight.t()` is the
    column-major second operand cuBLASLt wants; `scale` float32, 0-dim (per tensor) or
    (out_features,) (per output channel). Both are buffers, not parameters: nothing here trains.

    `forward(x)`: x of shape (..., in_features), bf16 (fp16/fp32 accepted), on the weight's device.
    Up to `fp8_gemv.MAX_ROWS` rows (a decode step), where `fp8_gemv.available` (Triton on CUDA;
    the CPU under TRITON_INTERPRET=1) and `decode_gemv` is True: the weight-only kernel, x as it
    is. Otherwise on CUDA the activations are quantised per tensor (dynamic amax) and multiplied
    through `torch._scaled_mm`; the result is bf16 (or x's dtype if that is fp16/fp32). On CPU the
    same quantisation is applied and the product of the dequantised values is taken in fp32: it
    checks scales and layouts in tests, not the FP8 kernels (`supported()` says False there).
    """

    weight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, *, fast_accum: bool = False) -> None:
        super().__init__()
        dt = fp8_dtype()
        if weight.dim() != 2 or weight.dtype != dt:
            raise ValueError(f"Fp8Linear weight must be a 2-D {dt} tensor, got {tuple(weight.shape)} {weight.dtype}")
        out_features, in_features = weight.shape
        if in_features % 16 or out_features % 16:
            # torch._scaled_mm needs K and N multiples of 16 (cuBLASLt FP8 alignment)
            raise ValueError(
                f"Fp8Linear needs in_features and out_features divisible by 16, got {in_features} -> {out_features}"
            )
        if scale.dtype != torch.float32 or scale.numel() not in (1, out_features):
            raise ValueError(
                f"Fp8Linear scale must be float32 with 1 or {out_features} elements, got {scale.dtype} {tuple(scale.shape)}"
            )
        if scale.device != weight.device:
            raise ValueError(f"Fp8Linear scale on {scale.device} but weight on {weight.device}")
        if weight.device.type == "cuda":
            _require(weight.device)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.fast_accum = bool(fast_accum)
        # Whether decode-sized inputs may take the weight-only kernel (where it runs); False
        # keeps the activation-quantised path for every size (the A/B, the emulation tests).
        self.decode_gemv = True
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("scale", scale.reshape(()) if scale.numel() == 1 else scale.reshape(out_features).contiguous())

    # -- construction -------------------------------------------------------------------------

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1

    @classmethod
    def from_weight(cls, w: torch.Tensor, *, scaling: str = "tensor", fast_accum: bool = False) -> "Fp8Linear":
        """Quantise a given (out_features, in_features) float weight (used for references/tests)."""
        if w.dim() != 2:
            raise ValueError(f"weight must be 2-D, got {tuple(w.shape)}")
        if scaling == "channel":
            q, s = _quantize_rows(w)
        elif scaling == "tensor":
            q, s = quantize_per_tensor(w.float())
        else:
            raise ValueError(f"scaling must be 'tensor' or 'channel', got {scaling!r}")
        return cls(q, s, fast_accum=fast_accum)

    @classmethod
    def from_random(
        cls,
        in_features: int,
        out_features: int,
        device: DeviceLike,
        generator: Optional[torch.Generator],
        *,
        scaling: str = "tensor",
        std: Optional[float] = None,
        fast_accum: bool = False,
        chunk_elements: Optional[int] = None,
    ) -> "Fp8Linear":
        """Random N(0, std²) weights (std = 1/sqrt(in_features) by default, the variance-preserving
        init, so activations keep their scale through 80 layers) quantised to e4m3, built on
        `device` in row chunks: the full-precision copy of a 70B model never exists, only one chunk
        at a time.

        Chunk size (`chunk_elements` fp32 values; default min(8 Mi, out × in / 8), so at most 32 MiB
        and at most half the FP8 weight's bytes): the chunks must be smaller than any weight. The
        caching allocator serves a request from the best-fitting free block it holds; with 256 MiB
        chunks (the first version), each next weight (67-235 MiB) was carved out of the last
        chunk's freed block and the next chunk needed a new one. On the H100 the 70B build ended
        with 77.87 GB in use for 72.66 GB of weights, which the run's `mem_get_info` counted as
        used: a KV pool of 715 blocks instead of ~1,500. A model of the allocator
        (bench/weight-build-fragmentation-70b.py) gives 4.45 GB reserved-but-free for 256 MiB chunks and
        0.03 GB for these. Chunks smaller than every weight are never split by a weight, so they
        keep reusing one small block.

        Per-tensor scaling needs amax over the whole matrix before any chunk is quantised, so it
        draws the matrix twice from the same generator state (pass 1: amax, pass 2: quantise):
        identical values, no stored copy. Same generator seed -> same weights.
        """
        dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
        if dev.type == "cuda":
            _require(dev)
        dt = fp8_dtype()
        if scaling not in ("tensor", "channel"):
            raise ValueError(f"scaling must be 'tensor' or 'channel', got {scaling!r}")
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Fp8Linear sizes must be positive, got {in_features} -> {out_features}")
        if generator is None:
            generator = torch.Generator(device=dev)
            generator.manual_seed(0)
        sd = float(std) if std is not None else 1.0 / math.sqrt(in_features)
        if chunk_elements is None:
            chunk_elements = default_chunk_elements(in_features, out_features)
        rows = max(1, int(chunk_elements) // in_features)

        def chunk(r0: int, r1: int) -> torch.Tensor:
            c = torch.randn((r1 - r0, in_features), generator=generator, device=dev, dtype=torch.float32)
            return c.mul_(sd)

        weight = torch.empty((out_features, in_features), dtype=dt, device=dev)
        if scaling == "channel":
            scale = torch.empty((out_features,), dtype=torch.float32, device=dev)
            for r0 in range(0, out_features, rows):
                r1 = min(out_features, r0 + rows)
                q, s = _quantize_rows(chunk(r0, r1))
                weight[r0:r1] = q
                scale[r0:r1] = s
                del q
        else:
            state = generator.get_state()
            amax = torch.zeros((), dtype=torch.float32, device=dev)
            for r0 in range(0, out_features, rows):
                r1 = min(out_features, r0 + rows)
                amax = torch.maximum(amax, torch.linalg.vector_norm(chunk(r0, r1), ord=float("inf")))
            generator.set_state(state)
            scale = torch.clamp(amax, min=_AMAX_EPS) / E4M3_MAX
            for r0 in range(0, out_features, rows):
                r1 = min(out_features, r0 + rows)
                weight[r0:r1].copy_(chunk(r0, r1).div_(scale))  # cast on copy: no e4m3 temporary
        return cls(weight, scale, fast_accum=fast_accum)

    # -- use ----------------------------------------------------------------------------------

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_q * s_w as `dtype` (a reference for tests; a full copy, so small shapes only)."""
        s = self.scale[:, None] if self.per_channel else self.scale
        return (self.weight.float() * s).to(dtype)

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size() + self.scale.numel() * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Fp8Linear expects (..., {self.in_features}), got {tuple(x.shape)}")
        if x.device != self.weight.device:
            raise ValueError(f"Fp8Linear input on {x.device} but weight on {self.weight.device}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not x2.is_contiguous():
            x2 = x2.contiguous()  # _scaled_mm wants `a` row-major
        if self.uses_gemv(x2.shape[0]):
            out = fp8_gemv.gemv(x2, self.weight, self.scale)
        elif self.weight.device.type != "cuda":
            out = self._forward_emulated(x2)
        else:
            out = self._forward_cuda(x2)
        return out.reshape(*lead, self.out_features)

    def uses_gemv(self, rows: int) -> bool:
        """Whether a product of `rows` rows runs the weight-only decode kernel (fp8_gemv.py)."""
        return 0 < rows <= fp8_gemv.MAX_ROWS and self.decode_gemv and fp8_gemv.available(self.weight.device)[0]

    def _forward_emulated(self, x2: torch.Tensor) -> torch.Tensor:
        x_q, sx = quantize_per_tensor(x2)
        out = (x_q.float() * sx) @ self.dequantized_weight(torch.float32).t()
        return out.to(x2.dtype)

    def _forward_cuda(self, x2: torch.Tensor) -> torch.Tensor:
        global _PAD_M
        out_dtype = x2.dtype if x2.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        m = x2.shape[0]
        if m == 0:
            return x2.new_empty((0, self.out_features), dtype=out_dtype)
        x_q, sx = quantize_activations(x2, self._scale_buffer(x2.device))
        if _PAD_M and m % 16:
            x_q = torch.nn.functional.pad(x_q.view(torch.uint8), (0, 0, 0, 16 - m % 16)).view(x_q.dtype)
        try:
            out = self._mm(x_q, sx, out_dtype)
        except RuntimeError as e:
            # an older build that still wants M % 16 == 0: pad from now on
            if _PAD_M or m % 16 == 0 or "divisible by 16" not in str(e):
                raise
            _PAD_M = True
            x_q = torch.nn.functional.pad(x_q.view(torch.uint8), (0, 0, 0, 16 - m % 16)).view(x_q.dtype)
            out = self._mm(x_q, sx, out_dtype)
        return out[:m] if out.shape[0] != m else out

    def _scale_buffer(self, device: torch.device, rows: int = 0) -> torch.Tensor:
        """A float32 activation-scale tensor that lives as long as the layer: 0-dim, or (rows, 1)
        for row-wise mode. torch._scaled_mm hands scale *pointers* to cuBLASLt as matmul
        descriptor attributes; with a fresh tensor per call every call presents a new descriptor,
        with the same one the library sees an identical problem each decode step. Safe to reuse:
        each call writes it on the compute stream before its product reads it, and the next call
        of this layer is queued after that product."""
        bufs = self.__dict__.setdefault("_act_scale_bufs", {})
        b = bufs.get(rows)
        if b is None or b.device != device:
            shape = (rows, 1) if rows else ()
            b = bufs[rows] = torch.empty(shape, dtype=torch.float32, device=device)
        return b

    def _mm(self, x_q: torch.Tensor, sx: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        w_t = self.weight.t()  # (K, N) column-major view, no copy
        if not self.per_channel:
            return _scaled_mm(x_q, w_t, sx, self.scale, out_dtype, self.fast_accum)
        index = _device_index(self.weight.device)
        if _probe(index, "row")[0]:
            # row-wise mode: scale_a (M, 1) and scale_b (1, N), both float32 contiguous
            sa = self._scale_buffer(x_q.device, x_q.shape[0])
            sa.copy_(sx.reshape(1, 1).expand(x_q.shape[0], 1))
            return _scaled_mm(x_q, w_t, sa, self.scale.reshape(1, -1), torch.bfloat16, self.fast_accum).to(out_dtype)
        # no row-wise kernel (PyTorch < 2.5, or sm_89): tensor-wise product in fp32, channel scales after
        one = torch.ones((), dtype=torch.float32, device=x_q.device)
        out = _scaled_mm(x_q, w_t, sx, one, torch.float32, self.fast_accum)
        return out.mul_(self.scale).to(out_dtype)

    def _apply(self, fn, *args, **kwargs):  # type: ignore[override]
        # Module.to(dtype), .half(), .bfloat16() convert every floating buffer, and float8 counts as
        # floating: that would silently turn the FP8 weight into bf16 (twice the memory) and the
        # scale into bf16. Keep both dtypes; device moves still apply.
        dtypes = {k: b.dtype for k, b in self._buffers.items() if b is not None}
        super()._apply(fn, *args, **kwargs)
        for k, dt in dtypes.items():
            b = self._buffers.get(k)
            if b is not None and b.dtype != dt:
                self._buffers[k] = b.to(dt)
        return self

    def extra_repr(self) -> str:
        mode = "per-channel" if self.per_channel else "per-tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 {mode} scales, fast_accum={self.fast_accum}"


# ---------------------------------------------------------------------------------------------
# FP8 KV cache storage
# ---------------------------------------------------------------------------------------------


def kv_to_storage(x: torch.Tensor) -> torch.Tensor:
    """K or V values (bf16/fp16/fp32) -> float8_e4m3fn for the paged KV cache, one byte a value.

    Scale choice: a fixed unit scale (`KV_SCALE` = 1.0), the default of TensorRT-LLM's and vLLM's
    FP8 KV cache when no calibrated k/v scales are given. It keeps a block self-contained (its
    bytes are exactly tokens × layers × 2 × kv_heads × head_dim, no per-block scale to carry when
    it is offloaded or onboarded) and block content independent of what else was computed.
    It fits these values: with the engine's variance-preserving random weights K and V are about
    N(0, 1) (|x| < 6 almost surely), far inside ±448, and above e4m3's smallest normal 2^-6 for
    all but ~1% of values, whose subnormal rounding costs little; relative error ≈ 0.027 RMS.
    Values beyond ±448 saturate to ±448 (a plain cast would turn them into NaN, as e4m3fn has
    no infinity); NaN stays NaN.
    """
    dt = fp8_dtype()
    return torch.clamp(x, -E4M3_MAX, E4M3_MAX).to(dt)


def kv_from_storage(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float8_e4m3fn KV storage -> `dtype` for attention (exact: every e4m3 value is a bf16 value)."""
    if x.dtype != fp8_dtype():
        raise ValueError(f"kv_from_storage expects {fp8_dtype()} storage, got {x.dtype}")
    return x.to(dtype)
