#!/usr/bin/env python3
"""Memory plan of the llama-3.1-70b-fp8 preset on one 80 GB H100 (the numbers in docs/h100-70b.md).

    PYTHONPATH=resources/agent /usr/bin/python3 bench/memory-plan-70b.py [--context-mib 512]

Uses the agent's own preset (kvscope_agent.presets) and GPU-pool sizing (memory_plan.workspace_bytes and
the rule `pool = free_gpu_memory_fraction × (free after weights − workspace)`), so the plan
follows the engine if either changes. The one number not derivable here is the CUDA context
(driver, cuBLAS/cuBLASLt handles, kernel images), taken as --context-mib (default 512 MiB, typical
of an H100 with CUDA 12/13 lazy module loading); the run's own log prints the measured free
memory ("gpu pool ... (0.9 × (free F − workspace W) after weights)").
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent"))

from kvscope_agent.presets import PRESETS  # noqa: E402
from kvscope_agent.memory_plan import workspace_bytes  # noqa: E402

MIB = 1 << 20
NVSMI_TOTAL_MIB = 81559  # nvidia-smi memory.total on the H100 80GB HBM3 (h100-host-probe.txt)
RESERVED_MIB = 480  # nvidia-smi -q "FB Memory Usage / Reserved": torch's total_memory is 81079 MiB


def plan(context_mib: int, fraction: float, ctx_tokens: int, rounds: int, new: int, out: int,
         block_tokens: int, chunk: int, max_batch: int, total_mib: int = NVSMI_TOTAL_MIB) -> dict:
    cfg = PRESETS["llama-3.1-70b-fp8"]
    hd = cfg.head_dim
    per_layer = {
        "qkv": cfg.hidden * (cfg.heads + 2 * cfg.kv_heads) * hd,
        "o": cfg.heads * hd * cfg.hidden,
        "gate_up": cfg.hidden * 2 * cfg.ffn,
        "down": cfg.ffn * cfg.hidden,
    }
    fp8_params = cfg.layers * sum(per_layer.values())
    scales = cfg.layers * len(per_layer) * 4  # one float32 per tensor (per-tensor scaling)
    embed = cfg.vocab * cfg.hidden * 2  # bf16
    lm_head = cfg.vocab * cfg.hidden * 2  # bf16
    norms = (2 * cfg.layers + 1) * cfg.hidden * 2
    weights = fp8_params + scales + embed + lm_head + norms
    usable = (total_mib - RESERVED_MIB) * MIB
    free = usable - context_mib * MIB - weights
    max_tokens = ctx_tokens + rounds * (new + out) + out
    # As the agent sizes it for the seed's sweep on CUDA with decode graphs on (their memory is
    # kept out of the pool: run.decode_graph_bytes).
    opts = SimpleNamespace(prefill_chunk_tokens=chunk, max_batch=max_batch, decode_graphs=True, device="cuda",
                           users=[2, 3, 4, 8, 16])
    ws = workspace_bytes(cfg, opts, 2, max_tokens)
    pool = int(max(0, free - ws) * fraction)
    kv_per_token = cfg.kv_bytes_per_token(1)  # FP8 KV: 1 byte a value
    block = kv_per_token * block_tokens
    blocks = pool // block
    per_user_ctx = math.ceil(ctx_tokens / block_tokens)
    per_request = math.ceil((max_tokens - 1) / block_tokens)  # what the scheduler reserves at admission
    return {
        "params_fp8": fp8_params, "per_layer": per_layer, "weights_bytes": weights, "embed_bytes": embed,
        "lm_head_bytes": lm_head, "usable_bytes": usable, "context_bytes": context_mib * MIB,
        "free_after_weights": free, "workspace_bytes": ws, "pool_bytes": pool, "kv_bytes_per_token": kv_per_token,
        "block_bytes": block, "pool_blocks": blocks, "blocks_per_user_context": per_user_ctx,
        "blocks_per_request_last_round": per_request, "max_request_tokens": max_tokens,
        "users_at_context": blocks // per_user_ctx, "users_concurrent_last_round": blocks // per_request,
        "user_context_bytes": per_user_ctx * block, "bf16_kv_users_at_context": (pool // (2 * block)) // per_user_ctx,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--context-mib", type=int, default=512)
    ap.add_argument("--fraction", type=float, default=0.9)
    ap.add_argument("--total-mib", type=int, default=NVSMI_TOTAL_MIB)
    a = ap.parse_args()
    p = plan(a.context_mib, a.fraction, 16000, 10, 64, 64, 32, 2048, 16, a.total_mib)
    g = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    print(f"FP8 linear weights: {p['params_fp8']:,} params = {g(p['params_fp8'])} ({', '.join(f'{k} {v:,}' for k, v in p['per_layer'].items())} per layer)")
    print(f"bf16 embeddings {g(p['embed_bytes'])} + bf16 lm_head {g(p['lm_head_bytes'])}; all weights {g(p['weights_bytes'])}")
    print(f"usable GPU memory {g(p['usable_bytes'])} ({a.total_mib} - {RESERVED_MIB} MiB); CUDA context {g(p['context_bytes'])}")
    print(f"free after weights {g(p['free_after_weights'])}; engine workspace {g(p['workspace_bytes'])}")
    print(f"GPU KV pool = {a.fraction} x (free - workspace) = {g(p['pool_bytes'])} = {p['pool_blocks']} blocks of {p['block_bytes']:,} B")
    print(f"FP8 KV {p['kv_bytes_per_token']:,} B/token; a 16,000-token user = {p['blocks_per_user_context']} blocks = {g(p['user_context_bytes'])}; "
          f"a request of the last round reserves {p['blocks_per_request_last_round']} blocks ({p['max_request_tokens']} tokens)")
    print(f"users whose 16,000-token contexts fit: {p['users_at_context']} (pool / context = {p['pool_blocks'] / p['blocks_per_user_context']:.2f}); "
          f"requests running at once in the last round: {p['users_concurrent_last_round']}; with bf16 KV it would be {p['bf16_kv_users_at_context']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
