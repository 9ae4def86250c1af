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
    if engine.tiers:
        s.update(disk_summary(engine, None))
    return s


def disk_summary(engine: Any, plain: dict[str, Any] | None) -> dict[str, Any]:
    """run.end summary keys of a disk tier (docs/protocol.md): blocks moved to and from it, its
    bytes, and `disk`: the filesystem, the I/O mode, the plain sequential rates measured in setup
    by the same method, and the tier's own rates during the run."""
    st, moved, disk = engine.stats, engine.ledger.moved, engine.cache.disk

    def rate(nbytes: int, ns: int) -> int | None:
        return round(nbytes * 1e9 / ns) if ns > 0 else None

    plain = plain or {}
    return {
        "blocks_spilled": moved.get(("host", "disk"), 0),
        "blocks_promoted": moved.get(("disk", "host"), 0),
        "bytes_disk_read": st["bytes_f2h"],
        "bytes_disk_write": st["bytes_h2f"],
        "disk": {
            "path_fs": disk.filesystem,
            "io": disk.io,
            "io_reason": disk.io_reason or None,
            "plain_read_bytes_per_s": plain.get("read_bytes_per_s"),
            "plain_write_bytes_per_s": plain.get("write_bytes_per_s"),
            "plain_bytes": plain.get("bytes"),
            "plain_error": plain.get("error"),
            "read_bytes_per_s": rate(st["bytes_f2h"], st["copy_ns_f2h"]),
            "write_bytes_per_s": rate(st["bytes_h2f"], st["copy_ns_h2f"]),
            "spill_off": engine.disk_spill_off,
        },
    }
