"""Host cost of a kernel launch and of a small pinned copy, with and without the CUPTI tracer
loaded (tracing at graph level still cost 2-5% of the engine's E2E, and the cost did not
fall when the runs' copy records fell from 8,004 to 3,140: the suspect is a per-launch cost in the
eager prefill steps, which launch ~1,000 kernels each).

    python3 bench/gpu/launch-cost.py [--reps 30]        # one process; prints JSON
    CUDA_INJECTION64_PATH=lib KVSCOPE_TRACE_DIR=dir python3 bench/gpu/launch-cost.py

Times on the CPU only (no sync inside a timed batch): 1,000 launches of a tiny kernel, 100
pinned 64 KiB H2D copies, and 100 small device-to-device copies (`copy_` and `clone()`, each a
cudaMemcpyAsync: a decode step does two or three such copies, each a traced memcpy); a sync after each batch,
outside the timing. Median over reps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    dev = torch.device("cuda")
    x = torch.zeros(256, device=dev)
    host = torch.empty(1 << 16, dtype=torch.uint8, pin_memory=True)
    gpu = torch.empty(1 << 16, dtype=torch.uint8, device=dev)
    for _ in range(3):  # warm: module loading, allocator
        for _ in range(1000):
            x.add_(1.0)
        gpu.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
    small = torch.zeros(16, dtype=torch.long, device=dev)
    dst = torch.empty_like(small)
    launch, copy, d2d = [], [], []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(1000):
            x.add_(1.0)
        launch.append((time.perf_counter() - t0) * 1e3)  # us per launch: ms per 1000
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(100):
            gpu.copy_(host, non_blocking=True)
        copy.append((time.perf_counter() - t0) * 1e4)  # us per copy: ms per 100 × 10
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            dst.copy_(small)
            small.clone()
        d2d.append((time.perf_counter() - t0) * 1e4)  # us per copy: 100 copies
        torch.cuda.synchronize()
    print(json.dumps({"traced": bool(os.environ.get("CUDA_INJECTION64_PATH")),
                      "launch_us_median": round(statistics.median(launch), 3),
                      "launch_us_min": round(min(launch), 3),
                      "copy_us_median": round(statistics.median(copy), 3),
                      "copy_us_min": round(min(copy), 3),
                      "d2d_us_median": round(statistics.median(d2d), 3), "d2d_us_min": round(min(d2d), 3),
                      "reps": a.reps}))


if __name__ == "__main__":
    main()
