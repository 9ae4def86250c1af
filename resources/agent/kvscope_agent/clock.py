"""The run clock: every event's `t` is nanoseconds since run start on a monotonic clock.

Other clocks (CUPTI timestamps, which are CLOCK_REALTIME-based by default on Linux, nvidia-smi
sample times, engine timestamps) are mapped onto it through the anchor pair taken at t0.
"""

from __future__ import annotations

import time


class RunClock:
    """t=0 at construction. Monotonic ns for `t`; anchors to map other clocks onto the run clock."""

    t0_monotonic_ns: int
    unix_ns_at_t0: int

    def __init__(self) -> None:
        # Take the realtime reading between two monotonic readings and use their midpoint, so the
        # anchor pair is off by at most half the (tiny) gap between the two monotonic reads.
        m0 = time.monotonic_ns()
        unix = time.time_ns()
        m1 = time.monotonic_ns()
        self.t0_monotonic_ns = (m0 + m1) // 2
        self.unix_ns_at_t0 = unix

    def now(self) -> int:
        """Nanoseconds since t0 on the monotonic clock."""
        return time.monotonic_ns() - self.t0_monotonic_ns

    def from_monotonic(self, mono_ns: int) -> int:
        """A `time.monotonic_ns()` (CLOCK_MONOTONIC) reading -> run ns."""
        return int(mono_ns) - self.t0_monotonic_ns

    def from_realtime(self, unix_ns: int) -> int:
        """A CLOCK_REALTIME ns reading -> run ns (uses the anchor pair taken at t0)."""
        return int(unix_ns) - self.unix_ns_at_t0
