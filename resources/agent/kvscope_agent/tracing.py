"""Capture around a run, for every engine: CUPTI copy tracing (set up before CUDA starts, its
collector turning the tracer's records into `xfer` lines) and GPU telemetry (the sampler's `gpu`
lines), with what run.start says of each in `capabilities`.
"""

from __future__ import annotations

import os
from typing import Any

from .clock import RunClock
from .emit import EventWriter


def setup_tracing(trace: bool, device: str, out: str) -> dict[str, Any]:
    """Before CUDA starts: build/find the CUPTI library and point CUDA at it (the driver reads
    CUDA_INJECTION64_PATH when it initialises, in this process and in any worker it spawns)."""
    if not trace:
        return {"on": False, "source": "cupti", "reason": "--trace off"}
    if device == "cpu":
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


def start_capture(writer: EventWriter, clock: RunClock, trace: bool, trace_info: dict[str, Any], gpu_indices: list[int],
                  sample_ms: int, skip_existing: bool = False) -> tuple[Any, Any]:
    """(collector, sampler), each None where off; one whose module is missing says so in the log.
    skip_existing: a later run of a sweep skips the records earlier runs left in the trace files."""
    collector = sampler = None
    if trace and trace_info.get("on"):
        try:
            from .tracer.collector import start_collector

            collector = start_collector(writer, clock, trace_info["dir"], skip_existing=skip_existing)
        except ImportError as e:
            writer.emit("log", level="warn", msg=f"transfer tracing off: tracer collector missing ({e})")
    if gpu_indices and sample_ms > 0:
        try:
            from .telemetry import start_sampler

            sampler = start_sampler(writer, clock, gpu_indices, sample_ms)
        except ImportError as e:
            writer.emit("log", level="warn", msg=f"telemetry off: sampler missing ({e})")
    return collector, sampler
