"""`run --engine tensorrt_llm`: the seed benchmark on TensorRT-LLM's LLM API.

NOT RUN ON REAL HARDWARE in this project (TensorRT-LLM cannot be installed where it was built);
its pure parts are tested, the rest follows the engine's sources as cited and docs/engines.md
gives the manual procedure for a host that has TensorRT-LLM.

- `tensorrt_llm.LLM` (PyTorch backend, the 1.x default) or, for a directory of built engines as
  the seed's run.sh makes with `trtllm-build`, the TensorRT-engine LLM.
- `KvCacheConfig(enable_block_reuse=True, host_cache_size=--host-kv-bytes,
  free_gpu_memory_fraction=..., event_buffer_max_size>0, tokens_per_block=--block-tokens)`
  (tensorrt_llm/llmapi/llm_args.py; events need event_buffer_max_size > 0 and block reuse,
  per the LLM.get_kv_cache_events docstring in tensorrt_llm/llmapi/llm.py).
- Requests stream (`generate_async(..., streaming=True)`, as examples/llm-api/
  llm_inference_async_streaming.py), so TTFT is measured by the client; the
  seed's own figure (benchmarks/python/kv_cache_offload/benchmark.py: the iteration latency of
  the second iteration whose KV cache hit rate is above 0.01) is kept beside it on each `round`.
- A thread polls `get_kv_cache_events` and `get_stats`; the events go through the same
  translation as `translate --engine tensorrt_llm`, the raw events and iteration stats are kept
  beside events.jsonl (engine-kv-events.jsonl, engine-iteration-stats.jsonl).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
from typing import Any

from ..translate.common import Report
from ..translate.tensorrt_llm import TrtllmTranslator, flatten_events
from . import EngineUnavailable, engine_version, require_engine
from .session import (
    RawDump,
    block_summary,
    drive,
    engine_tokens_per_block,
    hf_kv_block_bytes,
    hf_vocab_size,
    kv_element_bytes,
    side_file,
)

ENGINE = "tensorrt_llm"
# Events between two polls (every POLL_S); the engine drops the oldest past this many.
DEFAULT_EVENT_BUFFER = 1 << 20
POLL_S = 0.05


def kv_cache_stats(stat: Any) -> dict[str, Any] | None:
    """The `kvCacheStats` of one iteration's stats (a dict, or its JSON string as some executor
    paths return it); keys as the engine writes them (camelCase from JsonSerialization)."""
    if isinstance(stat, str):
        try:
            stat = json.loads(stat)
        except ValueError:
            return None
    if not isinstance(stat, dict):
        return None
    kv = stat.get("kvCacheStats", stat.get("kv_cache_stats"))
    return kv if isinstance(kv, dict) else None


def _num(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def seed_ttft_proxy_ns(stats: list[Any]) -> int | None:
    """The seed benchmark's "TTFT": iter_latency_ms of the second iteration whose
    kv_cache_stats.cache_hit_rate is above 0.01 (reference/engines.md §1.0), in ns."""
    seen = 0
    for stat in stats:
        if isinstance(stat, str):
            try:
                stat = json.loads(stat)
            except ValueError:
                continue
        if not isinstance(stat, dict):
            continue
        kv = kv_cache_stats(stat) or {}
        rate = _num(kv, "cacheHitRate", "cache_hit_rate")
        if rate is None or rate <= 0.01:
            continue
        seen += 1
        if seen == 2:
            ms = _num(stat, "iterLatencyMS", "iter_latency_ms")
            return int(ms * 1e6) if ms is not None else None
    return None


def _accepted(cls: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split kwargs into those `cls` (a pydantic model, or a callable) takes and those it lacks."""
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, dict):
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return dict(kwargs), []
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return dict(kwargs), []
        fields = dict(params)
    ok = {k: v for k, v in kwargs.items() if k in fields}
    return ok, [k for k in kwargs if k not in fields]


def is_engine_dir(model: str) -> bool:
    return os.path.isdir(model) and any(f.endswith(".engine") for f in os.listdir(model))


class Poller:
    """Polls KV events and iteration stats off the engine in a thread."""

    def __init__(self, llm: Any, translator: TrtllmTranslator, report: Report, clock: Any,
                 block_tokens: int, block_bytes: int, events_dump: RawDump, stats_dump: RawDump) -> None:
        self.llm = llm
        self.translator = translator
        self.report = report
        self.clock = clock
        self.block_tokens = block_tokens
        self.block_bytes = block_bytes
        self.events_dump = events_dump
        self.stats_dump = stats_dump
        self.stats: list[tuple[int, Any]] = []  # (run ns when polled, one iteration's stats)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="kvscope-trtllm-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll_once(self, timeout: float) -> int:
        with self._lock:
            n = 0
            try:
                events = self.llm.get_kv_cache_events(timeout=timeout) or []
            except Exception as e:  # noqa: BLE001 - report and go on; the run itself may be fine
                self.report.warn("event_poll_failed", f"get_kv_cache_events: {type(e).__name__}: {e}")
                events = []
            t = self.clock.now()
            for ev in flatten_events(events, self.report):
                self.events_dump.write(ev)
                self.translator.feed(ev, t)
                n += 1
            self.translator.start_pools_from_created(self.block_tokens, self.block_bytes, t)
            try:
                stats = self.llm.get_stats(timeout=timeout) or []
            except Exception as e:  # noqa: BLE001
                self.report.warn("stats_poll_failed", f"get_stats: {type(e).__name__}: {e}")
                stats = []
            for st in stats:
                if isinstance(st, str):
                    try:
                        st = json.loads(st)
                    except ValueError:
                        continue
                self.stats_dump.write({"t": t, "stats": st})
                self.stats.append((t, st))
            return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            # get_kv_cache_events waits up to its timeout for events; pace the loop anyway in
            # case a version returns at once when there are none
            if self.poll_once(POLL_S) == 0:
                self._stop.wait(POLL_S)

    def stop_and_drain(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        # the last iteration's events are flushed to the queue asynchronously
        quiet = 0
        while quiet < 2:
            quiet = quiet + 1 if self.poll_once(0.5) == 0 else 0

    def stats_between(self, t0: int, t1: int) -> list[Any]:
        return [st for t, st in self.stats if t0 <= t <= t1 + int(POLL_S * 4e9)]


def _reused_tokens(out: Any, block_tokens: int) -> int | None:
    """Prompt tokens the engine reused for this request, where the installed version says."""
    for attr in ("cached_tokens", "num_cached_tokens"):
        v = getattr(out, attr, None)
        if isinstance(v, int):
            return v
    try:
        comp = out.outputs[0]
        m = getattr(comp, "request_perf_metrics", None) or getattr(out, "request_perf_metrics", None)
        kv = getattr(m, "kv_cache_metrics", None)
        n = getattr(kv, "num_reused_blocks", None)
        if isinstance(n, int):
            return n * block_tokens
    except (AttributeError, IndexError, TypeError):
        pass
    return None


def run_engine(cfg: dict[str, Any], writer: Any, clock: Any) -> dict[str, Any]:
    """Runs the seed workload on TensorRT-LLM; writes phase/pool/blocks/req/round/log lines;
    returns run.end's summary. cfg: run.start's `config` (model, users, rounds, context_tokens,
    new_tokens, output_tokens, block_tokens, host_kv_bytes, gpu_kv_bytes,
    free_gpu_memory_fraction, seed) plus `out_dir` (for the raw dumps) and optionally
    `event_buffer_max_size`, `max_batch`."""
    trt = require_engine(ENGINE)
    version = engine_version(trt)
    from tensorrt_llm import SamplingParams  # type: ignore[import-not-found]
    from tensorrt_llm.llmapi import KvCacheConfig  # type: ignore[import-not-found]

    model = str(cfg.get("model_arg") or cfg["model"])
    block_tokens = int(cfg["block_tokens"])
    users = int(cfg["users"])
    max_tokens = int(cfg["context_tokens"]) + int(cfg["rounds"]) * (
        int(cfg["new_tokens"]) + int(cfg["output_tokens"])) + int(cfg["output_tokens"])

    kv_kwargs: dict[str, Any] = {
        "enable_block_reuse": True,
        "host_cache_size": int(cfg.get("host_kv_bytes") or 0),
        "free_gpu_memory_fraction": float(cfg.get("free_gpu_memory_fraction") or 0.9),
        "event_buffer_max_size": int(cfg.get("event_buffer_max_size") or DEFAULT_EVENT_BUFFER),
        "tokens_per_block": block_tokens,
    }
    if cfg.get("gpu_kv_bytes"):
        kv_kwargs["max_gpu_total_bytes"] = int(cfg["gpu_kv_bytes"])
    kv_ok, kv_missing = _accepted(KvCacheConfig, kv_kwargs)
    if "event_buffer_max_size" in kv_missing or "host_cache_size" in kv_missing:
        raise EngineUnavailable(ENGINE, f"tensorrt_llm {version} KvCacheConfig lacks {', '.join(kv_missing)}")
    for k in kv_missing:
        writer.emit("log", level="warn", msg=f"tensorrt_llm {version}: KvCacheConfig has no {k}; not set")

    engine_dir = is_engine_dir(model)
    if engine_dir:
        # a built engine fixes its block size and limits at build time (trtllm-bench build)
        kv_ok.pop("tokens_per_block", None)
        built = engine_tokens_per_block(model)
        if built is not None and built != block_tokens:
            writer.emit("log", level="warn", msg=f"the engine was built with tokens_per_block {built}; "
                        f"using it, not --block-tokens {block_tokens}")
            block_tokens = built
    if engine_dir:
        try:
            from tensorrt_llm._tensorrt_engine import LLM  # type: ignore[import-not-found]
        except ImportError:
            LLM = trt.LLM
    else:
        LLM = trt.LLM
    llm_kwargs: dict[str, Any] = {
        "kv_cache_config": KvCacheConfig(**kv_ok),
        "max_batch_size": max(16, users),
        "max_seq_len": max_tokens,
        # the whole context in one iteration, as the seed's engine (max_num_tokens 17800)
        "max_num_tokens": max(int(cfg["context_tokens"]) + 64, 8192),
    }
    if engine_dir:
        for k in ("max_batch_size", "max_seq_len", "max_num_tokens"):
            llm_kwargs.pop(k)
    else:
        llm_kwargs["enable_iter_perf_stats"] = True  # get_stats on the PyTorch backend
    args_cls = None
    try:
        from tensorrt_llm.llmapi import llm_args as _la  # type: ignore[import-not-found]

        args_cls = getattr(_la, "TorchLlmArgs" if not engine_dir else "TrtLlmArgs", None)
    except ImportError:
        pass
    if args_cls is not None:
        llm_kwargs, dropped = _accepted(args_cls, llm_kwargs)
        for k in dropped:
            writer.emit("log", level="warn", msg=f"tensorrt_llm {version}: LLM takes no {k}; not set")

    kv_dtype_bytes = int(cfg.get("kv_dtype_bytes") or (kv_element_bytes(model) if os.path.isdir(model) else 2))
    block_bytes = (hf_kv_block_bytes(model, block_tokens, kv_dtype_bytes) or 0) if os.path.isdir(model) else 0
    if not block_bytes:
        writer.emit("log", level="warn", msg="block_bytes unknown (no Hugging Face config.json beside the model); pools say 0")

    writer.emit("phase", name="load_model", state="begin")
    llm = LLM(model=model, **llm_kwargs)
    writer.emit("phase", name="load_model", state="end")
    writer.emit("log", level="info", msg=f"tensorrt_llm {version}: LLM({model!r}) with KvCacheConfig({kv_ok})")

    report = Report(writer)
    translator = TrtllmTranslator(writer, report)
    events_dump = RawDump(side_file(cfg, "engine-kv-events.jsonl"))
    stats_dump = RawDump(side_file(cfg, "engine-iteration-stats.jsonl"))
    poller = Poller(llm, translator, report, clock, block_tokens, block_bytes, events_dump, stats_dump)
    # `created` (event 0) comes when the KV cache manager is built; wait a little for the pools
    for _ in range(40):
        poller.poll_once(0.25)
        if translator.emitter is not None:
            break
    if translator.emitter is None:
        writer.emit("log", level="warn", msg="no created event yet: blocks wait until the pools are known")
    poller.start()

    vocab = hf_vocab_size(model) if os.path.isdir(model) else None
    if vocab is None:
        tok = getattr(llm, "tokenizer", None)
        vocab = int(getattr(tok, "vocab_size", 0) or 32000)

    sp_params = inspect.signature(SamplingParams).parameters

    def sampling(n: int) -> Any:
        kw: dict[str, Any] = {"max_tokens": n}
        # greedy and a fixed output length, as the seed (64 tokens a round)
        for k, v in (("temperature", 0.0), ("top_k", 1), ("ignore_eos", True), ("return_perf_metrics", True)):
            if k in sp_params:
                kw[k] = v
        return SamplingParams(**kw)

    async def submit(u: int, rnd: int, prompt: list[int], n: int, first: Any) -> tuple[list[int], int | None]:
        res = llm.generate_async(prompt, sampling_params=sampling(n), streaming=True)
        last = None
        async for out in res:
            if out.outputs and len(out.outputs[0].token_ids) > 0:
                first()
            last = out
        toks = list(last.outputs[0].token_ids) if last is not None and last.outputs else []
        return toks, _reused_tokens(last, block_tokens) if last is not None else None

    def round_extra(rnd: int, t0: int, t1: int) -> dict[str, Any]:
        stats = poller.stats_between(t0, t1)
        kvs = [kv_cache_stats(s) for s in stats]
        kvs = [k for k in kvs if k]
        return {"engine_ttft_ns": seed_ttft_proxy_ns(stats), "engine_kv_stats": kvs[-1] if kvs else None}

    try:
        timing = asyncio.run(drive(cfg, writer, clock, vocab, submit, round_extra))
    finally:
        poller.stop_and_drain()
        if translator.emitter is None:
            translator.infer_pools_and_replay(block_tokens, block_bytes, clock.now())
        translator.finish(clock.now())
        events_dump.close()
        stats_dump.close()
        try:
            llm.shutdown()
        except Exception:  # noqa: BLE001 - shutting down a failed engine is best effort
            pass
    summary = {**timing, **block_summary(translator.emitter, report)}
    summary["engine_version"] = version
    return summary
