#!/usr/bin/env python3
"""Plain pinned host<->GPU copy bandwidth for the block size and count the agent's engine copies.

The offload sweep's baseline (bench/gpu/offload-sweep-8b.sh): the built-in engine's onboarding and
offloading should reach >= 90% of this.
Measured with CUDA events on a non-default stream, best and median of --reps, as
  * one copy of the whole span (blocks × block_bytes, one pinned buffer),
  * one copy per block (blocks separate block_bytes copies, as an engine without block runs),
  * H2D and D2H at once on two streams (the PCIe link's both-direction total).
Prints one JSON object (and writes it to --out when given).

    python3 bench/agent-copy-bandwidth.py --block-bytes 4194304 --blocks 542 --out copy.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block-bytes", type=int, required=True)
    ap.add_argument("--blocks", type=int, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    n = a.block_bytes * a.blocks
    dev = torch.device("cuda")
    gpu = torch.empty(n, dtype=torch.uint8, device=dev)
    gpu2 = torch.empty(n, dtype=torch.uint8, device=dev)
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    host2 = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()

    def timed(fn) -> list[float]:
        out = []
        for _ in range(a.reps + 1):  # first one warms up
            torch.cuda.synchronize()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record(s1)
            fn()
            s1.wait_stream(s2)
            e1.record(s1)
            e1.synchronize()
            out.append(e0.elapsed_time(e1) / 1e3)
        return out[1:]

    def whole(direction: str):
        def fn():
            with torch.cuda.stream(s1):
                if direction == "h2d":
                    gpu.copy_(host, non_blocking=True)
                else:
                    host.copy_(gpu, non_blocking=True)
        return fn

    def per_block(direction: str):
        b = a.block_bytes

        def fn():
            with torch.cuda.stream(s1):
                for i in range(a.blocks):
                    sl = slice(i * b, (i + 1) * b)
                    if direction == "h2d":
                        gpu[sl].copy_(host[sl], non_blocking=True)
                    else:
                        host[sl].copy_(gpu[sl], non_blocking=True)
        return fn

    def both():
        s2.wait_stream(s1)
        with torch.cuda.stream(s1):
            gpu.copy_(host, non_blocking=True)
        with torch.cuda.stream(s2):
            host2.copy_(gpu2, non_blocking=True)

    res: dict = {"block_bytes": a.block_bytes, "blocks": a.blocks, "bytes": n, "reps": a.reps,
                 "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, fn, nbytes in (
        ("h2d_whole", whole("h2d"), n), ("d2h_whole", whole("d2h"), n),
        ("h2d_per_block", per_block("h2d"), n), ("d2h_per_block", per_block("d2h"), n),
        ("both_directions", both, 2 * n),
    ):
        ts = timed(fn)
        res[name] = {"gb_per_s_best": round(nbytes / min(ts) / 1e9, 3),
                     "gb_per_s_median": round(nbytes / statistics.median(ts) / 1e9, 3)}
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
