"""Block bookkeeping by the rules of docs/protocol.md ("Rules every reader checks"), pure Python (no torch).

`BlockLedger` enforces the rules as moves happen (the built-in engine keeps one beside its pools,
so a bug in the engine fails loudly instead of writing a log that lies); `check_log` replays a whole
events.jsonl and reports every broken rule with its seq, as a reader of a run would.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .emit import MAX_LINE_BYTES

POOLS = ("gpu", "host")
OPS = ("store", "offload", "onboard", "evict", "hit")

# docs/protocol.md "Types and their keys": the keys each type must carry (optional keys are not listed).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "run.start": ("run_id", "protocol", "agent_version", "engine", "config", "host", "clock"),
    "pool": ("pool", "capacity_blocks", "block_tokens", "block_bytes"),
    "blocks": ("op", "ids"),
    "xfer": ("dir", "bytes", "start", "end", "src_mem", "dst_mem", "device", "stream", "source"),
    "req": ("user", "round", "phase"),
    "round": ("round", "e2e_ns", "ttft_ns"),
    "gpu": ("index", "mem_used_bytes", "util_pct"),
    "phase": ("name", "state"),
    "log": ("level", "msg"),
    "run.end": ("status",),
}
REQ_DONE_KEYS = (
    "prompt_tokens",
    "output_tokens",
    "reused_gpu_tokens",
    "reused_host_tokens",
    "computed_tokens",
)
SUMMARY_KEYS = (
    "e2e_ns",
    "ttft_ns_mean",
    "ttft_ns_p50",
    "ttft_ns_p99",
    "blocks_offloaded",
    "blocks_onboarded",
    "blocks_evicted",
    "bytes_h2d",
    "bytes_d2h",
)


class LedgerError(Exception):
    """A block move that would break a block rule of docs/protocol.md."""

    def __init__(self, rule: str, block_id: Any, message: str = "") -> None:
        self.rule = rule
        self.block_id = block_id
        super().__init__(message or f"{rule}: block {block_id!r}")


@dataclass
class Violation:
    """One broken rule found while replaying a log. `seq` is None when the line had no readable
    seq (then `offset`, the line's byte offset in the file, locates it)."""

    rule: str
    seq: int | None
    offset: int
    message: str
    block_id: Any = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else f"byte {self.offset}"
        return f"{where}: {self.rule}: {self.message}"


class BlockLedger:
    """The GPU and host pools as sets of block ids; enforces the block rules on every move.

    `gpu` and `host` are insertion-ordered (dict keys); LRU order is the engine's business.
    A capacity of 0 for the host pool means no host pool (the recompute baseline).
    """

    def __init__(self, gpu_capacity: int, host_capacity: int) -> None:
        self.gpu_capacity = int(gpu_capacity)
        self.host_capacity = int(host_capacity)
        self._gpu: dict[Any, None] = {}
        self._host: dict[Any, None] = {}
        self.counts = {op: 0 for op in OPS}

    @property
    def gpu(self) -> dict[Any, None]:
        return self._gpu

    @property
    def host(self) -> dict[Any, None]:
        return self._host

    def _pool(self, name: str) -> dict[Any, None]:
        if name == "gpu":
            return self._gpu
        if name == "host":
            return self._host
        raise LedgerError("bad-pool", None, f"unknown pool {name!r}")

    @staticmethod
    def _unique(ids: Iterable[Any]) -> list[Any]:
        out = list(ids)
        if len(set(out)) != len(out):
            dup = next(i for i in out if out.count(i) > 1)
            raise LedgerError("duplicate-id", dup, f"block {dup!r} appears twice in one move")
        return out

    def _check_capacity(self, pool: str, adding: list[Any]) -> None:
        target = self._pool(pool)
        cap = self.gpu_capacity if pool == "gpu" else self.host_capacity
        new = [i for i in adding if i not in target]
        if len(target) + len(new) > cap:
            raise LedgerError(
                "capacity",
                new[0] if new else None,
                f"{pool} pool would hold {len(target) + len(new)} blocks, capacity {cap}",
            )

    def store(self, ids: Iterable[Any]) -> None:
        ids = self._unique(ids)
        for i in ids:
            if i in self._gpu:
                raise LedgerError("store-present", i, f"store of block {i!r} already in gpu pool")
        self._check_capacity("gpu", ids)
        for i in ids:
            self._gpu[i] = None
        self.counts["store"] += len(ids)

    def offload(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        ids = self._unique(ids)
        if self.host_capacity <= 0 and ids:
            raise LedgerError("no-host-pool", ids[0], "offload with no host pool")
        for i in ids:
            if i not in self._gpu:
                raise LedgerError("offload-absent", i, f"offload of block {i!r} not in gpu pool")
        self._check_capacity("host", ids)
        for i in ids:
            if not keep_source:
                del self._gpu[i]
            self._host[i] = None
        self.counts["offload"] += len(ids)

    def onboard(self, ids: Iterable[Any], keep_source: bool = False) -> None:
        ids = self._unique(ids)
        if self.host_capacity <= 0 and ids:
            raise LedgerError("no-host-pool", ids[0], "onboard with no host pool")
        for i in ids:
            if i not in self._host:
                raise LedgerError("onboard-absent", i, f"onboard of block {i!r} not in host pool")
        self._check_capacity("gpu", ids)
        for i in ids:
            if not keep_source:
                del self._host[i]
            self._gpu[i] = None
        self.counts["onboard"] += len(ids)

    def evict(self, pool: str, ids: Iterable[Any]) -> None:
        target = self._pool(pool)
        ids = self._unique(ids)
        for i in ids:
            if i not in target:
                raise LedgerError("evict-absent", i, f"evict of block {i!r} not in {pool} pool")
        for i in ids:
            del target[i]
        self.counts["evict"] += len(ids)

    def hit(self, ids: Iterable[Any]) -> None:
        ids = self._unique(ids)
        for i in ids:
            if i not in self._gpu:
                raise LedgerError("hit-absent", i, f"hit on block {i!r} not in gpu pool")
        self.counts["hit"] += len(ids)


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) of an events.jsonl, or of a gzipped one (.jsonl.gz, as the bundled
    samples are stored: offsets then count uncompressed bytes)."""
    offset = 0
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        for raw in f:
            yield offset, raw
            offset += len(raw)


def check_log(path: str | os.PathLike) -> list[Violation]:
    """Replay a whole events.jsonl; return every broken docs/protocol.md rule (empty list = clean).

    Checks: valid JSON lines within 1 MiB, seq 0,1,2,... (gaps and repeats), known types with
    their required keys, `pool` lines before any `blocks` line, every block rule (including
    capacities, no offload/onboard without a host pool, nothing offloaded or evicted when the GPU
    pool could hold every block the run used), and that `run.end.summary` counts agree with the
    `blocks` lines. The transfer/block byte agreement is checked from below (cupti h2d/d2h bytes
    during `rounds` cover the onboarded/offloaded blocks); the allowance for the engine's small
    extra copies is not fixed by docs/protocol.md, so no upper bound is enforced here.
    """
    out: list[Violation] = []
    ledger: BlockLedger | None = None
    pools: dict[str, dict[str, Any]] = {}
    expected_seq = 0
    seen_seqs: set[int] = set()
    stored_ids: set[Any] = set()
    moves = {"offload": 0, "onboard": 0, "evict": 0}
    first_move_seq: dict[str, int] = {}
    in_rounds = False
    rounds_window: list[int | None] = [None, None]  # t of rounds begin / end
    rounds_blocks = {"onboard": 0, "offload": 0}
    cupti_xfers: list[tuple[str, int, int]] = []  # (dir, bytes, start)
    any_cupti = False
    run_end: tuple[int, dict[str, Any]] | None = None

    def bad(rule: str, seq: int | None, offset: int, msg: str, block_id: Any = None) -> None:
        out.append(Violation(rule, seq, offset, msg, block_id))

    for offset, raw in iter_lines(path):
        if len(raw) > MAX_LINE_BYTES:
            bad("line-too-long", None, offset, f"line of {len(raw)} bytes")
            continue
        if not raw.endswith(b"\n"):
            bad("unterminated-line", None, offset, "last line has no newline (truncated write?)")
        try:
            ev = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            if raw.strip():
                bad("bad-json", None, offset, str(e))
            continue
        if not isinstance(ev, dict):
            bad("bad-json", None, offset, "line is not a JSON object")
            continue
        seq = ev.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            bad("bad-seq", None, offset, f"seq is {seq!r}")
            seq = None
        else:
            if seq in seen_seqs:
                bad("seq-repeat", seq, offset, f"seq {seq} repeated")
            elif seq != expected_seq:
                bad("seq-gap", seq, offset, f"expected seq {expected_seq}, got {seq}")
            seen_seqs.add(seq)
            expected_seq = max(expected_seq, seq + 1)
        t = ev.get("t")
        if not isinstance(t, int) or isinstance(t, bool):
            bad("bad-t", seq, offset, f"t is {t!r}")
        typ = ev.get("type")
        if typ not in REQUIRED_KEYS:
            bad("unknown-type", seq, offset, f"unknown type {typ!r}")
            continue
        missing = [k for k in REQUIRED_KEYS[typ] if k not in ev]
        if typ == "req" and ev.get("phase") == "done":
            missing += [k for k in REQ_DONE_KEYS if k not in ev]
        if missing:
            bad("missing-key", seq, offset, f"{typ} lacks {', '.join(missing)}")
            continue

        if typ == "pool":
            name = ev["pool"]
            if name not in POOLS:
                bad("bad-pool", seq, offset, f"unknown pool {name!r}")
                continue
            if name in pools:
                bad("pool-repeat", seq, offset, f"second pool line for {name!r}")
            if ledger is not None:
                bad("pool-late", seq, offset, f"pool line for {name!r} after blocks lines")
            pools[name] = ev
            continue
        if typ == "phase":
            if ev["name"] == "rounds":
                in_rounds = ev["state"] == "begin"
                if isinstance(t, int):
                    rounds_window[0 if in_rounds else 1] = t
            continue
        if typ == "xfer":
            # The collector reports copies late (CUPTI buffers), possibly after the rounds
            # phase has ended: a copy belongs to the rounds by its start time, not its line.
            if ev.get("source") == "cupti":
                any_cupti = True
                if ev.get("dir") in ("h2d", "d2h") and isinstance(ev.get("start"), int):
                    cupti_xfers.append((ev["dir"], int(ev.get("bytes") or 0), ev["start"]))
            continue
        if typ == "run.end":
            run_end = (seq if seq is not None else -1, ev)
            continue
        if typ != "blocks":
            continue

        if "gpu" not in pools:
            bad("pool-missing", seq, offset, "blocks line before the gpu pool line")
            continue
        if ledger is None:
            host_cap = int(pools["host"]["capacity_blocks"]) if "host" in pools else 0
            ledger = BlockLedger(int(pools["gpu"]["capacity_blocks"]), host_cap)
        op = ev["op"]
        ids = ev["ids"]
        if op not in OPS:
            bad("bad-op", seq, offset, f"unknown op {op!r}")
            continue
        if not isinstance(ids, list):
            bad("bad-ids", seq, offset, "ids is not an array")
            continue
        keep = bool(ev.get("keep_source", False))
        try:
            if op == "store":
                ledger.store(ids)
                stored_ids.update(ids)
            elif op == "offload":
                ledger.offload(ids, keep_source=keep)
            elif op == "onboard":
                ledger.onboard(ids, keep_source=keep)
            elif op == "evict":
                if "pool" not in ev:
                    bad("missing-key", seq, offset, "evict lacks pool")
                    continue
                ledger.evict(ev["pool"], ids)
            else:
                ledger.hit(ids)
        except LedgerError as e:
            bad(e.rule, seq, offset, str(e), e.block_id)
            continue
        if op in moves:
            moves[op] += len(ids)
            first_move_seq.setdefault(op, seq if seq is not None else -1)
        if in_rounds and op in rounds_blocks:
            rounds_blocks[op] += len(ids)

    # "If the GPU pool can hold every block the run ever needs, nothing is offloaded or evicted."
    if ledger is not None and len(stored_ids) <= ledger.gpu_capacity:
        for op in ("offload", "evict"):
            if moves[op]:
                bad(
                    "ample-gpu-pool",
                    first_move_seq[op],
                    0,
                    f"{moves[op]} blocks {op}ed although the gpu pool "
                    f"({ledger.gpu_capacity} blocks) holds all {len(stored_ids)} stored",
                )

    if any_cupti and "gpu" in pools and rounds_window[0] is not None:
        lo = rounds_window[0]
        hi = rounds_window[1] if rounds_window[1] is not None else float("inf")
        rounds_xfer = {"h2d": 0, "d2h": 0}
        for d, nbytes, start in cupti_xfers:
            if lo <= start <= hi:
                rounds_xfer[d] += nbytes
        bb = int(pools["gpu"]["block_bytes"])
        for op, d in (("onboard", "h2d"), ("offload", "d2h")):
            need = rounds_blocks[op] * bb
            if rounds_xfer[d] < need:
                bad(
                    "xfer-short",
                    None,
                    0,
                    f"cupti {d} bytes during rounds {rounds_xfer[d]} < {op}ed blocks × "
                    f"block_bytes = {need}",
                )

    if run_end is not None:
        rseq, ev = run_end
        summary = ev.get("summary")
        if ev.get("status") == "ok" and not isinstance(summary, dict):
            bad("missing-key", rseq, 0, "run.end with status ok lacks summary")
        if isinstance(summary, dict):
            for key, op in (
                ("blocks_offloaded", "offload"),
                ("blocks_onboarded", "onboard"),
                ("blocks_evicted", "evict"),
            ):
                if key in summary and summary[key] != moves[op]:
                    bad(
                        "summary-mismatch",
                        rseq,
                        0,
                        f"summary.{key} is {summary[key]} but blocks lines {op} {moves[op]}",
                    )
    return out
