"""vLLM KV events (decoded `KVEventBatch`es) -> docs/protocol.md `pool` and `blocks` lines.

Shapes, from vllm/distributed/kv_events.py in vllm-project/vllm:

- v0.9-era (commit b4e69e0af33f4698e157a262cc787fe61983cd3d): msgspec structs with
  `array_like=True, tag=True`, so a batch is `[ts, [event, ...]]` and an event is positional with
  its class name first: `["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
  lora_id]`, `["BlockRemoved", block_hashes]`, `["AllBlocksCleared"]`. No `medium`: GPU only.
- later array_like builds add `medium`, `lora_name`, `extra_keys`, `group_idx` to BlockStored,
  `medium`, `group_idx` to BlockRemoved, and `data_parallel_rank` to the batch (third element).
- newer builds (commit 0181ea3173e53eea8cf04a86891488e3dc89bb34) drop `array_like`: a batch is
  `{"ts", "events", "data_parallel_rank"}` and an event `{"type": "BlockStored", ...}` with
  `kv_cache_spec_kind` / `kv_cache_spec_sliding_window` too (`omit_defaults` leaves out fields at
  their default). `MEDIUM_GPU = "GPU"`; the offloading connector publishes `"CPU"` (and
  `"STORAGE"`) through `_MEDIUM_TO_EVENT_STR` in
  vllm/distributed/kv_transfer/kv_connector/v1/offloading/events.py.

vLLM has no move event: the GPU prefix cache (BlockPool) and the offloading connector each
announce store/remove per medium, and the connector re-announces a hash once per chunk it is part
of ("consumers are expected to deduplicate (reference-count) repeated store/remove announcements
of the same hash", offloading/events.py). So residency is rebuilt by reference-counting
hash x medium: a CPU copy that appears while the GPU copy stays is an offload with `keep_source`
(the GPU copy is not freed by the store), a GPU copy that appears while a CPU copy exists is an
onboard with `keep_source` (the CPU copy stays in the CPU LRU).

Tiers below the CPU (vLLM's tiering offload: a CPU primary tier and secondary tiers behind it, on a
filesystem, an object store or another instance): vllm/v1/kv_offload/base.py (commit
0105e232b7fa4e1b59ec87531f167c0443a5095d) names a tier's `Medium` ("CPU", "STORAGE") and
`Locality` ("LOCAL", "REMOTE", relative to the publishing instance), and an OffloadingEvent's
`ownership` (the secondary tier that generated it, None for the primary); offloading/events.py
(commit 030ea52effcb05071543c8c42b8f0145e94cee43) publishes them as BlockStored/BlockRemoved with
`medium` from `_MEDIUM_TO_EVENT_STR` ({CPU: MEDIUM_CPU, STORAGE: MEDIUM_STORAGE}), `locality` and
`ownership`. A STORAGE copy is the `disk` pool, a copy of REMOTE locality the `remote` pool
(protocol 2). The tiers demote a cold CPU block to storage (its STORAGE store while the CPU copy
stays, then the CPU removal) and promote it back ("secondary tier hit -> CPU promotion -> GPU"):
a copy that appears in a nearer pool while one in a farther pool stays is a `move` with
`keep_source`, from the nearest pool that holds it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .common import IdMap, PoolEmitter, Report, emit_pool_lines

ENGINE = "vllm"
MEDIUM_GPU = "GPU"
MEDIUM_CPU = "CPU"
MEDIUM_STORAGE = "STORAGE"
LOCALITY_REMOTE = "REMOTE"


def pool_of(medium: str, locality: Any) -> str | None:
    """The pool of an event's medium and locality (None: a medium KV Scope does not know)."""
    if isinstance(locality, str) and locality.upper() == LOCALITY_REMOTE:
        return "remote"
    return {MEDIUM_GPU: "gpu", MEDIUM_CPU: "host", MEDIUM_STORAGE: "disk"}.get(medium)

# Positional field order of the array_like structs (fields were only ever appended).
STORED_FIELDS = (
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
    "kv_cache_spec_kind",
    "kv_cache_spec_sliding_window",
    "locality",
    "ownership",
)
REMOVED_FIELDS = ("block_hashes", "medium", "group_idx", "locality", "ownership")


def decode_batch(batch: Any) -> tuple[float | None, list[Any], Any, str] | None:
    """(ts, events, data_parallel_rank, form) of one decoded KVEventBatch, or None."""
    if isinstance(batch, dict) and isinstance(batch.get("events"), list):
        ts = batch.get("ts")
        return (ts if isinstance(ts, (int, float)) else None), batch["events"], batch.get(
            "data_parallel_rank"
        ), "map"
    if isinstance(batch, list) and len(batch) >= 2 and isinstance(batch[1], list):
        ts = batch[0] if isinstance(batch[0], (int, float)) else None
        rank = batch[2] if len(batch) > 2 else None
        return ts, batch[1], rank, "array_like"
    return None


def decode_event(ev: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(ev, dict):
        typ = ev.get("type")
        return (typ if isinstance(typ, str) else None), ev
    if isinstance(ev, list) and ev and isinstance(ev[0], str):
        typ = ev[0]
        names = STORED_FIELDS if typ == "BlockStored" else REMOVED_FIELDS if typ == "BlockRemoved" else ()
        fields = dict(zip(names, ev[1:]))
        if len(ev) - 1 > len(names):
            fields["_extra_positional"] = ev[1 + len(names) :]
        return typ, fields
    return None, {}


def is_batch_list(doc: Any) -> bool:
    """A top-level JSON array that is one array_like batch ([ts, [events]]) rather than a list of
    batches."""
    return (
        isinstance(doc, list)
        and len(doc) >= 2
        and isinstance(doc[0], (int, float))
        and not isinstance(doc[0], bool)
        and isinstance(doc[1], list)
    )


class VllmTranslator:
    def __init__(
        self,
        writer: Any | None,
        report: Report,
        group_idx: int | None = None,
        dp_rank: int | None = None,
    ) -> None:
        self.writer = writer
        self.report = report
        self.group_idx = group_idx
        self.dp_rank = dp_rank
        self.ids = IdMap()
        self.emitter: PoolEmitter | None = None
        self.refs: dict[tuple[int, str], int] = {}
        self.deferred_gpu_evicts: "OrderedDict[int, None]" = OrderedDict()
        self.host_untracked: set[int] = set()
        self.below_untracked: set[tuple[int, str]] = set()
        self.cpu_ahead: set[int] = set()
        self.offloaded_early: set[int] = set()
        self.block_tokens = 0
        self.ts0: float | None = None
        self.last_t = 0
        self.forms: dict[str, int] = {}
        # most GPU blocks resident at once, not counting removals this batch still holds back
        self.peak_gpu = 0

    def set_pools(
        self,
        gpu_blocks: int | None,
        host_blocks: int | None,
        block_tokens: int,
        block_bytes: int,
        t: int | None,
        lower: dict[str, int | None] | None = None,
    ) -> None:
        """`lower`: pools below the host ("disk", "remote"), a protocol 2 log."""
        self.emitter = PoolEmitter(self.writer, self.report, gpu_blocks, host_blocks, lower)
        emit_pool_lines(self.writer, t, gpu_blocks, host_blocks, block_tokens, block_bytes,
                        {k: int(v or 0) for k, v in (lower or {}).items()} or None)

    def time_of(self, ts: float | None) -> int:
        """Run-clock ns for a batch `ts` (time.time() seconds in the publisher), kept
        non-decreasing; the first batch is t=0."""
        if ts is None:
            return self.last_t
        if self.ts0 is None:
            self.ts0 = ts
        t = max(self.last_t, int(round((ts - self.ts0) * 1e9)))
        self.last_t = t
        return t

    # -- input ----------------------------------------------------------------------------------
    def feed_batch(self, batch: Any, t: int | None = None) -> None:
        """One decoded KVEventBatch. `t` None: derived from the batch's `ts`."""
        decoded = decode_batch(batch)
        if decoded is None:
            self.report.warn("malformed_batch", f"a dump item that is not a KVEventBatch: {str(batch)[:80]}")
            return
        ts, events, rank, form = decoded
        self.forms[form] = self.forms.get(form, 0) + 1
        if t is None:
            t = self.time_of(ts)
        if self.dp_rank is None and rank is not None:
            self.dp_rank = rank
        if rank is not None and rank != self.dp_rank:
            self.report.warn(
                "other_dp_rank",
                f"a batch of data_parallel_rank {rank} is not shown (showing {self.dp_rank})",
                t,
            )
            return
        # Blocks this batch will announce on the CPU: when the GPU removal of one of them must be
        # shown before its CPU store (a GPU store needs the slot), it is shown as the offload.
        self.cpu_ahead = set()
        for ev in events:
            typ, f = decode_event(ev)
            if (typ == "BlockStored" and str(f.get("medium") or "").upper() == MEDIUM_CPU
                    and pool_of(MEDIUM_CPU, f.get("locality")) == "host"):
                for h in f.get("block_hashes") or []:
                    b = self.ids.known(h)
                    if b is not None:
                        self.cpu_ahead.add(b)
        for ev in events:
            self._event(ev, t)
        self._flush_deferred(t)
        self.cpu_ahead = set()

    def _event(self, ev: Any, t: int) -> None:
        typ, f = decode_event(ev)
        if typ is None:
            self.report.warn("malformed_event", f"an event that is not a tagged struct: {str(ev)[:80]}", t)
            return
        if typ == "AllBlocksCleared":
            self._clear(t)
            return
        if typ not in ("BlockStored", "BlockRemoved"):
            self.report.warn("unknown_event_type", f"event type {typ!r} is not known; skipped", t)
            return
        if "_extra_positional" in f:
            self.report.count("newer_positional_fields")
        medium = f.get("medium")
        if medium is None:
            self.report.count("event_without_medium")  # v0.9: the GPU prefix cache only
            medium = MEDIUM_GPU
        medium = str(medium).upper()
        pool = pool_of(medium, f.get("locality"))
        assert self.emitter is not None
        if pool is None or pool not in self.emitter.pools:
            self.report.warn("other_medium", f"medium {medium!r} is not a pool KV Scope shows", t)
            return
        if pool in ("disk", "remote"):
            self.report.count(f"{pool}_events")
        group = f.get("group_idx")
        if group is not None:
            if self.group_idx is None:
                self.group_idx = group
            if group != self.group_idx:
                self.report.warn(
                    "other_group",
                    f"an event of KV cache group {group} is not shown (showing {self.group_idx})",
                    t,
                )
                return
        hashes = f.get("block_hashes")
        if not isinstance(hashes, list):
            self.report.warn("malformed_event", f"a {typ} without block_hashes", t)
            return
        if typ == "BlockStored":
            size = f.get("block_size")
            if pool == "gpu" and isinstance(size, int):
                self.block_tokens = max(self.block_tokens, size)
            if pool != "gpu" and size == 0 and not f.get("token_ids"):
                # the connector's default placeholder payload (no tokens, no parent)
                self.report.count("placeholder_cpu_store" if pool == "host" else "placeholder_store")
            # The connector loads only the run of blocks found on the CPU right after the part
            # of the prompt the GPU already holds (its lookup stops at the first miss), and the
            # scheduler caches loaded and computed blocks of a request in one BlockStored. So a
            # CPU-resident block after the first block not on the CPU was recomputed.
            leading = [True]
            for h in hashes:
                self._stored(self.ids.get(h), pool, t, leading)
        else:
            for h in hashes:
                block = self.ids.known(h)
                if block is None:
                    self.report.warn(
                        "removed_unknown_block", f"a {medium} removal of a block never stored", t
                    )
                    continue
                self._removed(block, pool, t)

    # -- residency ------------------------------------------------------------------------------
    def _stored(self, block: int, pool: str, t: int, leading: list[bool]) -> None:
        em = self.emitter
        assert em is not None
        key = (block, pool)
        before = self.refs.get(key, 0)
        self.refs[key] = before + 1
        if before:
            self.report.count("repeated_store_announcement")
            if pool == "gpu":
                em.touch(block)
            return
        if pool in ("disk", "remote"):
            self._stored_below(block, pool, t)
            return
        if pool == "gpu":
            if block in self.deferred_gpu_evicts:
                # evicted and cached again within one batch: show both
                del self.deferred_gpu_evicts[block]
                if em.on_gpu(block):
                    em.evict("gpu", block, t)
            # make room with this batch's removals first, oldest first, as the engine did
            while len(em.gpu) >= em.gpu_capacity and self.deferred_gpu_evicts:
                self._flush_deferred(t, limit=1)
            below = [p for p in em.where(block) if p != "gpu"]
            if below and not em.on_gpu(block) and leading[0]:
                # loaded from the nearest pool that holds it (vLLM loads through the CPU)
                em.move(block, below[0], "gpu", t, keep_source=True)
            else:
                if below:
                    self.report.count("recomputed_though_on_host")
                leading[0] = False
                em.store(block, t)
            self.peak_gpu = max(self.peak_gpu, len(em.gpu) - len(self.deferred_gpu_evicts))
            return
        # CPU
        if block in self.offloaded_early:
            self.offloaded_early.discard(block)  # shown when its GPU slot was taken
            return
        if block in self.deferred_gpu_evicts:
            # the GPU removal and the CPU store of one block arrived in one batch (the scheduler
            # publishes its own events before the connector's): the block moved
            del self.deferred_gpu_evicts[block]
            if em.on_gpu(block):
                em.offload(block, t, keep_source=False)
                return
        if em.on_gpu(block):
            em.offload(block, t, keep_source=True)
        elif [p for p in em.where(block) if p not in ("gpu", "host")]:
            # a promotion: storage -> CPU, the stored copy stays
            src = [p for p in em.where(block) if p not in ("gpu", "host")][0]
            em.move(block, src, "host", t, keep_source=True)
        else:
            self.host_untracked.add(block)
            self.report.warn(
                "host_store_without_gpu_copy",
                f"block {block} reached the CPU with no GPU copy in view; not shown",
                t,
            )

    def _stored_below(self, block: int, pool: str, t: int) -> None:
        """A copy in a pool below the CPU: written from the CPU copy if there is one (the tiers
        below write from the CPU primary: a demotion), else from the GPU or another lower pool;
        the source keeps its copy."""
        em = self.emitter
        assert em is not None
        if block in self.deferred_gpu_evicts and em.on_gpu(block) and not em.on_host(block):
            del self.deferred_gpu_evicts[block]  # stored straight from a GPU slot that is now free
            em.move(block, "gpu", pool, t)
            return
        held = [p for p in em.where(block) if p != pool]
        src = "host" if "host" in held else (held[0] if held else None)
        if src is None:
            self.below_untracked.add((block, pool))
            self.report.warn(
                "store_without_copy_in_view",
                f"block {block} reached {pool} with no copy in view; not shown",
                t,
            )
            return
        em.move(block, src, pool, t, keep_source=True)

    def _removed(self, block: int, pool: str, t: int) -> None:
        em = self.emitter
        assert em is not None
        key = (block, pool)
        before = self.refs.get(key, 0)
        if before <= 0:
            self.report.warn("removed_not_resident", f"{pool} removal of block {block} not stored there", t)
            return
        self.refs[key] = before - 1
        if before > 1:
            self.report.count("repeated_remove_announcement")
            return
        del self.refs[key]
        if pool == "gpu":
            if em.on_gpu(block):
                self.deferred_gpu_evicts[block] = None
            else:
                self.report.warn("removed_not_resident", f"gpu removal of block {block} not on gpu", t)
            return
        if pool in ("disk", "remote"):
            if (block, pool) in self.below_untracked:
                self.below_untracked.discard((block, pool))
                self.report.count("below_remove_untracked")
            elif em.on(pool, block):
                em.evict(pool, block, t)
            else:
                self.report.warn("removed_not_resident", f"{pool} removal of block {block} not there", t)
            return
        if block in self.host_untracked:
            self.host_untracked.discard(block)
            self.report.count("host_remove_untracked")
        elif em.on_host(block):
            em.evict("host", block, t)
        elif em.cancel_pending(block):
            self.report.warn(
                "removed_waiting_offload",
                f"block {block} left the CPU before its offload found a host slot; not shown",
                t,
            )
        else:
            self.report.warn("removed_not_resident", f"cpu removal of block {block} not on host", t)

    def _flush_deferred(self, t: int, limit: int | None = None) -> None:
        em = self.emitter
        assert em is not None
        while self.deferred_gpu_evicts and (limit is None or limit > 0):
            if limit is not None:
                limit -= 1
            block, _ = self.deferred_gpu_evicts.popitem(last=False)
            if not em.on_gpu(block):
                continue
            if block in self.cpu_ahead and not em.on_host(block) and em.host_capacity > 0:
                em.offload(block, t, keep_source=False)
                if not em.on_host(block) and em.is_pending(block):
                    # no host slot yet: the GPU slot is needed now, so the block goes
                    em.evict("gpu", block, t)
                    continue
                self.offloaded_early.add(block)
                continue
            em.evict("gpu", block, t)

    def _clear(self, t: int) -> None:
        # BlockPool.reset_prefix_cache(): every cached GPU block is dropped.
        em = self.emitter
        assert em is not None
        self._flush_deferred(t)
        n = em.evict_all("gpu", t)
        for key in [k for k in self.refs if k[1] == "gpu"]:
            del self.refs[key]
        self.report.count("all_blocks_cleared")
        self.report.info(f"AllBlocksCleared: {n} gpu block(s) evicted", t)

    def finish(self, t: int | None) -> None:
        if self.emitter is not None:
            self._flush_deferred(t if t is not None else self.last_t)
            self.emitter.finish(t)
