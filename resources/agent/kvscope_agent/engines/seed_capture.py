"""Run the seed benchmark itself, unchanged, with its KV-cache events captured for KV Scope.

    python3 -m kvscope_agent.engines.seed_capture --dump DUMP.jsonl [--event-buffer N] \
        -- benchmark.py --model_path ENGINE_DIR --input_dataset_path dataset.json --n 8

TensorRT-LLM's benchmarks/python/kv_cache_offload/benchmark.py (read at NVIDIA/TensorRT-LLM
commit 258c7540c03517def55d9a5aadfa9288af474e1b) drives the C++ executor through
`tensorrt_llm.bindings.executor` and never turns KV events on. This wrapper, before running the
script with runpy:
- makes `KvCacheConfig(...)` pass `event_buffer_max_size` (a keyword of the executor binding's
  KvCacheConfig, default 0 = events off), everything else as the script sets it;
- after `Executor(...)` is built, drains `get_kv_cache_event_manager().get_latest_events()` in a
  thread and writes each event through tensorrt_llm._utils.KVCacheEventSerializer as one JSON
  line: the same dicts LLM.get_kv_cache_events() returns, so
  `python3 -m kvscope_agent translate --engine tensorrt_llm --input DUMP.jsonl --out DIR` reads it.
The script's own output (E2E TIME, its TTFT proxy) is untouched.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import threading
from typing import Any, Sequence

from . import EngineUnavailable


class Capture:
    def __init__(self, dump_path: str, serialize: Any, poll_ms: float = 100.0) -> None:
        self.f = open(dump_path, "x", encoding="utf-8")
        self.serialize = serialize
        self.poll_ms = poll_ms
        self.managers: list[Any] = []
        self.count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def attach(self, executor: Any) -> None:
        mgr = executor.get_kv_cache_event_manager()
        if mgr is None:
            raise RuntimeError(
                "the executor has no KV cache event manager: KV events need enable_block_reuse and "
                "event_buffer_max_size > 0 in its KvCacheConfig"
            )
        self.managers.append(mgr)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kvscope-seed-events", daemon=True)
            self._thread.start()

    def drain_once(self, timeout_ms: float) -> int:
        n = 0
        with self._lock:
            for mgr in self.managers:
                events = mgr.get_latest_events(timeout_ms)
                for ev in self.serialize(list(events)) or []:
                    self.f.write(json.dumps(ev, separators=(",", ":"), default=str) + "\n")
                    n += 1
            self.f.flush()
        self.count += n
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.drain_once(self.poll_ms)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        while self.managers and self.drain_once(200.0):
            pass
        self.f.close()


def import_seed_bindings() -> tuple[Any, Any]:
    """The executor bindings benchmark.py uses, and the serializer LLM.get_kv_cache_events uses."""
    try:
        import importlib

        executor_mod = importlib.import_module("tensorrt_llm.bindings.executor")
        utils = importlib.import_module("tensorrt_llm._utils")
        serialize = utils.KVCacheEventSerializer.serialize
    except Exception as e:  # noqa: BLE001 - a broken install fails in many ways
        raise EngineUnavailable(
            "tensorrt_llm",
            f"the seed benchmark's bindings do not import: {type(e).__name__}: {e}",
        ) from e
    return executor_mod, serialize


def install(executor_mod: Any, capture: Capture, event_buffer: int) -> None:
    """Patch the binding module's KvCacheConfig and Executor names (benchmark.py looks them up
    on the module at call time: `trtllm.KvCacheConfig(...)`, `trtllm.Executor(...)`)."""
    orig_kv = executor_mod.KvCacheConfig
    orig_executor = executor_mod.Executor

    def KvCacheConfig(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("event_buffer_max_size", event_buffer)
        return orig_kv(*args, **kwargs)

    def Executor(*args: Any, **kwargs: Any) -> Any:
        ex = orig_executor(*args, **kwargs)
        capture.attach(ex)
        return ex

    executor_mod.KvCacheConfig = KvCacheConfig
    executor_mod.Executor = Executor


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("usage: python3 -m kvscope_agent.engines.seed_capture --dump DUMP [--event-buffer N] -- "
              "benchmark.py ARGS...", file=sys.stderr)
        return 2
    cut = args.index("--")
    p = argparse.ArgumentParser(prog="python3 -m kvscope_agent.engines.seed_capture")
    p.add_argument("--dump", required=True)
    p.add_argument("--event-buffer", type=int, default=1 << 20,
                   help="event_buffer_max_size: events kept between two drains (default 1048576)")
    try:
        opts = p.parse_args(args[:cut])
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    script = args[cut + 1:]
    if not script:
        print("seed_capture: no benchmark script after --", file=sys.stderr)
        return 2
    executor_mod, serialize = import_seed_bindings()
    capture = Capture(opts.dump, serialize)
    install(executor_mod, capture, opts.event_buffer)
    sys.argv = script
    try:
        runpy.run_path(script[0], run_name="__main__")
    finally:
        capture.close()
        print(f"seed_capture: {capture.count} KV events written to {opts.dump}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
