"""The paged KV cache: a GPU block pool and a host block pool of the same block layout.

One block is ONE contiguous chunk of `block_bytes` in both pools: the GPU pool tensor is
[num_blocks, layers, 2 (K, V), block_tokens, kv_heads, head_dim], so offloading or onboarding a
block, or a run of adjacent blocks, is one large memcpy (the copy engine reaches near its pinned
bandwidth only with large copies: h100-measurements.md, 512 × 2 MiB copies at 51.6 GB/s).

Copies run on a dedicated copy stream. Ordering (all copies share that one stream, so they run in
issue order):
  * before a batch: copy stream waits for the compute stream (the blocks being offloaded were
    written by earlier kernels);
  * within a batch: every offload (D2H) is issued before every onboard (H2D), so a GPU slot freed
    by an offload is overwritten only after its contents left, and an onboarded block whose
    offload is in the same batch is read back only after it arrived;
  * after a batch: the compute stream waits for the copy stream before the prefill that reads the
    onboarded blocks or writes into the freed slots.
Host slots freed by onboarding are handed back only after the batch is issued, so an offload of
the same batch never overwrites a host block that is still to be read.

With copy overlap on (`--copy-overlap on`; `auto`, the default, turns it on for lazy offload), a batch with
both offloads and onboards runs them as a pipeline on two streams, since PCIe is full duplex
(the 8B offload sweep's plain pinned copy on an H100: H2D 54.8 GB/s and D2H 55.1 GB/s alone,
87.5 GB/s both at once; bench/results/h100-2026-11-28c/issue3/issue3-copy.json):
  * the offloads go on the copy stream in chunks of OVERLAP_CHUNK_BYTES, an event after each;
  * the onboards go on the onboard stream, grouped by the last chunk they depend on (an onboard
    into a GPU slot whose offload is in chunk k, or from a host slot that chunk k writes, waits
    for chunk k's event; one into a slot that was already free waits for none), so each onboard
    starts once what it overwrites has left (plan_overlap, the pure planning);
  * before the batch the onboard stream waits for the copy stream (which waited for compute):
    earlier copies still reading a reused slot (write-through) finish first;
  * after the batch the compute stream waits for both streams.
The result equals the sequential order above (all offloads, then all onboards) byte for byte. On
the CPU there are no streams: the plan runs serially in its most eager legal order (onboards that
wait for nothing first, then chunk 0, the onboards waiting for chunk 0, chunk 1, ...), so the CPU
tests run the plan's dependencies on real blocks.
"""

from __future__ import annotations

import heapq
import mmap
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..presets import ModelConfig
from .disk_tier import DiskTierError, DiskWriteError, FileTier

HOST_CHUNK_BYTES = 1 << 30
# Offload chunk of the overlapped copy pipeline. The first onboard that depends on an offload waits
# for one chunk's D2H (64 MiB: ~1.2 ms at 55 GB/s; 256 MiB would be ~5 ms of a ~50 ms batch).
# Smaller is not better by much: each chunk costs one event record and one cross-stream wait
# (microseconds), and its copies stay large (16 blocks of the 8B preset's 4 MiB; copies of 2 MiB
# already reach 51.6 GB/s, bench/tracer-smoke-h100.md), so ~33 chunks for a 2.1 GB offload (one 8B
# user's 16,000-token context).
OVERLAP_CHUNK_BYTES = 64 << 20


class PoolAllocationError(RuntimeError):
    """A pool could not be allocated; `pool` is "gpu" or "host"; sizes in bytes."""

    def __init__(self, pool: str, requested: int, detail: str, free: int | None = None) -> None:
        self.pool = pool
        self.requested = requested
        self.free = free
        self.detail = detail
        super().__init__(f"{pool} KV pool of {requested} bytes could not be allocated: {detail}")


def storage_dtype(kv_dtype: str, compute_dtype: torch.dtype) -> torch.dtype:
    if kv_dtype == "fp8":
        if not hasattr(torch, "float8_e4m3fn"):
            raise RuntimeError(f"fp8 KV needs torch with float8 dtypes (this is torch {torch.__version__})")
        return torch.float8_e4m3fn
    return compute_dtype


def block_bytes_for(cfg: ModelConfig, block_tokens: int, dtype: torch.dtype) -> int:
    elt = torch.empty((), dtype=dtype).element_size()
    return block_tokens * cfg.kv_bytes_per_token(elt)


@dataclass
class CopyRecord:
    """One batch of block copies in one direction (filled in when its events complete)."""

    dir: str  # "h2d" (onboard), "d2h" (offload), "f2h" (disk tier read), "h2f" (disk tier write)
    blocks: int
    bytes: int
    runs: int
    stream: int = 0  # the CUDA stream it ran on (cudaStream_t as an int; 0 on the CPU and for file I/O)
    start_ns: int | None = None
    end_ns: int | None = None
    owner: Any = None  # the request whose admission issued it (PagedKVCache.owner at issue), if any
    _ev: Any = None


Run = tuple[int, int, int]  # (gpu_start, host_start, count): adjacent blocks on both sides


def block_runs(pairs: Sequence[tuple[int, int]], host_is_src: bool, host_chunk_blocks: int | None) -> list[Run]:
    """Group (gpu_slot, host_slot) pairs into runs adjacent on both sides and within one host
    chunk of `host_chunk_blocks` (None: no host pool, no runs), in order of the source side."""
    runs: list[Run] = []
    for g, h in sorted(pairs, key=lambda p: p[1] if host_is_src else p[0]):
        if runs:
            g0, h0, c = runs[-1]
            if (g == g0 + c and h == h0 + c and host_chunk_blocks is not None
                    and h0 // host_chunk_blocks == h // host_chunk_blocks):
                runs[-1] = (g0, h0, c + 1)
                continue
        runs.append((g, h, 1))
    return runs


def split_runs(runs: Sequence[Run], chunk_blocks: int) -> list[list[Run]]:
    """Runs cut into chunks of `chunk_blocks` blocks (the last may be shorter), in order; a run
    that straddles a chunk boundary is split there (both pieces stay contiguous)."""
    if chunk_blocks < 1:
        raise ValueError(f"chunk_blocks must be at least 1, not {chunk_blocks}")
    chunks: list[list[Run]] = []
    cur: list[Run] = []
    n = 0
    for g, h, c in runs:
        while c > 0:
            take = min(c, chunk_blocks - n)
            cur.append((g, h, take))
            g, h, c, n = g + take, h + take, c - take, n + take
            if n == chunk_blocks:
                chunks.append(cur)
                cur, n = [], 0
    if cur:
        chunks.append(cur)
    return chunks


@dataclass
class OverlapPlan:
    """One batch's copies as a pipeline: offload chunks on the copy stream (an event after
    each), onboard groups on the onboard stream, each after waiting for chunk `wait` (None: no
    wait). Groups are in stream order: no wait first, then by ascending chunk."""

    offload_chunks: list[list[Run]]
    onboard_groups: list[tuple[int | None, list[Run]]]

    def eager_order(self) -> list[tuple[str, int | None, list[Run]]]:
        """A serial order that the events allow, with every onboard as early as its wait lets
        it: ("h2d", None, runs) groups, then ("d2h", 0, chunk 0), the ("h2d", 0, ...) groups,
        ("d2h", 1, chunk 1), ... The CPU runs the batch in this order, and the GPU issues it in
        this order (a chunk's event is recorded before any wait on it is issued: a wait on an
        event not yet recorded would not wait at all)."""
        by_wait: dict[int | None, list[list[Run]]] = {}
        for w, runs in self.onboard_groups:
            by_wait.setdefault(w, []).append(runs)
        out: list[tuple[str, int | None, list[Run]]] = [("h2d", None, r) for r in by_wait.pop(None, [])]
        for k, chunk in enumerate(self.offload_chunks):
            out.append(("d2h", k, chunk))
            out.extend(("h2d", k, r) for r in by_wait.pop(k, []))
        if by_wait:
            raise ValueError(f"onboard groups wait for chunks that do not exist: {sorted(by_wait)}")
        return out


def plan_overlap(offloads: Sequence[tuple[int, int]], onboards: Sequence[tuple[int, int]],
                 chunk_blocks: int, host_chunk_blocks: int | None) -> OverlapPlan:
    """Plan a batch of offloads and onboards, both as (gpu_slot, host_slot) pairs, so that the
    pipeline leaves the same bytes as every offload followed by every onboard: an onboard waits
    for the last offload chunk that reads its GPU slot (the slot's old block must leave first)
    or writes its host slot (a block offloaded and onboarded in one batch must arrive first).
    Pure (no torch): unit-tested on the CPU (tests/test_copy_overlap.py)."""
    chunks = split_runs(block_runs(offloads, False, host_chunk_blocks), chunk_blocks)
    reads_gpu: dict[int, int] = {}
    writes_host: dict[int, int] = {}
    for k, chunk in enumerate(chunks):
        for g, h, c in chunk:
            for i in range(c):
                reads_gpu[g + i] = k
                writes_host[h + i] = k
    groups: dict[int | None, list[tuple[int, int]]] = {}
    for g, h in onboards:
        deps = [d for d in (reads_gpu.get(g), writes_host.get(h)) if d is not None]
        groups.setdefault(max(deps) if deps else None, []).append((g, h))
    order = sorted(groups, key=lambda d: -1 if d is None else d)
    return OverlapPlan(chunks, [(d, block_runs(groups[d], True, host_chunk_blocks)) for d in order])


class HostPool:
    """Pinned host blocks in chunks of at most 1 GiB, allocated on demand up to `capacity`.

    Chunks because PyTorch's pinned allocator rounds every request up to a power of two (a
    55e9-byte pool asked for at once would pin 64 GiB); a chunk of whole blocks below 1 GiB
    rounds to exactly 1 GiB. The chunks stay allocated for the life of the process, so a sweep
    reuses them.
    """

    def __init__(self, capacity: int, block_elems: int, dtype: torch.dtype, pin: bool,
                 page_aligned: bool = False) -> None:
        self.capacity = int(capacity)
        self.block_elems = block_elems
        self.dtype = dtype
        self.pin = pin
        # Pageable chunks on page boundaries (mmap), so the disk tier's O_DIRECT reads and writes
        # use the slots themselves (torch.empty aligns to 64 bytes; pinned memory is page-aligned).
        self.page_aligned = page_aligned and not pin
        self._maps: list[mmap.mmap] = []
        elt = torch.empty((), dtype=dtype).element_size()
        self.block_bytes = block_elems * elt
        self.chunk_blocks = max(1, HOST_CHUNK_BYTES // self.block_bytes)
        self.chunks: list[torch.Tensor] = []

    def ensure(self, slots: int) -> None:
        """Allocate chunks so that slots 0..slots-1 exist."""
        slots = min(slots, self.capacity)
        while len(self.chunks) * self.chunk_blocks < slots:
            n = min(self.chunk_blocks, self.capacity - len(self.chunks) * self.chunk_blocks)
            try:
                if self.page_aligned:
                    m = mmap.mmap(-1, n * self.block_bytes)
                    self._maps.append(m)
                    t = torch.frombuffer(m, dtype=torch.uint8).view(self.dtype).view(n, self.block_elems)
                else:
                    t = torch.empty((n, self.block_elems), dtype=self.dtype, pin_memory=self.pin)
            except (RuntimeError, OSError) as e:
                raise PoolAllocationError(
                    "host", self.capacity * self.block_bytes,
                    f"chunk {len(self.chunks)} ({n * self.block_bytes} bytes{' pinned' if self.pin else ''}): {e}",
                ) from e
            self.chunks.append(t)

    def view(self, slot: int, count: int) -> torch.Tensor:
        c, i = divmod(slot, self.chunk_blocks)
        self.ensure(slot + count)
        return self.chunks[c][i : i + count]

    def spans(self, blocks: int) -> list[tuple[int, torch.Tensor]]:
        """Slots 0..blocks-1 as (first slot, view) spans, one per chunk (allocated here)."""
        self.ensure(blocks)
        out = []
        slot = 0
        while slot < blocks:
            c, i = divmod(slot, self.chunk_blocks)
            n = min(blocks - slot, self.chunk_blocks - i)
            out.append((slot, self.chunks[c][i : i + n]))
            slot += n
        return out

    def same_chunk(self, a: int, b: int) -> bool:
        return a // self.chunk_blocks == b // self.chunk_blocks

    @property
    def allocated_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self.chunks)


class PagedKVCache:
    """Block storage and block copies. Which block lives where is `blocks.BlockManager`'s job."""

    def __init__(
        self,
        cfg: ModelConfig,
        device: torch.device,
        compute_dtype: torch.dtype,
        kv_dtype: str,
        block_tokens: int,
        gpu_blocks: int,
        host_blocks: int,
        clock_now: Callable[[], int],
        simulate_gpu_oom: bool = False,
        copy_overlap: bool = False,
        host_pinned: bool = True,
        disk_blocks: int = 0,
        disk_path: str | None = None,
        disk_io: str = "auto",
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.compute_dtype = compute_dtype
        self.dtype = storage_dtype(kv_dtype, compute_dtype)
        self.fp8 = kv_dtype == "fp8"
        self.block_tokens = block_tokens
        self.num_blocks = int(gpu_blocks)
        self.host_blocks = int(host_blocks)
        self.clock_now = clock_now
        self.cuda = device.type == "cuda"
        L, kvh, hd = cfg.layers, cfg.kv_heads, cfg.head_dim
        self.row_elems = kvh * hd
        self.block_elems = L * 2 * block_tokens * self.row_elems
        self.block_bytes = block_bytes_for(cfg, block_tokens, self.dtype)
        # One spare block past the pool, zeroed and never handed out: the fixed-shape decode
        # step (decode_graph.py) points the rows it masks out at it, so masked keys and values
        # read as zeros rather than whatever bytes sit in unwritten slots (0 x NaN is NaN).
        shape = (self.num_blocks + 1, L, 2, block_tokens, kvh, hd)
        requested = (self.num_blocks + 1) * self.block_bytes
        free = None
        if self.cuda:
            free = int(torch.cuda.mem_get_info(device)[0])
        try:
            if simulate_gpu_oom:
                # Test hook (KVSCOPE_SIMULATE_GPU_OOM=1): raises what torch raises when cudaMalloc
                # fails, so the gpu_oom path is exercised on machines without a GPU.
                raise _oom_error(f"simulated: tried to allocate {requested} bytes")
            pool_all = torch.empty(shape, dtype=self.dtype, device=device)
        except RuntimeError as e:
            if _is_oom(e):
                raise PoolAllocationError("gpu", requested, str(e).splitlines()[0], free) from e
            raise
        pool_all[self.num_blocks].view(torch.uint8).zero_()
        self.pool = pool_all[: self.num_blocks]  # the slots the block manager hands out
        # Row view for per-token K/V writes and gathers; uint8 for fp8 (index ops on uint8).
        flat = pool_all.view(-1, self.row_elems)
        self.rows = flat.view(torch.uint8) if self.fp8 else flat
        self.zero_row = self.num_blocks * L * 2 * block_tokens  # first row of the spare block
        self.blocks_view = self.pool.view(self.num_blocks, self.block_elems)
        # The host pool is pinned on CUDA unless asked for pageable memory (--host-kv-memory
        # pageable: a slower link to measure; pageable copies also hold the host until they end).
        self.host_memory = "pinned" if self.cuda and host_pinned else "pageable"
        self.host = (HostPool(self.host_blocks, self.block_elems, self.dtype, pin=self.host_memory == "pinned",
                              page_aligned=disk_blocks > 0)
                     if self.host_blocks > 0 else None)
        # The disk tier behind the host pool (engine/disk_tier.py): blocks move file <-> host slots.
        self.disk_blocks = int(disk_blocks)
        self.disk: FileTier | None = None
        if self.disk_blocks > 0:
            if self.host is None:
                raise DiskTierError("a disk tier needs a host pool: blocks move disk -> host -> GPU")
            assert disk_path is not None
            self.disk = FileTier(disk_path, self.disk_blocks, self.block_bytes, disk_io, clock_now)
        # The request whose admission issues the copies being made (CopyRecord.owner), set by the engine.
        self.owner: Any = None
        self.copy_stream = torch.cuda.Stream(device=device) if self.cuda else None
        # Copy overlap (module docstring): onboards of a batch that also offloads run on their
        # own stream, pipelined behind the offload chunks they depend on.
        self.copy_overlap = bool(copy_overlap)
        self.onboard_stream = torch.cuda.Stream(device=device) if self.cuda and self.copy_overlap else None
        self.overlap_chunk_blocks = max(1, OVERLAP_CHUNK_BYTES // self.block_bytes)
        self.overlap_stats = {"batches": 0, "chunks": 0, "onboard_groups": 0, "onboard_waits": 0}
        self._arange_bt = torch.arange(block_tokens, device=device, dtype=torch.long)
        self.pending: list[CopyRecord] = []
        self._anchor_ev: Any = None
        self._anchor_ns = 0
        if self.fp8:
            from . import fp8  # type: ignore[attr-defined]

            self._to_storage = fp8.kv_to_storage
            self._from_storage = fp8.kv_from_storage

    # ---- rows: where each token's K and V live in the pool -------------------------------

    def request_rows(self, table: Sequence[int]) -> torch.Tensor:
        """[layers, 2 × positions] pool rows of a request, from its block table, built once at
        admission: for layer l, position p, rows[l, 2p] holds K and rows[l, 2p + 1] holds V.
        Interleaving K and V lets one index_copy_ write and one index_select read both (the step
        loop is launch-bound at small batch: fewer, larger ops). 8 bytes × 2 × layers per
        position: 9 MB for a 17k-token request of an 8B model."""
        t = torch.tensor(list(table), dtype=torch.long)
        if self.cuda:
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=True)
        L, bt = self.cfg.layers, self.block_tokens
        pos = (t[:, None] * (L * 2 * bt) + self._arange_bt[None, :]).reshape(-1)  # layer 0, K
        layer = torch.arange(L, device=self.device, dtype=torch.long) * (2 * bt)
        kv = torch.arange(2, device=self.device, dtype=torch.long) * bt
        return (pos[None, :, None] + layer[:, None, None] + kv[None, None, :]).reshape(L, -1)

    def block_table(self, rows: torch.Tensor) -> torch.Tensor:
        """The block table [blocks] int32 (on the device) that `request_rows` made `rows` from:
        rows[0, 2 × block × block_tokens] is the block's first K row of layer 0, block ×
        layers × 2 × block_tokens. What the paged attention kernel reads (paged_attention.py)."""
        bt = self.block_tokens
        first = rows[0, 0 :: 2 * bt]
        return torch.div(first, self.cfg.layers * 2 * bt, rounding_mode="floor").to(torch.int32)

    def write(self, layer: int, rows: torch.Tensor, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """K/V of positions start..start+n-1 (k, v [n, kv_heads, head_dim]) into the pool."""
        self.write_rows(rows[layer, 2 * start : 2 * (start + k.shape[0])], k, v)

    def write_rows(self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """K/V of n tokens (k, v [n, kv_heads, head_dim]) into pool rows index [2n] (K, V of
        token 0, K, V of token 1, ...)."""
        n = k.shape[0]
        data = torch.stack((k.reshape(n, -1), v.reshape(n, -1)), dim=1).reshape(2 * n, -1)
        if self.fp8:
            data = self._to_storage(data).view(torch.uint8)
        elif data.dtype != self.rows.dtype:
            data = data.to(self.rows.dtype)
        self.rows.index_copy_(0, index, data)

    def read(self, layer: int, rows: torch.Tensor, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V of positions 0..length-1 ([length, kv_heads, head_dim] views of one gather)."""
        kv = self.gather_rows(rows[layer, : 2 * length], dtype)
        kv = kv.view(length, 2, self.cfg.kv_heads, self.cfg.head_dim)
        return kv[:, 0], kv[:, 1]

    def gather_rows(self, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Pool rows `index` (any shape) as `dtype`: [*index.shape, kv_heads × head_dim]."""
        kv = self.rows.index_select(0, index.reshape(-1))
        if self.fp8:
            kv = self._from_storage(kv.view(torch.float8_e4m3fn), dtype)
        return kv.view(*index.shape, self.row_elems)

    # ---- block copies ---------------------------------------------------------------------

    def anchor(self) -> None:
        """Tie CUDA event time to the run clock (call where the copy stream is idle)."""
        if not self.cuda:
            return
        torch.cuda.synchronize(self.device)
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(self.copy_stream)
        ev.synchronize()
        self._anchor_ns = self.clock_now()
        self._anchor_ev = ev

    def _runs(self, pairs: Sequence[tuple[int, int]], host_is_src: bool) -> list[tuple[int, int, int]]:
        """Group (gpu_slot, host_slot) pairs into runs adjacent on both sides (and within one
        host chunk): (gpu_start, host_start, count)."""
        return block_runs(pairs, host_is_src, self.host.chunk_blocks if self.host is not None else None)

    def _copy_runs(self, direction: str, runs: Sequence[Run]) -> None:
        """Copy `runs` on the current stream (asynchronous on CUDA)."""
        assert self.host is not None
        for g, h, c in runs:
            gpu = self.blocks_view[g : g + c]
            host = self.host.view(h, c)
            if direction == "d2h":
                host.copy_(gpu, non_blocking=self.cuda)
            else:
                gpu.copy_(host, non_blocking=self.cuda)

    @staticmethod
    def _stream_id(stream: Any) -> int:
        return int(stream.cuda_stream) if stream is not None else 0

    def _copy(self, direction: str, pairs: Sequence[tuple[int, int]]) -> CopyRecord | None:
        if not pairs:
            return None
        assert self.host is not None
        self.host.ensure(max(h for _, h in pairs) + 1)
        runs = self._runs(pairs, host_is_src=direction == "h2d")
        rec = CopyRecord(direction, len(pairs), len(pairs) * self.block_bytes, len(runs),
                         stream=self._stream_id(self.copy_stream), owner=self.owner)
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(self.copy_stream):
                start.record(self.copy_stream)
                self._copy_runs(direction, runs)
                end.record(self.copy_stream)
            rec._ev = (start, end)
        else:
            rec.start_ns = self.clock_now()
            self._copy_runs(direction, runs)
            rec.end_ns = self.clock_now()
        self.pending.append(rec)
        return rec

    def _copy_overlapped(self, offloads: Sequence[tuple[int, int]], onboards: Sequence[tuple[int, int]]) -> None:
        """Offloads and onboards (both (gpu_slot, host_slot)) of one batch as the pipeline of
        the module docstring. Records: one d2h record for all offload chunks (they run back to
        back on the copy stream), then one h2d record per onboard group, timed from after its
        wait, so neither includes time spent waiting on the other stream."""
        assert self.host is not None
        plan = plan_overlap(offloads, onboards, self.overlap_chunk_blocks, self.host.chunk_blocks)
        self.host.ensure(max(h for _, h in list(offloads) + list(onboards)) + 1)
        st = self.overlap_stats
        st["batches"] += 1
        st["chunks"] += len(plan.offload_chunks)
        st["onboard_groups"] += len(plan.onboard_groups)
        st["onboard_waits"] += sum(1 for w, _ in plan.onboard_groups if w is not None)
        d2h = CopyRecord("d2h", len(offloads), len(offloads) * self.block_bytes,
                         sum(len(c) for c in plan.offload_chunks), stream=self._stream_id(self.copy_stream),
                         owner=self.owner)
        self.pending.append(d2h)
        cur = torch.cuda.current_stream(self.device) if self.cuda else None
        chunk_events: list[Any] = []  # chunk k's event: recorded on the copy stream after it
        d2h_start: Any = None
        if self.cuda:
            assert self.copy_stream is not None and self.onboard_stream is not None and cur is not None
            d2h_start = torch.cuda.Event(enable_timing=True)
            d2h_start.record(self.copy_stream)
            # copy_batch made the copy stream wait for compute. Through the copy stream, the
            # onboard stream waits for compute and for copies issued earlier that may still read a
            # slot this batch onboards into (a write-through copy of an evicted block); after the
            # d2h record's start, so no onboard of the batch starts before it.
            self.onboard_stream.wait_stream(self.copy_stream)
        for direction, k, runs in plan.eager_order():
            if direction == "d2h":
                if self.cuda:
                    with torch.cuda.stream(self.copy_stream):
                        self._copy_runs("d2h", runs)
                        ev = torch.cuda.Event()
                        ev.record(self.copy_stream)
                    chunk_events.append(ev)
                else:
                    # CPU: the d2h record spans first to last chunk, onboard groups between.
                    if d2h.start_ns is None:
                        d2h.start_ns = self.clock_now()
                    self._copy_runs("d2h", runs)
                    d2h.end_ns = self.clock_now()
                continue
            blocks = sum(c for _, _, c in runs)
            rec = CopyRecord("h2d", blocks, blocks * self.block_bytes, len(runs),
                             stream=self._stream_id(self.onboard_stream), owner=self.owner)
            if self.cuda:
                with torch.cuda.stream(self.onboard_stream):
                    if k is not None:
                        self.onboard_stream.wait_event(chunk_events[k])
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record(self.onboard_stream)
                    self._copy_runs("h2d", runs)
                    end.record(self.onboard_stream)
                rec._ev = (start, end)
            else:
                rec.start_ns = self.clock_now()
                self._copy_runs("h2d", runs)
                rec.end_ns = self.clock_now()
            self.pending.append(rec)
        if self.cuda:
            assert cur is not None and self.copy_stream is not None and self.onboard_stream is not None
            d2h_end = torch.cuda.Event(enable_timing=True)
            d2h_end.record(self.copy_stream)
            d2h._ev = (d2h_start, d2h_end)
            cur.wait_stream(self.copy_stream)
            cur.wait_stream(self.onboard_stream)

    def compute_mark(self) -> Any:
        """A point in the compute stream's work (a recorded event; None on CPU): copy_batch(after=)
        then starts after it instead of after everything queued when it is called."""
        return torch.cuda.current_stream(self.device).record_event() if self.cuda else None

    def copy_batch(self, offloads: Sequence[tuple[int, int]], onboards: Sequence[tuple[int, int]],
                   order_compute: bool = True, after: Any = None) -> None:
        """Offload (gpu_slot -> host_slot) then onboard (host_slot -> gpu_slot), ordered as the
        module docstring says. Returns once issued (asynchronous on CUDA). order_compute=False
        (write-through copies, which only read blocks that stay in place) lets compute run on
        without waiting for them; order_compute=True with nothing to copy still orders compute
        after copies already issued (a slot being reused may still be read by one). `after`
        (compute_mark()): the copies wait only for compute queued before it, for a caller that
        has since queued work touching none of these slots."""
        if self.cuda:
            if offloads or onboards:
                if after is not None:
                    self.copy_stream.wait_event(after)
                else:
                    self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            if not offloads and not onboards and not order_compute:
                return
        elif not offloads and not onboards:
            return
        if self.copy_overlap and offloads and onboards:
            # Orders compute after both streams itself (also with order_compute=False: onboarded
            # blocks are read by the next prefill).
            self._copy_overlapped(list(offloads), [(g, h) for h, g in onboards])
            return
        self._copy("d2h", list(offloads))
        self._copy("h2d", [(g, h) for h, g in onboards])
        if self.cuda and (order_compute or onboards):
            torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)

    def completed_copies(self, wait: bool = False) -> list[CopyRecord]:
        """Copy batches whose timing is known, in issue order, with run-clock start/end."""
        done: list[CopyRecord] = []
        while self.pending:
            rec = self.pending[0]
            if rec._ev is not None:
                start, end = rec._ev
                if not wait and not end.query():
                    break
                end.synchronize()
                if self._anchor_ev is None:
                    self.anchor()
                rec.start_ns = self._anchor_ns + int(self._anchor_ev.elapsed_time(start) * 1e6)
                rec.end_ns = self._anchor_ns + int(self._anchor_ev.elapsed_time(end) * 1e6)
                rec._ev = None
            done.append(self.pending.pop(0))
        return done

    def measure_plain_copy(self, blocks: int, reps: int = 3) -> dict[str, Any] | None:
        """The plain pinned-copy baseline beside the run, in this process: `blocks` blocks
        GPU pool -> host pool and back as plain copies (one per host chunk, no block runs to
        find), timed with CUDA events on the copy stream; best of `reps`. Overwrites pool
        contents, so call it before the workload. None on the CPU or without a host pool."""
        if not self.cuda or self.host is None:
            return None
        blocks = min(blocks, self.num_blocks, self.host.capacity)
        if blocks <= 0:
            return None
        spans = [(self.blocks_view[slot : slot + len(host)], host) for slot, host in self.host.spans(blocks)]
        torch.cuda.synchronize(self.device)
        result: dict[str, Any] = {"blocks": blocks, "bytes": blocks * self.block_bytes, "copies": len(spans), "reps": reps}
        for direction in ("h2d", "d2h"):
            best = None
            for _ in range(reps):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                with torch.cuda.stream(self.copy_stream):
                    start.record(self.copy_stream)
                    for gpu, host in spans:
                        if direction == "h2d":
                            gpu.copy_(host, non_blocking=True)
                        else:
                            host.copy_(gpu, non_blocking=True)
                    end.record(self.copy_stream)
                end.synchronize()
                ms = start.elapsed_time(end)
                best = ms if best is None else min(best, ms)
            result[f"{direction}_gb_per_s"] = round(result["bytes"] / (best * 1e6), 3)
        return result

    # ---- the disk tier ------------------------------------------------------------------------

    def sync_copies(self) -> None:
        """Wait for the copies issued so far (before the CPU reads or writes host slots that a
        copy in flight may still touch)."""
        if self.cuda:
            assert self.copy_stream is not None
            self.copy_stream.synchronize()
            if self.onboard_stream is not None:
                self.onboard_stream.synchronize()

    def _disk_runs(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
        """(disk_slot, host_slot) pairs as runs contiguous in the file: (first disk slot, host
        memory segments in file order), adjacent host slots of one chunk merged into one segment.
        One run is one vectored transfer however scattered its host slots are."""
        assert self.host is not None
        self.host.ensure(max(h for _, h in pairs) + 1)
        bb = self.block_bytes
        runs: list[tuple[int, list[tuple[int, int]]]] = []
        last_d = last_h = -2
        for d, h in sorted(pairs):
            addr = self.host.view(h, 1).data_ptr()
            if runs and d == last_d + 1:
                segs = runs[-1][1]
                if h == last_h + 1 and self.host.same_chunk(h, last_h):
                    segs[-1] = (segs[-1][0], segs[-1][1] + bb)
                else:
                    segs.append((addr, bb))
            else:
                runs.append((d, [(addr, bb)]))
            last_d, last_h = d, h
        return runs

    def disk_write(self, pairs: Sequence[tuple[int, int]]) -> tuple[CopyRecord | None, list[tuple[int, int]], DiskWriteError | None]:
        """Spill host slots to disk slots: pairs (host_slot, disk_slot), synchronously. Returns the
        record (None if nothing was written), the pairs that failed, and the error (a full disk:
        the pairs of the failing run and all after it fail, the runs before it are written)."""
        if not pairs:
            return None, [], None
        assert self.disk is not None
        runs = self._disk_runs([(d, h) for h, d in pairs])
        done = len(runs)
        err: DiskWriteError | None = None
        t0 = self.clock_now()
        try:
            self.disk.write_runs(runs)
        except DiskWriteError as e:
            err, done = e, e.run_index
        ok_runs = runs[:done]
        failed: list[tuple[int, int]] = []
        bb = self.block_bytes
        if err is not None:
            bad_slots = {d + i for d, segs in runs[done:] for i in range(sum(n for _, n in segs) // bb)}
            failed = [(h, d) for h, d in pairs if d in bad_slots]
        blocks = sum(n for _, segs in ok_runs for _, n in segs) // bb
        rec = None
        if blocks:
            rec = CopyRecord("h2f", blocks, blocks * self.block_bytes, len(ok_runs), owner=self.owner,
                             start_ns=t0, end_ns=self.clock_now())
            self.pending.append(rec)
        return rec, failed, err

    def disk_read(self, pairs: Sequence[tuple[int, int]]) -> CopyRecord | None:
        """Promote disk slots into host slots: pairs (disk_slot, host_slot), synchronously."""
        if not pairs:
            return None
        assert self.disk is not None
        runs = self._disk_runs(list(pairs))
        io = self.disk.read_runs(runs)
        rec = CopyRecord("f2h", len(pairs), io.bytes, len(runs), owner=self.owner,
                         start_ns=io.start_ns, end_ns=io.end_ns)
        self.pending.append(rec)
        return rec

    def onboard_chunk(self, pairs: Sequence[tuple[int, int]], after: Any = None) -> list[CopyRecord]:
        """One chunk of a promotion onto the GPU: pairs (host_slot, gpu_slot), ordered like any
        onboard (copy_batch); returns its records, to wait on before its host slots are reused."""
        n0 = len(self.pending)
        self.copy_batch([], pairs, after=after)
        return self.pending[n0:]

    def wait_record(self, rec: CopyRecord) -> None:
        """Until a copy has ended (its host slots may be written again)."""
        if rec._ev is not None:
            rec._ev[1].synchronize()

    def measure_plain_disk(self, blocks: int) -> dict[str, Any] | None:
        """The disk tier's plain sequential write and read rate by its own method (disk_tier.py),
        through the host pool's first `blocks` slots. Overwrites both, so call it before the
        workload. None without a disk tier."""
        if self.disk is None or self.host is None:
            return None
        blocks = min(blocks, self.disk.capacity, self.host.capacity)
        out = self.disk.measure_plain([(host.data_ptr(), len(host)) for _, host in self.host.spans(blocks)])
        out["blocks"] = blocks
        return out

    # ---- a request's first token, on the run clock ------------------------------------------------

    def stamp(self) -> Any:
        """A point in the compute stream's work: a recorded event on CUDA, the run clock on the CPU
        (where the work already ran). stamp_ns() turns it into run-clock ns once it completed."""
        if not self.cuda:
            return self.clock_now()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def stamp_ns(self, stamp: Any) -> int:
        if not self.cuda:
            return int(stamp)
        stamp.synchronize()
        if self._anchor_ev is None:
            self.anchor()
        return self._anchor_ns + int(self._anchor_ev.elapsed_time(stamp) * 1e6)

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        """Forget pending copy records (a sweep starts its next run on the same pools)."""
        self.synchronize()
        self.pending.clear()
        self._anchor_ev = None


def _is_oom(e: BaseException) -> bool:
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(e, oom_cls):
        return True
    msg = str(e)
    return "out of memory" in msg or "can't allocate memory" in msg or "CUDA error: out of memory" in msg


def _oom_error(msg: str) -> RuntimeError:
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_cls is not None:
        return oom_cls("CUDA out of memory. " + msg)
    return RuntimeError("CUDA out of memory. " + msg)


def free_slots_heap(n: int) -> list[int]:
    h = list(range(n))
    heapq.heapify(h)
    return h
