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
        self.ledger = BlockLedger(self.cache.num_blocks, self.cache.host_blocks)
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
                keep_source: bool = False) -> None:
        """Apply a move to the ledger (raises on a rule break) and emit it, one line per owner
        user (the `user` of a blocks line is the user whose conversation the blocks hold)."""
        if not ids:
            return
        if op == "store":
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
            else:
                break
        hits = [h for h, where in matched if where == "gpu"]
        cached_hits = sum(1 for h in hits if h in self.gpu_lru)
        need = n_total - len(hits)
        if need > len(self.gpu_free) + len(self.gpu_lru) - cached_hits:
            self.pressure = True
            return False

        # Commit: pin what is reused, then find slots (free first, then LRU victims).
        for h in hits:
            self.refcount[h] = self.refcount.get(h, 0) + 1
            self.gpu_lru.pop(h, None)
        self._blocks("hit", hits, req.user, req.round)
        onboard_ids = [h for h, where in matched if where == "host"]
        for h in onboard_ids:
            self.host_lru.pop(h, None)  # pinned until its copy is issued
        slots = self._take_slots(need, req)
        onboard_pairs: list[tuple[int, int]] = []
        table: list[int] = []
        ids: list[int | None] = []
        si = 0
        for h, where in matched:
            if where == "gpu":
                table.append(self.gpu_map[h])
            else:
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
            ids.append(h)
        self._blocks("onboard", onboard_ids, req.user, req.round,
                     keep_source=self.keep_host_copies)
        self._copy_onboards.extend(onboard_pairs)
        table.extend(slots[si:])
        ids.extend([None] * (n_total - len(ids)))
        req.table, req.ids = table, ids
        req.matched_blocks = len(matched)
        req.reused_gpu_blocks = len(hits)
        req.reused_host_blocks = len(onboard_ids)
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
        self._blocks("evict", host_evicted, req.user, req.round, pool="host")
        self._blocks("offload", offload, req.user, req.round)
        self._blocks("evict", dropped + already_on_host, req.user, req.round, pool="gpu")
        for vid in host_evicted + dropped:
            if vid not in self.gpu_map:
                self.owner.pop(vid, None)
        if self.slot_order == "ascending":
            slots.sort()
        return slots

    def _host_slot(self, host_evicted: list[int]) -> int | None:
        if self.host_free:
            return heapq.heappop(self.host_free)
        if self.host_lru:
            hid, _ = self.host_lru.popitem(last=False)
            host_evicted.append(hid)
            return self.host_map.pop(hid)
        return None

    def issue_copies(self, after: Any = None) -> None:
        # A slot taken from an evicted block may still be read by a write-through copy in flight:
        # the compute that overwrites it waits for the copy stream (copy_batch does when it copies).
        self.cache.copy_batch(self._copy_offloads, self._copy_onboards, order_compute=self._slots_reused,
                              after=after)
        self._copy_offloads, self._copy_onboards = [], []
        self._slots_reused = False
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
            self._blocks("evict", evicted_host, req.user, req.round, pool="host")
            for hid in evicted_host:
                if hid not in self.gpu_map:
                    self.owner.pop(hid, None)
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
                copied_before = len(self._copy_onboards) + len(self._copy_offloads)
                if not self.try_admit(queue[0]):
                    released_before = self._releases
                    break
                r = queue.popleft()
                r.t_scheduled = now()
                self._emit("req", t=r.t_scheduled, user=r.user, round=r.round, phase="scheduled")
                running.append(r)
                admitted = True
                copying += len(self._copy_onboards) + len(self._copy_offloads) > copied_before
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
            if admitted and self.decode_before_copies and (self._copy_onboards or self._copy_offloads):
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
            self._emit("req", t=t, user=r.user, round=r.round, phase="first_token")
        for r in owners:
            upto = min(r.computed, r.kv_tokens) if r.prefilling else len(r.prompt) + r.n_gen - 1
            if r in need_sync or r.prefilling or r in first or r in finished:
                self._register_full_blocks(r, upto)
        for r in finished:
            r.t_done = now()
            self.release(r)
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
            )

    def _emit_copy_records(self, wait: bool) -> None:
        for rec in self.cache.completed_copies(wait=wait):
            key = "h2d" if rec.dir == "h2d" else "d2h"
            self.stats["bytes_" + key] += rec.bytes
            self.stats["copy_ns_" + key] += max(0, (rec.end_ns or 0) - (rec.start_ns or 0))
            self.stats["blocks_" + key] += rec.blocks
            dev = self.cache.device
            self._emit(
                "xfer",
                dir=rec.dir,
                bytes=rec.bytes,
                start=rec.start_ns,
                end=rec.end_ns,
                src_mem="device" if rec.dir == "d2h" else self.cache.host_memory,
                dst_mem=self.cache.host_memory if rec.dir == "d2h" else "device",
                device=dev.index if dev.index is not None else (0 if self.cache.cuda else -1),
                stream=rec.stream,  # the copy stream, or the onboard stream with --copy-overlap on
                source="engine",
                blocks=rec.blocks,
                runs=rec.runs,
            )
