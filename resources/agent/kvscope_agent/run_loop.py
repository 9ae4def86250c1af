"""One run of the built-in engine into its log: run.start, setup (the model and pools, built or
reused from a sweep's previous run; the pools' lines; a plain copy between the pools as the
baseline), the context round and the timed rounds, then teardown and run.end, whatever happened
(lifecycle.py says how each ending is written).
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Callable

from . import __version__
from .clock import RunClock
from .emit import EventWriter
from .engine.alloc_stats import alloc_counters, alloc_delta
from .lifecycle import EXIT_BAD_OPTION, EXIT_ERROR, EXIT_OK, CancelState, emit_run_start, end_run, ending_of, open_run_log
from .memory_plan import Built
from .options import Options, check_context_limit
from .statistics import disk_summary, partial_summary, percentile
from .tracing import start_capture, telemetry_capability, tracing_off_warning


def host_block(torch_mod: Any, device: Any) -> tuple[dict[str, Any], list[int]]:
    """run.start `host` (telemetry.probe_host when present) and the nvidia-smi indices of the
    GPUs this run uses (matched by UUID: CUDA ordinals need not follow nvidia-smi's order)."""
    import platform

    host: dict[str, Any] | None = None
    try:
        from .telemetry import probe_host

        host = probe_host(None)
    except ImportError:
        host = None
    if host is None:
        host = {"hostname": socket.gethostname(), "gpus": [], "driver_version": None,
                "cuda_version": getattr(torch_mod.version, "cuda", None)}
    host.setdefault("python_version", platform.python_version())
    host.setdefault("torch_version", torch_mod.__version__)
    indices: list[int] = []
    if device.type == "cuda":
        ordinal = device.index if device.index is not None else torch_mod.cuda.current_device()
        props = torch_mod.cuda.get_device_properties(ordinal)
        tuuid = str(getattr(props, "uuid", "") or "")
        match = [g for g in host.get("gpus", []) if tuuid and str(g.get("uuid", "")).replace("GPU-", "") == tuuid.replace("GPU-", "")]
        if match:
            indices = [int(match[0]["index"])]
            host["gpus"] = match
        else:
            if not host.get("gpus"):
                host["gpus"] = [{"index": ordinal, "name": props.name, "uuid": tuuid or None,
                                 "memory_total_bytes": int(props.total_memory), "pcie_gen": None,
                                 "pcie_width": None, "c2c": None}]
            indices = [ordinal]
    else:
        host["gpus"] = []
    return host, indices


def run_one(
    opts: Options, built: Built | None, users: int, host_kv_bytes: int, out_dir: str,
    cancel: CancelState, trace_info: dict[str, Any], build_fn: Callable[..., Built] | None = None,
) -> tuple[int, Built | None]:
    """One complete run into out_dir/events.jsonl. Returns (exit code, the built model+pools)."""
    opened = open_run_log(out_dir)
    if opened is None:
        return EXIT_BAD_OPTION, built
    writer, clock = opened
    status, exit_code, error, summary = "ok", EXIT_OK, None, None
    sampler = collector = None
    phase_open: list[str] = []
    engine = None

    def phase(name: str, state: str) -> None:
        writer.emit("phase", name=name, state=state)
        if state == "begin":
            phase_open.append(name)
        elif name in phase_open:
            phase_open.remove(name)

    try:
        import torch

        host, gpu_indices = host_block(torch, torch.device(opts.device))
        capabilities = {"trace": trace_info, "telemetry": telemetry_capability(gpu_indices, opts.sample_ms)}
        emit_run_start(writer, clock, {"name": "torch", "version": __version__}, opts.config(users, host_kv_bytes),
                       host, capabilities, sys.argv[1:])
        warning = tracing_off_warning(opts.trace, trace_info)
        if warning:
            writer.emit("log", level="warn", msg=warning)
        # A later run of a sweep skips the records earlier runs left in the trace files.
        collector, sampler = start_capture(writer, clock, opts.trace, trace_info, gpu_indices, opts.sample_ms,
                                           skip_existing=built is not None)

        phase("setup", "begin")
        check_context_limit(opts)
        if built is None:
            assert build_fn is not None
            built = build_fn(opts, writer, clock, cancel)
        else:
            writer.emit("phase", name="load_model", state="begin")
            writer.emit("phase", name="load_model", state="end")
            writer.emit("log", level="info", msg="weights and pools reused from the previous run of this sweep")
        cache = built.cache
        engine = built.engine
        # A sweep reuses the pools across runs, each with its own clock: the copy records must
        # be timed on this run's clock (they kept the first run's, so every later run's engine
        # xfer lines sat hundreds of seconds past its requests).
        cache.clock_now = clock.now
        host_blocks = min(built.host_blocks_max, host_kv_bytes // built.block_bytes)
        cache.host_blocks = host_blocks
        engine.reset(writer, run_salt=b"")
        if built.model.decode_runner is not None:
            built.model.decode_runner.reset_stats()
        engine.cancel_check = cancel.check
        per_request = engine.blocks_needed(opts.workload(1, opts.model.vocab).prompt_tokens(opts.rounds), opts.output_tokens)
        writer.emit("log", level="info", msg=(
            f"gpu pool {built.gpu_blocks} blocks × {built.block_bytes} bytes ({built.pool_note}); host pool "
            f"{host_blocks} blocks; a user's last request needs {per_request} blocks, so the gpu pool holds "
            f"{built.gpu_blocks // per_request} users"))
        disk = cache.disk
        # With a disk tier the pools carry their tier and medium (docs/protocol.md).
        tiered = (lambda tier, medium: {"tier": tier, "medium": medium}) if disk is not None else (lambda *_: {})
        writer.emit("pool", pool="gpu", capacity_blocks=built.gpu_blocks, block_tokens=opts.block_tokens,
                    block_bytes=built.block_bytes, bytes=built.gpu_blocks * built.block_bytes,
                    **tiered(0, "device"))
        writer.emit("pool", pool="host", capacity_blocks=host_blocks, block_tokens=opts.block_tokens,
                    block_bytes=built.block_bytes, bytes=host_blocks * built.block_bytes,
                    pinned=cache.host_memory == "pinned", **tiered(1, cache.host_memory))
        if disk is not None:
            writer.emit("pool", pool="disk", capacity_blocks=disk.capacity, block_tokens=opts.block_tokens,
                        block_bytes=built.block_bytes, bytes=disk.capacity * built.block_bytes,
                        path=opts.disk_kv_path, io=disk.io, **tiered(2, "file"))
            writer.emit("log", level="info" if disk.io == "o_direct" else "warn", msg=(
                f"disk tier: {disk.capacity} blocks ({disk.capacity * built.block_bytes} bytes) in a file in "
                f"{opts.disk_kv_path} ({disk.filesystem}), read and written "
                + ("with O_DIRECT" if disk.io == "o_direct" else
                   f"buffered with fdatasync and fadvise DONTNEED ({disk.io_reason})")
                + ("; tmpfs is memory: its rates are not a disk's" if disk.filesystem == "tmpfs" else "")))
        plain = cache.measure_plain_copy(per_request)
        if plain is not None:
            writer.emit("log", level="info", msg=(
                f"plain {cache.host_memory} copy of {plain['blocks']} blocks ({plain['bytes']} bytes) between the pools: "
                f"h2d {plain['h2d_gb_per_s']} GB/s, d2h {plain['d2h_gb_per_s']} GB/s"))
        plain_disk = cache.measure_plain_disk(per_request) if disk is not None else None
        if plain_disk is not None:
            writer.emit("log", level="warn" if "error" in plain_disk else "info", msg=(
                f"plain sequential disk write and read of {plain_disk['bytes']} bytes by the tier's method "
                f"({disk.io}, {plain_disk['io_chunk_bytes']}-byte transfers): "
                + (f"failed: {plain_disk['error']}" if "error" in plain_disk else
                   f"write {plain_disk['write_bytes_per_s'] / 1e9:.3f} GB/s, read {plain_disk['read_bytes_per_s'] / 1e9:.3f} GB/s")))
        phase("setup", "end")
        summary = run_workload(opts, built, users, writer, clock, cancel, phase)
        if plain is not None:
            summary["plain_copy"] = plain
        if disk is not None:
            summary.update(disk_summary(engine, plain_disk))
        cache.synchronize()
    except BaseException as e:  # noqa: BLE001 - every ending (SIGTERM included) is written into the log
        from .engine.kv_cache import _is_oom

        shared = ending_of(e)
        if shared is not None:
            status, exit_code, error = shared
        elif not isinstance(e, Exception):
            raise  # KeyboardInterrupt, SystemExit: not a run's ending
        elif _is_oom(e):
            status, exit_code = "error", EXIT_ERROR
            import torch as _t

            free = _t.cuda.mem_get_info()[0] if opts.device.startswith("cuda") else None
            error = {"code": "gpu_oom", "message": f"{str(e).splitlines()[0]} (free now {free} bytes; "
                     f"gpu pool {built.gpu_kv_bytes if built else None} bytes; weights "
                     f"{built.weight_bytes if built else None} bytes)"}
        else:
            from .ledger import LedgerError

            status, exit_code = "error", EXIT_ERROR
            code = "internal" if isinstance(e, LedgerError) else "error"
            error = {"code": code, "message": f"{type(e).__name__}: {e}"}
            import traceback

            traceback.print_exc(file=sys.stderr)
    finally:
        try:
            for name in reversed(list(phase_open)):
                writer.emit("phase", name=name, state="end")
            if engine is not None and summary is None:
                summary = partial_summary(engine)
            end_run(writer, sampler, collector, status, error, summary)
        finally:
            writer.close()
    if error is not None:
        print(f"kvscope-agent: {status}: {error['message']}", file=sys.stderr)
    return exit_code, built


def run_workload(opts: Options, built: Built, users: int, writer: EventWriter, clock: RunClock,
                 cancel: CancelState, phase: Callable[[str, str], None]) -> dict[str, Any]:
    from .engine.scheduler import Request

    engine = built.engine
    cache = built.cache
    wl = opts.workload(users, opts.model.vocab)
    prompts = {u: wl.context(u) for u in range(users)}
    ttft_timed: list[int] = []
    first_queued = last_done = None
    outputs: dict[tuple[int, int], list[int]] = {}
    for rnd in range(opts.rounds + 1):
        cancel.check()
        if rnd == 0:
            phase("context", "begin")
        elif rnd == 1:
            phase("rounds", "begin")
        cache.anchor()
        reqs = [Request(u, rnd, prompts[u], opts.output_tokens) for u in range(users)]
        alloc0 = alloc_counters(cache)
        engine.run_requests(reqs, clock.now)
        alloc = alloc_delta(alloc0, alloc_counters(cache))
        t_q = min(r.t_queued for r in reqs)
        t_d = max(r.t_done for r in reqs)
        ttfts = [r.t_first - r.t_queued for r in reqs]
        st = engine.step_stats
        writer.emit("round", round=rnd, e2e_ns=t_d - t_q, ttft_ns=ttfts,
                    service_ttft_ns=[r.t_first - r.t_scheduled for r in reqs],
                    steps=st["steps"], prefill_steps=st["prefill_steps"],
                    step_ns_mean=st["step_ns"] // max(1, st["steps"]), step_ns_max=st["step_ns_max"],
                    sync_ns=st["sync_ns"], **({"alloc": alloc} if alloc else {}))
        print(f"round {rnd}: e2e {(t_d - t_q) / 1e6:.1f} ms, ttft mean {sum(ttfts) / len(ttfts) / 1e6:.1f} ms, "
              f"{st['steps']} steps of {st['step_ns'] / max(1, st['steps']) / 1e6:.1f} ms (sync {st['sync_ns'] / 1e6:.0f} ms), "
              f"blocks on/off/evict {engine.ledger.counts['onboard']}/{engine.ledger.counts['offload']}/"
              f"{engine.ledger.counts['evict']}", file=sys.stderr, flush=True)
        if rnd >= 1:
            ttft_timed.extend(ttfts)
            first_queued = t_q if first_queued is None else first_queued
            last_done = t_d
        for r in reqs:
            outputs[(r.user, rnd)] = list(r.gen)
            prompts[r.user] = r.prompt + r.gen + wl.new_input(r.user, rnd + 1)
        if rnd == 0:
            phase("context", "end")
    if opts.rounds >= 1:
        phase("rounds", "end")
    engine._emit_copy_records(wait=True)
    c = engine.ledger.counts
    st = engine.stats
    engine.last_outputs = outputs

    def gbps(nbytes: int, ns: int) -> float | None:
        return round(nbytes / ns, 3) if ns > 0 else None

    return {
        "e2e_ns": (last_done - first_queued) if first_queued is not None and last_done is not None else None,
        "ttft_ns_mean": int(sum(ttft_timed) / len(ttft_timed)) if ttft_timed else None,
        "ttft_ns_p50": int(percentile(ttft_timed, 0.5)) if ttft_timed else None,
        "ttft_ns_p99": int(percentile(ttft_timed, 0.99)) if ttft_timed else None,
        "blocks_offloaded": c["offload"],
        "blocks_onboarded": c["onboard"],
        "blocks_evicted": c["evict"],
        "blocks_stored": c["store"],
        "blocks_hit": c["hit"],
        "bytes_h2d": st["bytes_h2d"],
        "bytes_d2h": st["bytes_d2h"],
        "onboard_gb_per_s": gbps(st["bytes_h2d"], st["copy_ns_h2d"]),
        "offload_gb_per_s": gbps(st["bytes_d2h"], st["copy_ns_d2h"]),
        "gpu_kv_bytes": built.gpu_blocks * built.block_bytes,
        "weight_bytes": built.weight_bytes,
        "load_model_ns": built.load_ns,
        "decode": built.model.decode_runner.describe() if built.model.decode_runner is not None else {"cuda_graphs": False},
    }
