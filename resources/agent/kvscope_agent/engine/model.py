"""A Llama-architecture decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) with random
weights initialised on the device from a seeded generator, reading and writing its KV through a
paged cache (`kv_cache.PagedKVCache`).

Attention runs per request over that request's blocks; the linear layers run once over all
tokens of the step's batch. Where `paged_attention.available` (Triton on CUDA), a decode token and
a prefill chunk over a cached prefix read their K/V in place from the pool through the block table
(the pool keeps each block as one contiguous chunk for the copy engine, so a layer's K/V for a
request is not contiguous); a first chunk (no prefix) and every piece elsewhere gather its K/V
from the pool by block table and run `attention` (SDPA, or an explicit softmax on torch 1.13).

Why the kernel and not a gather for prefill too: a chunk of n tokens over s cached ones spends
~2·s·kv_bytes copying (read + write) against 4·heads·head_dim·n·s FLOPs of attention, a ratio of
kv_heads·elt·FLOP/s / (heads·n·bytes/s) ≈ 100 / n for the 8B preset on an H100 (5% at the
default 2,048-token chunk, but 20-100% for the short chunks of a conversation's later rounds);
and the fused SDPA kernels cannot take a bottom-right causal mask with grouped-query K/V without
expanding K/V to every head (4-8× the bytes). The kernel needs neither.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..presets import ModelConfig
from . import fp8_gemv, fused_ops, paged_attention

_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def _has_float8() -> bool:
    return hasattr(torch, "float8_e4m3fn")


def _load_fp8() -> Any:
    """engine/fp8.py (FP8 linear via torch._scaled_mm, FP8 KV storage). Imported only when a
    preset asks for fp8, because torch 1.13 has no float8 dtypes."""
    if not _has_float8():
        raise RuntimeError(f"fp8 needs torch with float8 dtypes (this is torch {torch.__version__})")
    from . import fp8  # type: ignore[attr-defined]

    return fp8


class RandomLinear(torch.nn.Module):
    """y = x W^T with W ~ N(0, 1/in_features): keeps activations O(1) through the random stack."""

    def __init__(self, in_features: int, out_features: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> None:
        super().__init__()
        w = torch.randn(out_features, in_features, device=device, dtype=dtype, generator=generator)
        w.mul_(1.0 / math.sqrt(in_features))
        self.weight = torch.nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def make_linear(in_features: int, out_features: int, weight_format: str, device: torch.device, dtype: torch.dtype,
                generator: torch.Generator) -> torch.nn.Module:
    """The preset's `weight_format` picks native (bf16 on GPU, fp32 on CPU) or FP8 weights."""
    if weight_format == "fp8":
        return _load_fp8().Fp8Linear.from_random(in_features, out_features, device, generator)
    if weight_format != "native":
        raise ValueError(f"unknown weight_format {weight_format!r}")
    return RandomLinear(in_features, out_features, device, dtype, generator)


_FUSED_RMS = hasattr(F, "rms_norm")  # PyTorch 2.4+


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if _FUSED_RMS and x.is_cuda:
        # One op instead of eight: the decode step is launch-bound at small batch.
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # Computed in fp32 as Hugging Face LlamaRMSNorm does, then cast back.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [tokens, heads, head_dim]; the rotate-half form of HF Llama."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


def _probe_gqa() -> bool:
    """Whether scaled_dot_product_attention takes enable_gqa (PyTorch 2.5+)."""
    if not _HAS_SDPA:
        return False
    try:
        q = torch.zeros(1, 2, 1, 4)
        kv = torch.zeros(1, 1, 1, 4)
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


_HAS_GQA = _probe_gqa()
try:  # PyTorch 2.3+: a bottom-right aligned causal mask the fused kernels take without materialising
    from torch.nn.attention.bias import causal_lower_right as _causal_lower_right
except ImportError:  # pragma: no cover - depends on the torch version
    _causal_lower_right = None
_lower_right_ok = _causal_lower_right is not None


def _explicit_mask(n: int, s: int, start: int, device: torch.device) -> torch.Tensor:
    # Query i (position start+i) sees keys 0..start+i: bottom-right aligned causal.
    return torch.ones(n, s, dtype=torch.bool, device=device).tril(diagonal=start)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
    """Causal attention of `n` new queries at positions start..start+n-1 over keys 0..start+n-1.

    q [n, heads, d]; k, v [start+n, kv_heads, d]. Returns [n, heads, d]. Grouped-query: each KV
    head serves heads // kv_heads query heads.

    Kernel choice on CUDA: decode (n = 1) and a first chunk (start = 0) need no mask, so the flash
    kernel runs with native GQA (enable_gqa, no K/V expansion). A later prefill chunk needs a
    bottom-right causal mask, which flash cannot take; there K/V are expanded to all heads (the
    memory-efficient kernel has no GQA) and the mask is `causal_lower_right` (no n×s tensor).
    """
    global _lower_right_ok
    n, heads, d = q.shape
    s, kvh, _ = k.shape
    group = heads // kvh
    qh = q.transpose(0, 1)[None]  # [1, heads, n, d]
    if _HAS_SDPA:
        kh, vh = k.transpose(0, 1)[None], v.transpose(0, 1)[None]  # [1, kvh, s, d]
        if n == 1 or start == 0:
            causal = n > 1  # square causal: top-left and bottom-right alignment agree
            if group > 1 and _HAS_GQA:
                out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, enable_gqa=True)
            else:
                if group > 1:
                    kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
                out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal)
            return out[0].transpose(0, 1)
        if group > 1:
            kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
        if _lower_right_ok:
            try:
                out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=_causal_lower_right(n, s))
                return out[0].transpose(0, 1)
            except (TypeError, RuntimeError, NotImplementedError):
                _lower_right_ok = False  # this torch build cannot: use the explicit mask from now on
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=_explicit_mask(n, s, start, q.device))
        return out[0].transpose(0, 1)
    # torch 1.13 (no SDPA): explicit softmax attention in fp32.
    kh = k.transpose(0, 1).repeat_interleave(group, dim=0).float()
    vh = v.transpose(0, 1).repeat_interleave(group, dim=0).float()
    scores = torch.matmul(qh[0].float(), kh.transpose(1, 2)) / math.sqrt(d)
    if n > 1:
        scores = scores.masked_fill(~_explicit_mask(n, s, start, q.device), float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), vh).to(q.dtype)
    return out.transpose(0, 1)


@dataclass
class Piece:
    """One request's share of a step: `n` tokens at positions start..start+n-1."""

    token_ids: Sequence[int] | None  # CPU ids, or None when `token_dev` holds them
    token_dev: torch.Tensor | None  # [n] device ids (decode: the last sampled token, never synced)
    start: int
    n: int
    rows: torch.Tensor  # the request's pool rows, [layers, 2 × positions] (cache.request_rows)
    want_logits: bool


class LlamaModel(torch.nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        hd = cfg.head_dim
        wf = cfg.weight_format
        emb = torch.randn(cfg.vocab, cfg.hidden, device=device, dtype=dtype, generator=g)
        self.embed = torch.nn.Parameter(emb, requires_grad=False)
        self.layers = torch.nn.ModuleList()
        for _ in range(cfg.layers):
            layer = torch.nn.Module()
            layer.qkv = make_linear(cfg.hidden, (cfg.heads + 2 * cfg.kv_heads) * hd, wf, device, dtype, g)
            layer.o = make_linear(cfg.heads * hd, cfg.hidden, wf, device, dtype, g)
            layer.gate_up = make_linear(cfg.hidden, 2 * cfg.ffn, wf, device, dtype, g)
            layer.down = make_linear(cfg.ffn, cfg.hidden, wf, device, dtype, g)
            layer.norm1 = torch.nn.Parameter(torch.ones(cfg.hidden, device=device, dtype=dtype), requires_grad=False)
            layer.norm2 = torch.nn.Parameter(torch.ones(cfg.hidden, device=device, dtype=dtype), requires_grad=False)
            self.layers.append(layer)
        self.norm = torch.nn.Parameter(torch.ones(cfg.hidden, device=device, dtype=dtype), requires_grad=False)
        # The output projection stays in the compute dtype even for fp8 presets (as FP8
        # checkpoints keep lm_head unquantised).
        self.lm_head = RandomLinear(cfg.hidden, cfg.vocab, device, dtype, g)
        # engine/decode_graph.DecodeGraphs when decode steps run at fixed shapes (CUDA graphs);
        # None: every step runs eagerly below.
        self.decode_runner: Any = None
        # Diagnostics (the engine's step trace, KVSCOPE_STEP_TRACE): when a list, each eager step
        # fills it with the host time at each layer's start (ns from the first layer's), to show
        # where a step whose launch waited behind a copy stopped.
        self.layer_times: list[int] | None = None
        # With layer_times: the host time after each op of layer 0 ((name, ns) from the layer's
        # start), to name the op a blocked launch waited in.
        self.layer0_ops: list[tuple[str, int]] = []
        # Whether attention over the paged pool runs the Triton kernel (paged_attention.py); the
        # reason either way, for the run's log. Set it False to run the gather path (the A/B).
        self.paged_kernel, self.paged_kernel_why = paged_attention.available(device)
        # Whether RoPE + K/V write, residual add + norm and SiLU × up run as fused kernels
        # (fused_ops.py); False runs the unfused ops (the A/B and the reference).
        self.fused_ops, self.fused_ops_why = fused_ops.available(device)
        # FP8 weights: whether decode-sized products run the weight-only kernel (fp8_gemv.py;
        # probed here, before any decode graph is captured), and why (not).
        self.fp8_gemv, self.fp8_gemv_why = fp8_gemv.available(device) if wf == "fp8" else (False, "weights are not FP8")
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters()) + sum(
            b.numel() * b.element_size() for b in self.buffers()
        )

    def _rope_tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ang = positions.float()[:, None] * self.inv_freq[None, :]
        ang = torch.cat((ang, ang), dim=-1)[:, None, :]  # [tokens, 1, head_dim]
        return ang.cos().to(self.dtype), ang.sin().to(self.dtype)

    # A layer, as the eager step and the fixed-shape decode step (decode_graph.py) run it: the
    # residual stream x and its normed copy h travel between layers, so that each residual add
    # and the norm after it are one op where the fused ops run (fused_ops.py).

    def first_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's input norm of the embeddings x [n, hidden]."""
        if self.fused_ops:
            return fused_ops.add_rms_norm(x, None, self.layers[0].norm1, self.cfg.rms_eps)[1]
        return rms_norm(x, self.layers[0].norm1, self.cfg.rms_eps)

    def add_norm(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + y, rms_norm(x + y) × weight)."""
        if self.fused_ops:
            return fused_ops.add_rms_norm(x, y, weight, self.cfg.rms_eps)
        x = x + y
        return x, rms_norm(x, weight, self.cfg.rms_eps)

    def layer_q(self, layer: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any,
                write: torch.Tensor) -> torch.Tensor:
        """A layer's queries [n, heads, d] (RoPE applied) for normed tokens h [n, hidden]; their
        keys (RoPE applied) and values written to the pool rows `write` [2n] (K, V of each token,
        `PagedKVCache.write_rows`)."""
        cfg = self.cfg
        hd = cfg.head_dim
        qkv = layer.qkv(h)
        if self.fused_ops:
            return fused_ops.rope_write(qkv, cos, sin, cache, write, cfg.heads)
        q_size, kv_size = cfg.heads * hd, cfg.kv_heads * hd
        # RoPE on q and k in one go (they are adjacent in the fused projection).
        qk = rope(qkv[:, : q_size + kv_size].reshape(-1, cfg.heads + cfg.kv_heads, hd), cos, sin)
        cache.write_rows(write, qk[:, cfg.heads :], qkv[:, q_size + kv_size :].reshape(-1, cfg.kv_heads, hd))
        return qk[:, : cfg.heads]

    def layer_out(self, li: int, x: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest of layer li after attention (o [n, heads, d]): output projection and SwiGLU
        feed-forward, each added to the residual x [n, hidden]. Returns the new residual and its
        norm for what follows (the next layer's input norm, or the final norm after the last)."""
        cfg = self.cfg
        layer = self.layers[li]
        x, h = self.add_norm(x, layer.o(o.reshape(-1, cfg.heads * cfg.head_dim)), layer.norm2)
        gu = layer.gate_up(h)
        act = fused_ops.silu_mul(gu, cfg.ffn) if self.fused_ops else F.silu(gu[:, : cfg.ffn]) * gu[:, cfg.ffn :]
        nxt = self.layers[li + 1].norm1 if li + 1 < len(self.layers) else self.norm
        return self.add_norm(x, layer.down(act), nxt)

    @torch.no_grad()
    def forward_step(self, pieces: Sequence[Piece], cache: Any, return_logits: bool = False) -> torch.Tensor | None:
        """Run one batched step; write every piece's K/V into `cache`; return the greedy next
        token (device tensor [m]) of each piece with want_logits, in order (None if none), or
        with return_logits their fp32 logits [m, vocab]."""
        runner = self.decode_runner
        if runner is not None and not return_logits and runner.takes(pieces):
            return runner.step(pieces)
        dev = self.device
        # No pageable host->device copy in the step: such a copy waits for the stream to drain,
        # which would serialise the CPU's kernel launches with the GPU's work every step.
        ids_parts: list[torch.Tensor] = []
        pos_parts: list[torch.Tensor] = []
        for p in pieces:
            if p.token_dev is not None:
                ids_parts.append(p.token_dev.reshape(-1))
            else:
                t = torch.tensor(list(p.token_ids), dtype=torch.long)
                if dev.type == "cuda":
                    t = t.pin_memory()
                ids_parts.append(t.to(dev, non_blocking=True))
            pos_parts.append(torch.arange(p.start, p.start + p.n, device=dev, dtype=torch.long))
        ids = torch.cat(ids_parts) if len(ids_parts) > 1 else ids_parts[0]
        positions = torch.cat(pos_parts) if len(pos_parts) > 1 else pos_parts[0]
        cos, sin = self._rope_tables(positions)
        x = self.embed[ids]
        h = self.first_norm(x)
        # Pool rows of every token's K and V, per layer [L, 2 × tokens]: one write per layer.
        wparts = [p.rows[:, 2 * p.start : 2 * (p.start + p.n)] for p in pieces]
        write = torch.cat(wparts, dim=1) if len(wparts) > 1 else wparts[0]
        times = self.layer_times
        if times is not None:
            times.clear()
            t0 = time.perf_counter_ns()
        ops = self.layer0_ops if times is not None else None
        if ops is not None:
            ops.clear()
        # Pieces over a cached prefix (a decode token, a later prefill chunk) read the pool in
        # place when the kernel runs: their block table and key count, made once per step.
        paged: list[Any] = [None] * len(pieces)
        if self.paged_kernel:
            for i, p in enumerate(pieces):
                if p.start > 0:
                    table = cache.block_table(p.rows)[None]
                    lens = torch.full((1,), p.start + p.n, dtype=torch.int32, device=dev)
                    paged[i] = (table, lens)
        for li, layer in enumerate(self.layers):
            if times is not None:
                times.append(time.perf_counter_ns() - t0)
            mark = ops is not None and li == 0  # layer 0: host time after each of its ops
            q = self.layer_q(layer, h, cos, sin, cache, write[li])
            if mark:
                ops.append(("qkv_write", time.perf_counter_ns() - t0))
            outs = []
            off = 0
            for i, p in enumerate(pieces):
                sl = slice(off, off + p.n)
                if paged[i] is not None:
                    table, lens = paged[i]
                    outs.append(paged_attention.attend(q[sl][None], cache, li, table, lens, max_keys=p.start + p.n)[0])
                else:
                    kc, vc = cache.read(li, p.rows, p.start + p.n, self.dtype)
                    if mark:
                        ops.append((f"read{i}", time.perf_counter_ns() - t0))
                    outs.append(attention(q[sl], kc, vc, p.start))
                if mark:
                    ops.append((f"attn{i}", time.perf_counter_ns() - t0))
                off += p.n
            x, h = self.layer_out(li, x, torch.cat(outs) if len(outs) > 1 else outs[0])
            if mark:
                ops.append(("out", time.perf_counter_ns() - t0))
        rows = []
        off = 0
        for p in pieces:
            off += p.n
            if p.want_logits:
                rows.append(off - 1)
        if not rows:
            return None
        if rows == list(range(len(rows))) and len(rows) == h.shape[0]:
            last = h  # after the last layer h is the final norm of x
        else:
            last = torch.stack([h[i] for i in rows])  # views + one kernel: no index upload
        logits = self.lm_head(last).float()
        return logits if return_logits else torch.argmax(logits, dim=-1)
