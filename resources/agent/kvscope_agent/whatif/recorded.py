"""A recorded run (events.jsonl or .jsonl.gz, protocol v1 or v2) as the what-if calibration reads it.

Standard library only. Timings follow docs/protocol.md and the app's run analysis
(src/shared/run-analysis.ts): E2E from the first `req queued` of round 1 to the last `req done` of
the last round, TTFT of a request = first_token − queued.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..protocol import block_move, read_log


class RecordedRunError(ValueError):
    """A log the simulator cannot calibrate from; the message says why."""


@dataclass
class Req:
    user: int
    round: int
    queued: int | None = None
    scheduled: int | None = None
    first: int | None = None
    done: int | None = None


@dataclass
class Admission:
    """One `scheduled` line: how long after the previous request line it came (the host's
    admission work), and how many blocks its admission moved."""

    user: int
    round: int
    gap_ns: int
    moved_blocks: int
    after_phase: str


@dataclass
class Xfer:
    dir: str
    bytes: int
    start: int
    end: int
    stream: Any


@dataclass
class RecordedRun:
    path: str
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    unix_ns_at_t0: int = 0
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    reqs: dict[tuple[int, int], Req] = field(default_factory=dict)
    admissions: list[Admission] = field(default_factory=list)
    xfers: list[Xfer] = field(default_factory=list)
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)
    status: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    simulated: dict[str, Any] | None = None

    @property
    def gpu(self) -> dict[str, Any]:
        gpus = self.host.get("gpus") or []
        return gpus[0] if gpus and isinstance(gpus[0], dict) else {}

    @property
    def users(self) -> int:
        return int(self.config.get("users") or 0)

    @property
    def timed_rounds(self) -> int:
        return int(self.config.get("rounds") or 0)

    def e2e_ns(self) -> int | None:
        q = [r.queued for r in self.reqs.values() if r.round == 1 and r.queued is not None]
        d = [r.done for r in self.reqs.values() if r.round == self.timed_rounds and r.done is not None]
        return (max(d) - min(q)) if q and d else None

    def ttft_mean_ns(self) -> float | None:
        v = [r.first - r.queued for r in self.reqs.values()
             if r.round >= 1 and r.first is not None and r.queued is not None]
        return sum(v) / len(v) if v else None


def read_run(path: str) -> RecordedRun:
    """Reads one log. Lines that are not valid events are skipped (a reader of a run does the same:
    kvscope_agent/protocol's reader); a log without run.start or without a complete timed workload
    is a RecordedRunError."""
    run = RecordedRun(path=path)
    last_req_t: int | None = None
    last_req_phase = ""
    moved_since = 0
    try:
        lines = [e for e in read_log(path) if isinstance(e, dict)]
    except OSError as e:
        raise RecordedRunError(f"{path}: cannot read ({e.strerror})") from None
    for e in lines:
        typ = e.get("type")
        if typ == "run.start":
            run.run_id = str(e.get("run_id", ""))
            run.config = e.get("config") if isinstance(e.get("config"), dict) else {}
            run.host = e.get("host") if isinstance(e.get("host"), dict) else {}
            run.unix_ns_at_t0 = int((e.get("clock") or {}).get("unix_ns_at_t0") or 0)
            sim = e.get("simulated")
            run.simulated = sim if isinstance(sim, dict) else None
        elif typ == "pool" and e.get("pool") in ("gpu", "host"):
            run.pools[e["pool"]] = e
        elif typ == "blocks" and block_move(e) in (("gpu", "host"), ("host", "gpu")):
            moved_since += len(e.get("ids") or [])
        elif typ == "req":
            try:
                key = (int(e["user"]), int(e["round"]))
                t = int(e["t"])
            except (KeyError, TypeError, ValueError):
                continue
            r = run.reqs.setdefault(key, Req(*key))
            phase = e.get("phase")
            if phase == "queued":
                r.queued = t
            elif phase == "scheduled":
                r.scheduled = t
                if last_req_t is not None:
                    run.admissions.append(Admission(key[0], key[1], t - last_req_t, moved_since, last_req_phase))
            elif phase == "first_token":
                r.first = t
            elif phase == "done":
                r.done = t
            last_req_t, last_req_phase, moved_since = t, str(phase), 0
        elif typ == "xfer" and e.get("source") == "engine" and e.get("dir") in ("h2d", "d2h"):
            try:
                run.xfers.append(Xfer(e["dir"], int(e["bytes"]), int(e["start"]), int(e["end"]), e.get("stream")))
            except (KeyError, TypeError, ValueError):
                continue
        elif typ == "round":
            try:
                run.rounds[int(e["round"])] = e
            except (KeyError, TypeError, ValueError):
                continue
        elif typ == "run.end":
            run.status = e.get("status")
            run.summary = e.get("summary") if isinstance(e.get("summary"), dict) else {}
    if not run.config:
        raise RecordedRunError(f"{path}: no run.start line: not a KV Scope run log")
    if run.config.get("engine", "torch") != "torch":
        raise RecordedRunError(f"{path}: engine {run.config.get('engine')!r}: the simulator replays the built-in "
                               "torch engine's schedule only")
    if "gpu" not in run.pools:
        raise RecordedRunError(f"{path}: no gpu pool line")
    if run.timed_rounds < 1 or run.e2e_ns() is None:
        raise RecordedRunError(f"{path}: no complete timed round (status {run.status!r}): nothing to calibrate from")
    return run


def find_logs(path: str) -> list[str]:
    """The event logs a path names: a log file, a run folder (events.jsonl[.gz]), or a sweep folder
    (its users-N/ and host-*/users-N/ runs), in a stable order."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise RecordedRunError(f"{path}: no such file or folder")
    for name in ("events.jsonl", "events.jsonl.gz"):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)]
    found: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if root != path and os.path.relpath(root, path).count(os.sep) > 2:
            continue
        for name in ("events.jsonl", "events.jsonl.gz"):
            if name in files:
                found.append(os.path.join(root, name))
                break
    if not found:
        raise RecordedRunError(f"{path}: no events.jsonl in it or in its run folders")
    return found
