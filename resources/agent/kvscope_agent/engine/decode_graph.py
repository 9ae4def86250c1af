"""Decode steps at fixed shapes, replayed as CUDA graphs.

Why: the eager step (`LlamaModel.forward_step`) launches ~12 + 6 × requests small ops per layer
from Python, one attention per request over exactly that request's length. At small batch the
GPU finishes each op before Python issues the next: the H100 runs of 2026-11-28 spent 45-100 ms
a decode step of llama-3.1-8b for 2-4 users, and 120-163 ms for the 70B FP8 preset, where reading
the weights takes ~5 and ~21 ms (bench/results/h100-2026-11-28). The seed's TensorRT-LLM runs
decode as CUDA graphs for the same reason.

How: a step of B decode tokens is computed at a fixed shape: each request's K/V rows are
gathered over S positions (S = its position + 1 rounded up to `bucket_tokens`), the positions a
request has not reached are masked, and their rows point at the pool's spare zero block, so no
stale byte of an unwritten slot can reach the softmax (0 × NaN is NaN). With those shapes fixed,
one CUDA graph per (B, S) records the whole step (embedding, every layer, the K/V writes, the
greedy pick) and each later step is a few small copies into the graph's inputs and one replay.

Attention, where `paged_attention.available` (Triton on CUDA): the paged kernel reads each
request's K/V in place through its block table, over the keys each request has (its length is
read on the device), with the key splits fixed per (B, S). Nothing is gathered and the work is
proportional to the real lengths, not to S, so S only sizes the block table: buckets are
PAGED_BUCKET_TOKENS wide (a 16,000-token run captures ~4 graphs per batch size instead of ~32,
each capture tens of ms of host time inside a timed round). One step is then per layer the
projections, one K/V write and two attention kernels.

Elsewhere (the fallback and the reference): the K/V rows are gathered over S (masked positions
point at the zero block) and attention is plain matrix products (grouped-query without
expanding K/V): scores in the compute dtype, scaled and softmaxed in fp32, as the eager path's
fused kernels accumulate. On the CPU (fp32) it equals the eager path to rounding
(tests/test_engine.py); on CUDA in bf16 it differs from the flash kernel by bf16 rounding of the
scores.

Anything a graph cannot take (capture fails, memory runs out) turns graphs off for the rest of
the process with one warning, and steps go back to the eager path: slower, never wrong.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import paged_attention
from .model import Piece

def _takes_capture_error_mode() -> bool:
    try:
        return "capture_error_mode" in inspect.signature(torch.cuda.CUDAGraph.capture_begin).parameters
    except (AttributeError, TypeError, ValueError):
        return False


_THREAD_LOCAL_CAPTURE = _takes_capture_error_mode()  # PyTorch 2.1+
BUCKET_TOKENS = 512  # S rounds up to this: ≤ 3% of gathered rows wasted at 16,000-token contexts
PAGED_BUCKET_TOKENS = 4096  # with the paged kernel S only sizes the block table (module docstring)


def _hold_tracer_flushes(on: bool) -> bool:
    """Hold the CUPTI tracer's periodic flushes during a graph capture (tracer/kvscope_cupti.c,
    kvscope_cupti_hold); False when no tracer is loaded in this process."""
    try:
        from ..tracer.collector import hold_flushes
    except ImportError:
        return False
    return hold_flushes(on)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """One query per request over its keys. q [B, heads, d]; k, v [B, S, kv_heads, d] (views
    are fine); valid [B, S] bool (False = masked). Returns [B, heads, d]."""
    b, heads, d = q.shape
    kvh = k.shape[2]
    group = heads // kvh
    qg = q.reshape(b, kvh, group, d)
    scores = torch.matmul(qg, k.permute(0, 2, 3, 1)).float() * (1.0 / math.sqrt(d))  # [B, kvh, g, S]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3))  # [B, kvh, g, d]
    return out.reshape(b, heads, d)


@dataclass(eq=False)
class _Entry:
    """The fixed-shape inputs (and, on CUDA, the graph) of one (B, S)."""

    batch: int
    span: int
    ids: torch.Tensor  # [B] token ids
    pos: torch.Tensor  # [B] position of each request's token
    rows: torch.Tensor | None  # gather path: [layers, B, 2S] pool rows of positions 0..S-1 (K, V interleaved)
    table: torch.Tensor | None  # paged kernel: [B, S / block_tokens] int32 block tables
    splits: int  # paged kernel: key splits per request and KV head (fixed per entry)
    sources: list[Any] = field(default_factory=list)  # the request rows each slot was filled from
    graph: Any = None
    out: torch.Tensor | None = None
    replays: int = 0


class DecodeGraphs:
    """Pure-decode steps of one model over one paged cache. `use_graphs` False (or a CPU
    device) runs the same fixed-shape step eagerly (what the CPU tests compare)."""

    def __init__(self, model: Any, cache: Any, use_graphs: bool = True, bucket_tokens: int | None = None,
                 warn: Callable[[str], None] | None = None, paged: bool | None = None) -> None:
        self.model = model
        self.cache = cache
        # The paged kernel (default: where the model runs it) or the gather path.
        self.paged = bool(model.paged_kernel if paged is None else paged)
        if bucket_tokens is None:
            bucket_tokens = PAGED_BUCKET_TOKENS if self.paged else BUCKET_TOKENS
        self.bucket = int(bucket_tokens)
        self.device = model.device
        self.use_graphs = bool(use_graphs) and self.device.type == "cuda" and hasattr(torch.cuda, "CUDAGraph")
        self.off_reason: str | None = None if self.use_graphs else (
            "off" if not use_graphs else "not a CUDA device")
        self.warn = warn or (lambda msg: None)
        self.entries: dict[tuple[int, int], _Entry] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.stats = {"graphs": 0, "capture_ns": 0, "replays": 0, "eager_steps": 0, "inputs_carried": 0}
        # The last step: its entry, the tokens it returned, and each request's position then.
        self._last: tuple[_Entry, torch.Tensor, list[int]] | None = None
        L = model.cfg.layers
        self._two = torch.arange(2, device=self.device, dtype=torch.long)
        self._L = L
        bt = cache.block_tokens
        # Paged kernel: pool rows of a token's K and V in each layer, from its block's first row:
        # layer l's K at + 2·l·bt, its V bt rows further (kv_cache.request_rows' layout).
        self._layer_kv_rows = (torch.arange(L, device=self.device, dtype=torch.long)[:, None] * (2 * bt)
                               + torch.tensor([0, bt], device=self.device, dtype=torch.long)[None, :])

    @staticmethod
    def takes(pieces: Sequence[Piece]) -> bool:
        """A step this runner computes: every piece one decode token whose id is on the device."""
        return bool(pieces) and all(p.n == 1 and p.token_dev is not None and p.want_logits for p in pieces)

    def reset_stats(self) -> None:
        """Counts start over for the next run of a sweep (captured graphs stay and are reused)."""
        self.stats = {k: 0 for k in self.stats}
        self._last = None

    def describe(self) -> dict[str, Any]:
        """This run's counts (`graphs` captured in it, `graphs_held` reused from earlier runs too)."""
        held = sum(1 for e in self.entries.values() if e.graph is not None)
        return {"cuda_graphs": self.use_graphs, "off_reason": self.off_reason, "bucket_tokens": self.bucket,
                "attention": "paged" if self.paged else "gather", **self.stats, "graphs_held": held}

    # ---- one step ------------------------------------------------------------------------

    def step(self, pieces: Sequence[Piece]) -> torch.Tensor:
        """Greedy next token of each piece, [B] on the device (a fresh tensor)."""
        b, span = len(pieces), self._span(max(p.start for p in pieces))
        e = self.entries.get((b, span))
        if e is None:
            e = self._entry(b, span)
        if self._carries(e, pieces):
            self.stats["inputs_carried"] += 1
        else:
            self._fill(e, pieces)
        starts = [p.start for p in pieces]
        if self.use_graphs:
            try:
                if e.graph is None:
                    self._capture(e)
                else:
                    e.graph.replay()
                e.replays += 1
                self.stats["replays"] += 1
                assert e.out is not None
                out = e.out.clone()
                self._last = (e, out, starts)
                return out
            except Exception as exc:  # noqa: BLE001 - any capture failure falls back, once
                self._turn_off(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                self._fill(e, pieces)  # a failed capture or replay may have moved them
        self.stats["eager_steps"] += 1
        out = self._forward(e)
        self._last = (e, out, starts)
        return out

    def would_capture(self, batch: int, furthest: int) -> bool:
        """Whether a step of `batch` decode tokens, the furthest at position `furthest`, would
        capture a graph (tens of ms of host time) rather than replay one."""
        if not self.use_graphs:
            return False
        e = self.entries.get((batch, self._span(furthest)))
        return e is None or e.graph is None

    def _carries(self, e: _Entry, pieces: Sequence[Piece]) -> bool:
        """True when `e` already holds this step's inputs: the last step ran on `e` with the same
        requests in the same order, each piece's token is that step's output for its slot (a
        view of the tensor it returned), and each position is one further. `_forward` leaves
        those ids and positions in `e`, so a steady decode step uploads nothing: no pinned
        tensor, no cat, no memcpy (each one more call on the launch-bound path and, traced, one
        more CUPTI record; a decode step used to issue two or three)."""
        last = self._last
        if last is None or last[0] is not e:
            return False
        _, out, starts = last
        base, size = out.data_ptr(), out.element_size()
        for i, p in enumerate(pieces):
            tok = p.token_dev
            if (tok is None or e.sources[i] is not p.rows or p.start != starts[i] + 1
                    or tok.numel() != 1 or tok.data_ptr() != base + i * size):
                return False
        return True

    def _span(self, furthest: int) -> int:
        """Positions gathered per request: the furthest one's position + 1, up to a bucket."""
        return -(-(furthest + 1) // self.bucket) * self.bucket

    def _entry(self, b: int, span: int) -> _Entry:
        dev = self.device
        cache, cfg = self.cache, self.model.cfg
        if self.paged:
            # Blocks past a request's own are never read (its length bounds the keys): the
            # spare zero block fills them.
            blocks = -(-span // cache.block_tokens)
            table = torch.full((b, blocks), cache.num_blocks, dtype=torch.int32, device=dev)
            rows = None
            splits = paged_attention.plan(b, 1, cfg.heads, cfg.kv_heads, span, dev, fp8=cache.fp8)[1]
        else:
            table, splits = None, 1
            rows = torch.full((self._L, b, 2 * span), cache.zero_row, dtype=torch.long, device=dev)
        e = _Entry(
            batch=b, span=span,
            ids=torch.zeros(b, dtype=torch.long, device=dev),
            pos=torch.zeros(b, dtype=torch.long, device=dev),
            rows=rows, table=table, splits=splits,
            sources=[None] * b,
        )
        self.entries[(b, span)] = e
        return e

    def _fill(self, e: _Entry, pieces: Sequence[Piece]) -> None:
        ids = [p.token_dev.reshape(-1) for p in pieces]  # type: ignore[union-attr]
        e.ids.copy_(torch.cat(ids) if len(ids) > 1 else ids[0])
        pos = torch.tensor([p.start for p in pieces], dtype=torch.long)
        if self.device.type == "cuda":
            pos = pos.pin_memory()  # a pageable upload would wait for the stream to drain
        e.pos.copy_(pos, non_blocking=True)
        for i, p in enumerate(pieces):
            # A request's rows are fixed from admission to release: copy them in only when the
            # slot now serves another request (`is`: the entry holds the tensor, so its identity
            # cannot be reused by a new one).
            if e.sources[i] is not p.rows:
                if e.table is not None:
                    table = self.cache.block_table(p.rows)
                    n = min(e.table.shape[1], table.shape[0])
                    e.table[i, :n].copy_(table[:n])
                    if n < e.table.shape[1]:
                        e.table[i, n:].fill_(self.cache.num_blocks)
                else:
                    assert e.rows is not None
                    n = min(2 * e.span, p.rows.shape[1])
                    e.rows[:, i, :n].copy_(p.rows[:, :n])
                    if n < 2 * e.span:
                        e.rows[:, i, n:].fill_(self.cache.zero_row)
                e.sources[i] = p.rows

    def _capture(self, e: _Entry) -> None:
        t0 = time.perf_counter_ns()
        cur = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            # Warm-up outside the graph (cuBLAS picks its kernels, FP8 probes run): it also
            # writes this step's K/V, which the replay below writes again with the same values,
            # and moves the entry's ids and positions on, which are put back for the replay.
            ids, pos = e.ids.clone(), e.pos.clone()
            self._forward(e)
            e.ids.copy_(ids)
            e.pos.copy_(pos)
        cur.wait_stream(side)
        g = torch.cuda.CUDAGraph()
        held = _hold_tracer_flushes(True)
        try:
            # capture_begin/capture_end on the side stream, not the torch.cuda.graph context
            # manager: its __enter__ synchronises the device and empties the caching allocator
            # (and on older PyTorch runs gc.collect()) to free memory for the graph. Graphs are
            # captured inside timed rounds (a new one each time the contexts cross a 512-token
            # bucket), so that meant the CPU waiting there for every copy in flight
            # (bench/gpu/sync-probe.py: cudaFree waits for a copy) and the next steps
            # cudaMalloc-ing again what was freed: the H100 round lines of 2026-11-28 show
            # sync_all_streams 2, device_free 26-27, device_alloc 21-22 in rounds 3 and 7 (users 4),
            # the rounds whose decode crossed 16,384 and 16,896 positions, and 0-9 allocations in
            # the others. This graph takes its memory from its own pool (`self.pool`) either way.
            with torch.cuda.stream(side):
                if _THREAD_LOCAL_CAPTURE:
                    # Other threads (telemetry, the tracer's collector) may call CUDA meanwhile.
                    g.capture_begin(pool=self.pool, capture_error_mode="thread_local")
                else:
                    g.capture_begin(pool=self.pool)
                try:
                    out = self._forward(e)
                finally:
                    g.capture_end()
        finally:
            if held:
                _hold_tracer_flushes(False)
        e.graph, e.out = g, out
        g.replay()
        self.stats["graphs"] += 1
        self.stats["capture_ns"] += time.perf_counter_ns() - t0

    def _turn_off(self, why: str) -> None:
        self.use_graphs = False
        self.off_reason = f"capture or replay failed: {why}"
        for e in self.entries.values():
            e.graph, e.out = None, None
        self.pool = None
        try:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        except RuntimeError:
            pass
        self.warn(f"CUDA graphs for decode turned off ({why}); decode runs eagerly from here on")

    # ---- the fixed-shape forward -----------------------------------------------------------

    @torch.no_grad()
    def _forward(self, e: _Entry) -> torch.Tensor:
        m = self.model
        logits = m.lm_head(self._hidden(e)).float()
        nxt = torch.argmax(logits, dim=-1)
        # The next step's inputs if the batch stays (`_carries`): these tokens, one position on.
        # Inside the graph these are two more nodes of the replay.
        e.ids.copy_(nxt)
        e.pos.add_(1)
        return nxt

    @torch.no_grad()
    def logits(self, pieces: Sequence[Piece]) -> torch.Tensor:
        """The fixed-shape step's fp32 logits [B, vocab], eagerly (what the tests compare)."""
        b, span = len(pieces), self._span(max(p.start for p in pieces))
        e = self._entry(b, span)
        del self.entries[(b, span)]
        self._fill(e, pieces)
        return self.model.lm_head(self._hidden(e)).float()

    def _hidden(self, e: _Entry) -> torch.Tensor:
        """Embedding through every layer (writing this step's K/V) to the final norm: [B, hidden]."""
        m = self.model
        cfg = m.cfg
        cache = self.cache
        b, span = e.batch, e.span
        cos, sin = m._rope_tables(e.pos)
        x = m.embed[e.ids]
        h = m.first_norm(x)
        if e.table is not None:
            return self._hidden_paged(e, x, h, cos, sin)
        assert e.rows is not None
        steps = torch.arange(span, device=self.device, dtype=torch.long)
        valid = steps[None, :] <= e.pos[:, None]  # [B, S]
        # [B, 2S]: the K and the V row of each position (expand, not repeat_interleave, which
        # may size its output on the host: no sync may sit inside a captured graph)
        valid2 = valid[:, :, None].expand(b, span, 2).reshape(b, 2 * span)
        # Rows this step writes: K and V of position pos of each request, per layer [L, 2B].
        at = (2 * e.pos)[:, None] + self._two[None, :]  # [B, 2]
        write = torch.gather(e.rows, 2, at[None].expand(self._L, b, 2)).reshape(self._L, 2 * b)
        zero = torch.full((), cache.zero_row, dtype=torch.long, device=self.device)
        for li, layer in enumerate(m.layers):
            q = m.layer_q(layer, h, cos, sin, cache, write[li])
            idx = torch.where(valid2, e.rows[li], zero)
            kv = cache.gather_rows(idx, m.dtype).view(b, span, 2, cfg.kv_heads, cfg.head_dim)
            x, h = m.layer_out(li, x, decode_attention(q, kv[:, :, 0], kv[:, :, 1], valid))
        return h

    def _hidden_paged(self, e: _Entry, x: torch.Tensor, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """`_hidden` with the paged kernel: K/V read in place through the entry's block tables."""
        m = self.model
        cache = self.cache
        b, bt = e.batch, cache.block_tokens
        assert e.table is not None
        lens = (e.pos + 1).to(torch.int32)  # keys per request, this step's token included
        # Rows this step writes, [L, 2B]: K and V of each request's position in each layer.
        blk = torch.gather(e.table, 1, torch.div(e.pos, bt, rounding_mode="floor")[:, None])[:, 0].long()
        first = blk * (self._L * 2 * bt) + torch.remainder(e.pos, bt)  # [B]: layer 0's K row
        write = (first[None, :, None] + self._layer_kv_rows[:, None, :]).reshape(self._L, 2 * b)
        for li, layer in enumerate(m.layers):
            q = m.layer_q(layer, h, cos, sin, cache, write[li])
            o = paged_attention.attend(q[:, None], cache, li, e.table, lens, splits=e.splits)
            x, h = m.layer_out(li, x, o[:, 0])
        return h
