"""TensorRT-LLM KV-cache events -> docs/protocol.md `pool` and `blocks` lines.

Input: the dicts `LLM.get_kv_cache_events()` returns (tensorrt_llm/llmapi/llm.py), which
`KVCacheEventSerializer.to_json_str` builds in tensorrt_llm/_utils.py (read at NVIDIA/TensorRT-LLM
commit ed53795b33fc139493f762a1c6c53f691cf52d38):

    {"event_id": N, "window_size": W, "attention_dp_rank": R (only when set), "data":
       {"type": "created", "num_blocks_per_cache_level": [gpu_blocks, host_blocks]}
     | {"type": "stored", "parent_hash": H | None, "blocks": [{"type": "stored_block",
          "block_hash": H, "tokens": [{"type": "unique_token", "token_id", "token_extra_id"}],
          "cache_level": 0 | 1, "priority": P, ("mm_keys": [...] in newer builds)}]}
     | {"type": "removed", "block_hashes": [H, ...]}
     | {"type": "updated", "block_hash": H,
          "cache_level": {"type": "event_diff", "new_value", "old_value"} | None,
          "priority": {...} | None}}

Builds before the windowed KV cache manager (executor.h at commit 0165bd7a) have no
`window_size`; the RPC executor path may hand back the same dicts as JSON strings
(`json.loads(e) if isinstance(e, str)` in the RPC proxy); with tensor parallelism the LLM API test
`test_llm_get_kv_cache_events_tp2` reads them as nested lists. All three are accepted.

Meaning (cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp, kPrimaryLevel=0, kSecondaryLevel=1):
`stored` = computed into the GPU pool; `updated` cache_level 0->1 = offload (getFreeBlock /
offloadBlock), 1->0 = onboard (onboardBlock); `removed` = left the radix tree, from whichever pool
it was in (consecutive removals of one window are batched into one event); priority-only
`updated` events (loadOrAllocateBlocks on reuse with a new retention priority) move nothing.

Cache levels beyond the host (KV cache manager v2, read at NVIDIA/TensorRT-LLM commit
0004396720054fd8e205cbf616f21f0b57c6b412): tensorrt_llm/_torch/pyexecutor/kv_cache/kv_cache_manager_v2.py
builds its tiers from KvCacheConfig as [GPU, host (host_cache_size > 0), disk (disk_cache_size > 0,
at disk_cache_path)] and sends `created` with one block count per tier
(`_get_event_num_blocks_per_cache_level`: quota // bytes per block); a cache level is an index into
that list ("cache tiers are sorted from warm to cold", tensorrt_llm/runtime/kv_cache_manager_v2/_config.py),
so with three tiers level 2 is the disk, and with two it is the host, or the disk when the host
tier was dropped (the manager rebuilds without it when pinning fails): `--cache-levels gpu,disk`
says so. tensorrt_llm/runtime/kv_cache_manager_v2/_event_manager.py (commit
1c39d3592b15598190eda0702f0f025b3f6779fc) sends a block's move between any two levels as one
`updated` cache_level diff (its logical level: the coldest of its pages), and its removals before
the next event of another kind. A diff between two levels is a `move` between their pools
(protocol 2); the dump's pools are then gpu, host and disk.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable

from .common import IdMap, PoolEmitter, Report, emit_pool_lines

ENGINE = "tensorrt_llm"
CACHE_LEVEL_GPU = 0  # kPrimaryLevel in kvCacheManager.h
CACHE_LEVEL_HOST = 1  # kSecondaryLevel
# Pool of each cache level when nothing says otherwise (CacheTier GPU_MEM, HOST_MEM, DISK).
DEFAULT_CACHE_LEVELS = ("gpu", "host", "disk")


def parse_cache_levels(text: str) -> tuple[str, ...]:
    """--cache-levels: the pool of each cache level, nearest first ("gpu,host,disk", "gpu,disk")."""
    levels = tuple(p.strip() for p in text.split(",") if p.strip())
    if not levels or levels[0] != "gpu" or len(set(levels)) != len(levels) or not set(levels) <= set(DEFAULT_CACHE_LEVELS):
        raise ValueError(f"{text!r}: the pools of the cache levels in order, gpu first, from {', '.join(DEFAULT_CACHE_LEVELS)}")
    return levels


def pool_sizes(created: list[int] | None, levels: tuple[str, ...]) -> dict[str, int]:
    """Pool name -> blocks, from a `created` event's num_blocks_per_cache_level."""
    return {levels[i]: int(n) for i, n in enumerate(created or []) if i < len(levels)}


def flatten_events(items: Iterable[Any], report: Report) -> list[dict[str, Any]]:
    """The dump's items as a flat list of event dicts, in order."""
    out: list[dict[str, Any]] = []

    def visit(item: Any, depth: int) -> None:
        if isinstance(item, dict):
            if item:
                out.append(item)
            else:
                # KVCacheEventSerializer.to_json_str(None) returns {}.
                report.count("empty_event")
            return
        if isinstance(item, str):
            try:
                visit(json.loads(item), depth + 1)
            except ValueError:
                report.warn("malformed_event", f"a string item that is not JSON: {item[:60]!r}")
            return
        if isinstance(item, list) and depth < 4:
            report.count("nested_event_list")
            for x in item:
                visit(x, depth + 1)
            return
        report.warn("malformed_event", f"an item of type {type(item).__name__} is not an event")

    for item in items:
        visit(item, 0)
    return out


def stream_key(ev: dict[str, Any]) -> tuple[Any, Any]:
    return (ev.get("window_size"), ev.get("attention_dp_rank"))


def event_type(ev: dict[str, Any]) -> str | None:
    data = ev.get("data")
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return data["type"]
    return None


def choose_stream(events: list[dict[str, Any]]) -> tuple[Any, Any] | None:
    """The (window_size, attention_dp_rank) to show: the first `created` event's, else the
    commonest. KV Scope shows one GPU pool and one host pool; a model with several attention
    window sizes has one pool pair per window (BlockManager keeps a WindowBlockManager each)."""
    for ev in events:
        if event_type(ev) == "created":
            return stream_key(ev)
    counts = Counter(stream_key(ev) for ev in events)
    return counts.most_common(1)[0][0] if counts else None


def scan(events: list[dict[str, Any]], key: tuple[Any, Any] | None) -> dict[str, Any]:
    """What a first pass over a whole dump knows: the pool sizes from `created` and the tokens in
    a full block (the longest `tokens` list of a stored block)."""
    created = None
    block_tokens = 0
    for ev in events:
        if stream_key(ev) != key:
            continue
        data = ev.get("data")
        typ = event_type(ev)
        if typ == "created" and created is None:
            levels = data.get("num_blocks_per_cache_level")
            if isinstance(levels, list) and levels and all(isinstance(x, int) for x in levels):
                created = levels
        elif typ == "stored":
            for b in data.get("blocks") or []:
                if isinstance(b, dict) and isinstance(b.get("tokens"), list):
                    block_tokens = max(block_tokens, len(b["tokens"]))
    return {"created": created, "block_tokens": block_tokens or None}


class TrtllmTranslator:
    """Feeds TensorRT-LLM event dicts (in order) into a PoolEmitter once the pools are known.

    Until `set_pools` runs (a live run waiting for `created`, event 0), events are kept and
    replayed afterwards, so nothing sent before the pools exist is lost."""

    def __init__(
        self,
        writer: Any | None,
        report: Report,
        stream: tuple[Any, Any] | None = None,
        levels: tuple[str, ...] = DEFAULT_CACHE_LEVELS,
    ) -> None:
        self.writer = writer
        self.report = report
        self.stream = stream
        self.levels = levels
        self.ids = IdMap()
        self.emitter: PoolEmitter | None = None
        self.waiting: list[tuple[dict[str, Any], int | None]] = []
        self.created: list[int] | None = None
        self.created_applied = False
        self.last_event_id: dict[Any, int] = {}
        self.seen: dict[tuple[Any, Any], int] = {}
        self.block_tokens = 0
        self.events_in = 0

    # -- pools ----------------------------------------------------------------------------------
    def set_pools(
        self,
        gpu_blocks: int | None,
        host_blocks: int | None,
        block_tokens: int,
        block_bytes: int,
        t: int | None,
        emit_lines: bool = True,
        lower: dict[str, int | None] | None = None,
    ) -> None:
        """`lower`: pools below the host (the disk level), a protocol 2 log."""
        self.emitter = PoolEmitter(self.writer, self.report, gpu_blocks, host_blocks, lower)
        if emit_lines:
            emit_pool_lines(self.writer, t, gpu_blocks, host_blocks, block_tokens, block_bytes,
                            {k: int(v or 0) for k, v in (lower or {}).items()} or None)
        waiting, self.waiting = self.waiting, []
        for ev, et in waiting:
            self._apply(ev, et)

    def start_pools_from_created(self, block_tokens: int, block_bytes: int, t: int | None) -> bool:
        """Live runs: once `created` has arrived, emit the pools and replay what waited."""
        if self.emitter is not None or not self.created:
            return False
        sizes = pool_sizes(self.created, self.levels)
        lower = {k: v for k, v in sizes.items() if k not in ("gpu", "host")}
        self.set_pools(sizes["gpu"], sizes.get("host", 0), block_tokens, block_bytes, t, lower=lower or None)
        return True

    def infer_pools_and_replay(self, block_tokens: int, block_bytes: int, t: int | None) -> None:
        """Live runs that never saw `created`: size the pools from the most blocks the waiting
        events hold at once (a lower bound, reported as such), then replay them."""
        if self.emitter is not None:
            return
        dry = TrtllmTranslator(None, Report(), self.stream)
        dry.set_pools(None, None, block_tokens, 0, t)
        for ev, et in self.waiting:
            dry._apply(ev, et)
        dry.finish(t)
        assert dry.emitter is not None
        gpu, host = max(dry.emitter.peak["gpu"], 1), dry.emitter.peak["host"]
        self.report.warn(
            "pool_size_inferred",
            f"no created event arrived: pools of {gpu} gpu and {host} host blocks are inferred "
            "from the most blocks resident at once",
            t,
        )
        self.set_pools(gpu, host, block_tokens, block_bytes, t)

    # -- input ----------------------------------------------------------------------------------
    def feed(self, ev: dict[str, Any], t: int | None) -> None:
        self.events_in += 1
        if not self._admit(ev, t):
            return
        if self.emitter is None:
            if event_type(ev) == "created" and self.created is None:
                self.created = ev["data"].get("num_blocks_per_cache_level")
                self.created_applied = True
            else:
                self.waiting.append((ev, t))
            return
        self._apply(ev, t)

    def _admit(self, ev: dict[str, Any], t: int | None) -> bool:
        """Order, duplicates and the stream filter; False means the event is not applied."""
        eid = ev.get("event_id")
        rank = ev.get("attention_dp_rank")
        if isinstance(eid, int) and not isinstance(eid, bool):
            # event ids come from one counter per KVCacheEventManager (one per attention DP rank,
            # shared by all windows), so gaps are checked before the window filter.
            key = (rank, eid)
            fingerprint = hash(json.dumps(ev, sort_keys=True, default=str))
            if key in self.seen:
                if self.seen[key] == fingerprint:
                    # the same event from another tensor-parallel rank's copy of the cache
                    self.report.count("duplicate_event")
                else:
                    self.report.warn(
                        "event_id_reused",
                        f"event_id {eid} came twice with different contents; the later one is "
                        "applied",
                        t,
                    )
                    self.seen[key] = fingerprint
                    return self._in_stream(ev, t)
                return False
            self.seen[key] = fingerprint
            last = self.last_event_id.get(rank)
            if last is not None:
                if eid > last + 1:
                    self.report.warn(
                        "event_id_gap",
                        f"{eid - last - 1} event(s) missing between event_id {last} and {eid} "
                        "(the engine drops events past event_buffer_max_size)",
                        t,
                        n=eid - last - 1,
                    )
                elif eid < last:
                    self.report.warn(
                        "event_out_of_order", f"event_id {eid} after {last}; applied in dump order", t
                    )
            self.last_event_id[rank] = max(eid, last if last is not None else eid)
        else:
            self.report.count("event_without_id")
        return self._in_stream(ev, t)

    def _in_stream(self, ev: dict[str, Any], t: int | None) -> bool:
        if self.stream is None:
            self.stream = stream_key(ev)
        if stream_key(ev) != self.stream:
            window, rank = stream_key(ev)
            self.report.warn(
                "other_window_or_rank",
                f"an event of window_size {window}, attention_dp_rank {rank} is not shown "
                f"(showing window_size {self.stream[0]}, attention_dp_rank {self.stream[1]})",
                t,
            )
            return False
        return True

    # -- meaning --------------------------------------------------------------------------------
    def _apply(self, ev: dict[str, Any], t: int | None) -> None:
        em = self.emitter
        assert em is not None
        data = ev.get("data")
        typ = event_type(ev)
        if typ is None:
            self.report.warn("malformed_event", f"event {ev.get('event_id')!r} has no data.type", t)
            return
        if typ == "created":
            levels = data.get("num_blocks_per_cache_level")
            if self.created is None:
                self.created = levels
            elif levels != self.created:
                self.report.warn(
                    "second_created",
                    f"another created event {levels} after {self.created}; pools keep the first",
                    t,
                )
            elif self.created_applied:
                self.report.count("created_repeated")
            self.created_applied = True
            return
        if typ == "stored":
            blocks = data.get("blocks")
            if not isinstance(blocks, list):
                self.report.warn("malformed_event", "a stored event without a blocks list", t)
                return
            for b in blocks:
                if not isinstance(b, dict) or "block_hash" not in b:
                    self.report.warn("malformed_event", "a stored block without block_hash", t)
                    continue
                level = b.get("cache_level", CACHE_LEVEL_GPU)
                if level not in (CACHE_LEVEL_GPU, None):
                    # (the v2 manager announces a block at its logical level, the coldest of its pages)
                    self.report.warn(
                        "stored_off_gpu",
                        f"a block stored at cache_level {level}; only GPU stores are shown",
                        t,
                    )
                    continue
                if isinstance(b.get("tokens"), list):
                    self.block_tokens = max(self.block_tokens, len(b["tokens"]))
                em.store(self.ids.get(b["block_hash"]), t)
            return
        if typ == "removed":
            hashes = data.get("block_hashes")
            if not isinstance(hashes, list):
                self.report.warn("malformed_event", "a removed event without block_hashes", t)
                return
            if len(hashes) > 1:
                self.report.count("batched_removal_events")
            for h in hashes:
                self._remove(h, t)
            return
        if typ == "updated":
            self._update(data, t)
            return
        self.report.warn("unknown_event_type", f"event type {typ!r} is not known; skipped", t)

    def _remove(self, h: Any, t: int | None) -> None:
        em = self.emitter
        assert em is not None
        block = self.ids.known(h)
        if block is None:
            # e.g. a dump that starts after the block was stored
            self.report.warn("removed_unknown_block", "removal of a block never stored in the dump", t)
            return
        where = em.where(block)
        if "host" in where:
            em.evict("host", block, t)
        elif "gpu" in where:
            # also a block whose offload waits for a host slot: it has not left the GPU yet
            em.evict("gpu", block, t)
        elif where:
            em.evict(where[0], block, t)
        else:
            self.report.warn("removed_not_resident", f"block {block} removed while not resident", t)

    def _update(self, data: dict[str, Any], t: int | None) -> None:
        em = self.emitter
        assert em is not None
        diff = data.get("cache_level")
        if diff is None:
            if data.get("priority") is None:
                self.report.warn("empty_update", "an updated event with no cache_level and no priority", t)
            else:
                # KvCacheRetentionConfig priority changed on reuse: nothing moved. The reuse
                # itself keeps the block young in the LRU order used for inferred evictions.
                self.report.count("priority_only_update")
                block = self.ids.known(data.get("block_hash"))
                if block is not None:
                    em.touch(block)
            return
        if not isinstance(diff, dict):
            self.report.warn("malformed_event", "cache_level of an updated event is not an event_diff", t)
            return
        old, new = diff.get("old_value"), diff.get("new_value")
        block = self.ids.known(data.get("block_hash"))
        if block is None:
            self.report.warn(
                "update_of_unknown_block", f"cache_level {old}->{new} of a block never stored", t
            )
            return
        if old == new:
            self.report.count("update_without_change")
        elif (self._pool_of(old), self._pool_of(new)) == ("gpu", "host"):
            if em.on_gpu(block) and not em.is_pending(block):
                em.offload(block, t)
            else:
                self.report.warn("offload_not_on_gpu", f"offload of block {block} not on the gpu", t)
        elif (self._pool_of(old), self._pool_of(new)) == ("host", "gpu"):
            if em.on_host(block):
                em.onboard(block, t)
            elif em.is_pending(block):
                # offloaded and onboarded while the host pool was full in our replay: the block
                # never left the GPU as far as the log can show
                em.cancel_pending(block)
                self.report.warn(
                    "onboard_of_waiting_offload",
                    f"block {block} came back before its offload found a host slot; neither move "
                    "is shown",
                    t,
                )
            else:
                self.report.warn("onboard_not_on_host", f"onboard of block {block} not on host", t)
        elif self._pool_of(old) is not None and self._pool_of(new) is not None:
            src, dst = self._pool_of(old), self._pool_of(new)
            assert src is not None and dst is not None
            if em.on(src, block):
                em.move(block, src, dst, t)
            else:
                self.report.warn("move_not_in_source", f"cache_level {old}->{new} of block {block} not in {src}", t)
        else:
            self.report.warn(
                "unknown_cache_level_change",
                f"cache_level {old}->{new} (a tier KV Scope does not show); skipped",
                t,
            )

    def _pool_of(self, level: Any) -> str | None:
        """The pool of a cache level the log shows (one with a pool line), else None."""
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level < len(self.levels):
            return None
        name = self.levels[level]
        assert self.emitter is not None
        return name if name in self.emitter.pools else None

    def finish(self, t: int | None) -> None:
        if self.emitter is not None:
            self.emitter.finish(t)
