"""bench/offload-sweep-results.py's copy-bandwidth target: copies that share the PCIe link with the
other direction (--copy-overlap on) are held to half the plain both-directions copy, copies alone
to the plain one-way copy."""

from __future__ import annotations

import types

from script_loader import load_script


def _x(d: str, start: int, end: int, nbytes: int) -> dict:
    return {"type": "xfer", "source": "engine", "dir": d, "start": start, "end": end, "bytes": nbytes}


def test_a_copy_is_shared_when_the_other_direction_covers_most_of_it() -> None:
    m = load_script("offload-sweep-results.py")
    h2d = [_x("h2d", 0, 100, 1), _x("h2d", 200, 300, 1), _x("h2d", 400, 500, 1)]
    d2h = [_x("d2h", 10, 90, 1), _x("d2h", 250, 260, 1), _x("d2h", 380, 430, 1), _x("d2h", 440, 480, 1)]
    alone, shared = m.split_by_overlap(h2d, d2h)
    # 80 of 100 covered: shared; 10 of 100: alone; 30 + 40 of 100 by two copies: shared.
    assert alone == [h2d[1]] and shared == [h2d[0], h2d[2]]


def test_bandwidth_target_uses_the_baseline_of_each_part() -> None:
    m = load_script("offload-sweep-results.py")
    run = lambda xs: types.SimpleNamespace(xfers=xs)  # noqa: E731
    # bytes per ns = GB/s. Alone: 50 GB/s against 55 one way (91%).
    alone = [_x("h2d", 0, 1000, 50_000)]
    # Shared with a d2h copy: 42 GB/s against half of 90 both ways (93%), then 40 (89%).
    ok = run(alone + [_x("h2d", 2000, 3000, 42_000), _x("d2h", 2000, 3000, 42_000)])
    result, numbers = m.bandwidth_check([ok], "h2d", 55.0, 90.0)
    assert result == "PASS", numbers
    assert "alone: 50.0 GB/s" in numbers and "91% of 55.0 GB/s" in numbers
    assert "sharing the link" in numbers and "93% of 45.00 GB/s (half of 90.0 both ways)" in numbers
    slow = run(alone + [_x("h2d", 2000, 3000, 40_000), _x("d2h", 2000, 3000, 42_000)])
    assert m.bandwidth_check([slow], "h2d", 55.0, 90.0)[0] == "FAIL"
    # Against the one-way copy, the shared part would have failed (76%): the basis matters.
    assert m.bandwidth_check([run([_x("h2d", 0, 1000, 42_000)])], "h2d", 55.0, 90.0)[0] == "FAIL"
    # No copies, or no baseline for a part that exists: not measured, never a pass.
    assert m.bandwidth_check([run([])], "h2d", 55.0, 90.0)[0] == "not measured"
    assert m.bandwidth_check([ok], "h2d", 55.0, None)[0] == "not measured"
