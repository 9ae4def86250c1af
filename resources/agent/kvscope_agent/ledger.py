"""Block bookkeeping by the rules of docs/protocol.md ("Rules every reader checks"), pure Python (no torch).

One `BlockLedger`, two uses:
- an engine keeps one beside its pools (`BlockLedger(gpu_capacity, host_capacity)`, with
  `disk_capacity` or `add_pool` for tiers behind the host pool; `store`, `move(src, dst, ids)`,
  `offload`/`onboard`, `evict`, `hit`): a move that would break a rule raises `LedgerError` before
  anything changes, so a bug in the engine fails loudly instead of writing a log that lies;
  `moved[(src, dst)]` counts the blocks each pair of pools exchanged (the run.end summary's counts);
- a reader replays a log through one (`BlockLedger.for_reading()`, `apply` each event, `finish`):
  every broken rule is recorded with its seq and the move is applied best effort, so one bad line
  yields one violation rather than a cascade. `validate_log` / `check_log` do that for a file.

The rule codes and their text are kvscope_agent/protocol/protocol.json's, the ones the app's
ledger (src/shared/ledger.ts) reports; test/fixtures/protocol/ holds a log per rule with the
verdict both must give.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from .protocol import RULES, TTFT_PARTS_TOLERANCE_NS, V1_MOVES, BadLine, block_move, read_log

OPS = ("store", "move", "evict", "hit", "offload", "onboard")

# Most violations (and bad lines) kept in full; the rest are only counted, as the app does.
KEEP_PROBLEMS = 1000


class LedgerError(Exception):
    """A block move that would break a rule of docs/protocol.md (`rule` is its code)."""

    def __init__(self, rule: str, block_id: Any, message: str = "") -> None:
        self.rule = rule
        self.block_id = block_id
        super().__init__(f"{rule}: {message}" if message else f"{rule}: block {block_id!r}")


@dataclass
class Violation:
    """One broken rule found while replaying a log; `seq` is None for a whole-run rule."""

    rule: str
    seq: int | None
    message: str
    block_id: Any = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "whole run"
        return f"{where}: {self.rule}: {self.message}"


@dataclass
class PoolInfo:
    capacity_blocks: int
    block_tokens: int = 0
    block_bytes: int = 0
    tier: Union[int, None] = None


# A pool's tier when its line leaves it out (every v1 log): gpu 0, host 1.
DEFAULT_TIER = {"gpu": 0, "host": 1}
_POOL_LABEL = {"gpu": "GPU"}


def _label(pool: str) -> str:
    return _POOL_LABEL.get(pool, pool)


class BlockLedger:
    """The pools as insertion-ordered sets of block ids (dict keys; LRU order is the engine's
    business): gpu and host always, then any other pool (a disk tier) in the order first seen.
    A block is in exactly the pools the moves put it in (several at once after a move with
    keep_source). A host pool of capacity 0 means no host pool (the recompute baseline)."""

    def __init__(self, gpu_capacity: int, host_capacity: int, disk_capacity: int = 0) -> None:
        """An engine's ledger: gpu and host pools of these capacities, and a disk pool behind them
        when `disk_capacity` is above 0 (`add_pool` adds others); a rule break raises."""
        self.strict = True
        self.pools: dict[str, PoolInfo] = {
            "gpu": PoolInfo(int(gpu_capacity), tier=0),
            "host": PoolInfo(int(host_capacity), tier=1),
        }
        self._held: dict[str, dict[Any, None]] = {"gpu": {}, "host": {}}
        self.counts = {op: 0 for op in OPS}
        # Blocks moved from one pool to another, whichever op said so (offload is gpu -> host,
        # onboard host -> gpu): the run.end summary's counts.
        self.moved: dict[tuple[str, str], int] = {}
        self.peak = {p: 0 for p in self._held}
        self.violations: list[Violation] = []
        self.violation_counts: dict[str, int] = {}
        self._over: dict[str, bool] = {}
        self._seen: set[Any] = set()
        self._last_seq = -1
        self._blocks_seen = False
        # The rounds phase, for the rule that CUPTI's copies cover the blocks moved in it.
        self._in_rounds = False
        self._rounds_begin: int | None = None
        self._rounds_end: int | None = None
        self._rounds_moves = {("gpu", "host"): 0, ("host", "gpu"): 0}
        self._rounds_xfer = {"h2d": 0, "d2h": 0, "d2d": 0, "h2h": 0}
        self._late_xfers: list[tuple[str, int, int]] = []
        self._cupti_seen = False
        self._queued: dict[tuple[int, int], int] = {}
        self._run_end: dict[str, Any] | None = None
        if disk_capacity > 0:
            self.add_pool("disk", disk_capacity)

    def add_pool(self, name: str, capacity: int, tier: int | None = None) -> None:
        """An engine's pool beyond gpu and host ("disk", "remote", ...), at the next tier unless given."""
        if name in self.pools:
            raise LedgerError("pool_redefined", None, f"pool {name!r} declared again")
        if tier is None:
            tier = 1 + max((p.tier for p in self.pools.values() if p.tier is not None), default=0)
        self.pools[name] = PoolInfo(int(capacity), tier=tier)
        self._pool_set(name)

    @classmethod
    def for_reading(cls) -> "BlockLedger":
        """A ledger for replaying a log: no pools until its pool lines, rule breaks recorded."""
        ledger = cls(0, 0)
        ledger.strict = False
        ledger.pools = {}
        return ledger

    # -- the pools ------------------------------------------------------------------------------
    @property
    def gpu(self) -> dict[Any, None]:
        return self._held["gpu"]

    @property
    def host(self) -> dict[Any, None]:
        return self._held["host"]

    def holding(self, pool: str) -> dict[Any, None]:
        """The blocks a pool holds (empty for a pool the ledger has not seen)."""
        return self._held.get(pool, {})

    def capacity(self, pool: str) -> int:
        info = self.pools.get(pool)
        return info.capacity_blocks if info is not None else 0

    @property
    def gpu_capacity(self) -> int:
        return self.capacity("gpu")

    @property
    def host_capacity(self) -> int:
        return self.capacity("host")

    @property
    def distinct_blocks(self) -> int:
        return len(self._seen)

    @property
    def violation_total(self) -> int:
        return sum(self.violation_counts.values())

    # -- an engine's moves (strict: a rule break raises and nothing changes) -----------------------
    def store(self, ids: Iterable[Any], pool: str = "gpu") -> None:
        self._blocks("store", list(ids), pool=pool)

    def move(self, src: str, dst: str, ids: Iterable[Any], keep_source: bool = False) -> None:
        """Blocks leave `src` (unless keep_source) and are in `dst` after; gpu -> host and host ->
        gpu are checked and counted as the offload and onboard they are."""
        for op, pair in V1_MOVES.items():
            if (src, dst) == pair:
                self._blocks(op, list(ids), keep=keep_source)
                return
        self._blocks("move", list(ids), keep=keep_source, src=src, dst=dst)

    def offload(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        """v1's name for a move gpu -> host."""
        self._blocks("offload", list(ids), keep=keep_source)

    def onboard(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        """v1's name for a move host -> gpu."""
        self._blocks("onboard", list(ids), keep=keep_source)

    def evict(self, pool: str, ids: Iterable[Any]) -> None:
        self._blocks("evict", list(ids), pool=pool)

    def hit(self, ids: Iterable[Any], pool: str = "gpu") -> None:
        self._blocks("hit", list(ids), pool=pool)

    # -- a reader's replay ---------------------------------------------------------------------------
    def apply(self, ev: dict[str, Any]) -> None:
        """Applies one valid event (any type: seq, pool, blocks, phase, xfer, req and run.end
        lines matter here)."""
        seq = ev["seq"]
        # A repeated or out-of-order line is reported and not applied again (it would double-count).
        if not self._check_seq(seq):
            return
        typ = ev["type"]
        if typ == "pool":
            self._pool_line(ev)
        elif typ == "blocks":
            mv = block_move(ev)
            self._blocks(ev["op"], ev["ids"], ev.get("pool"), ev.get("keep_source") is True, seq, *(mv or (None, None)))
        elif typ == "phase":
            if ev["name"] == "rounds":
                self._in_rounds = ev["state"] == "begin"
                if self._in_rounds:
                    self._rounds_begin = ev["t"]
                else:
                    self._rounds_end = ev["t"]
        elif typ == "xfer":
            if ev["source"] == "cupti" and ev["dir"] in self._rounds_xfer:
                self._cupti_seen = True
                if self._in_rounds:
                    self._rounds_xfer[ev["dir"]] += ev["bytes"]
                elif self._rounds_begin is not None and ev["start"] >= self._rounds_begin:
                    # CUPTI flushes late: a copy written after `rounds end` counts by its start.
                    self._late_xfers.append((ev["dir"], ev["bytes"], ev["start"]))
        elif typ == "req":
            self._req(ev)
        elif typ == "run.end":
            self._run_end = ev

    def rounds_xfer_bytes(self) -> dict[str, int]:
        """Bytes of CUPTI copies inside the rounds phase, per direction: the lines written while
        it was open, and those written after it whose copy started inside it."""
        out = dict(self._rounds_xfer)
        lo, hi = self._rounds_begin, self._rounds_end
        for d, nbytes, start in self._late_xfers:
            if lo is not None and start >= lo and (hi is None or start <= hi):
                out[d] += nbytes
        return out

    def finish(self) -> None:
        """Whole-run rules, checked once the log is complete."""
        gpu = self.pools.get("gpu")
        moved_out = sum(n for (src, _), n in self.moved.items() if src == "gpu")
        if gpu is not None and self.distinct_blocks <= gpu.capacity_blocks:
            if moved_out + self.counts["evict"] > 0:
                self._violate(
                    "ample_pool_moved", None,
                    f"the GPU pool holds {gpu.capacity_blocks} blocks and the run used {self.distinct_blocks}, "
                    f"yet {moved_out} were offloaded and {self.counts['evict']} evicted",
                )
        if self._cupti_seen and gpu is not None and self._rounds_begin is not None:
            xfer = self.rounds_xfer_bytes()
            for op, d, key in (("onboard", "h2d", ("host", "gpu")), ("offload", "d2h", ("gpu", "host"))):
                n = self._rounds_moves[key]
                need = n * gpu.block_bytes
                if xfer[d] < need:
                    self._violate(
                        "xfer_short", None,
                        f"CUPTI {d} bytes during the rounds phase are {xfer[d]}, fewer than the "
                        f"{n} {op}ed blocks × {gpu.block_bytes} bytes = {need}",
                    )
        if self._run_end is not None:
            summary = self._run_end["summary"]
            for key, src, dst in _SUMMARY_MOVES:
                if key == "blocks_evicted":
                    have = self.counts["evict"]
                else:
                    have = self.moved.get((src, dst), 0)
                if key in summary and summary[key] != have:
                    self._violate(
                        "summary_mismatch", self._run_end["seq"],
                        f"summary.{key} is {summary[key]} but the blocks lines {_SUMMARY_VERB[key]} {have}",
                    )

    # -- the rules ------------------------------------------------------------------------------------
    def _check_seq(self, seq: int) -> bool:
        """False when the line must not be applied (a repeat or out of order)."""
        if seq == self._last_seq + 1:
            self._last_seq = seq
            return True
        if seq > self._last_seq + 1:
            self._violate("seq_gap", seq, f"seq jumps from {self._last_seq} to {seq}: {seq - self._last_seq - 1} line(s) missing")
            self._last_seq = seq
            return True
        if seq == self._last_seq:
            self._violate("seq_duplicate", seq, f"seq {seq} appears twice")
        else:
            self._violate("seq_out_of_order", seq, f"seq {seq} comes after seq {self._last_seq}")
        return False

    def _pool_line(self, ev: dict[str, Any]) -> None:
        seq, name = ev["seq"], ev["pool"]
        if name in self.pools:
            self._violate("pool_redefined", seq, f'pool "{name}" declared again')
        if self._blocks_seen:
            self._violate("pool_after_blocks", seq, f'pool "{name}" declared after the first blocks line')
        tier = ev.get("tier", DEFAULT_TIER.get(name))
        if (name == "gpu") != (tier == 0):
            self._violate("tier_zero_not_gpu", seq, f'pool "{name}" is tier {tier}: tier 0 is the gpu pool\'s and only its')
        same = [p for p, info in self.pools.items() if p != name and info.tier == tier]
        if same:
            self._violate("tier_not_unique", seq, f'pool "{name}" is tier {tier}, as pool "{same[0]}" is')
        self.pools[name] = PoolInfo(ev["capacity_blocks"], ev["block_tokens"], ev["block_bytes"], tier)
        self._pool_set(name)

    def _pool_set(self, name: str) -> dict[Any, None]:
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = {}
            self.peak.setdefault(name, 0)
        return held

    def _req(self, ev: dict[str, Any]) -> None:
        key = (ev["user"], ev["round"])
        if ev["phase"] == "queued":
            self._queued[key] = ev["t"]
        elif ev["phase"] == "first_token" and "ttft_parts" in ev and key in self._queued:
            parts = ev["ttft_parts"]
            total = parts["queued_ns"] + parts["other_ns"] + sum(
                parts[k]["ns"] for k in ("host_reload", "disk_promote", "recompute") if k in parts
            )
            ttft = ev["t"] - self._queued[key]
            if abs(total - ttft) > TTFT_PARTS_TOLERANCE_NS:
                self._violate(
                    "ttft_parts_sum", ev["seq"],
                    f"user {key[0]} round {key[1]}: ttft_parts add up to {total} ns, the TTFT is {ttft} ns",
                )

    def _usable(self, pool: str) -> bool:
        info = self.pools.get(pool)
        return info is not None and info.capacity_blocks > 0

    def _blocks(self, op: str, ids: list[Any], pool: str | None = None, keep: bool = False, seq: int | None = None,
                src: str | None = None, dst: str | None = None) -> None:
        """One blocks line: every rule it breaks is found before anything changes; a strict ledger
        then raises the first, a reader's records them all and applies the move best effort (a
        move whose source lacks the block still puts it in the destination, an add the pool
        already holds changes nothing)."""
        found: list[tuple[str, Any, str]] = []
        after: dict[tuple[str, Any], bool] = {}  # (pool, id) -> held once the line is applied

        def has(p: str, i: Any) -> bool:
            k = (p, i)
            return after[k] if k in after else i in self._held.get(p, ())

        if op in V1_MOVES:
            src, dst = V1_MOVES[op]
        if "gpu" not in self.pools:
            found.append(("pool_missing", None, f'blocks {op} before the "gpu" pool line'))
        moving = op in ("offload", "onboard", "move")
        if moving:
            assert src is not None and dst is not None
            if src == dst:
                found.append(("move_to_self", None, f"move of {len(ids)} block(s) from pool \"{src}\" to itself"))
            elif op != "move":
                if not self._usable("host"):
                    found.append(("move_without_host_pool", None, f"{op} of {len(ids)} block(s) with no host pool"))
            else:
                for p in (src, dst):
                    if p != "gpu" and not self._usable(p):
                        side = "from" if p == src else "to"
                        message = f'move of {len(ids)} block(s) {side} pool "{p}", which has no line or capacity 0'
                        found.append(("move_without_pool", None, message))
            if src != dst:
                rule = _NOT_IN_SOURCE[op]
                for i in ids:
                    if not has(src, i):
                        found.append((rule, i, f"block {i} {_VERB[op]} but not in the {_label(src)} pool"))
                    if not keep:
                        after[(src, i)] = False
                    after[(dst, i)] = True
        else:
            p = pool or "gpu"
            if p != "gpu" and p not in self.pools:
                found.append(("unknown_pool", None, f'blocks {op} in pool "{p}", which no pool line declares'))
            if op == "store":
                rule = "store_already_on_gpu" if p == "gpu" else "store_already_in_pool"
                for i in ids:
                    if has(p, i):
                        found.append((rule, i, f"block {i} stored but already in the {_label(p)} pool"))
                    after[(p, i)] = True
            elif op == "evict":
                for i in ids:
                    if has(p, i):
                        after[(p, i)] = False
                    else:
                        found.append(("evict_not_in_pool", i, f"block {i} evicted from the {p} pool but not in it"))
            else:
                rule = "hit_not_on_gpu" if p == "gpu" else "hit_not_in_pool"
                for i in ids:
                    if not has(p, i):
                        found.append((rule, i, f"block {i} hit but not in the {_label(p)} pool"))

        # The pools this line puts blocks in or takes them from, created if new (as the app's ledger does).
        if moving:
            used = [src, dst] if src != dst else []
        else:
            used = [pool or "gpu"] if op == "store" else []
        order = list(self._held) + [p for p in dict.fromkeys(used) if p not in self._held]
        size = {p: len(self._held.get(p, ())) for p in order}
        for (p, i), held in after.items():
            if held != (i in self._held.get(p, ())):
                size[p] += 1 if held else -1
        over: dict[str, bool] = {}
        for p in order:
            info = self.pools.get(p)
            cap = info.capacity_blocks if info is not None else 0
            # A pool with no line (pool_missing, unknown_pool, move_without_pool) or a non-GPU
            # pool of capacity 0 (move_without_host_pool, move_without_pool) is no pool to be over.
            counted = info is not None and (p == "gpu" or cap > 0)
            over[p] = counted and size[p] > cap
            if over[p] and (self.strict or not self._over.get(p, False)):
                found.append(("over_capacity", None, f"the {p} pool holds {size[p]} blocks, over its capacity of {cap}"))

        if self.strict and found:
            rule, block_id, message = found[0]
            raise LedgerError(rule, block_id, message)
        self._blocks_seen = True
        self.counts[op] += len(ids)
        if moving and src != dst:
            key = (src, dst)
            self.moved[key] = self.moved.get(key, 0) + len(ids)
            if self._in_rounds and key in self._rounds_moves:
                self._rounds_moves[key] += len(ids)
        for rule, block_id, message in found:
            self._violate(rule, seq, message, block_id)
        for p in used:
            self._pool_set(p)
        for (p, i), held in after.items():
            target = self._held[p]
            if held:
                target[i] = None
            else:
                target.pop(i, None)
        if op in ("store", "offload", "onboard", "move"):
            self._seen.update(ids)
        for p in order:
            self._over[p] = over[p]
            self.peak[p] = max(self.peak.get(p, 0), size[p])

    def _violate(self, rule: str, seq: int | None, message: str, block_id: Any = None) -> None:
        if rule not in RULES:
            raise KeyError(f"rule {rule!r} is not in kvscope_agent/protocol/protocol.json")
        self.violation_counts[rule] = self.violation_counts.get(rule, 0) + 1
        if len(self.violations) < KEEP_PROBLEMS:
            self.violations.append(Violation(rule, seq, message, block_id))


# The run.end summary counts rule summary_mismatch compares, and the moves they count.
_SUMMARY_MOVES = (
    ("blocks_offloaded", "gpu", "host"),
    ("blocks_onboarded", "host", "gpu"),
    ("blocks_evicted", None, None),
    ("blocks_spilled", "host", "disk"),
    ("blocks_promoted", "disk", "host"),
)
_SUMMARY_VERB = {
    "blocks_offloaded": "offload (move gpu -> host)",
    "blocks_onboarded": "onboard (move host -> gpu)",
    "blocks_evicted": "evict",
    "blocks_spilled": "move host -> disk",
    "blocks_promoted": "move disk -> host",
}
_NOT_IN_SOURCE = {"offload": "offload_not_on_gpu", "onboard": "onboard_not_on_host", "move": "move_not_in_source"}
_VERB = {"offload": "offloaded", "onboard": "onboarded", "move": "moved"}


@dataclass
class LogReport:
    """What `validate_log` found: the lines that are not events, and the rules the events break."""

    bad_lines: list[BadLine] = field(default_factory=list)
    bad_line_total: int = 0
    violations: list[Violation] = field(default_factory=list)
    violation_counts: dict[str, int] = field(default_factory=dict)
    ledger: BlockLedger | None = None

    @property
    def valid(self) -> bool:
        return self.bad_line_total == 0 and not self.violation_counts


def validate_log(path: str | os.PathLike) -> LogReport:
    """Reads a whole events.jsonl (or .jsonl.gz) as `kvscope validate` does: each line against
    the schemas, then every rule across lines."""
    report = LogReport()
    ledger = BlockLedger.for_reading()
    for item in read_log(path):
        if isinstance(item, BadLine):
            report.bad_line_total += 1
            if len(report.bad_lines) < KEEP_PROBLEMS:
                report.bad_lines.append(item)
        else:
            ledger.apply(item)
    ledger.finish()
    report.violations = ledger.violations
    report.violation_counts = dict(ledger.violation_counts)
    report.ledger = ledger
    return report


def check_log(path: str | os.PathLike) -> list[BadLine | Violation]:
    """Every problem of a log (bad lines, then broken rules); an empty list means it is valid."""
    report = validate_log(path)
    return [*report.bad_lines, *report.violations]
