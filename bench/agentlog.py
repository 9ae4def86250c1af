"""Request timings from an agent log's `req` lines, shared by the offload sweep's scripts
(offload-sweep-results.py over a sweep, ttft-bound.py over one log) and disk-tier-results.py, and
the log's lines themselves. Standard library only."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar


def iter_events(path: str) -> Iterator[dict[str, Any]]:
    """The JSON lines of an events.jsonl (or .jsonl.gz); a line that is not JSON is skipped."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


@dataclass
class Req:
    """One request's phase times on the run clock (0 = not seen) and its `done` line."""

    user: int
    round: int
    queued: int = 0
    scheduled: int = 0
    first: int = 0
    done: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def ttft(self) -> int:
        return self.first - self.queued

    @property
    def service_ttft(self) -> int:
        return self.first - self.scheduled


R = TypeVar("R", bound=Req)


def request(reqs: dict[tuple[int, int], R], user: int, round: int, make: Callable[[int, int], R]) -> R:
    """The request (user, round) of `reqs`, made with `make` the first time it is named."""
    return reqs.setdefault((user, round), make(user, round))


def note_req(reqs: dict[tuple[int, int], R], e: dict[str, Any], make: Callable[[int, int], R]) -> R:
    """Record one `req` line: its phase's time (and, for `done`, the whole line)."""
    r = request(reqs, e["user"], e["round"], make)
    ph = e["phase"]
    if ph == "queued":
        r.queued = e["t"]
    elif ph == "scheduled":
        r.scheduled = e["t"]
    elif ph == "first_token":
        r.first = e["t"]
    elif ph == "done":
        r.done = e["t"]
        r.fields = e
    return r
