"""The built-in torch engine: a Llama decoder with random weights over a paged KV cache."""

import os

from ..options import choices

# --offload-policy values (the option table's, free of torch, for the engine's check).
OFFLOAD_POLICIES = choices("offload_policy")

# The policies whose host pool keeps a block's copy once it is onboarded (until the host LRU
# evicts it), so evicting that block again unchanged copies nothing. Under lazy, TensorRT-LLM's
# behaviour, an onboarded block leaves the host and each eviction copies it out again.
KEEPS_HOST_COPIES = ("lazy-keep", "write-through")


# --copy-overlap auto (the default): overlap where an admission both offloads and onboards a whole
# conversation, i.e. where the host keeps no copies. Lazy offload copies another user's blocks out
# in the same batch that brings the admitted user's back, so serial copies cost both transfers;
# overlapped, the link carries them at once (H200, 2026-11-28, 8B sweep users 2/4/8: lazy with
# overlap met the TTFT bound, 0 of 120 over, without it 45 over; write-through with overlap missed
# it, 13 of 40 over, without it 0). The policies that keep host copies offload little at
# admission, so they keep one copy stream.
def default_copy_overlap(policy: str) -> bool:
    return policy not in KEEPS_HOST_COPIES


# The running requests' decode step before an admission's copies are queued (scheduler.py,
# run_requests); KVSCOPE_DECODE_BEFORE_COPIES=0 mixes it into the admitted request's prefill step
# as before 2026-11-28e, for a same-card A/B. run.start's config records which ran
# (`decode_before_copies`): the what-if simulator replays a run with the order it had.
def decode_before_copies_from_env() -> bool:
    flag = os.environ.get("KVSCOPE_DECODE_BEFORE_COPIES", "1")
    if flag not in ("0", "1"):
        raise ValueError(f"KVSCOPE_DECODE_BEFORE_COPIES must be 0 or 1, not {flag!r}")
    return flag == "1"
