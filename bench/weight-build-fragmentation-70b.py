#!/usr/bin/env python3
"""Why the 70B FP8 build left a small KV pool on the H100, and that the chunk size fixes it.

    PYTHONPATH=resources/agent /usr/bin/python3 bench/weight-build-fragmentation-70b.py

Observed (the first 70B sweep, H100, 2026-11-28 00:37 UTC, users-2 events): nvidia-smi showed 77.87 GB in
use when `load_model` ended, for 72.66 GB of weights; the agent sized the pool from
`mem_get_info` (free 7.15 GB) and got 715 blocks of 5 MiB, one user's context.

Model: PyTorch's CUDA caching allocator, large-block pool, as its source describes it: a request
takes the smallest cached free block that fits, splitting off the remainder when it exceeds
1 MiB; freed blocks merge with free neighbours in their segment; a miss reserves a new segment
rounded up to 2 MiB. Replayed on the allocation order of `LlamaModel` building the
llama-3.1-70b-fp8 preset with `Fp8Linear.from_random`: embeddings, then per layer and matrix the
e4m3 weight (kept) and its fp32 chunks (two passes, freed one by one; the first version also made
an e4m3 temporary per chunk in pass 2), then lm_head. Prints the bytes reserved but free at the end.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

MB = 1 << 20


class CachingAllocator:
    def __init__(self) -> None:
        self.segments: list[list[list]] = []  # [offset, size, free]
        self.reserved = 0
        self.allocated = 0

    def malloc(self, n: int) -> tuple:
        n = (n + 511) // 512 * 512
        best = None
        for seg in self.segments:
            for i, (_, size, free) in enumerate(seg):
                if free and size >= n and (best is None or size < best[2]):
                    best = (seg, i, size)
        if best is None:
            size = (n + 2 * MB - 1) // (2 * MB) * (2 * MB)
            seg = [[0, size, True]]
            self.segments.append(seg)
            self.reserved += size
            best = (seg, 0, size)
        seg, i, size = best
        off = seg[i][0]
        if size - n > MB:
            seg[i : i + 1] = [[off, n, False], [off + n, size - n, True]]
        else:
            seg[i][2] = False
            n = size
        self.allocated += n
        return seg, off

    def free(self, handle: tuple) -> None:
        seg, off = handle
        for b in seg:
            if b[0] == off:
                b[2] = True
                self.allocated -= b[1]
                break
        j = 0
        while j < len(seg) - 1:
            if seg[j][2] and seg[j + 1][2]:
                seg[j][1] += seg[j + 1][1]
                del seg[j + 1]
            else:
                j += 1


def reserved_but_free(chunk_elements: Callable[[int, int], int], e4m3_temp: bool, layers: int = 80) -> int:
    a = CachingAllocator()
    vocab, hidden = 128256, 8192
    a.malloc(vocab * hidden * 2)  # bf16 embeddings
    mats = [(8192, 10240), (8192, 8192), (8192, 57344), (28672, 8192)]  # (in, out): qkv, o, gate_up, down
    for _ in range(layers):
        for k, n in mats:
            a.malloc(n * k)  # the e4m3 weight, kept
            rows = max(1, chunk_elements(k, n) // k)
            for pass_ in (1, 2):
                for r0 in range(0, n, rows):
                    r = min(n, r0 + rows) - r0
                    c = a.malloc(r * k * 4)
                    if pass_ == 2 and e4m3_temp:
                        q = a.malloc(r * k)
                        a.free(c)
                        a.free(q)
                    else:
                        a.free(c)
    a.malloc(vocab * hidden * 2)  # bf16 lm_head
    return a.reserved - a.allocated


def main() -> int:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent"))
    from kvscope_agent.engine.fp8 import default_chunk_elements

    old = reserved_but_free(lambda k, n: 1 << 26, e4m3_temp=True)
    new = reserved_but_free(default_chunk_elements, e4m3_temp=False)
    print(f"first version (256 MiB chunks, e4m3 temporary): {old / 1e9:.2f} GB reserved but free after the build")
    print(f"current default_chunk_elements:                 {new / 1e9:.2f} GB reserved but free after the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
