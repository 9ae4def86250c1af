"""`python3 -m kvscope_agent run --engine tensorrt_llm|vllm ...`: one run on a real engine.

The same options, log life cycle and exit codes as the built-in engine's run: the options are
parsed by the same parser (options.py; an option the table says this engine does not take is
refused by name), and the life cycle is lifecycle.py's and tracing.py's: DIR/events.jsonl gets
run.start, setup/teardown phases around the engine's own (load_model, context, rounds), the CUPTI
collector and the GPU sampler when they are on, and a run.end that says how it ended. Exit 0 ok,
1 error (an engine that is not usable here included), 2 bad option, 143 cancelled by SIGTERM.
"""

from __future__ import annotations

import platform
import socket
import sys
from typing import Any, Sequence

from ..clock import RunClock
from ..emit import EventWriter
from ..lifecycle import (
    EXIT_BAD_OPTION,
    EXIT_ERROR,
    EXIT_OK,
    CancelState,
    early_failure,
    emit_run_start,
    end_run,
    ending_of,
    new_log_path,
    sigterm_cancels,
)
from ..options import BY_NAME, OPTIONS, OptionError, build_parser, flag, given, value_in_argv, value_of
from ..tracing import setup_tracing, start_capture
from . import ENGINES, EngineUnavailable, engine_version, require_engine, run_engine

REAL_ENGINES = tuple(ENGINES)


def engine_of(argv: Sequence[str]) -> str | None:
    """The --engine value in argv, if any (both `--engine X` and `--engine=X`)."""
    return value_in_argv(argv, "--engine")


def _config(ns: Any, engine: str) -> dict[str, Any]:
    """run.start `config`, snake_case as docs/protocol.md: the table's options this engine takes
    (workload_options.json, `engines`); one it does not take, given, is refused by name."""
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
    try:
        ns = build_parser(False).parse_args(list(argv))
        cfg = _config(ns, ns.engine)
    except OptionError as e:
        return early_failure(value_in_argv(argv, "--out"), e)
    out = ns.out
    path = new_log_path(out)
    if path is None:
        return EXIT_BAD_OPTION

    with sigterm_cancels(CancelState()) as cancel:
        # before the engine starts CUDA: the CUPTI library loads into this process and its workers
        trace_info = setup_tracing(cfg["trace"], "cuda", out)
        clock = RunClock()
        writer = EventWriter(path, clock)
        status, code, error, summary = "ok", EXIT_OK, None, None
        sampler = collector = None
        try:
            version = "unknown"
            try:
                version = engine_version(require_engine(ns.engine))
            except EngineUnavailable:
                version = "unavailable"
            host = _host()
            gpu_indices = [int(g["index"]) for g in host.get("gpus", []) if isinstance(g.get("index"), int)]
            emit_run_start(
                writer, clock, {"name": ns.engine, "version": version}, {k: v for k, v in cfg.items() if k != "model_arg"},
                host, {"trace": {k: v for k, v in trace_info.items() if k != "dir"},
                       "telemetry": {"on": bool(gpu_indices) and cfg["sample_ms"] > 0, "source": "nvidia-smi"}},
                list(argv),
            )
            collector, sampler = start_capture(writer, clock, cfg["trace"], trace_info, gpu_indices, cfg["sample_ms"])
            writer.emit("phase", name="setup", state="begin")
            writer.emit("phase", name="setup", state="end")
            summary = run_engine(ns.engine, dict(cfg, out_dir=out, cancel_check=cancel.check), writer, clock)
        except BaseException as e:  # noqa: BLE001 - every ending (SIGTERM included) is written into the log
            shared = ending_of(e)
            if shared is not None:
                status, code, error = shared
            elif isinstance(e, EngineUnavailable):
                status, code, error = "error", EXIT_ERROR, {"code": "engine_unavailable", "message": str(e)}
            elif isinstance(e, Exception):
                import traceback

                traceback.print_exc(file=sys.stderr)
                status, code, error = "error", EXIT_ERROR, {"code": "error", "message": f"{type(e).__name__}: {e}"}
            else:
                raise  # KeyboardInterrupt, SystemExit: not a run's ending
        finally:
            try:
                end_run(writer, sampler, collector, status, error, summary)
            finally:
                writer.close()
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
