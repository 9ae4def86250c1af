#!/usr/bin/env python3
"""The built-in engine against the hardware's limits, in one call on a GPU host.

Per model (llama-3.1-8b bf16, llama-3.1-70b-fp8: FP8 weights and KV) it measures, beside the
hardware rates measured in the same process:
  * decode: for 1, 2, 4, 8 users at 16,000 tokens, the decode step as the engine runs it (the
    CUDA graph of decode_graph.DecodeGraphs, replayed; median over --decode-reps replays) against
    its bandwidth bound = (weight bytes read + KV bytes read) / HBM bandwidth, where the
    bandwidth is a large device-to-device copy's (bytes read + bytes written) / time;
    the same step with the paged kernel and the fused ops off (the gather path: the step as it
    was before them) for the A/B;
  * attention alone (kernel A/B): one decode step's attention over all layers, the paged Triton
    kernel against the gather path (index_select + two products), each captured as one graph;
    and one prefill chunk (--prefill-chunk queries over the rest of the context) the same way;
  * prefill: a --context-token prompt through the engine's chunked prefill (--prefill-chunk
    tokens a step, the engine's default 2,048), against its FLOP bound: linear-layer FLOPs
    2 · (decoder linear parameters) · tokens + the last token's lm_head, at the GEMM rate of the
    weights' format (bf16, or FP8 through torch._scaled_mm) measured in the same call, plus
    attention's 4 · layers · heads · head_dim · T(T+1)/2 (causal) at the bf16 GEMM rate
    (attention runs in bf16 in this engine whatever the weights; the stricter bound with every
    FLOP at the weights' rate is in the JSON as `bound_ms_one_rate`).

Memory: the KV pool holds --context + decode tokens for the largest batch that fits beside the
weights (70B FP8 is 72.7 GB of weights; 8 users × 16,000 tokens of FP8 KV are 21 GB more, which
an 80 GB H100 does not have: that point is skipped with the arithmetic in the output; an H200
runs it). Writes DIR/roofline.json and DIR/roofline.md; prints the table as it goes. Whole run
~3-5 minutes on an H100 (--budget-s stops starting new parts past it).

    python3 bench/engine-roofline.py --out DIR                      # on the GPU host
    python3 bench/engine-roofline.py --out DIR --device cpu --models tiny --context 300 \\
        --batches 1,2 --decode-reps 3 --prefill-chunk 128            # the logic, on a CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "resources", "agent"))

MODELS = {"8b": "llama-3.1-8b", "70b-fp8": "llama-3.1-70b-fp8", "tiny": "tiny"}
GIB = 1 << 30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the arithmetic (pure: the bounds the lead judges a GPU result by) ------------------------


def decoder_linear_params(cfg: Any) -> int:
    """Parameters of the decoder layers' matrix products (no embedding, lm_head or norms)."""
    hd = cfg.head_dim
    per_layer = cfg.hidden * (cfg.heads + 2 * cfg.kv_heads) * hd + cfg.heads * hd * cfg.hidden + 3 * cfg.hidden * cfg.ffn
    return cfg.layers * per_layer


def prefill_flops(cfg: Any, tokens: int) -> dict[str, float]:
    """FLOPs of one `tokens`-token prefill: linear layers (2 per parameter per token), the last
    token's lm_head, causal attention (QK^T and PV: 4 · heads · head_dim per query-key pair,
    T(T+1)/2 pairs per head and layer)."""
    linear = 2.0 * decoder_linear_params(cfg) * tokens + 2.0 * cfg.hidden * cfg.vocab
    attn = 4.0 * cfg.layers * cfg.heads * cfg.head_dim * tokens * (tokens + 1) / 2
    return {"linear": linear, "attention": attn, "total": linear + attn}


def decode_bytes(cfg: Any, weight_bytes: int, kv_elt: int, users: int, kv_tokens: float) -> dict[str, float]:
    """HBM bytes one decode step must read: every weight but the embedding table (B rows of it),
    and each user's K/V of kv_tokens positions."""
    emb = cfg.vocab * cfg.hidden * 2
    weights = weight_bytes - emb + users * cfg.hidden * 2
    kv = users * kv_tokens * cfg.kv_bytes_per_token(kv_elt)
    return {"weights": float(weights), "kv": float(kv), "total": float(weights + kv)}


def expected_bounds(bandwidths: tuple[float, ...] = (3.35e12, 3.0e12), context: int = 16000) -> list[dict[str, Any]]:
    """Decode bounds from the presets' sizes alone (no GPU): what a run's bound column should read."""
    from kvscope_agent.presets import PRESETS, describe

    rows = []
    for name in ("llama-3.1-8b", "llama-3.1-70b-fp8"):
        cfg = PRESETS[name]
        d = describe(cfg)
        kv_elt = 1 if cfg.kv_dtype == "fp8" else 2
        for users in (1, 2, 4, 8):
            b = decode_bytes(cfg, d["weight_bytes_gpu"], kv_elt, users, context + 1)
            rows.append({"model": name, "users": users, "gb": round(b["total"] / 1e9, 2),
                         **{f"ms_at_{bw / 1e12:g}TBs": round(b["total"] / bw * 1e3, 2) for bw in bandwidths}})
    return rows


# ---- timing -------------------------------------------------------------------------------------


class Timer:
    def __init__(self, torch: Any, dev: Any) -> None:
        self.torch = torch
        self.dev = dev
        self.cuda = dev.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def each(self, fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
        """Seconds of each of `reps` calls (CUDA events around each on the GPU)."""
        for _ in range(warmup):
            fn()
        self.sync()
        out = []
        for _ in range(reps):
            if self.cuda:
                a = self.torch.cuda.Event(enable_timing=True)
                b = self.torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
        return out

    def graph(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """fn captured as one CUDA graph (its replay), or fn itself on the CPU."""
        if not self.cuda:
            return fn
        torch = self.torch
        s = torch.cuda.Stream(device=self.dev)
        s.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(s):
            fn()  # warm-up: compiles, picks kernels
        torch.cuda.current_stream(self.dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g.replay


# ---- hardware rates -------------------------------------------------------------------------------


def hbm_bandwidth(torch: Any, dev: Any, t: Timer, nbytes: int) -> dict[str, Any]:
    """A device copy of nbytes: (read + written) / time, median of 10; and a read-only pass
    (a sum of the same bytes) for comparison."""
    dtype = torch.bfloat16 if t.cuda else torch.float32  # (the CPU's bf16 sum is slow: a dry run)
    src = torch.empty(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype, device=dev).normal_()
    dst = torch.empty_like(src)
    copy = statistics.median(t.each(lambda: dst.copy_(src), 10, warmup=2))
    read = statistics.median(t.each(lambda: src.sum(dtype=torch.float32), 10, warmup=2))
    del src, dst
    return {"bytes": nbytes, "copy_s": copy, "copy_bytes_per_s": 2 * nbytes / copy, "read_bytes_per_s": nbytes / read}


def gemm_rates(torch: Any, dev: Any, t: Timer, size: int, fp8: bool) -> dict[str, Any]:
    """bf16 (and FP8 via torch._scaled_mm, where the card has it) products of size³ and of the
    prefill's shape (2,048 × hidden × 4·hidden), FLOP/s, median of 10."""
    out: dict[str, Any] = {}
    shapes = {"square": (size, size, size), "chunk": (min(2048, size), size, 4 * size)}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16 if t.cuda else torch.float32)
        w = torch.randn(n, k, device=dev, dtype=a.dtype)
        s = statistics.median(t.each(lambda: torch.matmul(a, w.t()), 10, warmup=3))
        out[f"bf16_{name}_flops"] = 2.0 * m * k * n / s
        if fp8 and t.cuda:
            from kvscope_agent.engine import fp8 as fp8mod

            ok, why = fp8mod.supported(dev)
            if ok:
                aq, wq = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
                one = torch.ones((), device=dev)
                s8 = statistics.median(t.each(lambda: fp8mod._scaled_mm(aq, wq.t(), one, one, torch.bfloat16, False), 10, warmup=3))
                out[f"fp8_{name}_flops"] = 2.0 * m * k * n / s8
            else:
                out["fp8_unsupported"] = why
        del a, w
    out["bf16_flops"] = max(out["bf16_square_flops"], out["bf16_chunk_flops"])
    if "fp8_square_flops" in out:
        out["fp8_flops"] = max(out["fp8_square_flops"], out["fp8_chunk_flops"])
    return out


# ---- one model ------------------------------------------------------------------------------------


def run_model(torch: Any, dev: Any, t: Timer, name: str, a: argparse.Namespace, hw: dict[str, Any],
              deadline: float) -> dict[str, Any]:
    from kvscope_agent.clock import RunClock
    from kvscope_agent.engine import paged_attention
    from kvscope_agent.engine.decode_graph import DecodeGraphs, decode_attention
    from kvscope_agent.engine.kv_cache import PagedKVCache, block_bytes_for, storage_dtype
    from kvscope_agent.engine.model import LlamaModel, Piece, attention
    from kvscope_agent.presets import PRESETS, describe

    cfg = PRESETS[name]
    res: dict[str, Any] = {"model": name, "decode": [], "notes": []}
    if t.cuda:
        torch.cuda.empty_cache()  # what an earlier model or the rate tests left cached counts as used
    dtype = torch.bfloat16 if t.cuda else torch.float32
    kv_st = storage_dtype(cfg.kv_dtype, dtype)
    bt = a.block_tokens
    block_bytes = block_bytes_for(cfg, bt, kv_st)
    decode_steps = a.decode_reps + 4  # warm-up, capture and the timed replays each write one token
    per_user = -(-(a.context + decode_steps + 1) // bt)
    want_users = max(a.batches)
    weights_est = describe(cfg)["weight_bytes_gpu"] if t.cuda else 0
    if t.cuda:
        free, total = (int(x) for x in torch.cuda.mem_get_info(dev))
        # Room kept beside the pool: prefill activations of a chunk, decode graphs, the gather
        # A/B's buffers (≈ 1 GiB at these sizes), and allocator slack.
        reserve = a.reserve_gib * GIB
        fit = (free - weights_est - reserve) // (per_user * block_bytes)
        res["memory"] = {"total": total, "free_before_weights": free, "weights": weights_est,
                         "kv_bytes_per_user": per_user * block_bytes, "reserve": reserve, "users_that_fit": int(fit)}
        if fit < 1:
            res["skipped"] = (f"{name} does not fit: {weights_est / 1e9:.1f} GB of weights + "
                              f"{per_user * block_bytes / 1e9:.2f} GB of KV per user + {reserve / 1e9:.1f} GB reserve "
                              f"> {free / 1e9:.1f} GB free")
            log(res["skipped"])
            return res
        users = int(min(want_users, fit))
        for b in a.batches:
            if b > users:
                msg = (f"{name}, {b} users: skipped: {b} × {per_user * block_bytes / 1e9:.2f} GB of KV "
                       f"({b * per_user * block_bytes / 1e9:.1f} GB) + {weights_est / 1e9:.1f} GB of weights + "
                       f"{reserve / 1e9:.1f} GB reserve > {free / 1e9:.1f} GB free on this card "
                       f"({total / 1e9:.1f} GB); it fits a card with "
                       f"{(weights_est + b * per_user * block_bytes + reserve) / 1e9 + (total - free) / 1e9:.0f} GB")
                res["notes"].append(msg)
                log(msg)
    else:
        users = want_users
    log(f"{name}: building random weights ({dtype})")
    t0 = time.perf_counter()
    model = LlamaModel(cfg, dev, dtype, seed=0)
    t.sync()
    res["build_s"] = round(time.perf_counter() - t0, 1)
    res["weight_bytes"] = model.weight_bytes()
    res["paged_kernel"] = model.paged_kernel
    res["paged_kernel_why"] = model.paged_kernel_why
    res["fused_ops"] = model.fused_ops
    res["fp8_gemv"], res["fp8_gemv_why"] = model.fp8_gemv, model.fp8_gemv_why
    log(f"{name}: weights {res['weight_bytes'] / 1e9:.2f} GB in {res['build_s']} s; paged kernel: {model.paged_kernel_why}")
    cache = PagedKVCache(cfg, dev, dtype, cfg.kv_dtype, bt, users * per_user, 0, RunClock().now)
    tables = [list(range(u * per_user, (u + 1) * per_user)) for u in range(users)]
    rows = [cache.request_rows(tb) for tb in tables]
    g = torch.Generator(device="cpu")
    g.manual_seed(1)
    prompt = torch.randint(0, cfg.vocab, (a.context,), generator=g).tolist()
    chunk = a.prefill_chunk

    def prefill(kernel: bool) -> None:
        model.paged_kernel = kernel and res["paged_kernel"]
        model.fused_ops = kernel and res["fused_ops"]
        for s in range(0, a.context, chunk):
            e = min(a.context, s + chunk)
            model.forward_step([Piece(prompt[s:e], None, s, e - s, rows[0], e == a.context)], cache)

    # ---- prefill
    fl = prefill_flops(cfg, a.context)
    rate_lin = hw["gemm"].get("fp8_flops") if cfg.weight_format == "fp8" else hw["gemm"]["bf16_flops"]
    rate_bf16 = hw["gemm"]["bf16_flops"]
    if rate_lin is None:
        rate_lin = rate_bf16
        res["notes"].append("no FP8 GEMM rate here: the linear bound uses the bf16 rate")
    bound = fl["linear"] / rate_lin + fl["attention"] / rate_bf16
    pre: dict[str, Any] = {"tokens": a.context, "chunk": chunk, "flops": fl, "bound_ms": bound * 1e3,
                           "bound_ms_one_rate": fl["total"] / rate_lin * 1e3}
    log(f"{name}: prefill warm-up")
    for s in range(0, min(a.context, 2 * chunk), chunk):  # compiles the kernels, picks cuBLAS kernels
        e = min(a.context, s + chunk)
        model.forward_step([Piece(prompt[s:e], None, s, e - s, rows[0], False)], cache)
    t.sync()
    # "engine": as the engine runs (the paged kernel, the fused ops where available); "gather":
    # both off.
    modes = [("engine", True)] + ([("gather", False)] if res["paged_kernel"] and not a.no_gather else [])
    for mode, kernel in modes:
        key = "ms" if mode == "engine" else "ms_gather"
        try:
            times = t.each(lambda: prefill(kernel), a.prefill_reps, warmup=0)
        except RuntimeError as e:  # the gather path's expanded K/V may not fit beside 4 users of 70B KV
            if mode == "engine":
                raise
            pre["error_gather"] = str(e).splitlines()[0][:200]
            log(f"{name}: prefill ({mode}) failed: {pre['error_gather']}")
            if t.cuda:
                torch.cuda.empty_cache()
            continue
        pre[key] = min(times) * 1e3
        pre[f"{key}_all"] = [round(x * 1e3, 2) for x in times]
        log(f"{name}: prefill {a.context} tokens ({mode}): {pre[key]:.1f} ms, bound {bound * 1e3:.1f} ms")
    model.paged_kernel, model.fused_ops = res["paged_kernel"], res["fused_ops"]
    pre["ratio"] = pre["ms"] / pre["bound_ms"]
    res["prefill"] = pre
    # Every other user's context: user 0's blocks copied (real K/V values, each user its own bytes).
    for u in range(1, users):
        n = -(-a.context // bt)
        cache.pool[u * per_user : u * per_user + n].copy_(cache.pool[:n])
    t.sync()

    # ---- attention alone: one prefill chunk over the context's prefix, all layers
    if time.monotonic() < deadline:
        res["prefill_chunk_attention"] = attention_prefill_ab(torch, dev, t, model, cache, rows[0], a, paged_attention, attention)

    # ---- decode
    kv_elt = 1 if cfg.kv_dtype == "fp8" else 2
    bw = hw["hbm"]["copy_bytes_per_s"]
    for b in a.batches:
        if b > users:
            res["decode"].append({"users": b, "skipped": True})
            continue
        if time.monotonic() > deadline:
            res["notes"].append(f"decode at {b} users not run: past --budget-s")
            continue
        row: dict[str, Any] = {"users": b}
        # "engine": the step as the engine runs it; "gather": the kernel and the fused ops off.
        for mode in ["engine"] + (["gather"] if res["paged_kernel"] and not a.no_gather else []):
            key = "ms" if mode == "engine" else "ms_gather"
            model.fused_ops = res["fused_ops"] and mode == "engine"
            try:
                ms, mean_kv = time_decode(torch, dev, t, model, cache, rows[:b], a,
                                          paged=res["paged_kernel"] and mode == "engine",
                                          DecodeGraphs=DecodeGraphs, Piece=Piece)
                row[key] = ms
            except RuntimeError as e:  # an OOM of the A/B's gather buffers must not lose the rest
                row[key] = None
                row[f"error_{mode}"] = str(e).splitlines()[0][:200]
                log(f"{name}: decode {b} users ({mode}) failed: {row[f'error_{mode}']}")
                if t.cuda:
                    torch.cuda.empty_cache()
                continue
            if mode == "engine":
                by = decode_bytes(cfg, res["weight_bytes"], kv_elt, b, mean_kv)
                row.update(kv_tokens=mean_kv, bytes=by, bound_ms=by["total"] / bw * 1e3, ratio=ms / (by["total"] / bw * 1e3))
        model.fused_ops = res["fused_ops"]
        if time.monotonic() < deadline:
            row["attention"] = attention_decode_ab(torch, dev, t, model, cache, rows[:b], a, paged_attention, decode_attention)
        log(f"{name}: decode {b} users: {fmt(row.get('ms'))} ms (gather path {fmt(row.get('ms_gather'))} ms), "
            f"bound {fmt(row.get('bound_ms'))} ms, ratio {fmt(row.get('ratio'), 3)}")
        res["decode"].append(row)
    del model, cache
    if t.cuda:
        torch.cuda.empty_cache()
    return res


def time_decode(torch: Any, dev: Any, t: Timer, model: Any, cache: Any, rows: list[Any], a: argparse.Namespace,
                paged: bool, DecodeGraphs: Any, Piece: Any) -> tuple[float, float]:
    """Median ms of a decode step of len(rows) users at --context tokens (the graph's replay on
    CUDA, the fixed-shape step on the CPU), and the mean key count read per user."""
    runner = DecodeGraphs(model, cache, use_graphs=t.cuda, paged=paged)
    tok = torch.zeros(1, dtype=torch.long, device=dev)
    pieces = [Piece(None, tok, a.context, 1, r, True) for r in rows]
    runner.step(pieces)  # captures the graph (its warm-up writes position `context`, then the replay)
    (e,) = runner.entries.values()
    if t.cuda and e.graph is None:
        raise RuntimeError(f"no CUDA graph: {runner.off_reason}")
    step = e.graph.replay if e.graph is not None else (lambda: runner._forward(e))
    pos0 = int(e.pos[0])
    times = t.each(step, a.decode_reps, warmup=1)
    pos1 = int(e.pos[0])
    # Keys read per user per step: its position + 1, averaged over the timed steps.
    mean_kv = (pos0 + 1 + 1 + pos1) / 2.0
    del runner, e
    if t.cuda:
        torch.cuda.empty_cache()
    return statistics.median(times) * 1e3, mean_kv


def attention_decode_ab(torch: Any, dev: Any, t: Timer, model: Any, cache: Any, rows: list[Any], a: argparse.Namespace,
                        paged_attention: Any, decode_attention: Any) -> dict[str, Any]:
    """One decode step's attention over every layer: the paged kernel vs the gather path, each
    one graph of all layers' calls (so launches do not count), ms per step and GB/s of K/V."""
    cfg = model.cfg
    b = len(rows)
    kv_len = a.context + 1
    span = -(-kv_len // 4096) * 4096
    q = torch.randn(b, cfg.heads, cfg.head_dim, device=dev, dtype=model.dtype)
    elt = 1 if cache.fp8 else torch.empty((), dtype=model.dtype).element_size()
    out: dict[str, Any] = {"kv_bytes": b * kv_len * cfg.kv_bytes_per_token(elt)}
    if model.paged_kernel:
        table = torch.stack([cache.block_table(r) for r in rows])
        lens = torch.full((b,), kv_len, dtype=torch.int32, device=dev)
        splits = paged_attention.plan(b, 1, cfg.heads, cfg.kv_heads, span, dev, fp8=cache.fp8)[1]

        def paged() -> None:
            for li in range(cfg.layers):
                paged_attention.attend(q[:, None], cache, li, table, lens, splits=splits)

        out["splits"] = splits
        out["ms_paged"] = statistics.median(t.each(t.graph(paged), 10)) * 1e3
        if a.tune and b in (a.batches[0], a.batches[-1]):
            def call(c: dict[str, int], sp: int) -> None:
                for li in range(cfg.layers):
                    paged_attention._launch(q[:, None], cache.rows, table, lens, layer=li, layers=cfg.layers,
                                            block_tokens=cache.block_tokens, kv_heads=cfg.kv_heads, fp8=cache.fp8,
                                            splits=sp, config=c)

            out["tune"] = tune(t, call, DECODE_CANDIDATES, splits)
    if a.no_gather and model.paged_kernel:
        return finish_ab(out)
    valid = torch.arange(span, device=dev)[None, :] < kv_len
    valid = valid.expand(b, span)
    valid2 = valid[:, :, None].expand(b, span, 2).reshape(b, 2 * span)
    try:
        idx_rows = torch.full((cfg.layers, b, 2 * span), cache.zero_row, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            n = min(2 * span, r.shape[1])
            idx_rows[:, i, :n] = r[:, :n]
        zero = torch.full((), cache.zero_row, dtype=torch.long, device=dev)

        def gather() -> None:
            for li in range(cfg.layers):
                idx = torch.where(valid2, idx_rows[li], zero)
                kv = cache.gather_rows(idx, model.dtype).view(b, span, 2, cfg.kv_heads, cfg.head_dim)
                decode_attention(q, kv[:, :, 0], kv[:, :, 1], valid)

        out["ms_gather"] = statistics.median(t.each(t.graph(gather), 10)) * 1e3
        del idx_rows
    except RuntimeError as e:
        out["error_gather"] = str(e).splitlines()[0][:200]
    if t.cuda:
        torch.cuda.empty_cache()
    return finish_ab(out)


def attention_prefill_ab(torch: Any, dev: Any, t: Timer, model: Any, cache: Any, rows: Any, a: argparse.Namespace,
                         paged_attention: Any, attention: Any) -> dict[str, Any]:
    """One prefill chunk's attention over every layer (--prefill-chunk queries at the end of the
    context): the paged kernel vs the gather path (`PagedKVCache.read` + `model.attention`)."""
    cfg = model.cfg
    n = min(a.prefill_chunk, a.context)
    start = a.context - n
    q = torch.randn(n, cfg.heads, cfg.head_dim, device=dev, dtype=model.dtype)
    flops = 4.0 * cfg.layers * cfg.heads * cfg.head_dim * n * (start + (n + 1) / 2)
    out: dict[str, Any] = {"queries": n, "prefix": start, "flops": flops}
    if model.paged_kernel:
        table = cache.block_table(rows)[None]
        lens = torch.full((1,), a.context, dtype=torch.int32, device=dev)

        def paged() -> None:
            for li in range(cfg.layers):
                paged_attention.attend(q[None], cache, li, table, lens, max_keys=a.context)

        out["ms_paged"] = statistics.median(t.each(paged, 3)) * 1e3
        if a.tune:
            planned_m = paged_attention.plan(1, n, cfg.heads, cfg.kv_heads, a.context, dev)[0]

            def call(c: dict[str, int], sp: int) -> None:
                for li in range(cfg.layers):
                    paged_attention._launch(q[None], cache.rows, table, lens, layer=li, layers=cfg.layers,
                                            block_tokens=cache.block_tokens, kv_heads=cfg.kv_heads, fp8=cache.fp8,
                                            splits=sp, block_m=max(c.get("block_m", planned_m), cfg.heads // cfg.kv_heads),
                                            config=c)

            out["tune"] = tune(t, call, prefill_candidates("fp8" if cache.fp8 else "native"), 1, graph=False)
    if not (a.no_gather and model.paged_kernel):
        def gather() -> None:
            for li in range(cfg.layers):
                k, v = cache.read(li, rows, a.context, model.dtype)
                attention(q, k, v, start)

        try:
            out["ms_gather"] = statistics.median(t.each(gather, 3)) * 1e3
        except RuntimeError as e:
            out["error_gather"] = str(e).splitlines()[0][:200]
    for k in ("paged", "gather"):
        if out.get(f"ms_{k}"):
            out[f"tflops_{k}"] = flops / (out[f"ms_{k}"] / 1e3) / 1e12
    if t.cuda:
        torch.cuda.empty_cache()
    return finish_ab(out)


# Kernel configurations --tune tries (the defaults are paged_attention.DECODE_CONFIGS / PREFILL_CONFIGS;
# bench/fp8-decode-tune.py tries the FP8 KV decode and the FP8 linear layers' configurations).
DECODE_CANDIDATES = [{"block_n": bn, "num_warps": w, "num_stages": st}
                     for bn, w, st in [(32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 4, 4), (128, 4, 2), (128, 8, 2), (64, 8, 3)]]


def prefill_candidates(kv: str) -> list[dict[str, Any]]:
    """The prefill kernel's configurations: bench/prefill-attention-tune.py's grid (that script
    times them alone, in less time than a roofline run)."""
    from script_loader import load_script

    mod = load_script("prefill-attention-tune.py")
    return mod.configs(kv, mod.GRID, mod.GRID_FP8_BF16)


def tune(t: Timer, call: Callable[[dict[str, int], int], Any], candidates: list[dict[str, int]], splits: int,
         graph: bool = True) -> list[dict[str, Any]]:
    """ms of every layer's attention for each kernel configuration (and, for decode, at half and
    double the planned splits with the default configuration), fastest first."""
    trials = [(c, splits) for c in candidates]
    if graph:
        trials += [({}, max(1, splits // 2)), ({}, splits * 2)]
    out = []
    for c, sp in trials:
        try:
            fn = (lambda c=c, sp=sp: call(c, sp))
            ms = statistics.median(t.each(t.graph(fn) if graph else fn, 5)) * 1e3
            out.append({"config": c, "splits": sp, "ms": ms})
        except Exception as e:  # noqa: BLE001 - a configuration that does not compile (shared memory) is skipped
            out.append({"config": c, "splits": sp, "error": str(e).splitlines()[0][:160] if str(e) else type(e).__name__})
    return sorted(out, key=lambda r: r.get("ms", math.inf))


def finish_ab(out: dict[str, Any]) -> dict[str, Any]:
    if out.get("ms_paged") and out.get("ms_gather"):
        out["speedup"] = out["ms_gather"] / out["ms_paged"]
    if out.get("kv_bytes"):
        for k in ("paged", "gather"):
            if out.get(f"ms_{k}"):
                out[f"kv_gb_per_s_{k}"] = out["kv_bytes"] / (out[f"ms_{k}"] / 1e3) / 1e9
    return out


# ---- report ---------------------------------------------------------------------------------------


def fmt(x: Any, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table_rows(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table: the header, a rule (first column left, the rest right), the rows."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|---|" + "---:|" * (len(header) - 1)] + [line(row) for row in rows]


def markdown(r: dict[str, Any]) -> str:
    hw = r["hardware"]
    L = [f"# Engine roofline: {r['device']}", "",
         f"{r['date']}, commit {r['commit']}, PyTorch {r['torch']}, Triton {r['triton']}, {r['host']}.", "",
         f"HBM: device copy {hw['hbm']['copy_bytes_per_s'] / 1e12:.3f} TB/s (read + write of "
         f"{hw['hbm']['bytes'] / GIB:.0f} GiB), read-only pass {hw['hbm']['read_bytes_per_s'] / 1e12:.3f} TB/s. "
         f"GEMM: bf16 {hw['gemm']['bf16_flops'] / 1e12:.0f} TFLOP/s"
         + (f", FP8 {hw['gemm']['fp8_flops'] / 1e12:.0f} TFLOP/s" if "fp8_flops" in hw["gemm"] else "")
         + " (best of a square and a prefill-chunk-shaped product).", "",
         "## Decode step (CUDA graph replay, median) vs (weights + KV read) / copy bandwidth", "",
         *table_rows(["model", "users", "KV tokens/user", "step ms", "bound ms", "ratio", "gather-path step ms",
                      "attention ms/step paged", "gather", "speedup", "KV GB/s paged"], [
             [m["model"], d["users"], "skipped (memory: see notes)"] if d.get("skipped") else
             [m["model"], d["users"], fmt(d.get("kv_tokens"), 0), fmt(d.get("ms")), fmt(d.get("bound_ms")),
              fmt(d.get("ratio"), 3), fmt(d.get("ms_gather")), fmt(d.get("attention", {}).get("ms_paged"), 3),
              fmt(d.get("attention", {}).get("ms_gather"), 3), fmt(d.get("attention", {}).get("speedup")),
              fmt(d.get("attention", {}).get("kv_gb_per_s_paged"), 0)]
             for m in r["models"] for d in m.get("decode", [])])]
    L += ["", "## Prefill vs FLOP bound (linear FLOPs at the weights' GEMM rate, attention at the bf16 rate)", ""]
    L += table_rows(["model", "tokens", "chunk", "ms", "bound ms", "ratio", "bound ms, one rate", "gather-path ms",
                     "chunk attention ms paged", "gather", "TFLOP/s paged", "gather"], [
        [m["model"], p["tokens"], p["chunk"], fmt(p["ms"], 1), fmt(p["bound_ms"], 1), fmt(p["ratio"], 3),
         fmt(p["bound_ms_one_rate"], 1), fmt(p.get("ms_gather"), 1), fmt(c.get("ms_paged")), fmt(c.get("ms_gather")),
         fmt(c.get("tflops_paged"), 0), fmt(c.get("tflops_gather"), 0)]
        for m in r["models"] if m.get("prefill")
        for p, c in [(m["prefill"], m.get("prefill_chunk_attention", {}))]])
    tuned = []
    for m in r["models"]:
        for where, ab in [(f"decode, {d['users']} users", d.get("attention", {})) for d in m.get("decode", [])] + [
                ("prefill chunk", m.get("prefill_chunk_attention", {}))]:
            if ab.get("tune") and "ms" in ab["tune"][0]:
                best = ab["tune"][0]
                tuned.append(f"{m['model']}, {where}: default {fmt(ab.get('ms_paged'), 3)} ms; fastest "
                             f"{best['config'] or 'default'} at {best['splits']} splits {best['ms']:.3f} ms")
    if tuned:
        L += ["", "## Kernel configurations (--tune)", ""] + [f"- {x}" for x in tuned]
    notes = [n for m in r["models"] for n in m.get("notes", [])] + [m["skipped"] for m in r["models"] if m.get("skipped")]
    notes += [f"{m['model']}: {m['error']}" for m in r["models"] if m.get("error")]
    if notes:
        L += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    L += ["", f"Targets (bench/README.md): decode ≤ 1.25× its bound, prefill ≤ 1.4×. Command: `{r['command']}`; "
          f"wall {r['wall_s']:.0f} s.", ""]
    return "\n".join(L)


def write_results(out: str, stem: str, r: dict[str, Any], md: str) -> None:
    """OUT/stem.json (the whole record) and OUT/stem.md (the tables, printed too)."""
    with open(os.path.join(out, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump(r, f, indent=1, default=float)
    with open(os.path.join(out, f"{stem}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)


def commit() -> str:
    env = os.environ.get("KVSCOPE_COMMIT")
    if env:
        return env
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="output directory (default $OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="8b,70b-fp8", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--context", type=int, default=16000)
    ap.add_argument("--decode-reps", type=int, default=50)
    ap.add_argument("--prefill-reps", type=int, default=2)
    ap.add_argument("--prefill-chunk", type=int, default=2048, help="the engine's --prefill-chunk-tokens")
    ap.add_argument("--block-tokens", type=int, default=32)
    ap.add_argument("--reserve-gib", type=float, default=1.0,
                    help="GPU memory kept free beside weights and KV (a 2,048-token 70B prefill chunk peaks at ~0.6 GB)")
    ap.add_argument("--no-gather", action="store_true", help="skip the gather-path A/B")
    ap.add_argument("--tune", action="store_true", help="time a few kernel configurations too (~30 s more a model)")
    ap.add_argument("--budget-s", type=float, default=420, help="start no new part after this many seconds")
    ap.add_argument("--expected", action="store_true", help="print the presets' decode bounds at 3.35 and 3.0 TB/s and exit")
    a = ap.parse_args(argv)
    a.batches = sorted({int(x) for x in a.batches.split(",") if x})
    if a.expected:
        for row in expected_bounds(context=a.context):
            print(json.dumps(row))
        return 0
    if not a.out:
        ap.error("--out (or $OUT) is required")
    unknown = [m for m in a.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}: choose from {list(MODELS)}")
    os.makedirs(a.out, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + a.budget_s
    import torch

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (use --device cpu for a dry run of the logic)", file=sys.stderr)
        return 2
    t = Timer(torch, dev)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    r: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if t.cuda else f"CPU ({platform.processor() or platform.machine()})",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(), "torch": torch.__version__, "triton": triton_version, "host": platform.node(),
        "command": "python3 bench/engine-roofline.py " + " ".join(argv), "args": vars(a), "models": [],
    }
    log(f"{r['device']}, torch {r['torch']}, triton {r['triton']}, commit {r['commit']}")
    hw: dict[str, Any] = {}
    hw["hbm"] = hbm_bandwidth(torch, dev, t, 4 * GIB if t.cuda else 64 << 20)
    log(f"HBM copy {hw['hbm']['copy_bytes_per_s'] / 1e12:.3f} TB/s, read {hw['hbm']['read_bytes_per_s'] / 1e12:.3f} TB/s")
    hw["gemm"] = gemm_rates(torch, dev, t, 8192 if t.cuda else 512, fp8=True)
    log("GEMM " + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in hw["gemm"].items() if k.endswith("_flops")))
    r["hardware"] = hw
    for key in a.models.split(","):
        if time.monotonic() > deadline:
            r["models"].append({"model": MODELS[key], "skipped": "not run: past --budget-s"})
            continue
        try:
            r["models"].append(run_model(torch, dev, t, MODELS[key], a, hw, deadline))
        except Exception as e:  # noqa: BLE001 - one model's failure must not lose the other's numbers
            import traceback

            traceback.print_exc()
            r["models"].append({"model": MODELS[key], "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            if t.cuda:
                torch.cuda.empty_cache()
    r["wall_s"] = time.monotonic() - t_start
    write_results(a.out, "roofline", r, markdown(r))
    bad = [m for m in r["models"] if m.get("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
