"""Pieces both engine translators share: block ids, the report of everything unusual, and the
emitter that turns residency changes into docs/protocol.md `blocks` lines.

Neither engine sends moves the way docs/protocol.md states them, so the emitter keeps a `BlockLedger`
beside what it writes: every line it emits has already passed the same rules `check_log`
replays, and a translation bug raises instead of writing a log that lies.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any, Hashable, TextIO

from ..ledger import BlockLedger

# How many `log` warn lines one kind of oddity may write before the rest are only counted (the
# count always reaches the stderr summary and run.end.summary.translate).
WARN_LINES_PER_KIND = 5


class IdMap:
    """Engine block hash -> KV Scope block id (0, 1, 2, ... in first-seen order).

    Both engines name a block by a hash of its token prefix, so the same hash is the same content
    for the whole run, which is what docs/protocol.md asks of a block id. The hashes themselves are
    unsigned 64-bit ints (TensorRT-LLM `IdType`, vLLM with int hashes) or bytes (vLLM's sha256
    `ExternalBlockHash`): the first lose precision in the app's JSON.parse past 2**53 and the
    second are not JSON, so the log carries small ints instead.
    """

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}

    @staticmethod
    def key(raw: Any) -> Hashable:
        # msgspec's JSON encoder writes bytes as base64 strings, a to_builtins dump may keep them
        # as lists of ints; all of them name one hash each.
        if isinstance(raw, list):
            return tuple(IdMap.key(x) for x in raw)
        if isinstance(raw, (bytes, bytearray)):
            return bytes(raw).hex()
        return raw

    def get(self, raw: Any) -> int:
        k = self.key(raw)
        found = self._ids.get(k)
        if found is None:
            found = len(self._ids)
            self._ids[k] = found
        return found

    def known(self, raw: Any) -> int | None:
        return self._ids.get(self.key(raw))

    def __len__(self) -> int:
        return len(self._ids)


class Report:
    """Counts every unusual thing a translation meets and writes the first few of each kind as
    `log` warn lines, so nothing is dropped silently."""

    def __init__(self, writer: Any | None = None, stream: TextIO | None = None) -> None:
        self.writer = writer
        self.stream = stream
        self.counts: dict[str, int] = {}
        self.notes: dict[str, str] = {}

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def warn(self, kind: str, msg: str, t: int | None = None, n: int = 1) -> None:
        before = self.counts.get(kind, 0)
        self.count(kind, n)
        self.notes.setdefault(kind, msg)
        if self.writer is not None and before < WARN_LINES_PER_KIND:
            extra = "" if before + 1 < WARN_LINES_PER_KIND else " (further ones only counted)"
            self.writer.emit("log", t=t, level="warn", msg=f"translate [{kind}] {msg}{extra}")

    def info(self, msg: str, t: int | None = None) -> None:
        if self.writer is not None:
            self.writer.emit("log", t=t, level="info", msg=f"translate {msg}")

    def summary_lines(self) -> list[str]:
        return [
            f"  {kind}: {n}" + (f"  (e.g. {self.notes[kind]})" if kind in self.notes else "")
            for kind, n in sorted(self.counts.items())
        ]

    def print_summary(self, header: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(header, file=stream)
        for line in self.summary_lines() or ["  nothing unusual"]:
            print(line, file=stream)


# Protocol 2 pools below the host pool that translations know, nearest first, with their tier and
# medium (docs/protocol.md): TensorRT-LLM's disk cache level, vLLM's STORAGE medium, and a tier
# that is not on this host (vLLM's REMOTE locality).
LOWER_POOLS: dict[str, tuple[int, str]] = {"disk": (2, "file"), "remote": (3, "remote")}
POOL_ORDER = ("gpu", "host") + tuple(LOWER_POOLS)


def emit_pool_lines(writer: Any | None, t: int | None, gpu_blocks: int | None, host_blocks: int | None,
                    block_tokens: int, block_bytes: int, lower: dict[str, int] | None = None) -> None:
    """The `pool` lines docs/protocol.md wants before any `blocks` line (a missing host pool is
    written with capacity 0, which readers take as "no host pool"). With `lower` pools (a
    protocol 2 log) every line carries its tier."""
    if writer is None:
        return
    pools = [("gpu", gpu_blocks, 0, "device"), ("host", host_blocks, 1, None)]
    pools += [(name, cap, *LOWER_POOLS[name]) for name, cap in (lower or {}).items()]
    for pool, cap, tier, medium in pools:
        extra: dict[str, Any] = {}
        if lower:
            extra["tier"] = tier
            if medium is not None:
                extra["medium"] = medium
        writer.emit("pool", t=t, pool=pool, capacity_blocks=int(cap or 0),
                    block_tokens=int(block_tokens), block_bytes=int(block_bytes), **extra)


class PoolEmitter:
    """Writes `blocks` lines for residency changes, enforcing docs/protocol.md's block rules as it goes.

    - Consecutive changes of one kind become one line (an engine event with 40 blocks is one
      `store` line, not 40).
    - An offload that finds the host pool full waits until a host eviction frees a slot:
      TensorRT-LLM reports the offload of the GPU block before the removal of the host block whose
      slot it reuses (`WindowBlockManager::getFreeBlock` in kvCacheManager.cpp enqueues the
      `cacheLevelUpdated(0, 1)` event, then `freeChildren` enqueues the `removed` one), which
      replayed literally would hold one block too many in the host pool for a moment.
    - A store or onboard that finds the GPU pool full evicts the least recently used GPU block and
      says so (`inferred_gpu_evict`): the engine dropped a block without an event, which
      TensorRT-LLM does when it claims a partially matched leaf block for reuse
      (`claimLeafBlock` frees it from the radix tree without a `removed` event).

    With `writer=None` nothing is written and the capacities may be None (unbounded): the dry run
    that infers pool sizes from a dump with no `created` event.
    """

    def __init__(
        self,
        writer: Any | None,
        report: Report,
        gpu_capacity: int | None,
        host_capacity: int | None,
        lower: dict[str, int | None] | None = None,
    ) -> None:
        self.writer = writer
        self.report = report
        big = 1 << 62
        self.ledger = BlockLedger(
            big if gpu_capacity is None else gpu_capacity,
            big if host_capacity is None else host_capacity,
        )
        self.gpu: "OrderedDict[int, None]" = OrderedDict()  # LRU order, oldest first
        self.host: "OrderedDict[int, None]" = OrderedDict()
        # Protocol 2 pools below the host pool (LOWER_POOLS), each in LRU order.
        self.pools: dict[str, "OrderedDict[int, None]"] = {"gpu": self.gpu, "host": self.host}
        for name, cap in (lower or {}).items():
            self.ledger.add_pool(name, big if cap is None else cap)
            self.pools[name] = OrderedDict()
        self.pending: "OrderedDict[int, bool]" = OrderedDict()  # offloads waiting: id -> keep_source
        self.moves = {"store": 0, "offload": 0, "onboard": 0, "evict": 0, "hit": 0, "move": 0}
        self.moved: dict[tuple[str, str], int] = {}  # blocks moved between two pools, offload and onboard too
        self.peak = {name: 0 for name in self.pools}
        self.stored_ids: set[int] = set()
        self._line: tuple[tuple[Any, ...], int | None, list[int]] | None = None

    # -- output ---------------------------------------------------------------------------------
    def _add(self, op: str, block: int, t: int | None, pool: str | None = None, keep: bool = False,
             src: str | None = None, dst: str | None = None) -> None:
        key = (op, pool, keep, src, dst)
        if self._line is not None and self._line[0] == key:
            self._line[2].append(block)
        else:
            self.flush()
            self._line = (key, t, [block])
        self.moves[op] += 1
        pair = {"offload": ("gpu", "host"), "onboard": ("host", "gpu")}.get(op, (src, dst))
        if pair[0] is not None:
            self.moved[pair] = self.moved.get(pair, 0) + 1
        for name, held in self.pools.items():
            self.peak[name] = max(self.peak[name], len(held))

    def flush(self) -> None:
        if self._line is None:
            return
        (op, pool, keep, src, dst), t, ids = self._line
        self._line = None
        if self.writer is None:
            return
        fields: dict[str, Any] = {"op": op, "ids": ids}
        if op == "move":
            fields["from"], fields["to"] = src, dst
        if pool is not None:
            fields["pool"] = pool
        if keep:
            fields["keep_source"] = True
        self.writer.emit("blocks", t=t, **fields)

    # -- queries --------------------------------------------------------------------------------
    def on_gpu(self, block: int) -> bool:
        return block in self.gpu

    def on_host(self, block: int) -> bool:
        return block in self.host

    def on(self, pool: str, block: int) -> bool:
        held = self.pools.get(pool)
        return held is not None and block in held

    def where(self, block: int) -> list[str]:
        """The pools holding `block`, nearest first."""
        return [name for name, held in self.pools.items() if block in held]

    def is_pending(self, block: int) -> bool:
        return block in self.pending

    @property
    def gpu_capacity(self) -> int:
        return self.ledger.gpu_capacity

    @property
    def host_capacity(self) -> int:
        return self.ledger.host_capacity

    # -- moves ----------------------------------------------------------------------------------
    def _make_gpu_room(self, t: int | None, why: str) -> None:
        while len(self.gpu) >= self.gpu_capacity:
            victim = next((b for b in self.gpu if b not in self.pending), None)
            if victim is None:
                victim = next(iter(self.gpu))
            self.report.warn(
                "inferred_gpu_evict",
                f"gpu pool full ({self.gpu_capacity} blocks) at {why}: evicted block {victim}, the "
                "least recently used, which the engine dropped without an event",
                t,
            )
            self.evict("gpu", victim, t)

    def store(self, block: int, t: int | None) -> None:
        if block in self.gpu:
            # The same hash is the same node of the engine's tree, so a second store means the
            # first copy left without an event; replaying the store alone would break the rules.
            self.report.warn(
                "stale_gpu_copy",
                f"store of block {block} already on the gpu: its earlier copy left without an "
                "event, evicted here",
                t,
            )
            self.evict("gpu", block, t)
        self._make_gpu_room(t, f"store of block {block}")
        self.ledger.store([block])
        self.stored_ids.add(block)
        self.gpu[block] = None
        self._add("store", block, t)

    def offload(self, block: int, t: int | None, keep_source: bool = False) -> bool:
        """GPU -> host. Returns False when the block had to wait for a host slot."""
        if self.host_capacity <= 0:
            self.report.warn(
                "offload_without_host_pool", f"offload of block {block} with no host pool", t
            )
            return False
        if block in self.host:
            self.report.warn("offload_already_on_host", f"offload of block {block} already on host", t)
            return False
        if len(self.host) >= self.host_capacity:
            self.pending[block] = keep_source
            self.report.count("offload_waited_for_host_slot")
            return False
        self.ledger.offload([block], keep_source=keep_source)
        if not keep_source:
            del self.gpu[block]
        self.host[block] = None
        self._add("offload", block, t, keep=keep_source)
        return True

    def onboard(self, block: int, t: int | None, keep_source: bool = False) -> None:
        if block in self.gpu:
            self.report.warn("onboard_already_on_gpu", f"onboard of block {block} already on gpu", t)
            return
        self._make_gpu_room(t, f"onboard of block {block}")
        self.ledger.onboard([block], keep_source=keep_source)
        if keep_source:
            self.host.move_to_end(block)
        else:
            del self.host[block]
        self.gpu[block] = None
        self._add("onboard", block, t, keep=keep_source)
        if not keep_source:
            self._drain_pending(t)

    def move(self, block: int, src: str, dst: str, t: int | None, keep_source: bool = False) -> None:
        """Protocol 2's move between any two pools (gpu -> host is offload, host -> gpu onboard). A
        full destination below the host pool gives up its least recently used block, said so
        (`inferred_<pool>_evict`): the engine made room without an event in view."""
        if (src, dst) == ("gpu", "host"):
            self.offload(block, t, keep_source)
            return
        if (src, dst) == ("host", "gpu"):
            self.onboard(block, t, keep_source)
            return
        if dst == "gpu":
            self._make_gpu_room(t, f"move of block {block} from {src}")
        else:
            target = self.pools[dst]
            while len(target) >= self.ledger.capacity(dst):
                victim = next(iter(target))
                self.report.warn(
                    f"inferred_{dst}_evict",
                    f"{dst} pool full ({self.ledger.capacity(dst)} blocks) at a move of block {block}: evicted "
                    f"block {victim}, the least recently used, which the engine dropped without an event",
                    t,
                )
                self.evict(dst, victim, t)
        self.ledger.move(src, dst, [block], keep_source=keep_source)
        source = self.pools[src]
        if keep_source:
            source.move_to_end(block)
        else:
            del source[block]
        self.pools[dst][block] = None
        self._add("move", block, t, keep=keep_source, src=src, dst=dst)
        if src == "host" and not keep_source:
            self._drain_pending(t)

    def touch(self, block: int) -> None:
        """A reuse of a resident block: LRU order only, no line (the engines send no hit event)."""
        if block in self.gpu:
            self.gpu.move_to_end(block)

    def cancel_pending(self, block: int) -> bool:
        return self.pending.pop(block, None) is not None

    def evict(self, pool: str, block: int, t: int | None) -> None:
        if pool == "gpu" and block in self.pending:
            del self.pending[block]
            self.report.warn(
                "dropped_waiting_offload",
                f"block {block} left the gpu while its offload waited for a host slot; "
                "the offload is not shown",
                t,
            )
        self.ledger.evict(pool, [block])
        self.pools[pool].pop(block)
        self._add("evict", block, t, pool=pool)
        if pool == "host":
            self._drain_pending(t)

    def evict_all(self, pool: str, t: int | None) -> int:
        victims = list(self.pools[pool])
        for b in victims:
            self.evict(pool, b, t)
        return len(victims)

    def _drain_pending(self, t: int | None) -> None:
        while self.pending and len(self.host) < self.host_capacity:
            block, keep = self.pending.popitem(last=False)
            if block in self.gpu:
                self.offload(block, t, keep_source=keep)

    def finish(self, t: int | None) -> None:
        self.flush()
        if len(self.stored_ids) <= self.gpu_capacity and (self.moves["offload"] or self.moves["evict"]):
            # docs/protocol.md, rule `ample_pool_moved`: "if the GPU pool holds every block the run
            # used, nothing is offloaded or evicted." An engine's requests also hold blocks the events never name
            # (decode and partial blocks), so it can move blocks with a pool this close to ample.
            self.report.warn(
                "moves_with_ample_pool",
                f"the engine moved blocks although the gpu pool ({self.gpu_capacity}) holds all "
                f"{len(self.stored_ids)} blocks stored; its private blocks took the other slots",
                t,
            )
        if self.pending:
            n = len(self.pending)
            self.report.warn(
                "offload_never_fit",
                f"{n} offload(s) still waited for a host slot at the end and are not shown "
                f"(first: block {next(iter(self.pending))})",
                t,
                n=n,
            )
            self.pending.clear()
