"""The real inference engines the agent can drive: TensorRT-LLM and vLLM.

`available_engines()` is the host probe's answer (which engines import, with versions; the app's
run form offers only those). `require_engine(name)` is what a run calls first: it imports the
engine and checks the APIs KV Scope uses, and raises `EngineUnavailable` with a message that names
the engine and what it needs when they are missing. Each engine module exposes
`run_engine(cfg, writer, clock) -> summary` (see tensorrt_llm.py and vllm.py).

The probe imports each engine in a child process: importing TensorRT-LLM starts MPI and CUDA and
prints a banner, which must not happen inside the agent that is about to run another engine.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str
    label: str
    requirement: str
    check: Callable[[Any], list[str]]


def _check_tensorrt_llm(mod: Any) -> list[str]:
    """What the run path uses (tensorrt_llm/llmapi/llm.py, llmapi/llm_args.py)."""
    missing = []
    llm = getattr(mod, "LLM", None)
    if llm is None:
        missing.append("tensorrt_llm.LLM")
    elif not hasattr(llm, "get_kv_cache_events"):
        missing.append("LLM.get_kv_cache_events")
    try:
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        kv = getattr(llmapi, "KvCacheConfig", None)
    except ImportError:
        kv = None
    if kv is None:
        missing.append("tensorrt_llm.llmapi.KvCacheConfig")
    else:
        fields = _fields(kv)
        for f in ("enable_block_reuse", "host_cache_size", "free_gpu_memory_fraction", "event_buffer_max_size"):
            if fields is not None and f not in fields:
                missing.append(f"KvCacheConfig.{f}")
    return missing


def _check_vllm(mod: Any) -> list[str]:
    """What the run path uses: the async engine (streaming, for client-side TTFT), KV events
    (vllm/config/kv_events.py KVEventsConfig; vllm/distributed/kv_events.py KVEventBatch) and
    native CPU offloading (`kv_offloading_size` in EngineArgs, or the OffloadingConnector)."""
    missing = []
    if not hasattr(mod, "AsyncEngineArgs"):
        missing.append("vllm.AsyncEngineArgs")
    try:
        importlib.import_module("vllm.distributed.kv_events")
    except ImportError:
        missing.append("vllm.distributed.kv_events")
    if _vllm_kv_events_config() is None:
        missing.append("KVEventsConfig")
    if _vllm_offload_mode() is None:
        missing.append("native CPU offloading (EngineArgs.kv_offloading_size or OffloadingConnector)")
    return missing


def _vllm_kv_events_config() -> Any:
    for path in ("vllm.config.kv_events", "vllm.config"):
        try:
            cls = getattr(importlib.import_module(path), "KVEventsConfig", None)
        except ImportError:
            cls = None
        if cls is not None:
            return cls
    return None


def _vllm_offload_mode() -> str | None:
    """'kv_offloading_size' (newer EngineArgs), 'connector' (0.11+ OffloadingConnector), or None."""
    try:
        from vllm.engine.arg_utils import EngineArgs  # type: ignore[import-not-found]

        fields = _fields(EngineArgs)
        if fields is not None and "kv_offloading_size" in fields:
            return "kv_offloading_size"
    except ImportError:
        pass
    for path in (
        "vllm.distributed.kv_transfer.kv_connector.v1.offloading_connector",
        "vllm.distributed.kv_transfer.kv_connector.v1.offloading",
    ):
        try:
            importlib.import_module(path)
            return "connector"
        except ImportError:
            continue
    return None


def _fields(cls: Any) -> set[str] | None:
    """Field names of a pydantic model or dataclass; None when unknowable."""
    for attr in ("model_fields", "__dataclass_fields__", "__fields__"):
        f = getattr(cls, attr, None)
        if isinstance(f, dict):
            return set(f)
    return None


ENGINES: dict[str, EngineSpec] = {
    "tensorrt_llm": EngineSpec(
        "tensorrt_llm",
        "tensorrt_llm",
        "TensorRT-LLM",
        "TensorRT-LLM with the LLM API's KV cache events: tensorrt_llm.LLM with get_kv_cache_events "
        "and llmapi.KvCacheConfig(enable_block_reuse, host_cache_size, free_gpu_memory_fraction, "
        "event_buffer_max_size) — the 1.x releases; the PyTorch backend for host offload",
        _check_tensorrt_llm,
    ),
    "vllm": EngineSpec(
        "vllm",
        "vllm",
        "vLLM",
        "vLLM 0.11 or newer: KV events with `medium` (KVEventsConfig, ZMQ publisher, pyzmq and "
        "msgspec) and native CPU offloading (--kv-offloading-size or the OffloadingConnector)",
        _check_vllm,
    ),
}


class EngineUnavailable(RuntimeError):
    """An engine that cannot run here, with the reason and what it needs."""

    def __init__(self, engine: str, reason: str) -> None:
        spec = ENGINES.get(engine)
        label = spec.label if spec else engine
        need = spec.requirement if spec else "a known engine (tensorrt_llm or vllm)"
        self.engine = engine
        self.reason = reason
        super().__init__(f"--engine {engine}: {label} is not usable here: {reason}. Needs {need}.")


def require_engine(name: str) -> Any:
    """Import engine `name` and check the APIs KV Scope uses; returns the module."""
    spec = ENGINES.get(name)
    if spec is None:
        raise EngineUnavailable(name, f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
    try:
        mod = importlib.import_module(spec.module)
    except Exception as e:  # noqa: BLE001 - an engine's import fails in many ways (CUDA, MPI, ABI)
        raise EngineUnavailable(name, f"import {spec.module} failed: {type(e).__name__}: {e}") from e
    missing = spec.check(mod)
    if missing:
        version = getattr(mod, "__version__", "unknown version")
        raise EngineUnavailable(name, f"{spec.module} {version} lacks {', '.join(missing)}")
    return mod


def engine_version(mod: Any) -> str:
    return str(getattr(mod, "__version__", "unknown"))


_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from kvscope_agent.engines import require_engine, engine_version, EngineUnavailable
try:
    print(json.dumps({"ok": engine_version(require_engine(sys.argv[1]))}))
except EngineUnavailable as e:
    print(json.dumps({"error": str(e)}))
"""


def probe_engine(name: str, python: str | None = None, timeout_s: float = 180.0) -> str:
    """The engine's version when it imports with the APIs KV Scope uses, else a line that starts
    with "unavailable:" and says why (the import error, the missing API, the requirement)."""
    import os

    agent_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        proc = subprocess.run(
            [python or sys.executable, "-c", _PROBE, name, agent_root],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"unavailable: importing {name} took over {timeout_s:.0f} s"
    for line in reversed(proc.stdout.splitlines()):  # engines print banners before our line
        try:
            ans = json.loads(line)
        except ValueError:
            continue
        if isinstance(ans, dict) and "ok" in ans:
            return str(ans["ok"])
        if isinstance(ans, dict) and "error" in ans:
            return f"unavailable: {ans['error']}"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"unavailable: the import probe exited {proc.returncode}: {tail[0][:300]}"


def available_engines(python: str | None = None) -> dict[str, str]:
    """name -> version, or -> "unavailable: <why, and what the engine needs>"."""
    return {name: probe_engine(name, python) for name in ENGINES}


def run_engine(name: str, cfg: dict[str, Any], writer: Any, clock: Any) -> dict[str, Any]:
    """Dispatch for the agent's `run --engine tensorrt_llm|vllm`: runner.py writes run.start and
    run.end around this; this writes the pool, blocks, req, round, phase and log lines."""
    if name == "tensorrt_llm":
        from .tensorrt_llm import run_engine as run
    elif name == "vllm":
        from .vllm import run_engine as run
    else:
        raise EngineUnavailable(name, f"unknown engine {name!r}")
    return run(cfg, writer, clock)


def main(argv: list[str] | None = None) -> int:
    """`python3 -m kvscope_agent.engines`: the probe as one JSON object on stdout."""
    print(json.dumps(available_engines()))
    return 0
