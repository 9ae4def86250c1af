"""`run --engine vllm`: the seed benchmark on vLLM with native CPU offloading and KV events.

NOT RUN ON REAL HARDWARE in this project (vLLM cannot be installed where it was built); the
translation and frame decoding are tested, the rest follows the engine's sources as cited.

- The async engine (`AsyncLLMEngine.from_engine_args(AsyncEngineArgs(...))`), so requests stream
  and TTFT is measured by the client; prefix caching on, `block_size=--block-tokens`,
  `gpu_memory_utilization=--free-gpu-memory-fraction`.
- CPU offloading: `kv_offloading_size` (GiB, newer EngineArgs, vllm/config/cache.py) or, before
  it, `KVTransferConfig(kv_connector="OffloadingConnector", kv_role="kv_both",
  kv_connector_extra_config={"num_cpu_blocks": N})` (0.11+).
- KV events: `KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=tcp://*:PORT,
  topic=...)` (vllm/config/kv_events.py). The publisher sends frames (topic, 8-byte big-endian
  seq, msgpack KVEventBatch) (ZmqEventPublisher._publisher_thread in
  vllm/distributed/kv_events.py); a SUB socket here decodes them with the engine's own
  KVEventBatch type and feeds the translation `translate --engine vllm` uses.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

from ..translate.common import Report
from ..translate.vllm import VllmTranslator
from . import EngineUnavailable, _fields, _vllm_kv_events_config, _vllm_offload_mode, engine_version, require_engine
from .session import RawDump, block_summary, drive, hf_kv_block_bytes, hf_vocab_size, side_file

ENGINE = "vllm"
TOPIC = "kvscope"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FrameError(ValueError):
    pass


def split_frames(frames: list[bytes]) -> tuple[bytes, int, bytes]:
    """(topic, seq, payload) of one PUB message; ZmqEventPublisher sends
    (topic_bytes, seq.to_bytes(8, "big"), payload)."""
    if len(frames) != 3:
        raise FrameError(f"a KV event message of {len(frames)} frames, expected 3")
    topic, seq_b, payload = frames
    if len(seq_b) != 8:
        raise FrameError(f"a sequence frame of {len(seq_b)} bytes, expected 8")
    return topic, int.from_bytes(seq_b, "big", signed=True), payload


class SeqTracker:
    """Publisher sequence numbers start at 0 and grow by one per batch; a gap is lost batches
    (the PUB socket drops past its high-water mark)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def see(self, seq: int) -> int:
        """Number of batches missing before `seq`."""
        missing = 0
        if self.last is None:
            missing = seq if seq > 0 else 0
        elif seq > self.last + 1:
            missing = seq - self.last - 1
        self.last = seq if self.last is None else max(self.last, seq)
        return missing


def make_decoder() -> Any:
    """msgpack payload -> builtins (lists/dicts), through the installed vLLM's own KVEventBatch so
    the field order is that version's."""
    import msgspec  # type: ignore[import-not-found]
    from vllm.distributed.kv_events import KVEventBatch  # type: ignore[import-not-found]

    dec = msgspec.msgpack.Decoder(type=KVEventBatch)
    return lambda payload: msgspec.to_builtins(dec.decode(payload))


class Subscriber:
    def __init__(self, port: int, translator: VllmTranslator, report: Report, clock: Any, dump: RawDump,
                 decode: Any = None) -> None:
        import zmq  # type: ignore[import-not-found]

        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        self.translator = translator
        self.report = report
        self.clock = clock
        self.dump = dump
        self.decode = decode or make_decoder()
        self.seq = SeqTracker()
        self.held: list[tuple[Any, int]] = []  # batches before the pools are known
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kvscope-vllm-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _one(self, frames: list[bytes]) -> None:
        t = self.clock.now()
        try:
            _, seq, payload = split_frames(frames)
            batch = self.decode(payload)
        except Exception as e:  # noqa: BLE001 - a bad message is reported, the stream goes on
            self.report.warn("bad_event_message", f"{type(e).__name__}: {e}", t)
            return
        missing = self.seq.see(seq)
        if missing:
            self.report.warn("lost_event_batches", f"{missing} batch(es) lost before seq {seq}", t, n=missing)
        self.dump.write(batch)
        with self.lock:
            if self.translator.emitter is None:
                self.held.append((batch, t))
            else:
                self.translator.feed_batch(batch, t)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                self._one(self.sock.recv_multipart())

    def stop_and_drain(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        while self.sock.poll(500):
            self._one(self.sock.recv_multipart())
        self.sock.close(linger=0)


def run_engine(cfg: dict[str, Any], writer: Any, clock: Any) -> dict[str, Any]:
    """Runs the seed workload on vLLM; writes phase/pool/blocks/req/round/log lines; returns
    run.end's summary. cfg as for the TensorRT-LLM engine, plus optionally `kv_dtype_bytes`."""
    vllm = require_engine(ENGINE)
    version = engine_version(vllm)
    try:
        import zmq  # noqa: F401  # type: ignore[import-not-found]
        import msgspec  # noqa: F401  # type: ignore[import-not-found]
    except ImportError as e:
        raise EngineUnavailable(ENGINE, f"the KV event subscriber needs {e.name}") from e
    from vllm import AsyncEngineArgs, SamplingParams  # type: ignore[import-not-found]

    try:
        from vllm import AsyncLLMEngine  # type: ignore[import-not-found]
    except ImportError:
        from vllm.v1.engine.async_llm import AsyncLLM as AsyncLLMEngine  # type: ignore[import-not-found]

    model = str(cfg.get("model_arg") or cfg["model"])
    block_tokens = int(cfg["block_tokens"])
    host_bytes = int(cfg.get("host_kv_bytes") or 0)
    max_len = int(cfg["context_tokens"]) + int(cfg["rounds"]) * (
        int(cfg["new_tokens"]) + int(cfg["output_tokens"])) + int(cfg["output_tokens"])
    block_bytes = (hf_kv_block_bytes(model, block_tokens, int(cfg.get("kv_dtype_bytes") or 2)) or 0) if os.path.isdir(model) else 0
    port = free_port()
    KVEventsConfig = _vllm_kv_events_config()
    args: dict[str, Any] = {
        "model": model,
        "block_size": block_tokens,
        "gpu_memory_utilization": float(cfg.get("free_gpu_memory_fraction") or 0.9),
        "enable_prefix_caching": True,
        "max_model_len": max_len,
        "seed": int(cfg.get("seed") or 0),
        "kv_events_config": KVEventsConfig(
            enable_kv_cache_events=True, publisher="zmq", endpoint=f"tcp://*:{port}", topic=TOPIC
        ),
    }
    host_blocks = 0
    mode = _vllm_offload_mode()
    if host_bytes > 0:
        if mode == "kv_offloading_size":
            args["kv_offloading_size"] = host_bytes / float(1 << 30)  # GiB, across TP ranks
            fields = _fields(AsyncEngineArgs) or set()
            if "kv_offloading_backend" in fields:
                args["kv_offloading_backend"] = "native"
        else:
            if not block_bytes:
                raise EngineUnavailable(ENGINE, "the OffloadingConnector needs num_cpu_blocks, and block bytes "
                                        "are unknown without the model's config.json")
            from vllm.config import KVTransferConfig  # type: ignore[import-not-found]

            args["kv_transfer_config"] = KVTransferConfig(
                kv_connector="OffloadingConnector", kv_role="kv_both",
                kv_connector_extra_config={"num_cpu_blocks": host_bytes // block_bytes},
            )
        host_blocks = host_bytes // block_bytes if block_bytes else 0

    report = Report(writer)
    translator = VllmTranslator(writer, report)
    dump = RawDump(side_file(cfg, "engine-kv-events.jsonl"))
    sub = Subscriber(port, translator, report, clock, dump)  # SUB connects before the PUB binds
    sub.start()

    writer.emit("phase", name="load_model", state="begin")
    engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args))
    writer.emit("phase", name="load_model", state="end")
    writer.emit("log", level="info", msg=f"vllm {version}: {model!r}, offload mode {mode}, kv events on port {port}")

    gpu_blocks = None
    for path in (("vllm_config", "cache_config"), ("cache_config",)):
        obj: Any = engine
        for a in path:
            obj = getattr(obj, a, None)
        n = getattr(obj, "num_gpu_blocks", None) if obj is not None else None
        if isinstance(n, int) and n > 0:
            gpu_blocks = n
            break
    with sub.lock:
        if gpu_blocks is not None and (host_blocks or host_bytes == 0):
            translator.set_pools(gpu_blocks, host_blocks, block_tokens, block_bytes, clock.now())
            for batch, t in sub.held:
                translator.feed_batch(batch, t)
            sub.held.clear()
        else:
            writer.emit("log", level="warn", msg="pool sizes not readable from this vLLM: blocks come at the end, "
                        "with pools inferred from the events")

    vocab = hf_vocab_size(model) if os.path.isdir(model) else None
    if vocab is None:
        vocab = 32000
        writer.emit("log", level="warn", msg="vocab size unknown (no config.json): token ids drawn below 32000")

    async def submit(u: int, rnd: int, prompt: list[int], n: int, first: Any) -> tuple[list[int], int | None]:
        sp = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        last = None
        async for out in engine.generate({"prompt_token_ids": prompt}, sp, request_id=f"u{u}-r{rnd}"):
            if out.outputs and len(out.outputs[0].token_ids) > 0:
                first()
            last = out
        toks = list(last.outputs[0].token_ids) if last is not None and last.outputs else []
        cached = getattr(last, "num_cached_tokens", None)
        return toks, cached if isinstance(cached, int) else None

    try:
        timing = asyncio.run(drive(cfg, writer, clock, vocab, submit))
    finally:
        sub.stop_and_drain()
        with sub.lock:
            if translator.emitter is None:
                dry = VllmTranslator(None, Report())
                dry.set_pools(None, None, block_tokens, 0, 0)
                for batch, t in sub.held:
                    dry.feed_batch(batch, t)
                dry.finish(None)
                gpu = gpu_blocks or max(dry.peak_gpu, 1)
                host = host_blocks or (dry.emitter.peak["host"] if dry.emitter else 0)
                t0 = sub.held[0][1] if sub.held else clock.now()
                report.warn("pool_size_inferred", f"pools of {gpu} gpu and {host} host blocks inferred from the events", t0)
                translator.set_pools(gpu, host, block_tokens, block_bytes, t0)
                for batch, t in sub.held:
                    translator.feed_batch(batch, t)
            translator.finish(clock.now())
        dump.close()
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001
                pass
    summary = {**timing, **block_summary(translator.emitter, report)}
    summary["engine_version"] = version
    return summary
