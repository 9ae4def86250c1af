"""The CUDA caching allocators' counters, read around a round (its `round` line's `alloc`) and
around a step (the engine's step trace). Imports torch only when asked on a CUDA cache, so the
agent's CLI can import this without torch."""

from __future__ import annotations

from typing import Any

# Counters read as differences (the offload sweep's write-through stall:
# requests whose prefill waited 76-133 ms after their copies, in rounds where the growing contexts
# change allocation sizes; a new device segment or pinned block may synchronise the host).
_ALLOC_COUNTERS = ("num_device_alloc", "num_device_free", "num_sync_all_streams", "num_alloc_retries")


def alloc_counters(cache: Any) -> dict[str, int]:
    """The CUDA caching allocators' cumulative counters (device: torch.cuda.memory_stats; pinned
    host: torch.cuda.host_memory_stats where this torch has it); {} on the CPU. Keys a torch
    version lacks are left out."""
    if not getattr(cache, "cuda", False):
        return {}
    import torch

    out: dict[str, int] = {}
    try:
        st = torch.cuda.memory_stats(cache.device)
        out.update({k: int(st[k]) for k in _ALLOC_COUNTERS if k in st})
        host = getattr(torch.cuda, "host_memory_stats", None)
        if host is not None:
            hs = host()
            if "num_host_alloc" in hs:
                out["num_host_alloc"] = int(hs["num_host_alloc"])
    except (RuntimeError, AttributeError, TypeError):
        pass
    return out


def alloc_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the allocators did between two alloc_counters() readings (keys in both)."""
    return {k.removeprefix("num_"): after[k] - before[k] for k in after if k in before}
