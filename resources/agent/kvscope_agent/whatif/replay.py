"""One simulated run: the recorded run's workload and engine settings, on a card, through the
agent's own `run_workload` (so the log has every line a measured run has)."""

from __future__ import annotations

import contextlib
import io
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .. import PROTOCOL_VERSION, __version__
from ..engine import KEEPS_HOST_COPIES, OFFLOAD_POLICIES
from ..lifecycle import CancelState
from ..memory_plan import Built, workspace_bytes
from ..options import Options, default
from ..presets import ModelConfig
from ..run_loop import run_workload
from .costs import Calibration, CardRates, ModelShape
from .profiles import Profile
from .recorded import RecordedRun, RecordedRunError
from .sim import EngineSetup, SimGpu, build_engine

# The GPU memory a CUDA process holds besides PyTorch's allocations (context, cuBLAS handles),
# when a recorded run does not let it be worked out (its pool was given in bytes): the H100 runs
# sized by fraction (resources/samples, 70B FP8): 85,520,809,984 total − 72,656,372,992 weights −
# 11,605,835,776 free after them = 1,258,601,216 bytes.
DEFAULT_CONTEXT_BYTES = 1_258_601_216


def model_config(config: dict[str, Any]) -> ModelConfig:
    mc = config.get("model_config")
    if not isinstance(mc, dict):
        raise RecordedRunError("run.start config has no model_config: the model's shape is unknown")
    fields = {k: v for k, v in mc.items() if k != "head_dim"}
    try:
        return ModelConfig(**fields)
    except TypeError as e:
        raise RecordedRunError(f"run.start config.model_config: {e}") from None


def options_for(config: dict[str, Any], users: int, gpu_kv_bytes: int | None) -> Options:
    """The agent's Options of a run with the recorded config, at `users` users."""
    policy = config.get("offload_policy", default("offload_policy"))
    if policy not in OFFLOAD_POLICIES:
        raise RecordedRunError(f"offload_policy {policy!r} is not one this agent knows ({', '.join(OFFLOAD_POLICIES)})")
    if config.get("disk_kv_bytes"):
        raise RecordedRunError("a run with a disk tier (disk_kv_bytes): the what-if simulator does not model one")
    host = int(config.get("host_kv_bytes") or 0)
    return Options(
        out="", engine="torch", model=model_config(config), model_arg=str(config.get("model_arg") or config.get("model")),
        device="cuda", users=[users], rounds=int(config["rounds"]), context_tokens=int(config["context_tokens"]),
        new_tokens=int(config["new_tokens"]), output_tokens=int(config["output_tokens"]),
        block_tokens=int(config["block_tokens"]), gpu_kv_bytes=gpu_kv_bytes,
        free_gpu_memory_fraction=float(config.get("free_gpu_memory_fraction") or default("free_gpu_memory_fraction")),
        host_kv_bytes=[host], host_kv_labels=[str(host)], seed=int(config.get("seed") or 0), trace=False, sample_ms=0,
        prefill_chunk_tokens=int(config.get("prefill_chunk_tokens") or default("prefill_chunk_tokens")),
        max_batch=int(config.get("max_batch") or default("max_batch")),
        dtype=str(config.get("dtype") or default("dtype")),
        block_reuse=bool(config.get("block_reuse", default("block_reuse"))), offload_policy=policy,
        decode_graphs=bool(config.get("decode_graphs", default("decode_graphs"))),
        # A log from before --copy-overlap ran without it (the option's auto came with it).
        copy_overlap=bool(config.get("copy_overlap", False)),
        host_kv_memory=str(config.get("host_kv_memory") or default("host_kv_memory")),
        disk_kv_bytes=0, disk_kv_path=None, disk_kv_io=str(default("disk_kv_io")),
    )


def decode_before_copies(config: dict[str, Any]) -> bool:
    """Whether the recorded engine ran the decoders' step before an admission's copies: the config
    says so since it records it; before that, runs without the copy-overlap option predate it."""
    if "decode_before_copies" in config:
        return bool(config["decode_before_copies"])
    return "copy_overlap" in config


def copying_admissions_per_step(run: RecordedRun) -> int | None:
    """One, unless the log shows two requests admitted with copies before either's first token
    (the engine before 2026-11-28c admitted every request that fit, copies batched together)."""
    ordered = sorted((r for r in run.reqs.values() if r.scheduled is not None), key=lambda r: r.scheduled or 0)
    moved = {(a.user, a.round): a.moved_blocks for a in run.admissions}
    for a, b in zip(ordered, ordered[1:]):
        if a.first is not None and b.scheduled is not None and b.scheduled < a.first \
                and moved.get((a.user, a.round), 0) > 0 and moved.get((b.user, b.round), 0) > 0:
            return None
    return 1


def shape_of(run: RecordedRun) -> ModelShape:
    cfg = model_config(run.config)
    pool = run.pools["gpu"]
    bt, bb = int(pool["block_tokens"]), int(pool["block_bytes"])
    weight = run.summary.get("weight_bytes")
    if not isinstance(weight, int) or weight <= 0:
        per = 1 if cfg.weight_format == "fp8" else 2
        layers = ModelShape(cfg, 0, bb // bt).layer_linear_params * cfg.layers
        weight = layers * per + 2 * cfg.vocab * cfg.hidden * 2 + (2 * cfg.layers + 1) * cfg.hidden * 2
    return ModelShape(cfg, weight, bb // bt)


@dataclass
class MemoryPlan:
    gpu_kv_bytes: int
    gpu_blocks: int
    note: str


def plan_gpu_pool(run: RecordedRun, profile: Profile, users_max: int, gpu_kv_bytes: int | None,
                  plan: bool) -> MemoryPlan:
    """The GPU KV pool on `profile`: the bytes asked for; else the recorded run's explicit size
    (--gpu-kv-bytes) unless `plan`; else the agent's memory plan (memory_plan.py: fraction × (free after
    weights − workspace)) with the card's memory, the weights and the CUDA context the recorded
    run had."""
    shape = shape_of(run)
    bb = int(run.pools["gpu"]["block_bytes"])
    cfg = run.config
    frac = float(cfg.get("free_gpu_memory_fraction") or 0.9)
    opts = options_for(cfg, users_max, None)
    max_ctx = max(opts.workload(1, opts.model.vocab).max_request_tokens(), 1)
    elt = 2  # bf16 activations on CUDA (dtype auto)
    ws = workspace_bytes(opts.model, opts, elt, max_ctx)
    recorded_kv = cfg.get("gpu_kv_bytes")
    if gpu_kv_bytes is not None:
        kv, note = gpu_kv_bytes, f"{gpu_kv_bytes} bytes as asked"
    elif recorded_kv is not None and not plan:
        kv, note = int(recorded_kv), f"{recorded_kv} bytes, the recorded run's --gpu-kv-bytes"
    else:
        total_src = run.gpu.get("memory_total_bytes")
        kv_src = run.summary.get("gpu_kv_bytes")
        context = DEFAULT_CONTEXT_BYTES
        how = "the CUDA context of the H100 runs"
        if recorded_kv is None and isinstance(total_src, int) and isinstance(kv_src, int):
            opts_src = options_for(cfg, max(run.users, 1), None)
            ws_src = workspace_bytes(opts_src.model, opts_src, elt, max_ctx)
            context = max(0, total_src - shape.weight_bytes - int(kv_src / frac + ws_src))
            how = "the recorded run's CUDA context"
        free = profile.memory_total_bytes - shape.weight_bytes - context
        kv = int(max(0, free - ws) * frac)
        note = (f"{frac} × (free {free} − workspace {ws}) after {shape.weight_bytes} bytes of weights on "
                f"{profile.memory_total_bytes} bytes, {context} bytes held by {how}")
        if free - ws <= 0:
            raise RecordedRunError(f"{profile.name}: the model's {shape.weight_bytes} bytes of weights, the workspace "
                                   f"({ws}) and the CUDA context leave no GPU memory for a KV pool")
    need = int(profile.memory_total_bytes) - shape.weight_bytes - ws
    if kv > need:
        raise RecordedRunError(f"{profile.name}: a {kv}-byte GPU pool does not fit beside {shape.weight_bytes} bytes of "
                               f"weights and {ws} of workspace in {profile.memory_total_bytes} bytes")
    return MemoryPlan(kv, kv // bb, note)


class CaptureWriter:
    """An event writer that keeps the request lines (and drops the rest): what calibration reads
    of a simulated run without writing a file."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.reqs: dict[tuple[int, int], dict[str, int]] = {}
        self.count = 0

    def emit(self, type: str, t: int | None = None, **fields: Any) -> int:
        self.count += 1
        if type == "req":
            self.reqs.setdefault((fields["user"], fields["round"]), {})[fields["phase"]] = int(self.clock.now() if t is None else t)
        return self.count - 1


@dataclass
class SimulatedRun:
    summary: dict[str, Any]
    gpu: SimGpu
    plan: MemoryPlan


def simulate(run: RecordedRun, users: int, rates: CardRates, cal: Calibration, plan: MemoryPlan,
             writer_for: Callable[[SimGpu], Any], header: Callable[[Any, Options], None] | None = None) -> SimulatedRun:
    """Runs the workload of `run` at `users` users on the simulated card. `writer_for(gpu)` makes the
    event writer on the simulated clock; `header(writer, opts)` writes what precedes the workload
    (run.start, phases, pools) in a file that is kept."""
    shape = shape_of(run)
    cfg = run.config
    opts = options_for(cfg, users, plan.gpu_kv_bytes)
    pool = run.pools["gpu"]
    host_pool = run.pools.get("host") or {}
    bb = int(pool["block_bytes"])
    host_blocks = int(host_pool.get("capacity_blocks") or 0)
    if int(cfg.get("host_kv_bytes") or 0) == 0:
        host_blocks = 0
    setup = EngineSetup(
        block_tokens=int(pool["block_tokens"]), block_bytes=bb, gpu_blocks=plan.gpu_blocks, host_blocks=host_blocks,
        prefill_chunk_tokens=opts.prefill_chunk_tokens, max_batch=opts.max_batch, block_reuse=opts.block_reuse,
        offload_policy=opts.offload_policy, copy_overlap=opts.copy_overlap and host_blocks > 0,
        decode_before_copies=decode_before_copies(cfg), copying_admissions_per_step=copying_admissions_per_step(run),
        host_memory="pinned" if host_pool.get("pinned", True) else "pageable",
    )
    need = -(-(opts.workload(1, opts.model.vocab).max_request_tokens() - 1) // setup.block_tokens)
    if setup.gpu_blocks < need:
        raise RecordedRunError(f"the GPU pool ({plan.note}) holds {setup.gpu_blocks} blocks; one request needs {need}")
    gpu, cache, engine = build_engine(setup, rates, cal, shape)
    writer = writer_for(gpu)
    if header is not None:
        header(writer, opts)
    engine.reset(writer, run_salt=b"")
    built = Built(None, None, None, engine.model, cache, engine, shape.weight_bytes, 0, plan.gpu_kv_bytes,
                  setup.gpu_blocks, host_blocks, bb, plan.note)

    def phase(name: str, state: str) -> None:
        writer.emit("phase", name=name, state=state)

    with contextlib.redirect_stderr(io.StringIO()):  # run_workload's per-round progress lines
        summary = run_workload(opts, built, users, writer, gpu, CancelState(), phase)
    # The recorded engine's decode mode (graphs or eager), not its capture counts: nothing ran here.
    recorded = run.summary.get("decode") if isinstance(run.summary.get("decode"), dict) else {}
    summary["decode"] = {"cuda_graphs": bool(recorded.get("cuda_graphs")), "off_reason": recorded.get("off_reason"),
                         "simulated": True}
    summary["copy_policy"] = {"offload_policy": setup.offload_policy, "copy_overlap": setup.copy_overlap,
                              "keeps_host_copies": setup.offload_policy in KEEPS_HOST_COPIES,
                              "decode_before_copies": setup.decode_before_copies,
                              "copying_admissions_per_step": setup.copying_admissions_per_step}
    return SimulatedRun(summary, gpu, plan)


def write_run_start(writer: Any, opts: Options, profile: Profile, plan: MemoryPlan, simulated: dict[str, Any],
                    users: int, host_kv_bytes: int, decode_first: bool) -> None:
    config = opts.config(users, host_kv_bytes)
    config["gpu_kv_bytes"] = plan.gpu_kv_bytes
    config["decode_before_copies"] = decode_first
    writer.emit(
        "run.start", run_id=uuid.uuid4().hex, protocol=PROTOCOL_VERSION, agent_version=__version__,
        engine={"name": "torch", "version": __version__}, config=config,
        host={"hostname": "simulated", "gpus": [{
            "index": 0, "name": f"{profile.name} (simulated)", "memory_total_bytes": profile.memory_total_bytes,
            "c2c": "c2c" in profile.link_name.lower()}]},
        clock={"unix_ns_at_t0": writer.clock.unix_ns_at_t0, "t0_monotonic_ns": 0},
        capabilities={"trace": {"on": False, "source": "cupti", "reason": "simulated run"},
                      "telemetry": {"on": False, "source": None, "reason": "simulated run"}},
        simulated=simulated,
    )
    writer.emit("log", level="info", msg=(
        f"SIMULATED on {profile.name}: no GPU ran this. Replayed from run {simulated['source']['run_id']} "
        f"({simulated['source']['gpu']}) with step costs calibrated on it; GPU pool {plan.gpu_blocks} blocks "
        f"({plan.note})"))

