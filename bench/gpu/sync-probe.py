"""Which host-side operations block the CPU while a block copy is in flight (the offload
sweep's write-through stall: requests whose prefill started only after their ~40 ms onboard had ended).

The engine issues a request's onboard on its copy stream, makes the compute stream wait for it,
and launches the prefill step at once: the launches queue behind the copy, so the step's launch
time hides under the copy. Anything in that step that synchronises the host with the device (or
with the copy) makes the CPU wait for the copy to end and only then launch the eager step, which
is launch-bound. This probe issues the same ~2 GiB pinned H2D copy on a side stream, makes the
default stream wait for it, then times one candidate operation on the CPU and reports whether the
copy had ended when it returned. A candidate that "waits" has `copy_done_after` true and a CPU
time near the copy's.

    python3 bench/gpu/sync-probe.py [--gib 2] [--reps 3] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    n = int(a.gib * (1 << 30))
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    gpu = torch.empty(n, dtype=torch.uint8, device=dev)
    side = torch.cuda.Stream(device=dev)
    small = torch.zeros(1024, device=dev)
    torch.cuda.synchronize()
    sizes = iter(range(1, 10_000))

    def new_device_segment() -> None:
        # A size no cached block serves (each call asks 2 MiB more): the caching allocator calls
        # cudaMalloc for a new segment.
        torch.empty(((64 << 20) + next(sizes) * (2 << 20)) // 2, dtype=torch.bfloat16, device=dev)

    def cached_device_block() -> None:
        torch.empty((64 << 20) // 2, dtype=torch.bfloat16, device=dev)

    def new_pinned_block() -> None:
        torch.empty((1 << 20) + next(sizes) * 4096, dtype=torch.uint8, pin_memory=True)

    def pinned_tensor_from_list() -> None:
        # model.forward_step's prompt ids and kv_cache.request_rows' block table.
        torch.tensor(list(range(200 + next(sizes))), dtype=torch.long).pin_memory().to(dev, non_blocking=True)

    def free_cached_segments() -> None:
        x = torch.empty((256 << 20) + next(sizes) * (2 << 20), dtype=torch.uint8, device=dev)
        del x
        torch.cuda.empty_cache()  # cudaFree

    def launches(k: int) -> Callable[[], None]:
        def f() -> None:
            for _ in range(k):
                small.add_(1.0)
        return f

    def memory_stats() -> None:
        torch.cuda.memory_stats(dev)

    def host_memory_stats() -> None:
        hs = getattr(torch.cuda, "host_memory_stats", None)
        if hs is not None:
            hs()

    def big_gather() -> None:
        # The eager prefill reads a 16,000-token context per layer: one index_select, whose
        # output is a new 64 MB tensor.
        idx = torch.arange(0, 32_000, device=dev)
        gpu.view(-1, 2048)[: 64_000].index_select(0, idx)

    cands: list[tuple[str, Callable[[], None]]] = [
        ("nothing", lambda: None),
        ("launch 100 small kernels", launches(100)),
        ("launch 1000 small kernels", launches(1000)),
        ("launch 3000 small kernels", launches(3000)),
        ("torch.empty, cached 64 MB block", cached_device_block),
        ("torch.empty, new device segment (cudaMalloc)", new_device_segment),
        ("torch.empty(pin_memory), new pinned block", new_pinned_block),
        ("torch.tensor(list).pin_memory().to(dev)", pinned_tensor_from_list),
        ("empty_cache after a new segment (cudaFree)", free_cached_segments),
        ("torch.cuda.memory_stats", memory_stats),
        ("torch.cuda.host_memory_stats", host_memory_stats),
        ("index_select of a 16k-token context (64 MB out)", big_gather),
    ]
    cached_device_block()
    results = []
    for name, fn in cands:
        for rep in range(a.reps):
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(side):
                start.record(side)
                gpu.copy_(host, non_blocking=True)
                end.record(side)
            torch.cuda.current_stream(dev).wait_stream(side)
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            done = end.query()
            end.synchronize()
            results.append({"op": name, "rep": rep, "cpu_ms": round((t1 - t0) * 1e3, 3),
                            "copy_done_after": bool(done), "copy_ms": round(start.elapsed_time(end), 3)})
            print(f"{name:55s} rep {rep}: cpu {1e3 * (t1 - t0):8.3f} ms, copy {start.elapsed_time(end):6.2f} ms,"
                  f" copy ended before it returned: {done}", flush=True)
    meta = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(dev),
            "copy_bytes": n}
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
