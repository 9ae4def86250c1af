"""`python3 -m kvscope_agent run --engine tensorrt_llm|vllm ...`: one run on a real engine.

The same options, log life cycle and exit codes as the built-in engine's run (run.py): the
options are parsed by run.py's parser, DIR/events.jsonl gets run.start, setup/teardown phases
around the engine's own (load_model, context, rounds), the CUPTI collector and the GPU sampler
when they are on, and a run.end that says how it ended. Exit 0 ok, 1 error (an engine that is
not usable here included), 2 bad option, 143 cancelled by SIGTERM.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import sys
import uuid
from typing import Any, Sequence

from .. import PROTOCOL_VERSION, __version__
from ..clock import RunClock
from ..emit import EventWriter
from . import ENGINES, EngineUnavailable, engine_version, require_engine, run_engine

REAL_ENGINES = tuple(ENGINES)


def engine_of(argv: Sequence[str]) -> str | None:
    """The --engine value in argv, if any (both `--engine X` and `--engine=X`)."""
    from ..options import value_in_argv

    return value_in_argv(argv, "--engine")


class _TraceOpts:
    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.device = "cuda"


def _config(ns: Any, engine: str) -> dict[str, Any]:
    """run.start `config`, snake_case as docs/protocol.md: the table's options this engine takes
    (workload_options.json, `engines`); one it does not take, given, is refused by name."""
    from ..options import BY_NAME, OPTIONS, OptionError, flag, given, value_of

    for name in given(ns):
        if engine not in BY_NAME[name]["engines"]:
            raise OptionError(flag(name), f"not taken by --engine {engine} (only by {', '.join(BY_NAME[name]['engines'])})")
    if not ns.model:
        raise OptionError("--model", f"required with --engine {engine}: a Hugging Face name or path, or a "
                          "TensorRT-LLM engine directory")
    if ns.device not in (None, "cuda"):
        raise OptionError("--device", f"{ns.device!r}: --engine {engine} runs on the engine's own GPU(s)")
    cfg = {o["name"]: value_of(ns, o["name"]) for o in OPTIONS if engine in o["engines"] and "run" in o["commands"]}
    cfg.update(engine=engine, model_arg=ns.model, device="cuda")
    return cfg


def main_run_engine(argv: Sequence[str]) -> int:
    from .. import run
    from ..options import value_in_argv

    try:
        ns = run.build_parser(False).parse_args(list(argv))
        cfg = _config(ns, ns.engine)
    except run.OptionError as e:
        return run._early_failure(value_in_argv(argv, "--out"), e)
    out = ns.out
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "events.jsonl")
    if os.path.exists(path):
        print(f"--out: {path} already exists; choose a new run folder", file=sys.stderr)
        return run.EXIT_BAD_OPTION

    cancel = run.CancelState()
    prev = signal.signal(signal.SIGTERM, cancel.handler)
    # before the engine starts CUDA: the CUPTI library loads into this process and its workers
    trace_info = run._setup_tracing(_TraceOpts(cfg["trace"]), out)
    clock = RunClock()
    writer = EventWriter(path, clock)
    status, code, error, summary = "ok", run.EXIT_OK, None, None
    sampler = collector = None
    try:
        version = "unknown"
        try:
            version = engine_version(require_engine(ns.engine))
        except EngineUnavailable:
            version = "unavailable"
        host = _host()
        gpu_indices = [int(g["index"]) for g in host.get("gpus", []) if isinstance(g.get("index"), int)]
        writer.emit(
            "run.start", run_id=uuid.uuid4().hex, protocol=PROTOCOL_VERSION, agent_version=__version__,
            engine={"name": ns.engine, "version": version}, config={k: v for k, v in cfg.items() if k != "model_arg"},
            host=host, clock={"unix_ns_at_t0": clock.unix_ns_at_t0, "t0_monotonic_ns": clock.t0_monotonic_ns},
            capabilities={"trace": {k: v for k, v in trace_info.items() if k != "dir"},
                          "telemetry": {"on": bool(gpu_indices) and cfg["sample_ms"] > 0, "source": "nvidia-smi"}},
            argv=list(argv),
        )
        if cfg["trace"] and trace_info.get("on"):
            try:
                from ..tracer.collector import start_collector

                collector = start_collector(writer, clock, trace_info["dir"])
            except ImportError as e:
                writer.emit("log", level="warn", msg=f"transfer tracing off: tracer collector missing ({e})")
        if gpu_indices and cfg["sample_ms"] > 0:
            try:
                from ..telemetry import start_sampler

                sampler = start_sampler(writer, clock, gpu_indices, cfg["sample_ms"])
            except ImportError as e:
                writer.emit("log", level="warn", msg=f"telemetry off: sampler missing ({e})")
        writer.emit("phase", name="setup", state="begin")
        writer.emit("phase", name="setup", state="end")
        summary = run_engine(ns.engine, dict(cfg, out_dir=out, cancel_check=cancel.check), writer, clock)
    except run.Cancelled:
        status, code, error = "cancelled", run.EXIT_CANCELLED, {"code": "cancelled", "message": "SIGTERM received"}
    except EngineUnavailable as e:
        status, code, error = "error", run.EXIT_ERROR, {"code": "engine_unavailable", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure ends the log with run.end
        import traceback

        traceback.print_exc(file=sys.stderr)
        status, code, error = "error", run.EXIT_ERROR, {"code": "error", "message": f"{type(e).__name__}: {e}"}
    finally:
        try:
            run.end_run(writer, sampler, collector, status, error, summary)
        finally:
            writer.close()
            signal.signal(signal.SIGTERM, prev)
    if error is not None:
        print(f"kvscope-agent: {status}: {error['message']}", file=sys.stderr)
    return code


def _host() -> dict[str, Any]:
    host: dict[str, Any] | None = None
    try:
        from ..telemetry import probe_host

        host = probe_host(None)
    except ImportError:
        host = None
    if not isinstance(host, dict):
        host = {"hostname": socket.gethostname(), "gpus": [], "driver_version": None, "cuda_version": None}
    host.setdefault("python_version", platform.python_version())
    try:
        import torch  # the engines bring their own PyTorch

        host.setdefault("torch_version", torch.__version__)
    except ImportError:
        host.setdefault("torch_version", None)
    return host
