"""Block manager and scheduler of the built-in engine.

Block manager: content-addressed block ids (a block's id hashes its parent's id and its own
tokens, as vLLM's and TensorRT-LLM's prefix caches do), so the same token prefix gives the same id
and each round reuses the blocks of the previous rounds. Only full blocks get an id and can be
shared; a request's partial last block is private and freed when the request ends. Blocks of
finished requests stay cached (reference count 0) in LRU order; when a request needs slots and the
GPU pool has no free ones, the least recently used cached blocks are offloaded to the host pool
(TensorRT-LLM's secondary-pool offload on eviction), or dropped when there is no host pool (the
recompute baseline). A full host pool evicts its least recently used blocks. Blocks of a finished
request enter the LRU tail-first, so a prefix outlives its suffix (vLLM frees blocks in reverse).

Scheduler: requests are admitted in queue order (round-robin over users) while their blocks fit:
a request reserves every block it will fill (prompt + output) at admission, so a running request
never needs preemption. Each step batches the decode tokens of running requests with prefill
chunks (at most `prefill_chunk_tokens` prompt tokens a step: chunked prefill, so 16,000-token
contexts fit beside large weights).

Every block move goes through one `BlockLedger` (it raises if the engine would break a
block rule of docs/protocol.md) and one `blocks` event.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import struct
import time
import traceback
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..emit import EventWriter
from ..ledger import BlockLedger
from . import KEEPS_HOST_COPIES, OFFLOAD_POLICIES, decode_before_copies_from_env
from .alloc_stats import alloc_counters, alloc_delta
from .disk_tier import IO_CHUNK_BYTES

if TYPE_CHECKING:  # torch is imported where tensors are made, so the what-if simulator
    import torch  # (whatif/) runs this scheduler on a machine without torch

    from .kv_cache import PagedKVCache
    from .model import LlamaModel

_ID_MASK = (1 << 53) - 1  # ids stay exact as JSON numbers in JavaScript

# "lazy": a block is copied to the host pool when it is evicted from the GPU pool (TensorRT-LLM's
# secondary-pool offload): the copy sits in the TTFT of the request that needs the slot.
# "write-through": a block is copied to the host as soon as it is computed (keep_source: it stays
# on the GPU too), overlapping the copy with compute, as SGLang HiCache's write_through and vLLM's
# CPU offloading connector do; evicting it later costs no copy, and an onboarded block keeps its
# host copy, so only onboarding stays on the critical path. It starts once the GPU pool is under
# pressure (a request had to wait for space, or blocks had to be evicted): a pool that holds the
# whole workload copies nothing (docs/protocol.md, rule `ample_pool_moved`: an ample GPU pool offloads nothing).


def block_id(parent: int | None, tokens: Sequence[int], salt: bytes = b"") -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(salt)
    h.update(struct.pack("<q", -1 if parent is None else parent))
    h.update(struct.pack(f"<{len(tokens)}q", *tokens))
    return int.from_bytes(h.digest(), "little") & _ID_MASK


@dataclass(eq=False)  # identity: requests are tracked in lists and sets
class Request:
    user: int
    round: int
    prompt: list[int]
    output_tokens: int
    t_queued: int = 0
    t_scheduled: int = 0
    t_first: int = 0
    t_done: int = 0
    table: list[int] = field(default_factory=list)  # GPU slot of each block
    ids: list[int | None] = field(default_factory=list)  # registered id per full block
    computed: int = 0  # positions < computed have K/V in the pool
    matched_blocks: int = 0
    reused_gpu_blocks: int = 0
    reused_host_blocks: int = 0
    promoted_blocks: int = 0  # matched blocks read from the disk tier (disk -> host -> GPU)
    # Where its TTFT went (Engine._ttft_parts): run-clock ends of its admission's last disk read,
    # last host->GPU copy and last copy of any kind (0: none).
    t_disk_end: int = 0
    t_h2d_end: int = 0
    t_copies_end: int = 0
    gen: list[int] = field(default_factory=list)  # sampled tokens known on the CPU
    pending: list[torch.Tensor] = field(default_factory=list)  # sampled, still on the device
    n_gen: int = 0
    last_tok: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    hashes: list[int] = field(default_factory=list)  # ids of the prompt's full blocks
    ids_chain: list[int] = field(default_factory=list)  # ids of blocks 0..k-1 (parents)
    hashes_registered: int = 0  # blocks 0..hashes_registered-1 have been given ids

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.prompt)

    @property
    def kv_tokens(self) -> int:
        # The last sampled token is never fed back, so its K/V is never computed.
        return len(self.prompt) + self.output_tokens - 1

    def tokens(self) -> list[int]:
        return self.prompt + self.gen


class CapacityError(RuntimeError):
    pass


class Engine:
    """Pools + scheduler over one model. Reused across the runs of a sweep (`reset`)."""

    def __init__(
        self,
        model: LlamaModel,
        cache: PagedKVCache,
        prefill_chunk_tokens: int = 2048,
        max_batch: int = 16,
        block_reuse: bool = True,
        offload_policy: str = "lazy",
        piece: Callable[..., Any] | None = None,
    ) -> None:
        if offload_policy not in OFFLOAD_POLICIES:
            raise ValueError(f"offload_policy must be one of {OFFLOAD_POLICIES}")
        self.model = model
        self.offload_policy = offload_policy
        self.keep_host_copies = offload_policy in KEEPS_HOST_COPIES
        self.cache = cache
        self.bt = cache.block_tokens
        self.prefill_chunk_tokens = int(prefill_chunk_tokens)
        self.max_batch = int(max_batch)
        self.block_reuse = block_reuse
        self.writer: EventWriter | None = None
        self.cancel_check: Callable[[], None] = lambda: None
        # `req first_token` carries `ttft_parts` (docs/protocol.md; the run sets it, the what-if
        # simulator leaves it off); `tiers`: the log is protocol 2 (a disk tier is configured:
        # moves to and from it are `move` lines, xfer lines name their pools).
        self.ttft_parts = False
        self.tiers = False
        if piece is None:
            from .model import Piece as piece
        # What a step's share of one request is built as (model.Piece; the what-if simulator
        # passes its own, torch-free, with the same fields).
        self.piece = piece
        # The host clock of step statistics (the simulator's is its simulated clock).
        self.perf_ns: Callable[[], int] = time.perf_counter_ns
        # Admissions that copy, at most, per step (None: no limit). One since 2026-11-28c (see
        # run_requests); the simulator sets None to replay runs recorded before.
        self.copying_admissions_per_step: int | None = 1
        # Slot order (see _take_slots): "ascending" (default) or "lru", the order before
        # 2026-11-28d, kept so a GPU session can A/B the two on one card (NEXT.md).
        self.slot_order = os.environ.get("KVSCOPE_SLOT_ORDER", "ascending")
        if self.slot_order not in ("ascending", "lru"):
            raise ValueError(f"KVSCOPE_SLOT_ORDER must be ascending or lru, not {self.slot_order!r}")
        # A decode step of the running requests before an admission's copies are queued (see
        # run_requests); KVSCOPE_DECODE_BEFORE_COPIES=0 mixes them into the admitted request's
        # prefill step as before 2026-11-28e, for a same-card A/B.
        self.decode_before_copies = decode_before_copies_from_env()
        # Diagnostics for bench/ (the offload sweep's write-through stall), off unless asked: one JSON line
        # per step with where its host time went (admission, issuing copies, launching, syncing)
        # and what the allocators did in it (as a round line's `alloc`), to KVSCOPE_STEP_TRACE (a
        # path). Not a protocol event: the app never sees it.
        path = os.environ.get("KVSCOPE_STEP_TRACE")
        self._step_trace = open(path, "a", buffering=1 << 16) if path else None
        self._step_rec: dict[str, Any] | None = None
        if self._step_trace is not None:
            model.layer_times = []  # eager steps: host ms at each layer's start ("layer_ms")
            import torch

            if os.environ.get("KVSCOPE_SYNC_DEBUG") == "1" and torch.cuda.is_available():
                # Every op that synchronises with the device is named in its step's record
                # ("syncs": the engine's frames above it), the engine's own token syncs included:
                # what a blocked launch waited in, if it was a synchronising call.
                warnings.filterwarnings("always", message=".*synchroniz")
                self._show_warning = warnings.showwarning
                warnings.showwarning = self._note_sync
                torch.cuda.set_sync_debug_mode("warn")
        self.reset(None)

    def _note_sync(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                   line: Any = None) -> None:
        """warnings.showwarning under KVSCOPE_SYNC_DEBUG: a sync warning goes into the step's
        record; any other warning is shown as before."""
        if "synchroniz" not in str(message):
            self._show_warning(message, category, filename, lineno, file, line)
            return
        frames = [f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in traceback.extract_stack()[:-1]
                  if "kvscope_agent" in f.filename and f.name != "_note_sync"]
        if self._step_rec is not None:
            self._step_rec.setdefault("syncs", []).append(" < ".join(reversed(frames[-4:])))

    # ---- state ---------------------------------------------------------------------------

    def reset(self, writer: EventWriter | None, run_salt: bytes = b"") -> None:
        self.writer = writer
        self.cache.reset()
        if self._step_trace is not None and writer is not None:
            self._step_trace.write(json.dumps({"run": writer.path}) + "\n")
        self.gpu_free = list(range(self.cache.num_blocks))
        heapq.heapify(self.gpu_free)
        self.gpu_map: dict[int, int] = {}  # id -> slot
        self.refcount: dict[int, int] = {}
        self.gpu_lru: OrderedDict[int, None] = OrderedDict()  # cached, refcount 0, oldest first
        self.host_free = list(range(self.cache.host_blocks))
        heapq.heapify(self.host_free)
        self.host_map: dict[int, int] = {}  # id -> host slot
        self.host_lru: OrderedDict[int, None] = OrderedDict()
        self.owner: dict[int, int] = {}  # id -> user whose conversation it belongs to
        # The disk tier (cache.disk): its slots, which block is where, LRU order. A block promoted
        # from it keeps its copy there, so evicting it from the host pool later costs no write.
        disk_blocks = getattr(self.cache, "disk_blocks", 0)
        self.disk_free = list(range(disk_blocks))
        heapq.heapify(self.disk_free)
        self.disk_map: dict[int, int] = {}  # id -> disk slot
        self.disk_lru: OrderedDict[int, None] = OrderedDict()
        self.disk_spill_off: str | None = None  # why spilling stopped (a full disk), if it did
        self._spills: list[tuple[int, int, int]] = []  # (id, host slot, disk slot) decided, not yet announced
        self._spill_writes: list[tuple[int, int, int, int, int]] = []  # announced, to write: + (user, round)
        self._disk_evicted: list[int] = []  # disk LRU victims of those spills
        self._deferred_disk_lru: list[int] = []
        self._promotions: list[tuple[Request, list[tuple[int, int, int, int]], int, int]] = []
        self._offloading: set[int] = set()  # ids offloaded in the batch not yet issued
        self._promote_note = False
        self.ledger = BlockLedger(self.cache.num_blocks, self.cache.host_blocks, disk_blocks)
        self.run_salt = run_salt
        self.stats = {
            "blocks_d2h": 0,  # blocks copied by the engine (the ledger counts the moves)
            "blocks_h2d": 0,
            "blocks_evicted": 0,
            "blocks_stored": 0,
            "blocks_hit": 0,
            "bytes_h2d": 0,
            "bytes_d2h": 0,
            "copy_ns_h2d": 0,
            "copy_ns_d2h": 0,
            "bytes_f2h": 0,  # disk tier reads (promotions)
            "bytes_h2f": 0,  # disk tier writes (spills)
            "copy_ns_f2h": 0,
            "copy_ns_h2f": 0,
            "blocks_f2h": 0,
            "blocks_h2f": 0,
        }
        self._copy_offloads: list[tuple[int, int]] = []
        self._copy_onboards: list[tuple[int, int]] = []
        self._deferred_host_free: list[int] = []
        self._deferred_host_lru: list[int] = []
        self._slots_reused = False
        self.pressure = False
        self._releases = 0

    def _emit(self, type: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.emit(type, **fields)

    def _blocks(self, op: str, ids: list[int], user: int, round: int, pool: str | None = None,
                keep_source: bool = False, src: str | None = None, dst: str | None = None) -> None:
        """Apply a move to the ledger (raises on a rule break) and emit it, one line per owner
        user (the `user` of a blocks line is the user whose conversation the blocks hold).
        `move` (protocol 2) goes from pool `src` to pool `dst`."""
        if not ids:
            return
        if op == "move":
            assert src is not None and dst is not None
            self.ledger.move(src, dst, ids, keep_source=keep_source)
        elif op == "store":
            self.ledger.store(ids)
        elif op == "offload":
            self.ledger.offload(ids, keep_source=keep_source)
        elif op == "onboard":
            self.ledger.onboard(ids, keep_source=keep_source)
        elif op == "evict":
            self.ledger.evict(pool or "gpu", ids)
        else:
            self.ledger.hit(ids)
        by_owner: dict[int, list[int]] = {}
        for i in ids:
            by_owner.setdefault(self.owner.get(i, user), []).append(i)
        for u, group in by_owner.items():
            fields: dict[str, Any] = {"op": op, "ids": group, "user": u, "round": round}
            if op == "move":
                fields["from"], fields["to"] = src, dst
            if pool is not None:
                fields["pool"] = pool
            if keep_source:
                fields["keep_source"] = True
            self._emit("blocks", **fields)

    # ---- admission -----------------------------------------------------------------------

    def blocks_needed(self, prompt_tokens: int, output_tokens: int) -> int:
        return -(-(prompt_tokens + output_tokens - 1) // self.bt)

    def _prompt_hashes(self, req: Request) -> list[int]:
        out: list[int] = []
        parent: int | None = None
        n_full = len(req.prompt) // self.bt
        for b in range(n_full):
            parent = block_id(parent, req.prompt[b * self.bt : (b + 1) * self.bt], self.run_salt)
            out.append(parent)
        return out

    def try_admit(self, req: Request) -> bool:
        bt = self.bt
        n_total = self.blocks_needed(len(req.prompt), req.output_tokens)
        if n_total > self.cache.num_blocks:
            raise CapacityError(
                f"request of user {req.user} round {req.round} needs {n_total} blocks; the gpu pool has {self.cache.num_blocks}"
            )
        if self.block_reuse and not req.hashes:
            # Once per request: a request that does not fit yet is retried every step.
            req.hashes = self._prompt_hashes(req)
        # At least one prompt token is computed, to produce the first token's logits (vLLM too).
        max_match = (len(req.prompt) - 1) // bt
        matched: list[tuple[int, str]] = []
        for h in req.hashes[:max_match]:
            if h in self.gpu_map:
                matched.append((h, "gpu"))
            elif h in self.host_map:
                matched.append((h, "host"))
            elif h in self.disk_map:
                matched.append((h, "disk"))
            else:
                break
        if any(where == "disk" for _, where in matched):
            matched = self._promotable(matched, n_total)
        hits = [h for h, where in matched if where == "gpu"]
        cached_hits = sum(1 for h in hits if h in self.gpu_lru)
        need = n_total - len(hits)
        if need > len(self.gpu_free) + len(self.gpu_lru) - cached_hits:
            self.pressure = True
            return False

        # Commit: pin what is reused, then find slots (free first, then LRU victims).
        self.cache.owner = req  # the copies and disk I/O of this admission are its own
        for h in hits:
            self.refcount[h] = self.refcount.get(h, 0) + 1
            self.gpu_lru.pop(h, None)
        self._blocks("hit", hits, req.user, req.round)
        onboard_ids = [h for h, where in matched if where == "host"]
        for h in onboard_ids:
            self.host_lru.pop(h, None)  # pinned until its copy is issued
        promote_ids = [h for h, where in matched if where == "disk"]
        for h in promote_ids:
            self.disk_lru.pop(h, None)  # pinned: no spill of this admission may evict it
        slots = self._take_slots(need, req)
        staging = self._staging_slots(len(promote_ids), req) if promote_ids else []
        promoting: list[tuple[int, int, int, int]] = []  # (id, disk slot, host slot, gpu slot)
        onboard_pairs: list[tuple[int, int]] = []
        table: list[int] = []
        ids: list[int | None] = []
        si = 0
        for h, where in matched:
            if where == "gpu":
                table.append(self.gpu_map[h])
            elif where == "host":
                slot = slots[si]
                si += 1
                if self.keep_host_copies:
                    hslot = self.host_map[h]  # the host copy stays (keep_source)
                    self._deferred_host_lru.append(h)
                else:
                    hslot = self.host_map.pop(h)
                    self._deferred_host_free.append(hslot)
                onboard_pairs.append((hslot, slot))
                self.gpu_map[h] = slot
                self.refcount[h] = 1
                table.append(slot)
            else:
                slot = slots[si]
                si += 1
                promoting.append((h, self.disk_map[h], -1, slot))
                self.gpu_map[h] = slot
                self.refcount[h] = 1
                table.append(slot)
            ids.append(h)
        self._blocks("onboard", onboard_ids, req.user, req.round,
                     keep_source=self.keep_host_copies)
        self._copy_onboards.extend(onboard_pairs)
        if promoting:
            self._plan_promotion(req, promoting, staging)
        table.extend(slots[si:])
        ids.extend([None] * (n_total - len(ids)))
        req.table, req.ids = table, ids
        req.matched_blocks = len(matched)
        req.reused_gpu_blocks = len(hits)
        req.reused_host_blocks = len(onboard_ids)
        req.promoted_blocks = len(promote_ids)
        req.computed = len(matched) * bt
        req.ids_chain = [h for h, _ in matched]
        req.hashes_registered = len(matched)
        req.rows = self.cache.request_rows(table)
        return True

    def _take_slots(self, n: int, req: Request) -> list[int]:
        slots: list[int] = []
        while self.gpu_free and len(slots) < n:
            slots.append(heapq.heappop(self.gpu_free))
        victims: list[int] = []
        while len(slots) + len(victims) < n:
            vid, _ = self.gpu_lru.popitem(last=False)
            victims.append(vid)
        if not victims:
            return slots
        # Which blocks leave is the LRU's choice; which slot goes where is free to pick. Victims
        # in slot order get host slots in that order, and the request's blocks get the slots in
        # ascending order, so a conversation's blocks sit in ascending runs on both sides and a
        # later offload or onboard of them is a few long copies. In LRU order (a finished
        # request's blocks enter it tail-first) the runs averaged 1.6 blocks: the H100 runs of
        # 2026-11-28 issued ~500 copies a 2.1 GB admission, each one a CUPTI record.
        if self.slot_order == "ascending":
            victims.sort(key=self.gpu_map.__getitem__)
        self._slots_reused = True
        self.pressure = True
        offload: list[int] = []
        dropped: list[int] = []
        host_evicted: list[int] = []
        already_on_host: list[int] = []
        for vid in victims:
            slot = self.gpu_map.pop(vid)
            self.refcount.pop(vid, None)
            slots.append(slot)
            if vid in self.host_map:
                already_on_host.append(vid)  # its host copy was kept: dropping the GPU copy is free
                continue
            hslot = self._host_slot(host_evicted) if self.cache.host is not None and self.cache.host_blocks > 0 else None
            if hslot is None:
                dropped.append(vid)
            else:
                self.host_map[vid] = hslot
                self._copy_offloads.append((slot, hslot))
                offload.append(vid)
        # Into the host LRU only now: a small host pool must not evict a block of this same
        # batch before its offload is even announced (it drops later victims instead).
        for vid in offload:
            self.host_lru[vid] = None
        self._offloading.update(offload)
        self._flush_spills(req.user, req.round)
        self._blocks("evict", host_evicted, req.user, req.round, pool="host")
        self._blocks("offload", offload, req.user, req.round)
        self._blocks("evict", dropped + already_on_host, req.user, req.round, pool="gpu")
        self._forget_gone(host_evicted + dropped)
        if self.slot_order == "ascending":
            slots.sort()
        return slots

    def _host_slot(self, host_evicted: list[int]) -> int | None:
        """A host slot: a free one, else the least recently used block's, which spills to the disk
        tier (written by _write_spills before anything reuses the slot) or, with no disk tier, a
        full one, or a copy there already, is dropped from the host pool (`host_evicted`)."""
        if self.host_free:
            return heapq.heappop(self.host_free)
        if self.host_lru and self.cache.disk is not None:
            # The CPU will write this slot (a spill reads it, a promotion stages into it): not one
            # whose offload this batch has yet to copy.
            hid = next((h for h in self.host_lru if h not in self._offloading), None)
            if hid is None:
                return None
            del self.host_lru[hid]
            hslot = self.host_map.pop(hid)
            if hid not in self.disk_map and self.disk_spill_off is None:
                dslot = self._disk_slot()
                if dslot is not None:
                    self._spills.append((hid, hslot, dslot))
                    return hslot
            host_evicted.append(hid)
            return hslot
        if self.host_lru:
            hid, _ = self.host_lru.popitem(last=False)
            host_evicted.append(hid)
            return self.host_map.pop(hid)
        return None

    def _disk_slot(self) -> int | None:
        if self.disk_free:
            return heapq.heappop(self.disk_free)
        if self.disk_lru:
            vid, _ = self.disk_lru.popitem(last=False)
            self._disk_evicted.append(vid)
            return self.disk_map.pop(vid)
        return None

    def _forget_gone(self, ids: Sequence[int]) -> None:
        """Forget whose conversation a block held once it is in no pool."""
        for i in ids:
            if i not in self.gpu_map and i not in self.host_map and i not in self.disk_map:
                self.owner.pop(i, None)

    def _flush_spills(self, user: int, round: int) -> None:
        """Announce the spills decided since the last call: disk LRU victims leave the disk and the
        spilled blocks move host -> disk (their writes follow in _write_spills, before anything
        reuses their host slots, as every move's copy follows its line)."""
        evicted, self._disk_evicted = self._disk_evicted, []
        spills, self._spills = self._spills, []
        self._blocks("evict", evicted, user, round, pool="disk")
        self._forget_gone(evicted)
        for bid, hslot, dslot in spills:
            self.disk_map[bid] = dslot
            self._deferred_disk_lru.append(bid)
            self._spill_writes.append((bid, hslot, dslot, user, round))
        self._blocks("move", [b for b, _, _ in spills], user, round, src="host", dst="disk")

    def _write_spills(self) -> None:
        """Write the announced spills (host slots -> disk slots, in long runs). A write that fails (a
        full disk: ENOSPC, or EFBIG past a file-size limit) loses its blocks from the disk again
        (evicted there, recomputed when needed), and spilling stops for the rest of the run with the
        reason logged; the blocks already on disk stay there and are still promoted."""
        writes, self._spill_writes = self._spill_writes, []
        if not writes:
            return
        # A spilled slot may still be the target of an offload in flight (or the source of an onboard).
        self.cache.sync_copies()
        _, failed, err = self.cache.disk_write([(h, d) for _, h, d, _, _ in writes])
        if err is None:
            return
        failed_slots = {d for _, d in failed}
        lost: dict[tuple[int, int], list[int]] = {}
        for bid, _, dslot, user, round in writes:
            if dslot in failed_slots:
                del self.disk_map[bid]
                heapq.heappush(self.disk_free, dslot)
                lost.setdefault((user, round), []).append(bid)
        for (user, round), ids in lost.items():
            self._blocks("evict", ids, user, round, pool="disk")
            self._forget_gone(ids)
        self.disk_spill_off = err.message
        self._emit("log", level="warn", msg=(
            f"disk tier: spilling stopped: {err.message}; the {len(failed)} block(s) it was writing are lost from "
            f"the disk (recomputed when needed), and from now on the host pool's evictions are dropped; the "
            f"{len(self.disk_map)} block(s) on disk stay and are still promoted"))

    def _promotable(self, matched: list[tuple[int, str]], n_total: int) -> list[tuple[int, str]]:
        """`matched` cut before the first disk block that cannot be promoted. A promotion stages
        its blocks in host slots (disk -> host -> GPU): under lazy offload through a ring of slots
        reused as each chunk's copy to the GPU ends, so one free or evictable slot is enough;
        where the host keeps an onboarded block's copy (lazy-keep, write-through) each promoted
        block keeps its slot. The slots left are counted as _take_slots and _host_slot will leave
        them: the free ones and the host LRU's, less those the GPU's victims will take."""
        hits = {h for h, where in matched if where == "gpu"}
        pinned = {h for h, where in matched if where == "host"}
        need = n_total - len(hits)
        n_victims = max(0, need - len(self.gpu_free))
        victims_to_host = 0
        if n_victims and self.cache.host is not None and self.cache.host_blocks > 0:
            for vid in self.gpu_lru:
                if n_victims == 0:
                    break
                if vid in hits:
                    continue
                n_victims -= 1
                victims_to_host += vid not in self.host_map
        left = max(0, len(self.host_free) + sum(1 for h in self.host_lru if h not in pinned) - victims_to_host)
        n_disk = sum(1 for _, where in matched if where == "disk")
        allowed = min(n_disk, left) if self.keep_host_copies else (n_disk if left >= 1 else 0)
        if allowed == n_disk:
            return matched
        seen = 0
        for i, (_, where) in enumerate(matched):
            if where == "disk":
                if seen == allowed:
                    if not self._promote_note:
                        self._promote_note = True
                        self._emit("log", level="warn", msg=(
                            f"disk tier: the host pool has {left} slot(s) left to stage a promotion of {n_disk} "
                            f"block(s); {n_disk - allowed} are recomputed instead (logged once)"))
                    return matched[:i]
                seen += 1
        return matched

    def _staging_slots(self, n_promote: int, req: Request) -> list[int]:
        """Host slots to stage a promotion through (see _promotable): all `n_promote` where the host
        keeps promoted blocks, else a ring of up to two pipeline chunks."""
        ring = 2 * max(1, IO_CHUNK_BYTES // self.cache.block_bytes)
        want = n_promote if self.keep_host_copies else min(n_promote, ring)
        staging: list[int] = []
        host_evicted: list[int] = []
        while len(staging) < want:
            hslot = self._host_slot(host_evicted)
            if hslot is None:
                break
            staging.append(hslot)
        self._flush_spills(req.user, req.round)
        self._blocks("evict", host_evicted, req.user, req.round, pool="host")
        self._forget_gone(host_evicted)
        if not staging or (self.keep_host_copies and len(staging) < n_promote):
            raise RuntimeError(f"disk tier: {len(staging)} host slot(s) to stage {n_promote} promoted blocks "
                               f"(_promotable counted them)")
        return staging

    def _plan_promotion(self, req: Request, blocks: list[tuple[int, int, int, int]], staging: list[int]) -> None:
        """Chunks of a promotion and their staging slots, and its blocks lines: per chunk, a move
        disk -> host (the disk keeps its copy) then an onboard host -> GPU. A chunk reuses the slots
        of the chunk `buffers` before it, whose onboard took them out of the host pool (lazy), so
        the lines hold the host pool within its capacity in the order they are read."""
        n = len(blocks)
        io_chunk = max(1, IO_CHUNK_BYTES // self.cache.block_bytes)
        if len(staging) >= n:
            chunk, buffers = io_chunk, -(-n // io_chunk)
        else:  # a ring: at least double-buffered, so a chunk's read overlaps the last one's copy
            chunk = max(1, min(io_chunk, len(staging) // 2))
            buffers = len(staging) // chunk
        planned: list[tuple[int, int, int, int]] = []
        for i, (bid, dslot, _, gslot) in enumerate(blocks):
            k = i // chunk
            planned.append((bid, dslot, staging[(k % buffers) * chunk + i % chunk], gslot))
        used = {h for _, _, h, _ in planned}
        for hslot in staging:
            if hslot not in used:
                heapq.heappush(self.host_free, hslot)
        for k in range(0, n, chunk):
            ids = [b for b, _, _, _ in planned[k : k + chunk]]
            self._blocks("move", ids, req.user, req.round, keep_source=True, src="disk", dst="host")
            self._blocks("onboard", ids, req.user, req.round, keep_source=self.keep_host_copies)
        for bid, _, hslot, _ in planned:
            if self.keep_host_copies:
                self.host_map[bid] = hslot
                self._deferred_host_lru.append(bid)
            self._deferred_disk_lru.append(bid)
        if not self.keep_host_copies:
            self._deferred_host_free.extend(used)
        self._promotions.append((req, planned, chunk, buffers))

    def issue_copies(self, after: Any = None) -> None:
        promotions, self._promotions = self._promotions, []
        # Spills first: their host slots are the offloads' and promotions' below.
        self._write_spills()
        if promotions:
            # The CPU writes the staging slots below: copies in flight that touch them end first.
            self.cache.sync_copies()
        # A slot taken from an evicted block may still be read by a write-through copy in flight:
        # the compute that overwrites it waits for the copy stream (copy_batch does when it copies).
        self.cache.copy_batch(self._copy_offloads, self._copy_onboards, order_compute=self._slots_reused,
                              after=after)
        for _, planned, chunk, buffers in promotions:
            # The pipeline: read chunk k from disk into its staging slots, then queue its copy to the
            # GPU (asynchronous on CUDA) and read chunk k+1 while it runs; a chunk whose slots the
            # ring reuses first waits for the copy of the chunk that used them.
            issued: dict[int, list[Any]] = {}
            for k, i in enumerate(range(0, len(planned), chunk)):
                part = planned[i : i + chunk]
                for rec in issued.pop(k - buffers, []):
                    self.cache.wait_record(rec)
                self.cache.disk_read([(d, h) for _, d, h, _ in part])
                issued[k] = self.cache.onboard_chunk([(h, g) for _, _, h, g in part], after=after)
        self.cache.owner = None
        self._offloading.clear()
        self._copy_offloads, self._copy_onboards = [], []
        self._slots_reused = False
        for b in self._deferred_disk_lru:
            if b in self.disk_map:
                self.disk_lru[b] = None
                self.disk_lru.move_to_end(b)
        self._deferred_disk_lru = []
        for h in self._deferred_host_free:
            heapq.heappush(self.host_free, h)
        self._deferred_host_free = []
        for h in self._deferred_host_lru:
            if h in self.host_map:
                self.host_lru[h] = None
                self.host_lru.move_to_end(h)
        self._deferred_host_lru = []

    # ---- block registration and release --------------------------------------------------

    def _register_full_blocks(self, req: Request, upto: int) -> None:
        """Blocks whose last position is < upto are full: give them ids and store them."""
        bt = self.bt
        stored: list[int] = []
        evicted_host: list[int] = []
        first = max(req.matched_blocks, req.hashes_registered)
        last = upto // bt
        if last <= first:
            return
        toks = None
        for blk in range(first, last):
            if self.block_reuse:
                if blk < len(req.hashes):
                    bid = req.hashes[blk]
                else:
                    if toks is None:
                        toks = req.tokens()
                    parent = req.ids_chain[-1] if req.ids_chain else None
                    bid = block_id(parent, toks[blk * bt : (blk + 1) * bt], self.run_salt)
            else:
                bid = block_id(None, [req.user, req.round, blk], b"private" + self.run_salt)
            req.ids_chain.append(bid)
            slot = req.table[blk]
            if bid in self.gpu_map:
                continue  # same content already cached elsewhere: this copy stays private
            # A host copy of this content may exist (its prefix had been dropped, so it was
            # recomputed): the block is then in both pools and later evicting it costs no copy.
            self.gpu_map[bid] = slot
            self.refcount[bid] = 1
            self.owner[bid] = req.user
            req.ids[blk] = bid
            stored.append(bid)
        req.hashes_registered = last
        self._blocks("store", stored, req.user, req.round)
        self.stats["blocks_stored"] += len(stored)
        if (self.offload_policy == "write-through" and self.pressure and self.cache.host is not None
                and self.cache.host_blocks > 0):
            pairs: list[tuple[int, int]] = []
            through: list[int] = []
            for bid in stored:
                if bid in self.host_map:
                    continue
                hslot = self._host_slot(evicted_host)
                if hslot is None:
                    break
                self.host_map[bid] = hslot
                pairs.append((self.gpu_map[bid], hslot))
                through.append(bid)
            for bid in through:  # LRU candidates only after the batch (see _take_slots)
                self.host_lru[bid] = None
            self._flush_spills(req.user, req.round)
            self._write_spills()
            for b in self._deferred_disk_lru:  # written already: evictable from the disk from now on
                if b in self.disk_map:
                    self.disk_lru[b] = None
            self._deferred_disk_lru = []
            self._blocks("evict", evicted_host, req.user, req.round, pool="host")
            self._forget_gone(evicted_host)
            self._blocks("offload", through, req.user, req.round, keep_source=True)
            # Read-only for the copy: compute does not wait for it (order_compute=False).
            self.cache.copy_batch(pairs, [], order_compute=False)

    def release(self, req: Request) -> None:
        self._releases += 1
        private: list[int] = []
        dropped: list[int] = []
        for blk in range(len(req.table) - 1, -1, -1):
            bid = req.ids[blk]
            slot = req.table[blk]
            if bid is None or self.gpu_map.get(bid) != slot:
                private.append(slot)
                continue
            self.refcount[bid] -= 1
            if self.refcount[bid] == 0:
                if self.block_reuse:
                    self.gpu_lru[bid] = None
                else:
                    dropped.append(bid)
        for bid in dropped:
            private.append(self.gpu_map.pop(bid))
            self.refcount.pop(bid, None)
        self._blocks("evict", dropped, req.user, req.round, pool="gpu")
        for bid in dropped:
            self.owner.pop(bid, None)
        for slot in private:
            heapq.heappush(self.gpu_free, slot)
        req.rows = None
        req.last_tok = None
        req.pending = []

    # ---- the step loop -------------------------------------------------------------------

    def _flush_tokens(self, req: Request) -> None:
        if req.pending:
            req.gen.extend(self._host_tokens(req.pending))
            req.pending = []

    def _host_tokens(self, pending: list[Any]) -> list[int]:
        """The sampled tokens still on the device, on the host (one device sync)."""
        import torch

        return [int(v) for v in torch.cat(pending).tolist()]

    def run_requests(self, reqs: Sequence[Request], now: Callable[[], int]) -> None:
        """Queue all `reqs` together (in order) and run them to completion."""
        queue: deque[Request] = deque()
        # Step statistics of this call (the round line carries them): the step loop is
        # launch-bound at small batch, so where its time goes is worth seeing in every run.
        self.step_stats = {"steps": 0, "step_ns": 0, "step_ns_max": 0, "sync_ns": 0, "prefill_steps": 0}
        for r in reqs:
            r.t_queued = now()
            self._emit("req", t=r.t_queued, user=r.user, round=r.round, phase="queued")
            queue.append(r)
        running: list[Request] = []
        released_before = -1  # self._releases when the queue head last failed to fit
        while queue or running:
            self.cancel_check()
            admitted = False
            copying = 0
            t_admit = self.perf_ns()
            # Space only appears when a request ends: retry a head that did not fit only then.
            while queue and len(running) < self.max_batch and released_before != self._releases:
                copied_before = len(self._copy_onboards) + len(self._copy_offloads) + len(self._promotions)
                if not self.try_admit(queue[0]):
                    released_before = self._releases
                    break
                r = queue.popleft()
                r.t_scheduled = now()
                self._emit("req", t=r.t_scheduled, user=r.user, round=r.round, phase="scheduled")
                running.append(r)
                admitted = True
                copying += len(self._copy_onboards) + len(self._copy_offloads) + len(self._promotions) > copied_before
                if self.copying_admissions_per_step is not None and copying >= self.copying_admissions_per_step:
                    # One copying admission per step: its prefill then waits only for its own
                    # blocks' copies (they share one copy stream, in issue order), and the next
                    # request is admitted, and copies, in the next step. Admitted together, both
                    # first tokens waited for both users' copies: the H100 runs of 2026-11-28
                    # showed two requests' 4.3 GB of offload + onboard (~160 ms) in each one's
                    # TTFT, against the issue's bound of its own onboarded bytes ÷ bandwidth.
                    break
            t_copies = self.perf_ns()
            mark = None
            stepped: list[Request] = []  # decoded before the copies
            late: list[Request] = []  # decoded after the admitted request's prefill step
            if admitted and self.decode_before_copies and (self._copy_onboards or self._copy_offloads or self._promotions):
                # The requests already decoding take their step before this admission's copies
                # are queued: on CUDA everything launched after them waits for the copies, and a
                # decode token mixed into the admitted request's prefill held the CPU in its first
                # layer until they ended (the decode attention's launch blocks after graph
                # replays, measured on the H100 2026-11-28: ~40-80 ms, then the remaining layers
                # launched against an idle GPU). Alone, the prefill launches while the copies run.
                # The copies need not wait for that step either: it touches only its requests'
                # slots, and the copies only the admitted request's and the evicted blocks'.
                # A decode step that holds the host (it captures a graph, ~50-90 ms, or syncs for
                # a finished request's or a full block's tokens) would delay the copies instead:
                # it runs after the admitted request's prefill step (H100, 2026-11-28e: the two
                # requests over the TTFT bound were those whose decode step captured first).
                decoding = [r for r in running if not r.prefilling]
                if decoding and self._decode_holds_host(decoding):
                    late = decoding
                elif decoding:
                    mark = self.cache.compute_mark()
                    self._run_step(running, decoding, now, False, t_copies - t_admit, 0, "before_copies")
                    stepped = decoding
                    t_copies = self.perf_ns()
            if admitted:
                self.issue_copies(mark)
            if not running:
                raise CapacityError(
                    f"request of user {queue[0].user} round {queue[0].round} does not fit the gpu pool even when empty"
                )
            copies_ns = self.perf_ns() - t_copies
            self._run_step(running, [r for r in running if r not in stepped and r not in late], now, admitted,
                           t_copies - t_admit, copies_ns)
            if late:
                self._run_step(running, late, now, False, 0, 0, "after_prefill")
            self._emit_copy_records(wait=False)
        self._emit_copy_records(wait=True)
        if self._step_trace is not None:
            self._step_trace.flush()

    def _decode_holds_host(self, decoding: list[Request]) -> bool:
        """Whether the decode step of `decoding` would hold the host: a token that finishes a
        request or fills a block makes _step sync with the device, and a new (batch, span)
        makes the decode runner capture a graph."""
        furthest = 0
        for r in decoding:
            pos = len(r.prompt) + r.n_gen - 1
            if self._decode_token_syncs(r, pos):
                return True
            furthest = max(furthest, pos)
        runner = self.model.decode_runner
        return runner is not None and runner.would_capture(len(decoding), furthest)

    def _decode_token_syncs(self, r: Request, pos: int) -> bool:
        """Whether `r`'s decode token at position `pos` (not yet sampled) makes its step sync with
        the device: it is the request's last (its tokens go to the host) or it fills a block
        (the block's id needs the token values). _step syncs on exactly these."""
        return r.n_gen + 1 >= r.output_tokens or (pos + 1) % self.bt == 0

    def _run_step(self, running: list[Request], reqs: list[Request], now: Callable[[], int], admitted: bool,
                  admit_ns: int, copies_ns: int, decode: str | None = None) -> None:
        """One engine step of `reqs` (of `running`, which loses those that finish in it), counted
        in step_stats and, with KVSCOPE_STEP_TRACE, traced (`decode`: "before_copies" or
        "after_prefill" for the decode step split off an admission that copies)."""
        if self._step_trace is not None:
            self._step_rec = {"t": now(), "admit_ns": admit_ns, "copies_ns": copies_ns,
                              "admitted": admitted, "alloc0": alloc_counters(self.cache)}
            if decode is not None:
                self._step_rec["decode"] = decode
        t0 = self.perf_ns()
        self._step(reqs, now)
        dt = self.perf_ns() - t0
        st = self.step_stats
        st["steps"] += 1
        st["step_ns"] += dt
        st["step_ns_max"] = max(st["step_ns_max"], dt)
        if self._step_rec is not None:
            rec, self._step_rec = self._step_rec, None
            rec["step_ns"] = dt
            rec["alloc"] = alloc_delta(rec.pop("alloc0"), alloc_counters(self.cache))
            assert self._step_trace is not None
            self._step_trace.write(json.dumps(rec) + "\n")
        for r in [r for r in reqs if r.n_gen >= r.output_tokens]:
            running.remove(r)

    def _step(self, running: list[Request], now: Callable[[], int]) -> None:
        Piece = self.piece
        pieces: list[Any] = []
        owners: list[Request] = []
        budget = self.prefill_chunk_tokens
        for r in running:  # decode first (vLLM's order): a decode token never waits for a prefill
            if not r.prefilling:
                pos = len(r.prompt) + r.n_gen - 1
                pieces.append(Piece(None, r.last_tok, pos, 1, r.rows, True))
                owners.append(r)
        for r in running:
            if r.prefilling and budget > 0:
                n = min(budget, len(r.prompt) - r.computed)
                budget -= n
                ends = r.computed + n == len(r.prompt)
                pieces.append(Piece(r.prompt[r.computed : r.computed + n], None, r.computed, n, r.rows, ends))
                owners.append(r)
        t_launch = self.perf_ns()
        layer_times = self.model.layer_times
        if layer_times is not None:
            layer_times.clear()  # a graph-replayed step leaves it empty
        nxt = self.model.forward_step(pieces, self.cache)
        # When this step's forward ended, for the TTFT split of the requests it gives a first token.
        fwd_stamp = (self.cache.stamp() if self.ttft_parts and any(
            p.want_logits and r.n_gen == 0 for p, r in zip(pieces, owners)) else None)
        if self._step_rec is not None:
            self._step_rec["launch_ns"] = self.perf_ns() - t_launch
            self._step_rec["pieces"] = [[r.user, r.round, p.start, p.n] for p, r in zip(pieces, owners)]
            if layer_times:
                self._step_rec["layer_ms"] = [round(t / 1e6, 2) for t in layer_times]
                self._step_rec["layer0_ms"] = [[n, round(t / 1e6, 2)] for n, t in self.model.layer0_ops]
        sampled = 0
        need_sync: list[Request] = []
        first: list[Request] = []
        finished: list[Request] = []
        for p, r in zip(pieces, owners):
            r.computed = max(r.computed, p.start + p.n)
            if not p.want_logits:
                continue
            assert nxt is not None
            if p.n == 1 and not r.prefilling and self._decode_token_syncs(r, p.start):
                need_sync.append(r)
            tok = nxt[sampled : sampled + 1]
            sampled += 1
            r.pending.append(tok)
            r.last_tok = tok
            r.n_gen += 1
            if r.n_gen == 1:
                first.append(r)
            if r.n_gen >= r.output_tokens:
                finished.append(r)
        if any(p.n > 1 for p in pieces):
            self.step_stats["prefill_steps"] += 1
        if first or finished or need_sync:
            # One device sync: the first token's time is when it exists on the host (TTFT), and
            # block ids need token values. Other decode steps run without a sync.
            t0 = self.perf_ns()
            for r in set(first) | set(finished) | set(need_sync):
                self._flush_tokens(r)
            sync_ns = self.perf_ns() - t0
            self.step_stats["sync_ns"] += sync_ns
            if self._step_rec is not None:
                self._step_rec["sync_ns"] = sync_ns
        t = now()
        for r in first:
            r.t_first = t
            if fwd_stamp is not None:
                parts = self._ttft_parts(r, self.cache.stamp_ns(fwd_stamp))
                self._emit("req", t=t, user=r.user, round=r.round, phase="first_token", ttft_parts=parts)
            else:
                self._emit("req", t=t, user=r.user, round=r.round, phase="first_token")
        for r in owners:
            upto = min(r.computed, r.kv_tokens) if r.prefilling else len(r.prompt) + r.n_gen - 1
            if r in need_sync or r.prefilling or r in first or r in finished:
                self._register_full_blocks(r, upto)
        for r in finished:
            r.t_done = now()
            self.release(r)
            extra = {"reused_disk_tokens": r.promoted_blocks * self.bt} if self.tiers else {}
            self._emit(
                "req",
                t=r.t_done,
                user=r.user,
                round=r.round,
                phase="done",
                prompt_tokens=len(r.prompt),
                output_tokens=r.n_gen,
                reused_gpu_tokens=r.reused_gpu_blocks * self.bt,
                reused_host_tokens=r.reused_host_blocks * self.bt,
                computed_tokens=len(r.prompt) - r.matched_blocks * self.bt,
                **extra,
            )

    def _ttft_parts(self, r: Request, t_forward: int) -> dict[str, Any]:
        """Where a request's TTFT went (docs/protocol.md, `ttft_parts`): critical-path attribution
        of first_token.t − queued.t over boundaries taken in order and clamped into that span, so
        the parts sum to it exactly. queued: until admitted; disk_promote: then until its last
        disk read ended; host_reload: then until its last host->GPU copy ended (its blocks: all
        that took that hop, the promoted ones too); recompute: from
        the end of its admission's copies until the forward of its first token's step ended;
        other: the rest (waiting for copies of its admission that were not its own reloads, the
        first token's sampling and sync). Its copies' times are read first (they ended before its
        prefill could start)."""
        if any(rec.owner is r for rec in self.cache.pending):
            self._emit_copy_records(wait=False)
            if any(rec.owner is r for rec in self.cache.pending):
                self._emit_copy_records(wait=True)
        tq, tf = r.t_queued, r.t_first

        def clamp(x: int) -> int:
            return min(max(x, tq), tf)

        b1 = clamp(r.t_scheduled)
        b2 = clamp(max(b1, r.t_disk_end)) if r.promoted_blocks else b1
        b3 = clamp(max(b2, r.t_h2d_end)) if r.reused_host_blocks or r.promoted_blocks else b2
        b4 = clamp(max(b3, r.t_copies_end))
        b5 = clamp(max(b4, t_forward))
        bb = self.cache.block_bytes
        reloaded = r.reused_host_blocks + r.promoted_blocks  # every block that took the host -> GPU hop
        return {
            "queued_ns": b1 - tq,
            "gpu_hit_blocks": r.reused_gpu_blocks,
            "host_reload": {"blocks": reloaded, "bytes": reloaded * bb, "ns": b3 - b2},
            "disk_promote": {"blocks": r.promoted_blocks, "bytes": r.promoted_blocks * bb, "ns": b2 - b1},
            "recompute": {"tokens": len(r.prompt) - r.matched_blocks * self.bt, "ns": b5 - b4},
            "other_ns": (b4 - b3) + (tf - b5),
        }

    # xfer `dir` -> (from pool, to pool); the memory of a pool's side is _XFER_MEM's.
    _XFER_POOLS = {"h2d": ("host", "gpu"), "d2h": ("gpu", "host"), "f2h": ("disk", "host"), "h2f": ("host", "disk")}

    def _emit_copy_records(self, wait: bool) -> None:
        for rec in self.cache.completed_copies(wait=wait):
            key = rec.dir
            self.stats["bytes_" + key] += rec.bytes
            self.stats["copy_ns_" + key] += max(0, (rec.end_ns or 0) - (rec.start_ns or 0))
            self.stats["blocks_" + key] += rec.blocks
            r = rec.owner
            if r is not None and rec.end_ns is not None:
                r.t_copies_end = max(r.t_copies_end, rec.end_ns)
                if rec.dir == "h2d":
                    r.t_h2d_end = max(r.t_h2d_end, rec.end_ns)
                elif rec.dir == "f2h":
                    r.t_disk_end = max(r.t_disk_end, rec.end_ns)
            dev = self.cache.device
            src, dst = self._XFER_POOLS[rec.dir]
            mem = {"gpu": "device", "host": self.cache.host_memory, "disk": "file"}
            file_io = rec.dir in ("f2h", "h2f")
            pools = {"from_pool": src, "to_pool": dst} if self.tiers else {}
            self._emit(
                "xfer",
                dir=rec.dir,
                bytes=rec.bytes,
                start=rec.start_ns,
                end=rec.end_ns,
                src_mem=mem[src],
                dst_mem=mem[dst],
                # file I/O runs on the host: no device (CUPTI cannot see it; the engine times it)
                device=-1 if file_io else (dev.index if dev.index is not None else (0 if self.cache.cuda else -1)),
                stream=rec.stream,  # the copy stream, or the onboard stream with --copy-overlap on
                source="engine",
                blocks=rec.blocks,
                runs=rec.runs,
                **pools,
            )
