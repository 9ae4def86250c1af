"""Copy overlap (`--copy-overlap on`): a batch's onboards pipelined behind its offload chunks.

The planning (`plan_overlap`) is pure, so it is checked here on the CPU against an independent
checker written from the sequential semantics it must keep (every offload, then every onboard):
an onboard may overwrite a GPU slot only after the offload chunk that reads it has completed,
and may read a host slot only after the offload chunk that writes it has. On the onboard stream
the groups run in order, so what a group has waited for is the highest wait of the groups up to
it. The checker is shown to catch a plan whose dependency is dropped or lowered.

Then real blocks: a PagedKVCache batch with overlap on leaves the same bytes as overlap off (on
the CPU the plan runs serially in its most eager legal order, so a dropped dependency corrupts
the offloaded copies, which the test also shows), and a whole CPU run with --copy-overlap on
gives the same greedy tokens and block events as off.
"""

from __future__ import annotations

import json
import os
import random
from typing import Sequence

import pytest
import torch

from conftest import AGENT_ROOT  # noqa: F401  (puts the agent package on sys.path)
from kvscope_agent.clock import RunClock
from kvscope_agent.engine import kv_cache
from kvscope_agent.engine.kv_cache import OverlapPlan, PagedKVCache, block_runs, plan_overlap, split_runs
from kvscope_agent.ledger import check_log
from kvscope_agent.presets import PRESETS

Pair = tuple[int, int]


# ---- the independent checker ------------------------------------------------------------------


def expand(runs: Sequence[tuple[int, int, int]]) -> list[Pair]:
    return [(g + i, h + i) for g, h, c in runs for i in range(c)]


def check_plan(offloads: Sequence[Pair], onboards: Sequence[Pair], plan: OverlapPlan,
               chunk_blocks: int, host_chunk_blocks: int | None) -> list[str]:
    """Problems of `plan` for this batch ([] = sound)."""
    problems: list[str] = []
    off_pairs = [p for chunk in plan.offload_chunks for p in expand(chunk)]
    on_pairs = [p for _, runs in plan.onboard_groups for p in expand(runs)]
    if sorted(off_pairs) != sorted(offloads):
        problems.append(f"offload pairs differ: plan {sorted(off_pairs)} batch {sorted(offloads)}")
    if sorted(on_pairs) != sorted(onboards):
        problems.append(f"onboard pairs differ: plan {sorted(on_pairs)} batch {sorted(onboards)}")
    for k, chunk in enumerate(plan.offload_chunks):
        n = sum(c for _, _, c in chunk)
        if not 1 <= n <= chunk_blocks:
            problems.append(f"chunk {k} holds {n} blocks (limit {chunk_blocks})")
    all_runs = [r for chunk in plan.offload_chunks for r in chunk] + [r for _, runs in plan.onboard_groups for r in runs]
    for g, h, c in all_runs:
        if c < 1:
            problems.append(f"run {(g, h, c)} is empty")
        elif host_chunk_blocks is None and c > 1:
            problems.append(f"run {(g, h, c)} spans blocks without a host pool")
        elif host_chunk_blocks is not None and h // host_chunk_blocks != (h + c - 1) // host_chunk_blocks:
            problems.append(f"run {(g, h, c)} crosses a host chunk of {host_chunk_blocks} blocks")
    reads_gpu = {g: k for k, chunk in enumerate(plan.offload_chunks) for g, _ in expand(chunk)}
    writes_host = {h: k for k, chunk in enumerate(plan.offload_chunks) for _, h in expand(chunk)}
    waited = -1  # the highest chunk the onboard stream has waited for so far
    seen_wait = False
    for i, (wait, runs) in enumerate(plan.onboard_groups):
        if wait is not None:
            if not 0 <= wait < len(plan.offload_chunks):
                problems.append(f"group {i} waits for chunk {wait}, which does not exist")
            waited = max(waited, wait)
            seen_wait = True
        for g, h in expand(runs):
            need = max(reads_gpu.get(g, -1), writes_host.get(h, -1))
            if need > waited:
                problems.append(f"onboard {(g, h)} in group {i} runs after chunk {waited} but needs chunk {need}")
            if need == -1 and seen_wait:
                problems.append(f"onboard {(g, h)} needs no chunk but runs after a wait (group {i})")
    return problems


def run_sequential(offloads: Sequence[Pair], onboards: Sequence[Pair], gpu: dict, host: dict) -> tuple[dict, dict]:
    gpu, host = dict(gpu), dict(host)
    for g, h in offloads:
        host[h] = gpu[g]
    for g, h in onboards:
        gpu[g] = host[h]
    return gpu, host


def run_eager(plan: OverlapPlan, gpu: dict, host: dict) -> tuple[dict, dict]:
    gpu, host = dict(gpu), dict(host)
    for direction, _, runs in plan.eager_order():
        for g, h in expand(runs):
            if direction == "d2h":
                host[h] = gpu[g]
            else:
                gpu[g] = host[h]
    return gpu, host


def scheduler_like_batch(rng: random.Random, gpu_blocks: int = 96, host_blocks: int = 80) -> tuple[list[Pair], list[Pair]]:
    """A batch shaped like a lazy-offload admission (scheduler._take_slots / try_admit): victims
    leave GPU slots, some offloaded to free host slots; the request's host blocks are onboarded
    into free slots first, then into victim slots; now and then a block offloaded in this very
    batch is onboarded again (a host slot written and read by one batch)."""
    slots = list(range(gpu_blocks))
    rng.shuffle(slots)
    n_free = rng.randrange(0, 12)
    free, victims = slots[:n_free], slots[n_free : n_free + rng.randrange(1, 40)]
    hosts = list(range(host_blocks))
    rng.shuffle(hosts)
    # Adjacent host slots sometimes (the host free heap hands out ascending slots): runs form.
    if rng.random() < 0.5:
        hosts.sort()
    offloads = [(g, hosts.pop()) for g in victims if rng.random() < 0.8]
    targets = free + victims
    n_on = rng.randrange(1, len(targets) + 1)
    onboards: list[Pair] = []
    for g in targets[:n_on]:
        if offloads and rng.random() < 0.1:
            onboards.append((g, rng.choice(offloads)[1]))  # read back what this batch offloads
        else:
            onboards.append((g, hosts.pop()))
    # Each host slot is read by at most one onboard (a block is onboarded once per batch).
    seen: set[int] = set()
    onboards = [p for p in onboards if not (p[1] in seen or seen.add(p[1]))]
    return offloads, onboards


# ---- the plan ---------------------------------------------------------------------------------


def test_onboards_into_free_slots_wait_for_nothing_and_go_first():
    offloads = [(10, 0), (11, 1), (12, 2), (13, 3)]
    onboards = [(40, 20), (10, 21), (41, 22), (13, 23)]  # 40, 41 were free
    plan = plan_overlap(offloads, onboards, chunk_blocks=2, host_chunk_blocks=64)
    assert plan.offload_chunks == [[(10, 0, 2)], [(12, 2, 2)]]
    assert plan.onboard_groups == [(None, [(40, 20, 1), (41, 22, 1)]), (0, [(10, 21, 1)]), (1, [(13, 23, 1)])]
    assert check_plan(offloads, onboards, plan, 2, 64) == []


def test_onboard_into_a_slot_freed_by_chunk_k_waits_for_k_not_less():
    offloads = [(g, g) for g in range(20)]
    onboards = [(19, 50), (0, 51), (9, 52)]
    plan = plan_overlap(offloads, onboards, chunk_blocks=4, host_chunk_blocks=None)
    waits = {g: w for w, runs in plan.onboard_groups for g, _ in expand(runs)}
    assert waits == {0: 0, 9: 2, 19: 4}
    assert check_plan(offloads, onboards, plan, 4, None) == []


def test_onboard_of_a_block_offloaded_in_the_same_batch_waits_for_its_offload():
    # Host slot 7 is written by the offload of GPU slot 30 (chunk 2 of 1-block chunks) and read
    # back into free slot 60: the onboard must wait for chunk 2 although slot 60 was free.
    offloads = [(10, 5), (20, 6), (30, 7)]
    plan = plan_overlap(offloads, [(60, 7)], chunk_blocks=1, host_chunk_blocks=64)
    assert plan.onboard_groups == [(2, [(60, 7, 1)])]
    assert check_plan(offloads, [(60, 7)], plan, 1, 64) == []


def test_runs_are_split_at_chunk_boundaries_and_stay_within_host_chunks():
    # GPU 0..9 -> host 4..13 with host chunks of 8 blocks: runs 0-3 (host 4-7) and 4-9 (host 8-13).
    offloads = [(g, g + 4) for g in range(10)]
    assert block_runs(offloads, False, 8) == [(0, 4, 4), (4, 8, 6)]
    assert block_runs(offloads, False, None) == [(g, g + 4, 1) for g in range(10)]
    assert split_runs([(0, 4, 4), (4, 8, 6)], 3) == [[(0, 4, 3)], [(3, 7, 1), (4, 8, 2)], [(6, 10, 3)], [(9, 13, 1)]]
    plan = plan_overlap(offloads, [(g, 40 + g) for g in range(10)], chunk_blocks=3, host_chunk_blocks=8)
    assert check_plan(offloads, [(g, 40 + g) for g in range(10)], plan, 3, 8) == []
    with pytest.raises(ValueError):
        split_runs([(0, 0, 1)], 0)


@pytest.mark.parametrize("seed", range(200))
def test_random_scheduler_batches_plan_soundly_and_equal_the_sequential_copies(seed):
    rng = random.Random(seed)
    offloads, onboards = scheduler_like_batch(rng)
    chunk_blocks = rng.choice([1, 2, 3, 5, 8, 64])
    hcb = rng.choice([None, 4, 16, 1024])
    plan = plan_overlap(offloads, onboards, chunk_blocks, hcb)
    assert check_plan(offloads, onboards, plan, chunk_blocks, hcb) == []
    gpu = {g: f"gpu{g}" for g in range(96)}
    host = {h: f"host{h}" for h in range(80)}
    assert run_eager(plan, gpu, host) == run_sequential(offloads, onboards, gpu, host)


# ---- the checker catches broken plans ----------------------------------------------------------


def _dependent_batch() -> tuple[list[Pair], list[Pair], OverlapPlan]:
    offloads = [(g, g) for g in range(12)]
    onboards = [(3, 40), (7, 41), (11, 42), (50, 43)]
    plan = plan_overlap(offloads, onboards, chunk_blocks=4, host_chunk_blocks=None)
    assert check_plan(offloads, onboards, plan, 4, None) == []
    return offloads, onboards, plan


def test_checker_and_eager_run_catch_a_dropped_dependency():
    offloads, onboards, plan = _dependent_batch()
    dropped = OverlapPlan(plan.offload_chunks, [(None, [r for _, runs in plan.onboard_groups for r in runs])])
    assert any("needs chunk" in p for p in check_plan(offloads, onboards, dropped, 4, None))
    gpu = {g: f"gpu{g}" for g in range(64)}
    host = {h: f"host{h}" for h in range(64)}
    # Run early, the onboards overwrite slots 3, 7, 11 before their blocks were offloaded.
    assert run_eager(dropped, gpu, host) != run_sequential(offloads, onboards, gpu, host)


def test_checker_catches_a_wait_one_chunk_too_early():
    offloads, onboards, plan = _dependent_batch()
    last_wait, last_runs = plan.onboard_groups[-1]
    assert last_wait == 2
    early = OverlapPlan(plan.offload_chunks, plan.onboard_groups[:-1] + [(1, last_runs)])
    assert any("needs chunk 2" in p for p in check_plan(offloads, onboards, early, 4, None))


def test_checker_catches_lost_duplicated_and_malformed_pairs():
    offloads, onboards, plan = _dependent_batch()
    lost = OverlapPlan(plan.offload_chunks[:-1], plan.onboard_groups[:-1])
    assert any("pairs differ" in p for p in check_plan(offloads, onboards, lost, 4, None))
    dup = OverlapPlan(plan.offload_chunks + [plan.offload_chunks[0]], plan.onboard_groups)
    assert any("offload pairs differ" in p for p in check_plan(offloads, onboards, dup, 4, None))
    merged = OverlapPlan([[(0, 0, 12)]], [(0, [r for _, runs in plan.onboard_groups for r in runs])])
    probs = check_plan(offloads, onboards, merged, 4, None)
    assert any("holds 12 blocks" in p for p in probs) and any("without a host pool" in p for p in probs)
    late = OverlapPlan(plan.offload_chunks, plan.onboard_groups[1:] + plan.onboard_groups[:1])
    assert any("needs no chunk but runs after a wait" in p for p in check_plan(offloads, onboards, late, 4, None))


# ---- real blocks: PagedKVCache on the CPU ------------------------------------------------------


def make_cache(overlap: bool, gpu_blocks: int = 32, host_blocks: int = 32) -> PagedKVCache:
    cache = PagedKVCache(PRESETS["tiny"], torch.device("cpu"), torch.float32, "native", 8, gpu_blocks,
                         host_blocks, RunClock().now, copy_overlap=overlap)
    g = torch.Generator().manual_seed(11)
    cache.pool.copy_(torch.randn(cache.pool.shape, generator=g))
    assert cache.host is not None
    cache.host.ensure(host_blocks)
    for c in cache.host.chunks:
        c.copy_(torch.randn(c.shape, generator=g))
    return cache


# Victims 4..15 offloaded to host 0..11; onboards of host 20..27 into victim slots 15, 14, ...,
# 9 and free slot 30; host 2 (written by this batch's offload of slot 6) back into free slot 31.
BATCH_OFF = [(g, g - 4) for g in range(4, 16)]
BATCH_ON = [(20 + i, 15 - i) for i in range(7)] + [(27, 30), (2, 31)]  # (host, gpu) as copy_batch takes


def _state(cache: PagedKVCache) -> tuple[torch.Tensor, torch.Tensor]:
    assert cache.host is not None
    return cache.pool.clone(), torch.cat(cache.host.chunks).clone()


def test_overlapped_batch_leaves_the_same_blocks_as_the_sequential_one():
    seq = make_cache(False)
    seq.copy_batch(BATCH_OFF, BATCH_ON)
    ovl = make_cache(True)
    ovl.overlap_chunk_blocks = 5  # 12 offloads: chunks of 5, 5, 2
    ovl.copy_batch(BATCH_OFF, BATCH_ON)
    a, b = _state(seq), _state(ovl)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert ovl.overlap_stats == {"batches": 1, "chunks": 3, "onboard_groups": 4, "onboard_waits": 3}
    recs = ovl.completed_copies(wait=True)
    assert [r.dir for r in recs] == ["d2h", "h2d", "h2d", "h2d", "h2d"]
    assert recs[0].blocks == 12 and sum(r.blocks for r in recs[1:]) == len(BATCH_ON)
    assert all(r.bytes == r.blocks * ovl.block_bytes and r.stream == 0 for r in recs)
    assert all(r.start_ns is not None and r.end_ns is not None and r.start_ns <= r.end_ns for r in recs)
    # The sequential cache's records are unchanged: one per direction.
    assert [(r.dir, r.blocks) for r in seq.completed_copies(wait=True)] == [("d2h", 12), ("h2d", 9)]


def test_batches_without_both_directions_take_the_sequential_path():
    ovl = make_cache(True)
    ovl.copy_batch(BATCH_OFF, [], order_compute=False)  # write-through
    ovl.copy_batch([], [(20, 30)])
    assert ovl.overlap_stats["batches"] == 0
    assert [(r.dir, r.blocks) for r in ovl.completed_copies(wait=True)] == [("d2h", 12), ("h2d", 1)]


def test_a_dropped_dependency_corrupts_real_blocks(monkeypatch):
    """The real-block test above can fail: a plan without waits runs every onboard before the
    offloads on the CPU, so offloaded host blocks hold the onboarded bytes instead."""
    seq = make_cache(False)
    seq.copy_batch(BATCH_OFF, BATCH_ON)
    real = kv_cache.plan_overlap

    def no_waits(*args, **kwargs):
        plan = real(*args, **kwargs)
        return OverlapPlan(plan.offload_chunks, [(None, [r for _, runs in plan.onboard_groups for r in runs])])

    monkeypatch.setattr(kv_cache, "plan_overlap", no_waits)
    ovl = make_cache(True)
    ovl.overlap_chunk_blocks = 5
    ovl.copy_batch(BATCH_OFF, BATCH_ON)
    a, b = _state(seq), _state(ovl)
    assert not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))


# ---- a whole run on the CPU ---------------------------------------------------------------------


def _events(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _run(tmp_path, name: str, extra: list[str], chunk_blocks: int | None = None):
    from kvscope_agent.lifecycle import CancelState
    from kvscope_agent.memory_plan import build
    from kvscope_agent.options import parse_options, resolve_device
    from kvscope_agent.run_loop import run_one
    from test_run import SHORT_POOL, SMALL

    out = str(tmp_path / name)
    opts, _, err = parse_options(SMALL + ["--users", "4", "--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"]
                                 + extra + ["--out", out], sweep=False)
    assert err is None, err
    resolve_device(opts)

    def build_small_chunks(*a):
        built = build(*a)
        if chunk_blocks is not None:
            built.cache.overlap_chunk_blocks = chunk_blocks  # tiny blocks: several chunks a batch
        return built

    code, built = run_one(opts, None, opts.users[0], opts.host_kv_bytes[0], out, CancelState(),
                          {"on": False, "source": "cupti", "reason": "device cpu"}, build_small_chunks)
    return code, built, os.path.join(out, "events.jsonl")


def _blocks_lines(log: str) -> list[dict]:
    # (seq and t differ: the "on" log has its own log line and more xfer lines)
    return [{k: v for k, v in e.items() if k not in ("t", "seq")} for e in _events(log) if e["type"] == "blocks"]


def test_cpu_run_with_copy_overlap_on_equals_off(tmp_path):
    code_off, off, log_off = _run(tmp_path, "off", ["--copy-overlap", "off"])
    code_on, on, log_on = _run(tmp_path, "on", ["--copy-overlap", "on"], chunk_blocks=3)
    assert code_off == 0 and code_on == 0
    assert check_log(log_off) == [] and check_log(log_on) == []
    start_on = next(e for e in _events(log_on) if e["type"] == "run.start")
    start_off = next(e for e in _events(log_off) if e["type"] == "run.start")
    assert start_on["config"]["copy_overlap"] is True and start_off["config"]["copy_overlap"] is False
    assert any(e["type"] == "log" and "copy overlap on" in e["msg"] for e in _events(log_on))
    # The run really pipelined batches, with waits on chunks past the first.
    st = on.cache.overlap_stats
    assert st["batches"] > 0 and st["chunks"] > st["batches"] and st["onboard_waits"] > 0, st
    assert off.cache.overlap_stats["batches"] == 0
    assert on.engine.last_outputs == off.engine.last_outputs
    assert _blocks_lines(log_on) == _blocks_lines(log_off)
    s_on, s_off = _events(log_on)[-1]["summary"], _events(log_off)[-1]["summary"]
    for key in ("bytes_h2d", "bytes_d2h", "blocks_onboarded", "blocks_offloaded"):
        assert s_on[key] == s_off[key], key
    xfers = [e for e in _events(log_on) if e["type"] == "xfer"]
    assert sum(e["bytes"] for e in xfers if e["dir"] == "h2d") == s_on["bytes_h2d"]


def test_cpu_run_comparison_can_fail(tmp_path, monkeypatch):
    """The whole-run comparison above can fail: with the plan's waits dropped, onboards overwrite
    victims' slots before their offload on the CPU, the host copies are wrong, and the tokens of
    later rounds (which read those blocks back) change."""
    real = kv_cache.plan_overlap

    def no_waits(*args, **kwargs):
        plan = real(*args, **kwargs)
        return OverlapPlan(plan.offload_chunks, [(None, [r for _, runs in plan.onboard_groups for r in runs])])

    _, off, _ = _run(tmp_path, "off", [])
    monkeypatch.setattr(kv_cache, "plan_overlap", no_waits)
    _, broken, _ = _run(tmp_path, "broken", ["--copy-overlap", "on"], chunk_blocks=3)
    assert broken.engine.last_outputs != off.engine.last_outputs


# ---- the CUDA issue order, on fake streams ------------------------------------------------------


class _FakeCuda:
    """Stands in for torch.cuda's streams and events so the CUDA branch of the cache can be run
    here: every stream op is logged in issue order, copies included (the cache's _copy_runs is
    replaced), and `simulate` then runs the streams with CUDA's rules (in order per stream; a
    wait on an event waits for the record issued last before the wait call, none if none) and
    the timing they allow under each priority order of the three streams (the first runs as far
    ahead as it may, the last as late): an onboard racing an offload, and a compute read racing
    an onboard, both get their hostile case."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.records = 0
        self.compute = self.Stream(self, "compute")
        self.current = self.compute

    class Stream:
        def __init__(self, fake: "_FakeCuda", name: str) -> None:
            self.fake, self.name = fake, name
            self.cuda_stream = 1000 + len(name)  # distinct per name below

        def wait_stream(self, other: "_FakeCuda.Stream") -> None:
            ev = _FakeCuda.Event(self.fake)
            ev.record(other)
            self.wait_event(ev)

        def wait_event(self, ev: "_FakeCuda.Event") -> None:
            self.fake.log.append(("wait", self.name, ev.rec))

    class Event:
        def __init__(self, fake: "_FakeCuda", enable_timing: bool = False) -> None:
            self.fake, self.rec = fake, None

        def record(self, stream: "_FakeCuda.Stream | None" = None) -> None:
            self.fake.records += 1
            self.rec = self.fake.records
            self.fake.log.append(("record", (stream or self.fake.current).name, self.rec))

    def install(self, monkeypatch, cache: PagedKVCache) -> None:
        import contextlib

        fake = self

        @contextlib.contextmanager
        def stream_ctx(s):
            prev, fake.current = fake.current, s
            try:
                yield
            finally:
                fake.current = prev

        monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: _FakeCuda.Event(fake, enable_timing))
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: fake.current)
        monkeypatch.setattr(torch.cuda, "stream", stream_ctx)
        cache.cuda = True
        cache.copy_stream = self.Stream(self, "copy")
        cache.copy_stream.cuda_stream = 7
        if cache.copy_overlap:
            cache.onboard_stream = self.Stream(self, "onboard")
            cache.onboard_stream.cuda_stream = 8
        monkeypatch.setattr(cache, "_copy_runs", lambda d, runs: fake.log.append(("copy", fake.current.name, d, list(runs))))

    def simulate(self, gpu: dict, host: dict) -> tuple[dict, dict, dict]:
        """Run the log under every priority order; returns (gpu, host, gpu as the compute
        stream's `read` op saw it) when all orders agree, else fails naming the orders."""
        import itertools

        results = {order: self._simulate(gpu, host, order)
                   for order in itertools.permutations(("onboard", "compute", "copy"))}
        first = next(iter(results.values()))
        differ = [order for order, r in results.items() if r != first]
        assert not differ, f"stream timing changes the result: {differ} vs {next(iter(results))}"
        return first

    def _simulate(self, gpu: dict, host: dict, priority: tuple[str, ...]) -> tuple[dict, dict, dict]:
        gpu, host = dict(gpu), dict(host)
        queues: dict[str, list[tuple]] = {}
        for op in self.log:
            queues.setdefault(op[1], []).append(op)
        done: set[int] = set()
        seen: dict = {}
        while any(queues.values()):
            for name in priority:
                q = queues.get(name)
                if not q:
                    continue
                op = q[0]
                if op[0] == "wait" and op[2] is not None and op[2] not in done:
                    continue
                q.pop(0)
                if op[0] == "record":
                    done.add(op[2])
                elif op[0] == "copy":
                    for g, h in expand(op[3]):
                        if op[2] == "d2h":
                            host[h] = gpu[g]
                        else:
                            gpu[g] = host[h]
                elif op[0] == "read":
                    seen = dict(gpu)
                break
            else:
                raise AssertionError(f"streams deadlock: {queues}")
        return gpu, host, seen


def _fake_cuda_batch(monkeypatch, overlap: bool, offloads, onboards, chunk_blocks: int = 3):
    cache = make_cache(overlap, gpu_blocks=64, host_blocks=128)
    cache.overlap_chunk_blocks = chunk_blocks
    fake = _FakeCuda()
    fake.install(monkeypatch, cache)
    cache.copy_batch(offloads, onboards)
    fake.log.append(("read", "compute"))  # the next prefill reads the onboarded blocks
    gpu = {g: f"gpu{g}" for g in range(64)}
    host = {h: f"host{h}" for h in range(128)}
    seq_gpu, seq_host = run_sequential(offloads, [(g, h) for h, g in onboards], gpu, host)
    return cache, fake, fake.simulate(gpu, host), (seq_gpu, seq_host)


@pytest.mark.parametrize("overlap", [False, True])
def test_cuda_issue_order_keeps_the_sequential_bytes_under_hostile_timing(monkeypatch, overlap):
    cache, fake, (gpu, host, seen), (seq_gpu, seq_host) = _fake_cuda_batch(monkeypatch, overlap, BATCH_OFF, BATCH_ON)
    assert gpu == seq_gpu and host == seq_host
    assert seen == seq_gpu  # compute waited for every copy of the batch
    streams = {op[1] for op in fake.log if op[0] == "copy"}
    assert streams == ({"copy", "onboard"} if overlap else {"copy"})
    recs = cache.pending
    # Chunks of 3: slots 4-6, 7-9, 10-12, 13-15; onboard groups wait for none (slot 30), 0 (host 2,
    # offloaded from slot 6), 1 (slot 9), 2 (10-12), 3 (13-15).
    assert [(r.dir, r.stream) for r in recs] == ([("d2h", 7)] + [("h2d", 8)] * 5 if overlap else [("d2h", 7), ("h2d", 7)])
    if overlap:
        waits = [op for op in fake.log if op[0] == "wait" and op[1] == "onboard"]
        assert len(waits) == 1 + 4  # the copy stream once (before the batch), then chunks 0..3


@pytest.mark.parametrize("seed", range(40))
def test_cuda_issue_order_on_random_batches(monkeypatch, seed):
    rng = random.Random(1000 + seed)
    offloads, onboards = scheduler_like_batch(rng, gpu_blocks=64, host_blocks=128)
    _, _, (gpu, host, seen), (seq_gpu, seq_host) = _fake_cuda_batch(
        monkeypatch, True, offloads, [(h, g) for g, h in onboards], chunk_blocks=rng.choice([1, 2, 5]))
    assert gpu == seq_gpu and host == seq_host and seen == seq_gpu


def test_fake_cuda_simulation_catches_a_dropped_dependency(monkeypatch):
    real = kv_cache.plan_overlap

    def no_waits(*args, **kwargs):
        plan = real(*args, **kwargs)
        return OverlapPlan(plan.offload_chunks, [(None, [r for _, runs in plan.onboard_groups for r in runs])])

    monkeypatch.setattr(kv_cache, "plan_overlap", no_waits)
    # The onboard stream racing ahead of the offloads changes the bytes.
    with pytest.raises(AssertionError, match="stream timing changes the result"):
        _fake_cuda_batch(monkeypatch, True, BATCH_OFF, BATCH_ON)


def test_onboard_into_a_slot_an_earlier_write_through_copy_still_reads(monkeypatch):
    """A write-through copy (order_compute=False: compute does not wait for it) still reads slot
    20 when a later batch onboards into slot 20 (its block was evicted, already on host): the
    onboard stream must wait for the copy stream's earlier work, not only for this batch's chunks."""
    cache = make_cache(True, gpu_blocks=64, host_blocks=128)
    cache.overlap_chunk_blocks = 3
    fake = _FakeCuda()
    fake.install(monkeypatch, cache)
    cache.copy_batch([(20, 50)], [], order_compute=False)
    onboards = BATCH_ON + [(60, 20)]
    cache.copy_batch(BATCH_OFF, onboards)
    fake.log.append(("read", "compute"))
    gpu = {g: f"gpu{g}" for g in range(64)}
    host = {h: f"host{h}" for h in range(128)}
    g1, h1 = run_sequential([(20, 50)], [], gpu, host)
    seq_gpu, seq_host = run_sequential(BATCH_OFF, [(g, h) for h, g in onboards], g1, h1)
    got_gpu, got_host, seen = fake.simulate(gpu, host)
    assert got_host[50] == "gpu20" and got_gpu[20] == "host60"
    assert (got_gpu, got_host, seen) == (seq_gpu, seq_host, seq_gpu)


@pytest.mark.parametrize("args, overlap", [
    ([], True),  # auto: lazy offload is the default policy
    (["--copy-overlap", "auto", "--offload-policy", "lazy"], True),
    (["--offload-policy", "lazy-keep"], False),
    (["--offload-policy", "write-through"], False),
    (["--copy-overlap", "off"], False),
    (["--copy-overlap", "on", "--offload-policy", "write-through"], True),
])
def test_copy_overlap_auto_follows_the_offload_policy(tmp_path, args, overlap):
    """--copy-overlap auto (the default) is on for lazy offload only, what the H200 sweep of
    2026-11-28 measured (engine/__init__.py); an explicit on/off wins; run.start says which."""
    from kvscope_agent.options import parse_options
    from test_run import SMALL

    opts, _, err = parse_options(SMALL + args + ["--out", str(tmp_path)], sweep=False)
    assert err is None, err
    assert opts.copy_overlap is overlap
    assert opts.config(opts.users[0], opts.host_kv_bytes[0])["copy_overlap"] is overlap
