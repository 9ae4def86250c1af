"""Block bookkeeping by the rules of docs/protocol.md ("Rules every reader checks"), pure Python (no torch).

One `BlockLedger`, two uses:
- an engine keeps one beside its pools (`BlockLedger(gpu_capacity, host_capacity)`): a move that
  would break a rule raises `LedgerError` before anything changes, so a bug in the engine fails
  loudly instead of writing a log that lies;
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
from typing import Any, Iterable

from .protocol import RULES, BadLine, read_log

POOLS = ("gpu", "host")
OPS = ("store", "offload", "onboard", "evict", "hit")
_POOL_LABEL = {"gpu": "GPU", "host": "host"}

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


class BlockLedger:
    """The pools as insertion-ordered sets of block ids (dict keys; LRU order is the engine's
    business). A host pool of capacity 0 means no host pool (the recompute baseline)."""

    def __init__(self, gpu_capacity: int, host_capacity: int) -> None:
        self.strict = True
        self.pools: dict[str, PoolInfo] = {
            "gpu": PoolInfo(int(gpu_capacity)),
            "host": PoolInfo(int(host_capacity)),
        }
        self._held: dict[str, dict[Any, None]] = {p: {} for p in POOLS}
        self.counts = {op: 0 for op in OPS}
        self.peak = {p: 0 for p in POOLS}
        self.violations: list[Violation] = []
        self.violation_counts: dict[str, int] = {}
        self._over = {p: False for p in POOLS}
        self._seen: set[Any] = set()
        self._last_seq = -1
        self._blocks_seen = False
        # The rounds phase, for the rule that CUPTI's copies cover the blocks moved in it.
        self._in_rounds = False
        self._rounds_begin: int | None = None
        self._rounds_end: int | None = None
        self._rounds_blocks = {"offload": 0, "onboard": 0}
        self._rounds_xfer = {"h2d": 0, "d2h": 0, "d2d": 0, "h2h": 0}
        self._late_xfers: list[tuple[str, int, int]] = []
        self._cupti_seen = False
        self._run_end: dict[str, Any] | None = None

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

    @property
    def gpu_capacity(self) -> int:
        return self.pools["gpu"].capacity_blocks if "gpu" in self.pools else 0

    @property
    def host_capacity(self) -> int:
        return self.pools["host"].capacity_blocks if "host" in self.pools else 0

    @property
    def distinct_blocks(self) -> int:
        return len(self._seen)

    @property
    def violation_total(self) -> int:
        return sum(self.violation_counts.values())

    # -- an engine's moves (strict: a rule break raises and nothing changes) -----------------------
    def store(self, ids: Iterable[Any]) -> None:
        self._blocks("store", list(ids))

    def offload(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        self._blocks("offload", list(ids), keep=keep_source)

    def onboard(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        self._blocks("onboard", list(ids), keep=keep_source)

    def evict(self, pool: str, ids: Iterable[Any]) -> None:
        self._blocks("evict", list(ids), pool=pool)

    def hit(self, ids: Iterable[Any]) -> None:
        self._blocks("hit", list(ids))

    # -- a reader's replay ---------------------------------------------------------------------------
    def apply(self, ev: dict[str, Any]) -> None:
        """Applies one valid event (any type: seq, pool, blocks, phase, xfer and run.end lines
        matter here)."""
        seq = ev["seq"]
        # A repeated or out-of-order line is reported and not applied again (it would double-count).
        if not self._check_seq(seq):
            return
        typ = ev["type"]
        if typ == "pool":
            name = ev["pool"]
            if name in self.pools:
                self._violate("pool_redefined", seq, f'pool "{name}" declared again')
            if self._blocks_seen:
                self._violate("pool_after_blocks", seq, f'pool "{name}" declared after the first blocks line')
            self.pools[name] = PoolInfo(ev["capacity_blocks"], ev["block_tokens"], ev["block_bytes"])
        elif typ == "blocks":
            self._blocks(ev["op"], ev["ids"], ev.get("pool"), ev.get("keep_source") is True, seq)
        elif typ == "phase":
            if ev["name"] == "rounds":
                self._in_rounds = ev["state"] == "begin"
                if self._in_rounds:
                    self._rounds_begin = ev["t"]
                else:
                    self._rounds_end = ev["t"]
        elif typ == "xfer":
            if ev["source"] == "cupti":
                self._cupti_seen = True
                if self._in_rounds:
                    self._rounds_xfer[ev["dir"]] += ev["bytes"]
                elif self._rounds_begin is not None and ev["start"] >= self._rounds_begin:
                    # CUPTI flushes late: a copy written after `rounds end` counts by its start.
                    self._late_xfers.append((ev["dir"], ev["bytes"], ev["start"]))
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
        if gpu is not None and self.distinct_blocks <= gpu.capacity_blocks:
            moved = self.counts["offload"] + self.counts["evict"]
            if moved > 0:
                self._violate(
                    "ample_pool_moved", None,
                    f"the GPU pool holds {gpu.capacity_blocks} blocks and the run used {self.distinct_blocks}, "
                    f"yet {self.counts['offload']} were offloaded and {self.counts['evict']} evicted",
                )
        if self._cupti_seen and gpu is not None and self._rounds_begin is not None:
            xfer = self.rounds_xfer_bytes()
            for op, d in (("onboard", "h2d"), ("offload", "d2h")):
                need = self._rounds_blocks[op] * gpu.block_bytes
                if xfer[d] < need:
                    self._violate(
                        "xfer_short", None,
                        f"CUPTI {d} bytes during the rounds phase are {xfer[d]}, fewer than the "
                        f"{self._rounds_blocks[op]} {op}ed blocks × {gpu.block_bytes} bytes = {need}",
                    )
        if self._run_end is not None:
            summary = self._run_end["summary"]
            for key, op in (("blocks_offloaded", "offload"), ("blocks_onboarded", "onboard"), ("blocks_evicted", "evict")):
                if summary[key] != self.counts[op]:
                    self._violate(
                        "summary_mismatch", self._run_end["seq"],
                        f"summary.{key} is {summary[key]} but the blocks lines {op} {self.counts[op]}",
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

    def _has_host_pool(self) -> bool:
        host = self.pools.get("host")
        return host is not None and host.capacity_blocks > 0

    def _blocks(self, op: str, ids: list[Any], pool: str | None = None, keep: bool = False, seq: int | None = None) -> None:
        """One blocks line: every rule it breaks is found before anything changes; a strict ledger
        then raises the first, a reader's records them all and applies the move best effort (a
        move whose source is absent only adds, an add the pool already holds changes nothing)."""
        found: list[tuple[str, Any, str]] = []
        after: dict[tuple[str, Any], bool] = {}  # (pool, id) -> held once the line is applied

        def has(p: str, i: Any) -> bool:
            k = (p, i)
            return after[k] if k in after else i in self._held.get(p, ())

        if "gpu" not in self.pools:
            found.append(("pool_missing", None, f'blocks {op} before the "gpu" pool line'))
        if op == "store":
            for i in ids:
                if has("gpu", i):
                    found.append(("store_already_on_gpu", i, f"block {i} stored but already in the GPU pool"))
                after[("gpu", i)] = True
        elif op in ("offload", "onboard"):
            src, dst = ("gpu", "host") if op == "offload" else ("host", "gpu")
            if not self._has_host_pool():
                found.append(("move_without_host_pool", None, f"{op} of {len(ids)} block(s) with no host pool"))
            rule = "offload_not_on_gpu" if op == "offload" else "onboard_not_on_host"
            for i in ids:
                if not has(src, i):
                    found.append((rule, i, f"block {i} {op}ed but not in the {_POOL_LABEL[src]} pool"))
                if not keep:
                    after[(src, i)] = False
                after[(dst, i)] = True
        elif op == "evict":
            p = pool or "gpu"
            for i in ids:
                if has(p, i):
                    after[(p, i)] = False
                else:
                    found.append(("evict_not_in_pool", i, f"block {i} evicted from the {p} pool but not in it"))
        else:
            for i in ids:
                if not has("gpu", i):
                    found.append(("hit_not_on_gpu", i, f"block {i} hit but not in the GPU pool"))

        size = {p: len(self._held[p]) for p in POOLS}
        for (p, i), held in after.items():
            if held != (i in self._held[p]):
                size[p] += 1 if held else -1
        over: dict[str, bool] = {}
        for p in POOLS:
            info = self.pools.get(p)
            cap = info.capacity_blocks if info is not None else 0
            # A pool with no line (pool_missing, move_without_host_pool), or a host pool of capacity 0
            # (move_without_host_pool), is no pool to be over.
            counted = info is not None and (p == "gpu" or cap > 0)
            over[p] = counted and size[p] > cap
            if over[p] and (self.strict or not self._over[p]):
                found.append(("over_capacity", None, f"the {p} pool holds {size[p]} blocks, over its capacity of {cap}"))

        if self.strict and found:
            rule, block_id, message = found[0]
            raise LedgerError(rule, block_id, message)
        self._blocks_seen = True
        self.counts[op] += len(ids)
        if self._in_rounds and op in self._rounds_blocks:
            self._rounds_blocks[op] += len(ids)
        for rule, block_id, message in found:
            self._violate(rule, seq, message, block_id)
        for (p, i), held in after.items():
            if held:
                self._held[p][i] = None
            else:
                self._held[p].pop(i, None)
        if op in ("store", "offload", "onboard"):
            self._seen.update(ids)
        for p in POOLS:
            self._over[p] = over[p]
            self.peak[p] = max(self.peak[p], size[p])

    def _violate(self, rule: str, seq: int | None, message: str, block_id: Any = None) -> None:
        if rule not in RULES:
            raise KeyError(f"rule {rule!r} is not in kvscope_agent/protocol/protocol.json")
        self.violation_counts[rule] = self.violation_counts.get(rule, 0) + 1
        if len(self.violations) < KEEP_PROBLEMS:
            self.violations.append(Violation(rule, seq, message, block_id))


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
