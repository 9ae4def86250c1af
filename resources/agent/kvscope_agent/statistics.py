"""The numbers of a run's summary (run.end `summary`, docs/protocol.md): percentiles, the summary
of a run that never got to its rounds, and the counts a failed run still has.
"""

from __future__ import annotations

from typing import Any, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def empty_summary() -> dict[str, Any]:
    return {"e2e_ns": None, "ttft_ns_mean": None, "ttft_ns_p50": None, "ttft_ns_p99": None,
            "blocks_offloaded": 0, "blocks_onboarded": 0, "blocks_evicted": 0, "bytes_h2d": 0, "bytes_d2h": 0}


def partial_summary(engine: Any) -> dict[str, Any]:
    s = empty_summary()
    try:
        engine._emit_copy_records(wait=True)
    except Exception:  # noqa: BLE001 - the summary of a failed run is best effort
        pass
    c = engine.ledger.counts
    s.update(blocks_offloaded=c["offload"], blocks_onboarded=c["onboard"], blocks_evicted=c["evict"],
             bytes_h2d=engine.stats["bytes_h2d"], bytes_d2h=engine.stats["bytes_d2h"])
    return s
