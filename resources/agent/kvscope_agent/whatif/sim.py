"""The simulated machine the built-in engine's real scheduler runs on.

`engine/scheduler.py`'s Engine (admission in round-robin order, the offload policy, LRU eviction,
the host pool, one copying admission per step, the decode step before an admission's copies) runs
unchanged over a simulated model and KV cache: each step costs what costs.py says on the card, on
a simulated GPU with a compute stream and a copy stream (two with copy overlap), and a host clock
that waits for the GPU where the engine syncs. `run.run_workload` drives it exactly as it drives a
real run, so the simulated log has the same lines as a measured one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from ..engine.scheduler import Engine
from .costs import Calibration, CardRates, ModelShape, StepWork, copy_ns, overlapped_copy_ns, step_ns

# engine/kv_cache.py OVERLAP_CHUNK_BYTES (kv_cache imports torch): the offload chunk an overlapped
# batch's first onboard waits for.
OVERLAP_CHUNK_BYTES = 64 << 20


class SimPiece(NamedTuple):
    """engine/model.py's Piece, without torch: one request's share of a step."""

    token_ids: Sequence[int] | None
    token_dev: Any
    start: int
    n: int
    rows: Any
    want_logits: bool


@dataclass
class StepRecord:
    start: int
    end: int
    work: StepWork


@dataclass
class SimCopy:
    """One copy batch in one direction, as engine/kv_cache.py's CopyRecord (the scheduler emits
    its `xfer` line from these fields)."""

    dir: str
    blocks: int
    bytes: int
    runs: int | None  # runs of adjacent blocks: the simulated copies have none (null in the xfer line)
    stream: int
    start_ns: int
    end_ns: int
    owner: Any = None  # CopyRecord.owner's place (no ttft_parts in a simulated run)


class SimGpu:
    """Clocks of the simulated machine (ns since the run's t0): the host (what the run clock
    reads), the compute stream, the copy streams."""

    def __init__(self, rates: CardRates, cal: Calibration, shape: ModelShape) -> None:
        self.rates = rates
        self.cal = cal
        self.shape = shape
        self.cpu = 0
        self.compute_free = 0
        self.compute_wait = 0  # compute queued from now on starts no earlier
        self.copy_free = 0
        self.steps: list[StepRecord] = []

    # RunClock's interface, for the EventWriter and the engine
    unix_ns_at_t0 = 0
    t0_monotonic_ns = 0

    def now(self) -> int:
        return self.cpu

    def advance(self, ns: float) -> None:
        self.cpu += int(round(ns))

    def sync(self) -> None:
        self.cpu = max(self.cpu, self.compute_free)

    def run_step(self, work: StepWork) -> None:
        start = max(self.cpu, self.compute_free, self.compute_wait)
        end = start + int(round(step_ns(work, self.rates, self.cal)))
        self.compute_free = end
        self.steps.append(StepRecord(start, end, work))


class SimHostPool:
    """Stands for the pinned host pool: the scheduler only asks whether there is one."""

    chunk_blocks = None


class SimDevice:
    index = 0
    type = "cuda"


class SimCache:
    """The KV cache as the scheduler and run_workload use it: pool sizes and block copies, timed
    on the simulated machine instead of moved."""

    cuda = False  # no CUDA allocator to read (alloc_stats), no events to anchor
    device = SimDevice()
    disk = None  # no disk tier is simulated
    disk_blocks = 0
    owner = None  # as PagedKVCache.owner

    def __init__(self, gpu: SimGpu, block_tokens: int, block_bytes: int, gpu_blocks: int, host_blocks: int,
                 copy_overlap: bool, host_memory: str) -> None:
        self.gpu = gpu
        self.block_tokens = block_tokens
        self.block_bytes = block_bytes
        self.num_blocks = gpu_blocks
        self.host_blocks = host_blocks
        self.host = SimHostPool() if host_blocks > 0 else None
        self.copy_overlap = copy_overlap
        self.host_memory = host_memory
        self.clock_now = gpu.now
        self.pending: list[SimCopy] = []

    def reset(self) -> None:
        self.pending.clear()

    def anchor(self) -> None:
        pass

    def synchronize(self) -> None:
        self.gpu.sync()

    def request_rows(self, table: Sequence[int]) -> None:
        return None

    def compute_mark(self) -> int:
        return self.gpu.compute_free

    def copy_batch(self, offloads: Sequence[tuple[int, int]], onboards: Sequence[tuple[int, int]],
                   order_compute: bool = True, after: Any = None) -> None:
        g = self.gpu
        if not offloads and not onboards:
            if order_compute:
                g.compute_wait = max(g.compute_wait, g.copy_free)
            return
        r = g.rates
        start = max(g.cpu, g.compute_free if after is None else int(after), g.copy_free)
        d, h = len(offloads) * self.block_bytes, len(onboards) * self.block_bytes
        if self.copy_overlap and offloads and onboards:
            d_end, h_start, h_end = overlapped_copy_ns(d, h, r, OVERLAP_CHUNK_BYTES)
            self._record("d2h", len(offloads), d, start, start + d_end, 0)
            self._record("h2d", len(onboards), h, start + h_start, start + h_end, 1)
            end = start + int(round(max(d_end, h_end)))
        else:
            t = float(start)
            if offloads:
                t2 = t + copy_ns(d, r.d2h_bytes_per_s, r.copy_latency_ns)
                self._record("d2h", len(offloads), d, t, t2, 0)
                t = t2
            if onboards:
                t2 = t + copy_ns(h, r.h2d_bytes_per_s, r.copy_latency_ns)
                self._record("h2d", len(onboards), h, t, t2, 0)
                t = t2
            end = int(round(t))
        g.copy_free = end
        if order_compute or onboards:
            g.compute_wait = max(g.compute_wait, end)

    def _record(self, direction: str, blocks: int, nbytes: int, start: float, end: float, stream: int) -> None:
        self.pending.append(SimCopy(direction, blocks, nbytes, None, stream, int(round(start)), int(round(end))))

    def completed_copies(self, wait: bool = False) -> list[SimCopy]:
        done: list[SimCopy] = []
        while self.pending and (wait or self.pending[0].end_ns <= self.gpu.cpu):
            done.append(self.pending.pop(0))
        return done


class SimModel:
    """The model as the scheduler calls it: forward_step costs the step and returns a token per
    piece that wants logits (token values only feed block ids; any fixed value will do)."""

    decode_runner = None
    layer_times = None
    layer0_ops: list[Any] = []

    def __init__(self, gpu: SimGpu) -> None:
        self.gpu = gpu

    def forward_step(self, pieces: Sequence[SimPiece], cache: Any) -> list[int]:
        self.gpu.run_step(self.gpu.shape.work(pieces))
        return [(p.start + p.n) % self.gpu.shape.cfg.vocab for p in pieces if p.want_logits]


class SimEngine(Engine):
    """The real Engine on the simulated machine: host time passes where the engine does host work
    (admissions) and where it waits for the device (token syncs)."""

    def __init__(self, gpu: SimGpu, cache: SimCache, prefill_chunk_tokens: int, max_batch: int, block_reuse: bool,
                 offload_policy: str, decode_before_copies: bool, copying_admissions_per_step: int | None) -> None:
        super().__init__(SimModel(gpu), cache, prefill_chunk_tokens, max_batch, block_reuse,  # type: ignore[arg-type]
                         offload_policy, piece=SimPiece)
        self.gpu = gpu
        self.perf_ns = gpu.now
        self.decode_before_copies = decode_before_copies
        self.copying_admissions_per_step = copying_admissions_per_step

    def _host_tokens(self, pending: list[Any]) -> list[int]:
        self.gpu.sync()
        return [int(t) for tok in pending for t in tok]

    def try_admit(self, req: Any) -> bool:
        moved = len(self._copy_onboards) + len(self._copy_offloads)
        ok = super().try_admit(req)
        if ok:
            moved = len(self._copy_onboards) + len(self._copy_offloads) - moved
            self.gpu.advance(self.gpu.cal.admit_ns + self.gpu.cal.admit_ns_per_block * moved)
        return ok


@dataclass
class EngineSetup:
    """The engine's settings for one simulated run (from the recorded run's config)."""

    block_tokens: int
    block_bytes: int
    gpu_blocks: int
    host_blocks: int
    prefill_chunk_tokens: int
    max_batch: int
    block_reuse: bool
    offload_policy: str
    copy_overlap: bool
    decode_before_copies: bool
    copying_admissions_per_step: int | None
    host_memory: str = "pinned"
    extra: dict[str, Any] = field(default_factory=dict)


def build_engine(setup: EngineSetup, rates: CardRates, cal: Calibration, shape: ModelShape) -> tuple[SimGpu, SimCache, SimEngine]:
    gpu = SimGpu(rates, cal, shape)
    cache = SimCache(gpu, setup.block_tokens, setup.block_bytes, setup.gpu_blocks, setup.host_blocks,
                     setup.copy_overlap, setup.host_memory)
    saved = os.environ.get("KVSCOPE_STEP_TRACE")
    if saved is not None:  # the step trace is the real engine's diagnostic, not the simulator's
        del os.environ["KVSCOPE_STEP_TRACE"]
    try:
        engine = SimEngine(gpu, cache, setup.prefill_chunk_tokens, setup.max_batch, setup.block_reuse,
                           setup.offload_policy, setup.decode_before_copies, setup.copying_admissions_per_step)
    finally:
        if saved is not None:
            os.environ["KVSCOPE_STEP_TRACE"] = saved
    return gpu, cache, engine
