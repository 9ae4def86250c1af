"""`run` and `sweep`: options, the run's life cycle, and its events.

A run: parse options -> open DIR/events.jsonl -> (tracing: point CUDA_INJECTION64_PATH at the
CUPTI library before CUDA starts) -> run.start -> setup / load_model / context (round 0) /
rounds 1..R / teardown phases -> run.end with the summary. Whatever goes wrong after the log is
open ends it with a `run.end` whose status says so: "error" with a code (bad_option, gpu_oom,
host_oom, unsupported, internal) or "cancelled" (SIGTERM).

A sweep builds the model and the pools once and runs several user counts (and host pool sizes)
one after another in this process, each into its own complete log: weights of a 70B model take
minutes to build and its pinned host pool seconds to pin, so rebuilding per run would dominate.

Exit codes: 0 ok, 1 error, 2 bad option (the message names it), 143 cancelled by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import PROTOCOL_VERSION, __version__
from .clock import RunClock
from .emit import EventWriter
from .engine import decode_before_copies_from_env, default_copy_overlap
from .engine.alloc_stats import alloc_counters, alloc_delta
from .options import ENGINES as OPTION_ENGINES
from .options import (  # noqa: F401 - OptionError and parse_bytes are also this module's API
    OPTIONS,
    OptionError,
    add_workload_arguments,
    list_of,
    parse_bytes,
    value_in_argv,
    value_of,
)
from .presets import PRESETS, ModelConfig, ModelConfigError, load_model_config
from .workload import Workload

EXIT_OK, EXIT_ERROR, EXIT_BAD_OPTION, EXIT_CANCELLED = 0, 1, 2, 143
GIB = 1 << 30


class RunFailed(Exception):
    def __init__(self, code: str, message: str, exit_code: int = EXIT_ERROR) -> None:
        self.code = code
        self.exit_code = exit_code
        super().__init__(message)


class Cancelled(BaseException):
    """Raised on SIGTERM (a BaseException so no `except Exception` swallows it)."""


# ---- options ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises OptionError (exit 2 after the log records it) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.search(r"(--[a-z0-9-]+)", message)
        raise OptionError(m.group(1) if m else "arguments", message)


def build_parser(sweep: bool) -> _Parser:
    """--out and the workload options of the table (workload_options.json) that run or sweep takes."""
    command = "sweep" if sweep else "run"
    p = _Parser(prog=f"python3 -m kvscope_agent {command}", add_help=True)
    p.add_argument("--out", required=True, help="run folder (events.jsonl is created there)")
    add_workload_arguments(p, command)
    return p


@dataclass
class Options:
    out: str
    engine: str
    model: ModelConfig
    model_arg: str
    device: str
    users: list[int]
    rounds: int
    context_tokens: int
    new_tokens: int
    output_tokens: int
    block_tokens: int
    gpu_kv_bytes: int | None
    free_gpu_memory_fraction: float
    host_kv_bytes: list[int]
    host_kv_labels: list[str]
    seed: int
    trace: bool
    sample_ms: int
    prefill_chunk_tokens: int
    max_batch: int
    dtype: str
    block_reuse: bool
    offload_policy: str = "lazy"
    deadline_s: float = 0.0
    decode_graphs: bool = True
    copy_overlap: bool = False
    host_kv_memory: str = "pinned"
    raw: dict[str, Any] = field(default_factory=dict)

    def workload(self, users: int, vocab: int) -> Workload:
        return Workload(users, self.rounds, self.context_tokens, self.new_tokens, self.output_tokens, vocab, self.seed)

    def config(self, users: int, host_kv_bytes: int) -> dict[str, Any]:
        """run.start `config`: the agent's option names in snake_case (docs/protocol.md)."""
        return {
            "engine": self.engine,
            "model": self.model.name,
            "device": self.device,
            "users": users,
            "rounds": self.rounds,
            "context_tokens": self.context_tokens,
            "new_tokens": self.new_tokens,
            "output_tokens": self.output_tokens,
            "block_tokens": self.block_tokens,
            "gpu_kv_bytes": self.gpu_kv_bytes,
            "host_kv_bytes": host_kv_bytes,
            "free_gpu_memory_fraction": self.free_gpu_memory_fraction,
            "seed": self.seed,
            "trace": self.trace,
            "sample_ms": self.sample_ms,
            "prefill_chunk_tokens": self.prefill_chunk_tokens,
            "max_batch": self.max_batch,
            "dtype": self.dtype,
            "block_reuse": self.block_reuse,
            "offload_policy": self.offload_policy,
            "decode_graphs": self.decode_graphs,
            "copy_overlap": self.copy_overlap,
            "host_kv_memory": self.host_kv_memory,
            "decode_before_copies": decode_before_copies_from_env(),
            "model_config": self.model.to_dict(),
            "model_arg": self.model_arg,
        }


def parse_options(argv: Sequence[str], sweep: bool) -> tuple[Options | None, str | None, OptionError | None]:
    """(options, out dir, error): the out dir is returned even when another option is bad, so
    the error can be written into the run's log."""
    parser = build_parser(sweep)
    try:
        ns = parser.parse_args(list(argv))
    except OptionError as e:
        return None, value_in_argv(argv, "--out"), e
    try:
        return _resolve(ns, sweep), ns.out, None
    except OptionError as e:
        return None, ns.out, e


def _resolve(ns: argparse.Namespace, sweep: bool) -> Options:
    if ns.engine not in (None, "torch"):
        raise OptionError(
            "--engine",
            f"{ns.engine!r}: not an engine of this agent ({', '.join(OPTION_ENGINES)}; a sweep runs torch only)",
        )
    v = {o["name"]: value_of(ns, o["name"]) for o in OPTIONS
         if ("sweep" if sweep else "run") in o["commands"] and not (sweep and o.get("sweep_list"))}
    if sweep:
        users, _ = list_of(ns, "users")
        host, host_texts = list_of(ns, "host_kv_bytes")
    else:
        users, host, host_texts = [v["users"]], [v["host_kv_bytes"]], [ns.host_kv_bytes or str(v["host_kv_bytes"])]
    model = None
    if ns.model is not None:
        try:
            model = load_model_config(ns.model)
        except ModelConfigError as e:
            raise OptionError("--model", str(e)) from None
    policy = v["offload_policy"]
    overlap = v["copy_overlap"]
    opts = Options(
        out=ns.out, engine="torch", model=model or PRESETS["tiny"], model_arg=ns.model or "", device=v["device"] or "",
        users=users, rounds=v["rounds"], context_tokens=v["context_tokens"], new_tokens=v["new_tokens"],
        output_tokens=v["output_tokens"], block_tokens=v["block_tokens"], gpu_kv_bytes=v["gpu_kv_bytes"],
        free_gpu_memory_fraction=v["free_gpu_memory_fraction"], host_kv_bytes=host, host_kv_labels=host_texts,
        seed=v["seed"], trace=v["trace"], sample_ms=v["sample_ms"], prefill_chunk_tokens=v["prefill_chunk_tokens"],
        max_batch=v["max_batch"], dtype=v["dtype"], block_reuse=v["block_reuse"], offload_policy=policy,
        deadline_s=float(v.get("deadline_s") or 0.0), decode_graphs=v["decode_graphs"],
        copy_overlap=default_copy_overlap(policy) if overlap == "auto" else overlap,
        host_kv_memory=v["host_kv_memory"], raw=vars(ns),
    )
    opts.raw["_model_given"] = ns.model is not None
    return opts


def check_context_limit(opts: Options) -> None:
    w = opts.workload(1, opts.model.vocab)
    need = w.max_request_tokens()
    if need > opts.model.max_position:
        raise OptionError(
            "--context-tokens",
            f"{opts.context_tokens} context tokens grow to {need} tokens by round {opts.rounds} "
            f"(+{opts.new_tokens} new and {opts.output_tokens} output tokens a round), above "
            f"{opts.model.name}'s limit of {opts.model.max_position}",
        )


# ---- cancellation -----------------------------------------------------------------------------


class CancelState:
    """SIGTERM sets `requested`; the engine checks it between steps. While `raise_now` is set
    (long stretches with no event writes in the main thread: weight init, pool allocation) the
    handler raises at once. It never raises inside EventWriter.emit, whose seq must advance
    together with the line it wrote."""

    def __init__(self) -> None:
        self.requested = False
        self.raise_now = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.raise_now:
            self.raise_now = False
            raise Cancelled()

    def check(self) -> None:
        if self.requested:
            raise Cancelled()


# ---- run context: model + pools, built once per process ----------------------------------------


@dataclass
class Built:
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

    from .engine.kv_cache import PagedKVCache, PoolAllocationError, block_bytes_for, storage_dtype
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

    # Validate an explicit pool before spending minutes on weights.
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
    cancel.raise_now = True
    try:
        cache = PagedKVCache(
            cfg, device, dtype, cfg.kv_dtype, opts.block_tokens, gpu_blocks, host_blocks_max,
            clock_now=clock.now, simulate_gpu_oom=os.environ.get("KVSCOPE_SIMULATE_GPU_OOM") == "1",
            copy_overlap=opts.copy_overlap, host_pinned=opts.host_kv_memory == "pinned",
        )
        # Pin what the largest run can use now (pinning later would land inside a timed
        # round); the rest of the host pool is pinned on demand.
        if cache.host is not None:
            most = max(opts.users) * blocks_per_request
            cache.host.ensure(min(host_blocks_max, most))
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


# ---- one run ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


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
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "events.jsonl")
    if os.path.exists(path):
        print(f"--out: {path} already exists; choose a new run folder", file=sys.stderr)
        return EXIT_BAD_OPTION, built
    clock = RunClock()
    writer = EventWriter(path, clock)
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
        writer.emit(
            "run.start", run_id=uuid.uuid4().hex, protocol=PROTOCOL_VERSION, agent_version=__version__,
            engine={"name": "torch", "version": __version__}, config=opts.config(users, host_kv_bytes),
            host=host, clock={"unix_ns_at_t0": clock.unix_ns_at_t0, "t0_monotonic_ns": clock.t0_monotonic_ns},
            capabilities=capabilities, argv=sys.argv[1:],
        )
        warning = tracing_off_warning(opts.trace, trace_info)
        if warning:
            writer.emit("log", level="warn", msg=warning)
        if opts.trace and trace_info.get("on"):
            try:
                from .tracer.collector import start_collector

                # A later run of a sweep skips the records earlier runs left in the trace files.
                collector = start_collector(writer, clock, trace_info["dir"], skip_existing=built is not None)
            except ImportError as e:
                writer.emit("log", level="warn", msg=f"transfer tracing off: tracer collector missing ({e})")
        if gpu_indices and opts.sample_ms > 0:
            try:
                from .telemetry import start_sampler

                sampler = start_sampler(writer, clock, gpu_indices, opts.sample_ms)
            except ImportError as e:
                writer.emit("log", level="warn", msg=f"telemetry off: sampler missing ({e})")

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
        writer.emit("pool", pool="gpu", capacity_blocks=built.gpu_blocks, block_tokens=opts.block_tokens,
                    block_bytes=built.block_bytes, bytes=built.gpu_blocks * built.block_bytes)
        writer.emit("pool", pool="host", capacity_blocks=host_blocks, block_tokens=opts.block_tokens,
                    block_bytes=built.block_bytes, bytes=host_blocks * built.block_bytes,
                    pinned=cache.host_memory == "pinned")
        plain = cache.measure_plain_copy(per_request)
        if plain is not None:
            writer.emit("log", level="info", msg=(
                f"plain {cache.host_memory} copy of {plain['blocks']} blocks ({plain['bytes']} bytes) between the pools: "
                f"h2d {plain['h2d_gb_per_s']} GB/s, d2h {plain['d2h_gb_per_s']} GB/s"))
        phase("setup", "end")
        summary = run_workload(opts, built, users, writer, clock, cancel, phase)
        if plain is not None:
            summary["plain_copy"] = plain
        cache.synchronize()
    except Cancelled:
        status, exit_code = "cancelled", EXIT_CANCELLED
        error = {"code": "cancelled", "message": "SIGTERM received"}
    except OptionError as e:
        status, exit_code = "error", EXIT_BAD_OPTION
        error = {"code": "bad_option", "message": str(e), "option": e.option}
    except RunFailed as e:
        status, exit_code = "error", e.exit_code
        error = {"code": e.code, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure must end the log with run.end
        from .engine.kv_cache import _is_oom

        status, exit_code = "error", EXIT_ERROR
        if _is_oom(e):
            import torch as _t

            free = _t.cuda.mem_get_info()[0] if opts.device.startswith("cuda") else None
            error = {"code": "gpu_oom", "message": f"{str(e).splitlines()[0]} (free now {free} bytes; "
                     f"gpu pool {built.gpu_kv_bytes if built else None} bytes; weights "
                     f"{built.weight_bytes if built else None} bytes)"}
        else:
            from .ledger import LedgerError

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


def end_run(writer: Any, sampler: Any, collector: Any, status: str, error: dict[str, Any] | None,
            summary: dict[str, Any] | None) -> None:
    """The last lines of every run, whatever the engine: teardown (stop sampling, drain the
    tracer's last copies into the log), the error as a log line, then run.end with the summary."""
    writer.emit("phase", name="teardown", state="begin")
    if sampler is not None:
        sampler.stop()
    if collector is not None:
        collector.stop()
    writer.emit("phase", name="teardown", state="end")
    fields: dict[str, Any] = {"status": status}
    if error is not None:
        fields["error"] = error
        writer.emit("log", level="error" if status == "error" else "warn", msg=error["message"])
    fields["summary"] = summary or empty_summary()
    writer.emit("run.end", **fields)


def empty_summary() -> dict[str, Any]:
    return {"e2e_ns": None, "ttft_ns_mean": None, "ttft_ns_p50": None, "ttft_ns_p99": None,
            "blocks_offloaded": 0, "blocks_onboarded": 0, "blocks_evicted": 0, "bytes_h2d": 0, "bytes_d2h": 0}


def partial_summary(engine: Any) -> dict[str, Any]:
    s = empty_summary()
    try:
        engine._emit_copy_records(wait=True)
    except Exception:  # noqa: BLE001 - the summary of a failed run is best effort
        pass
    c = engine.ledger.counts
    s.update(blocks_offloaded=c["offload"], blocks_onboarded=c["onboard"], blocks_evicted=c["evict"],
             bytes_h2d=engine.stats["bytes_h2d"], bytes_d2h=engine.stats["bytes_d2h"])
    return s


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


# ---- entry points -----------------------------------------------------------------------------


def _resolve_device(opts: Options) -> None:
    import torch

    if not opts.device:
        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError("--device", f"{opts.device}: torch {torch.__version__} sees no CUDA device")
    if opts.device.startswith("cuda") and ":" in opts.device:
        idx = int(opts.device.split(":")[1])
        if idx >= torch.cuda.device_count():
            raise OptionError("--device", f"{opts.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if not opts.raw.get("_model_given"):
        opts.model = PRESETS["llama-3.1-8b" if opts.device.startswith("cuda") else "tiny"]
        opts.model_arg = opts.model.name


def tracing_off_warning(trace_asked: bool, trace_info: dict[str, Any]) -> str | None:
    """Tracing degrades, never fails the run: it was asked for but cannot run here (no compiler,
    no CUPTI, ...): the run goes on, and the log says what is missing and how to get it. Turning it
    off on purpose (--trace off) or running on the CPU is not worth a warning."""
    if not trace_asked or trace_info.get("on"):
        return None
    reason = str(trace_info.get("reason") or "unknown reason")
    if reason in ("--trace off", "device cpu"):
        return None
    return f"transfer tracing off: {reason}; the benchmark runs without CUPTI copy records"


def telemetry_capability(gpu_indices: list[int], sample_ms: int) -> dict[str, Any]:
    """run.start `capabilities.telemetry`: what the sampler will use (nvidia-smi or NVML, the PCIe
    source, the period), or why it is off."""
    if not gpu_indices:
        return {"on": False, "source": None, "sample_ms": sample_ms, "pcie_source": None, "reason": "device cpu"}
    try:
        from .telemetry import available_sources
    except ImportError as e:
        return {"on": False, "source": None, "sample_ms": sample_ms, "pcie_source": None,
                "reason": f"telemetry module missing: {e}"}
    return available_sources(sample_ms)


def _setup_tracing(opts: Options, out: str) -> dict[str, Any]:
    """Before CUDA starts: build/find the CUPTI library and point CUDA at it (the driver reads
    CUDA_INJECTION64_PATH when it initialises, in this process and in any worker it spawns)."""
    if not opts.trace:
        return {"on": False, "source": "cupti", "reason": "--trace off"}
    if opts.device == "cpu":
        return {"on": False, "source": "cupti", "reason": "device cpu"}
    try:
        from .tracer.build import ensure_tracer
    except ImportError as e:
        return {"on": False, "source": "cupti", "reason": f"tracer missing: {e}"}
    cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "kvscope", "tracer")
    lib, reason = ensure_tracer(os.environ.get("CUDA_HOME"), cache_dir)
    if lib is None:
        return {"on": False, "source": "cupti", "reason": reason}
    trace_dir = os.path.join(os.path.abspath(out), "trace")
    os.makedirs(trace_dir, exist_ok=True)
    os.environ["CUDA_INJECTION64_PATH"] = lib
    os.environ["KVSCOPE_TRACE_DIR"] = trace_dir
    return {"on": True, "source": "cupti", "reason": reason, "dir": trace_dir, "cuda_graphs": trace_graph_level()}


def trace_graph_level() -> str:
    """How the tracer records CUDA graph launches, as the library reads KVSCOPE_TRACE_GRAPH_LEVEL
    (kvscope_cupti.c; 1 or unset: "launch", each launch one record, copies inside a graph not
    recorded; 0: "nodes", every node traced, ~1.3 ms host time per launch of a 1,000-node graph
    on the H100). A value the library would reject falls back to its default, as here."""
    raw = os.environ.get("KVSCOPE_TRACE_GRAPH_LEVEL", "")
    try:
        level = int(raw, 10) if raw.strip() else 1
    except ValueError:
        level = 1
    return "nodes" if level == 0 else "launch"


def _early_failure(out: str | None, err: OptionError | None, code: str = "bad_option", message: str = "",
                   exit_code: int = EXIT_BAD_OPTION) -> int:
    """A failure before the run started (a bad option, no torch): log it in DIR/events.jsonl
    when DIR is usable, so whoever tails the log sees why."""
    message = str(err) if err is not None else message
    print(f"kvscope-agent: {'bad option ' if err is not None else ''}{message}", file=sys.stderr)
    if not out:
        return exit_code
    path = os.path.join(out, "events.jsonl")
    try:
        os.makedirs(out, exist_ok=True)
        writer = EventWriter(path, RunClock())
    except OSError:
        return exit_code
    error: dict[str, Any] = {"code": code, "message": message}
    if err is not None:
        error["option"] = err.option
    try:
        writer.emit("log", level="error", msg=message)
        writer.emit("run.end", status="error", error=error, summary=empty_summary())
    finally:
        writer.close()
    return exit_code


def _torch_pythons_hint() -> str:
    """What to do when this Python lacks torch: the interpreters on this host that import it (the
    probe's search: PATH, the login shell's PATH, venvs and conda envs), or how to get one."""
    from .probe import probe_torch_pythons

    try:
        found = [p["executable"] for p in probe_torch_pythons()]
    except Exception:  # noqa: BLE001 - a hint must never hide the error it explains
        found = []
    if found:
        return "interpreters on this host that import it: " + ", ".join(found) + "; choose one as the host's Python (--python)"
    return "no interpreter on this host imports it: install torch, or point the host's Python setting at one that has it"


def _main(argv: Sequence[str], sweep: bool) -> int:
    opts, out, err = parse_options(argv, sweep)
    if err is not None or opts is None:
        return _early_failure(out, err or OptionError("arguments", "invalid"))
    try:
        import torch  # noqa: F401 - the engine's one dependency; fail here with a clear ending
    except ImportError as e:
        return _early_failure(opts.out, None, code="no_torch", message=(
            f"PyTorch is not importable by {sys.executable} ({e}); the built-in engine needs it "
            f"({_torch_pythons_hint()})"), exit_code=EXIT_ERROR)
    cancel = CancelState()
    prev = signal.signal(signal.SIGTERM, cancel.handler)
    try:
        trace_info = _setup_tracing(opts, opts.out) if opts.device != "cpu" else {
            "on": False, "source": "cupti", "reason": "device cpu"}
        try:
            _resolve_device(opts)
        except OptionError as e:
            return _early_failure(opts.out, e)
        if opts.device == "cpu" and trace_info.get("on"):
            trace_info = {"on": False, "source": "cupti", "reason": "device cpu"}
        if not sweep:
            code, _ = run_one(opts, None, opts.users[0], opts.host_kv_bytes[0], opts.out, cancel, trace_info, build)
            return code
        return _sweep(opts, cancel, trace_info)
    finally:
        signal.signal(signal.SIGTERM, prev)


def _sweep(opts: Options, cancel: CancelState, trace_info: dict[str, Any]) -> int:
    start = time.monotonic()
    built: Built | None = None
    worst = EXIT_OK
    multi_host = len(opts.host_kv_bytes) > 1
    # Users outer, host pool inner, in the order given: under a deadline the runs that are cut
    # are the last user counts, and each user count that ran has its with/without-host pair.
    plan = [(h, lab, u) for u in opts.users for h, lab in zip(opts.host_kv_bytes, opts.host_kv_labels)]
    for i, (host, label, users) in enumerate(plan):
        if opts.deadline_s and time.monotonic() - start > opts.deadline_s:
            skipped = [f"users {u} host {lab}" for _, lab, u in plan[i:]]
            print(f"sweep: deadline of {opts.deadline_s} s reached; not run: {', '.join(skipped)}", file=sys.stderr)
            worst = max(worst, EXIT_ERROR)
            break
        sub = f"users-{users}" if not multi_host else os.path.join(f"host-{_label(label)}", f"users-{users}")
        print(f"sweep: users {users}, host pool {label} -> {sub}", file=sys.stderr, flush=True)
        code, built = run_one(opts, built, users, host, os.path.join(opts.out, sub), cancel, trace_info, build)
        if code == EXIT_CANCELLED:
            return code
        if code == EXIT_BAD_OPTION and built is None:
            return code
        worst = max(worst, code if code != EXIT_BAD_OPTION else EXIT_ERROR)
    return worst


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def main_run(argv: Sequence[str]) -> int:
    return _main(argv, sweep=False)


def main_sweep(argv: Sequence[str]) -> int:
    return _main(argv, sweep=True)
