"""Does the CUPTI collector slow a Python-bound step loop? (Tracing cost 2-5% of E2E on the H100,
as host time in the engine's step loop, and the collector is a Python thread in that process.)

A main thread runs a fixed amount of Python work shaped like the engine's launch-bound step loop
(small objects, attribute lookups, calls); the collector (tracer/collector.py, unchanged) tails a
trace file that another *process* appends CUPTI-format records to at a set rate, as the C library
does without holding our GIL; the events go to a real EventWriter. Configs alternate in one run:
"off" (no collector, no appender), "on" (collector + appender at --rate records/s). Reports the
main loop's time ratio on/off per round and the median. (The side-by-side with the collector's
earlier path, one emit() a record, was run at 1340e9c, where that path still existed:
bench/collector-gil-results.md.)

    /usr/bin/python3 bench/collector-gil.py [--rate 1500] [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent"))
from kvscope_agent.clock import RunClock  # noqa: E402
from kvscope_agent.emit import EventWriter  # noqa: E402
from kvscope_agent.tracer import collector as C  # noqa: E402

APPENDER = r"""
import struct, sys, time
sys.path.insert(0, sys.argv[3])
from kvscope_agent.tracer import collector as C
path, rate = sys.argv[1], float(sys.argv[2])
hdr = C.HEADER.pack(C.MAGIC, C.FORMAT_VERSION, 64, 64, 4242, 1_000_000, 0, time.monotonic_ns(), 0, 100, 1 << 22, 0)
f = open(path, "wb", buffering=0)
f.write(hdr)
i = 0
t0 = time.monotonic()
while True:
    # A flush's worth every 100 ms, as the library's periodic flush hands them over.
    time.sleep(0.1)
    n = int((time.monotonic() - t0) * rate) - i
    recs = b"".join(C.RECORD.pack(C.REC_MEMCPY, 1, 2, 3, 0, 4_194_304, 2_000_000 + (i + k) * 1000,
                                  2_000_500 + (i + k) * 1000, 0, 1, 7, i + k, 0, 0, 0) for k in range(n))
    f.write(recs)
    i += n
"""


def work(iterations: int) -> float:
    """Python work shaped like a launch-bound step loop: small objects, lookups, calls."""
    class Piece:
        __slots__ = ("start", "n", "rows")

        def __init__(self, start: int, n: int, rows: list[int]) -> None:
            self.start, self.n, self.rows = start, n, rows

    t0 = time.perf_counter()
    acc = 0
    rows = list(range(64))
    for i in range(iterations):
        ps = [Piece(i + k, 1, rows) for k in range(4)]
        d = {"pieces": ps, "step": i}
        for p in d["pieces"]:
            acc += p.start + len(p.rows)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1500.0, help="CUPTI records a second (call 4 of 2026-11-28d: ~1,070)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="main-loop time a config, roughly")
    a = ap.parse_args()
    agent_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent")
    # Calibrate the iteration count to ~--seconds.
    n = 20_000
    while work(n) < 0.2:
        n *= 2
    iters = int(n * a.seconds / work(n))
    ratios = []
    for r in range(a.rounds):
        times = {}
        written = 0
        for cfg in (("off", "on") if r % 2 == 0 else ("on", "off")):  # alternate which goes first
            d = tempfile.mkdtemp(prefix="kvscope-gil-")
            proc = None
            col = None
            w = EventWriter(os.path.join(d, "events.jsonl"), RunClock())
            if cfg == "on":
                proc = subprocess.Popen([sys.executable, "-c", APPENDER, os.path.join(d, "cupti-4242.bin"), str(a.rate), agent_root])
                col = C.start_collector(w, w.clock, d)
                time.sleep(0.3)
            n0 = w.count
            times[cfg] = work(iters)
            if cfg == "on":
                written = w.count - n0
            if col is not None:
                col.stop(settle_s=0.05, timeout_s=0.5)
            if proc is not None:
                proc.kill()
                proc.wait()
            w.close()
        ratios.append(times["on"] / times["off"])
        print(f"round {r}: off {times['off']:.3f} s, on {times['on']:.3f} s ({written} lines), ratio {ratios[-1]:.4f}")
    print(f"median ratio on/off {statistics.median(ratios):.4f} (min {min(ratios):.4f}, max {max(ratios):.4f}); "
          f"rate {a.rate:.0f} records/s, {iters} iterations a config, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
