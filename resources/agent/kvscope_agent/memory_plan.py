"""The model and the KV pools in memory: what the forward pass needs besides weights and pools
(kept out of a GPU pool sized by fraction), and building the model and pools once per process
(a sweep reuses them): weights first, then the GPU pool (an explicit size, or the fraction of what
is free after weights and workspace), then the pinned host pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .clock import RunClock
from .emit import EventWriter
from .lifecycle import EXIT_BAD_OPTION, CancelState, RunFailed
from .options import OptionError, Options, check_disk_tier
from .presets import ModelConfig

GIB = 1 << 30


@dataclass
class Built:
    """The model, the pools and the engine over them, built once per process (a sweep's later runs
    reuse them), with what their sizes came from."""

    torch: Any
    device: Any
    dtype: Any
    model: Any
    cache: Any
    engine: Any
    weight_bytes: int
    load_ns: int
    gpu_kv_bytes: int
    gpu_blocks: int
    host_blocks_max: int
    block_bytes: int
    pool_note: str


def workspace_bytes(cfg: ModelConfig, opts: Options, elt: int, max_ctx: int) -> int:
    """GPU memory the forward pass needs besides weights and the KV pool (bytes): activations of
    one chunk of tokens, one request's gathered K/V (expanded to all query heads when the
    attention kernel has no grouped-query support), the chunk's mask, logits, and 1 GiB for
    cuBLAS workspaces and allocator slack. Kept out of the pool when it is sized by fraction."""
    tokens = opts.prefill_chunk_tokens + opts.max_batch
    hd = cfg.head_dim
    act = tokens * (6 * cfg.hidden + (cfg.heads + 2 * cfg.kv_heads) * hd + 4 * cfg.ffn) * elt
    kv = 2 * max_ctx * cfg.heads * hd * elt * 2
    mask = opts.prefill_chunk_tokens * max_ctx
    logits = opts.max_batch * cfg.vocab * 4 * 2
    return int(act + kv + mask + logits + decode_graph_bytes(cfg, opts, elt, max_ctx) + GIB)


DECODE_GRAPH_BATCH = 4  # decode batch whose graph memory is kept out of a pool sized by fraction


def decode_graph_bytes(cfg: ModelConfig, opts: Options, elt: int, max_ctx: int) -> int:
    """Memory the CUDA graphs of decode keep in their own pool (engine/decode_graph.py): per
    request, K/V rows gathered over the context (storage and compute dtype) and the two copies
    the attention products make, plus fp32 scores; for up to DECODE_GRAPH_BATCH requests (a pool
    sized by fraction holds few 16,000-token users). 0 when decode runs eagerly."""
    if not opts.decode_graphs or not opts.device.startswith("cuda"):
        return 0
    batch = min(DECODE_GRAPH_BATCH, max(opts.users), opts.max_batch)
    span = max_ctx + 512
    row = cfg.kv_heads * cfg.head_dim
    st = 1 if cfg.kv_dtype == "fp8" else elt
    per_request = span * 2 * row * (st + 2 * elt) + span * cfg.heads * (3 * 4 + elt)
    return int(batch * per_request)


def build(opts: Options, writer: EventWriter, clock: RunClock, cancel: CancelState) -> Built:
    import torch

    from .engine.kv_cache import DiskTierError, PagedKVCache, PoolAllocationError, block_bytes_for, storage_dtype
    from .engine.model import LlamaModel
    from .engine.scheduler import Engine

    device = torch.device(opts.device)
    if opts.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[opts.dtype]
    cfg = opts.model
    if cfg.weight_format == "fp8" or cfg.kv_dtype == "fp8":
        try:
            from .engine import fp8
        except ImportError as e:
            raise RunFailed("unsupported", f"--model {cfg.name}: fp8 support is missing: {e}", EXIT_BAD_OPTION) from e
        ok, why = fp8.supported(device)
        if not ok and cfg.weight_format == "fp8":
            raise RunFailed("unsupported", f"--model {cfg.name}: {why}", EXIT_BAD_OPTION)
    try:
        kv_storage = storage_dtype(cfg.kv_dtype, dtype)
    except RuntimeError as e:
        raise RunFailed("unsupported", f"--model {cfg.name}: {e}", EXIT_BAD_OPTION) from e
    block_bytes = block_bytes_for(cfg, opts.block_tokens, kv_storage)
    max_tokens = max(opts.workload(1, cfg.vocab).max_request_tokens(), 1)
    blocks_per_request = -(-(max_tokens - 1) // opts.block_tokens)

    # Validate an explicit pool and the disk tier before spending minutes on weights.
    check_disk_tier(opts.disk_kv_bytes, opts.disk_kv_path, opts.host_kv_bytes)
    if opts.gpu_kv_bytes is not None and opts.gpu_kv_bytes // block_bytes < blocks_per_request:
        raise OptionError(
            "--gpu-kv-bytes",
            f"{opts.gpu_kv_bytes} bytes hold {opts.gpu_kv_bytes // block_bytes} blocks of {block_bytes} bytes; "
            f"one request needs {blocks_per_request} ({max_tokens} tokens)",
        )

    writer.emit("phase", name="load_model", state="begin")
    t0 = clock.now()
    cancel.raise_now = True
    try:
        model = LlamaModel(cfg, device, dtype, opts.seed)
    except RuntimeError as e:
        from .engine.kv_cache import _is_oom

        if _is_oom(e):
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
            raise RunFailed(
                "gpu_oom",
                f"building {cfg.name} weights ({cfg.param_count()} parameters) ran out of memory "
                f"(free before the failing allocation: {free} bytes): {str(e).splitlines()[0]}",
            ) from e
        raise
    finally:
        cancel.raise_now = False
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    load_ns = clock.now() - t0
    weight_bytes = model.weight_bytes()
    writer.emit("phase", name="load_model", state="end")
    writer.emit("log", level="info", msg=f"{cfg.name}: {weight_bytes} bytes of random {dtype} weights built on {device} in {load_ns / 1e9:.2f} s")
    writer.emit("log", level="info", msg=(
        f"attention over the KV pool: {'paged kernel' if model.paged_kernel else 'gather path'} ({model.paged_kernel_why})"))

    if opts.gpu_kv_bytes is not None:
        gpu_kv_bytes = opts.gpu_kv_bytes
        note = f"--gpu-kv-bytes {gpu_kv_bytes}"
    elif device.type == "cuda":
        # Memory freed while the weights were built sits in PyTorch's cache, which mem_get_info
        # counts as used: hand it back first, or the pool is sized smaller than what is free.
        torch.cuda.empty_cache()
        free = int(torch.cuda.mem_get_info(device)[0])
        ws = workspace_bytes(cfg, opts, torch.empty((), dtype=dtype).element_size(), max_tokens)
        gpu_kv_bytes = int(max(0, free - ws) * opts.free_gpu_memory_fraction)
        note = (f"{opts.free_gpu_memory_fraction} × (free {free} − workspace {ws}) after weights")
    else:
        # On the CPU there is no "free GPU memory": size the pool to hold every user's
        # conversation so nothing is offloaded unless --gpu-kv-bytes asks for a small pool.
        gpu_kv_bytes = max(opts.users) * blocks_per_request * block_bytes
        note = "cpu: every user's conversation (no --gpu-kv-bytes given)"
    gpu_blocks = gpu_kv_bytes // block_bytes
    if gpu_blocks < blocks_per_request:
        flag = "--gpu-kv-bytes" if opts.gpu_kv_bytes is not None else "--free-gpu-memory-fraction"
        raise OptionError(
            flag,
            f"the GPU pool ({note}) holds {gpu_blocks} blocks of {block_bytes} bytes; one request "
            f"needs {blocks_per_request} ({max_tokens} tokens)",
        )
    host_blocks_max = max(opts.host_kv_bytes) // block_bytes
    disk_blocks = opts.disk_kv_bytes // block_bytes
    if opts.disk_kv_bytes and disk_blocks == 0:
        raise OptionError("--disk-kv-bytes", f"{opts.disk_kv_bytes} bytes hold no block of {block_bytes} bytes")
    cancel.raise_now = True
    try:
        cache = PagedKVCache(
            cfg, device, dtype, cfg.kv_dtype, opts.block_tokens, gpu_blocks, host_blocks_max,
            clock_now=clock.now, simulate_gpu_oom=os.environ.get("KVSCOPE_SIMULATE_GPU_OOM") == "1",
            copy_overlap=opts.copy_overlap, host_pinned=opts.host_kv_memory == "pinned",
            disk_blocks=disk_blocks, disk_path=opts.disk_kv_path, disk_io=opts.disk_kv_io,
        )
        # Pin what the largest run can use now (pinning later would land inside a timed
        # round); the rest of the host pool is pinned on demand.
        if cache.host is not None:
            most = max(opts.users) * blocks_per_request
            cache.host.ensure(min(host_blocks_max, most))
    except DiskTierError as e:
        raise OptionError("--disk-kv-io" if "--disk-kv-io" in str(e) else "--disk-kv-path", str(e)) from e
    except PoolAllocationError as e:
        code = "gpu_oom" if e.pool == "gpu" else "host_oom"
        raise RunFailed(
            code,
            f"{e} (weights {weight_bytes} bytes; free before {e.free} bytes; pool {note})"
            if e.pool == "gpu" else f"{e}",
        ) from e
    finally:
        cancel.raise_now = False
    engine = Engine(model, cache, opts.prefill_chunk_tokens, opts.max_batch, opts.block_reuse, opts.offload_policy)
    engine.ttft_parts = True
    engine.tiers = cache.disk is not None
    if opts.copy_overlap and cache.host is not None:
        writer.emit("log", level="info", msg=(
            f"copy overlap on: a batch's onboards pipelined behind its offload chunks of "
            f"{cache.overlap_chunk_blocks} blocks ({cache.overlap_chunk_blocks * block_bytes} bytes)"
            + ("" if cache.cuda else "; on the CPU the same plan runs serially")))
    if opts.decode_graphs and device.type == "cuda":
        from .engine.decode_graph import DecodeGraphs

        model.decode_runner = DecodeGraphs(
            model, cache, warn=lambda msg: engine._emit("log", level="warn", msg=msg))
    return Built(torch, device, dtype, model, cache, engine, weight_bytes, load_ns, gpu_kv_bytes,
                 gpu_blocks, host_blocks_max, block_bytes, note)
