"""The real-engine run paths (TensorRT-LLM and vLLM): what can be checked without the engines.

Neither TensorRT-LLM nor vLLM is installed here, so `available_engines()` and `run_engine` are
checked against their real absence; the import checks against stand-in packages on sys.path that
fail the way broken installs do; and the pure parts (the seed's TTFT proxy, block bytes from a
model config, the ZMQ frame split, the workload driver's protocol lines) on their own.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import textwrap

import pytest

from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.engines import EngineUnavailable, available_engines, require_engine, run_engine
from kvscope_agent.engines.session import drive, hf_kv_block_bytes
from kvscope_agent.engines.tensorrt_llm import kv_cache_stats, seed_ttft_proxy_ns
from kvscope_agent.engines.vllm import FrameError, SeqTracker, split_frames
from kvscope_agent.ledger import check_log


def _installed(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Write stand-in packages into tmp_path and put it first on sys.path."""

    def write(files: dict[str, str]) -> None:
        for rel, body in files.items():
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(body))
        for name in list(sys.modules):
            if name.split(".")[0] in ("tensorrt_llm", "vllm"):
                monkeypatch.delitem(sys.modules, name)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in list(sys.modules):
        if name.split(".")[0] in ("tensorrt_llm", "vllm"):
            del sys.modules[name]


def test_failing_import_names_engine_cause_and_requirement(fake_packages):
    fake_packages({"tensorrt_llm/__init__.py": """
        raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")
    """})
    with pytest.raises(EngineUnavailable) as e:
        require_engine("tensorrt_llm")
    msg = str(e.value)
    assert "--engine tensorrt_llm" in msg and "TensorRT-LLM" in msg
    assert "libnvinfer.so.10" in msg
    assert "get_kv_cache_events" in msg and "event_buffer_max_size" in msg  # what it needs


def test_old_engine_missing_apis_is_refused_with_what_lacks(fake_packages):
    fake_packages({
        "vllm/__init__.py": "__version__ = '0.8.5'\nclass LLM: pass\n",
    })
    with pytest.raises(EngineUnavailable) as e:
        require_engine("vllm")
    msg = str(e.value)
    assert "vllm 0.8.5 lacks" in msg
    assert "KVEventsConfig" in msg and "AsyncEngineArgs" in msg
    assert "vLLM 0.11 or newer" in msg


def test_trtllm_without_event_buffer_field_is_refused(fake_packages):
    fake_packages({
        "tensorrt_llm/__init__.py": """
            __version__ = "0.12.0"
            class LLM:
                def generate(self): pass
        """,
        "tensorrt_llm/llmapi/__init__.py": """
            class KvCacheConfig:
                model_fields = {"enable_block_reuse": 1, "free_gpu_memory_fraction": 1}
        """,
    })
    with pytest.raises(EngineUnavailable) as e:
        require_engine("tensorrt_llm")
    msg = str(e.value)
    assert "tensorrt_llm 0.12.0 lacks" in msg
    assert "LLM.get_kv_cache_events" in msg and "KvCacheConfig.event_buffer_max_size" in msg
    assert "KvCacheConfig.host_cache_size" in msg


def test_engine_with_the_apis_is_accepted(fake_packages):
    fake_packages({
        "tensorrt_llm/__init__.py": """
            __version__ = "1.1.0"
            class LLM:
                def get_kv_cache_events(self, timeout=2): return []
        """,
        "tensorrt_llm/llmapi/__init__.py": """
            class KvCacheConfig:
                model_fields = dict.fromkeys(["enable_block_reuse", "host_cache_size",
                    "free_gpu_memory_fraction", "event_buffer_max_size", "tokens_per_block"])
        """,
    })
    assert require_engine("tensorrt_llm").__version__ == "1.1.0"


@pytest.mark.skipif(_installed("tensorrt_llm") or _installed("vllm"), reason="an engine is installed here")
def test_probe_reports_both_engines_unavailable_here_with_reasons():
    got = available_engines()
    assert set(got) == {"tensorrt_llm", "vllm"}
    assert got["tensorrt_llm"].startswith("unavailable:") and "No module named 'tensorrt_llm'" in got["tensorrt_llm"]
    assert got["vllm"].startswith("unavailable:") and "vLLM 0.11 or newer" in got["vllm"]


@pytest.mark.skipif(_installed("tensorrt_llm"), reason="TensorRT-LLM is installed here")
def test_run_engine_without_the_engine_fails_clearly(tmp_path):
    w = EventWriter(tmp_path / "events.jsonl", RunClock())
    try:
        with pytest.raises(EngineUnavailable) as e:
            run_engine("tensorrt_llm", {"model": "x"}, w, RunClock())
    finally:
        w.close()
    assert "TensorRT-LLM is not usable here" in str(e.value)
    with pytest.raises(EngineUnavailable) as e:
        run_engine("sglang", {}, None, None)
    assert "unknown engine" in str(e.value)


def test_seed_ttft_proxy_is_the_second_iteration_with_hits():
    # IterationStats as JsonSerialization::toJsonStr writes them (camelCase), one per iteration;
    # benchmark.py takes iter_latency_ms of the second iteration with cache_hit_rate > 0.01.
    stats = [
        {"iter": 0, "iterLatencyMS": 900.0, "kvCacheStats": {"cacheHitRate": 0.0, "reusedBlocks": 0}},
        {"iter": 1, "iterLatencyMS": 40.0, "kvCacheStats": {"cacheHitRate": 0.5, "reusedBlocks": 10}},
        json.dumps({"iter": 2, "iterLatencyMS": 35.5, "kvCacheStats": {"cacheHitRate": 0.6}}),
        {"iter": 3, "iterLatencyMS": 30.0, "kvCacheStats": {"cacheHitRate": 0.7}},
    ]
    assert seed_ttft_proxy_ns(stats) == 35_500_000
    assert seed_ttft_proxy_ns(stats[:2]) is None
    assert kv_cache_stats(stats[1]) == {"cacheHitRate": 0.5, "reusedBlocks": 10}
    assert seed_ttft_proxy_ns([{"iter_latency_ms": 5, "kv_cache_stats": {"cache_hit_rate": 0.2}}] * 2) == 5_000_000


def test_block_bytes_from_a_llama_config(tmp_path):
    # Llama-3.1-70B's config.json: 80 layers, 64 heads, 8 KV heads, hidden 8192 (head_dim 128)
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "hidden_size": 8192, "vocab_size": 128256}))
    assert hf_kv_block_bytes(str(tmp_path), 32, 2) == 2 * 80 * 8 * 128 * 32 * 2
    assert hf_kv_block_bytes(str(tmp_path), 32, 1) == 2 * 80 * 8 * 128 * 32  # FP8 KV
    assert hf_kv_block_bytes(str(tmp_path / "missing"), 32, 2) is None


def test_zmq_frames_and_lost_batches():
    topic, seq, payload = split_frames([b"kvscope", (5).to_bytes(8, "big"), b"\x92\x01\x90"])
    assert (topic, seq, payload) == (b"kvscope", 5, b"\x92\x01\x90")
    assert split_frames([b"", (-1).to_bytes(8, "big", signed=True), b""])[1] == -1  # replay end marker
    with pytest.raises(FrameError):
        split_frames([b"kvscope", b"\x00"])
    s = SeqTracker()
    assert [s.see(x) for x in (0, 1, 2, 5, 6)] == [0, 0, 0, 2, 0]
    assert SeqTracker().see(3) == 3  # subscribed late: the first three batches were missed


@pytest.mark.skipif(not (_installed("msgspec") and _installed("vllm")), reason="msgspec and vLLM are not installed here")
def test_decoder_uses_the_engines_own_batch_type():
    import msgspec
    from vllm.distributed.kv_events import BlockRemoved, KVEventBatch

    from kvscope_agent.engines.vllm import make_decoder

    payload = msgspec.msgpack.Encoder().encode(KVEventBatch(ts=1.0, events=[BlockRemoved(block_hashes=[1], medium="GPU")]))
    assert make_decoder()(payload)


def test_driver_writes_the_seed_workload_as_protocol_lines(tmp_path):
    """The driver around a streaming engine: one queued/first_token/done per user and round,
    round lines, and TTFT = first_token.t - queued.t."""
    path = tmp_path / "events.jsonl"
    clock = RunClock()
    w = EventWriter(path, clock)
    w.emit("pool", pool="gpu", capacity_blocks=10, block_tokens=16, block_bytes=0)
    cfg = {"users": 3, "rounds": 2, "context_tokens": 40, "new_tokens": 8, "output_tokens": 4, "seed": 1}
    prompts: list[tuple[int, int, int]] = []

    async def submit(u, rnd, prompt, n, first):
        prompts.append((u, rnd, len(prompt)))
        await asyncio.sleep(0.002 * (u + 1))
        first()
        await asyncio.sleep(0.001)
        return list(range(n)), 16 if rnd else None

    timing = asyncio.run(drive(cfg, w, clock, 1000, submit))
    moved = dict(blocks_offloaded=0, blocks_onboarded=0, blocks_evicted=0, bytes_h2d=0, bytes_d2h=0)
    w.emit("run.end", status="ok", summary=moved)
    w.close()
    assert check_log(path) == []
    lines = [json.loads(x) for x in open(path)]
    reqs = [ln for ln in lines if ln["type"] == "req"]
    assert len(reqs) == 3 * 3 * 3
    # round r's prompt = context + r * (output + new), as the built-in engine's workload
    assert sorted(p for _, r, p in prompts if r == 2) == [40 + 2 * 12] * 3
    rounds = [ln for ln in lines if ln["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds:
        q = {x["user"]: x["t"] for x in reqs if x["round"] == r["round"] and x["phase"] == "queued"}
        f = {x["user"]: x["t"] for x in reqs if x["round"] == r["round"] and x["phase"] == "first_token"}
        assert r["ttft_ns"] == [f[u] - q[u] for u in range(3)]
    done = [x for x in reqs if x["phase"] == "done" and x["round"] == 1]
    assert all(x["reused_gpu_tokens"] == 16 and x["computed_tokens"] == x["prompt_tokens"] - 16 for x in done)
    assert timing["e2e_ns"] > 0 and timing["ttft_ns_p50"] > 0
    phases = [(ln["name"], ln["state"]) for ln in lines if ln["type"] == "phase"]
    assert phases == [("context", "begin"), ("context", "end"), ("rounds", "begin"), ("rounds", "end")]


def test_seed_capture_runs_the_benchmark_unchanged_with_events_on(fake_packages, tmp_path, monkeypatch):
    """The wrapper around the seed's benchmark.py: its KvCacheConfig gets event_buffer_max_size,
    the executor's event manager is drained into the dump through the serializer, and the
    script runs with its own argv. The bindings here are stand-ins (TensorRT-LLM is absent)."""
    fake_packages({
        "tensorrt_llm/__init__.py": "",
        "tensorrt_llm/bindings/__init__.py": "",
        "tensorrt_llm/bindings/executor.py": """
            import threading
            seen = {}
            class KvCacheConfig:
                def __init__(self, **kw):
                    seen["kv"] = kw
            class _Mgr:
                def __init__(self):
                    self.batches = [["e0", "e1"], ["e2"]]
                    self.lock = threading.Lock()
                def get_latest_events(self, timeout_ms):
                    with self.lock:
                        return self.batches.pop(0) if self.batches else []
            class Executor:
                def __init__(self, path, kv):
                    self.mgr = _Mgr()
                def get_kv_cache_event_manager(self):
                    return self.mgr
        """,
        "tensorrt_llm/_utils.py": """
            class KVCacheEventSerializer:
                @classmethod
                def serialize(cls, events):
                    return [{"event_id": int(e[1:]), "data": {"type": "created", "num_blocks_per_cache_level": [4, 2]}} for e in events]
        """,
    })
    bench = tmp_path / "benchmark.py"
    bench.write_text(textwrap.dedent("""
        import sys, time
        import tensorrt_llm.bindings.executor as trtllm
        kv = trtllm.KvCacheConfig(enable_block_reuse=True, free_gpu_memory_fraction=0.9, host_cache_size=55000000000)
        ex = trtllm.Executor(sys.argv[1], kv)
        time.sleep(0.3)
        print("E2E TIME: 1.00 (ms)", sys.argv[1:])
    """))
    from kvscope_agent.engines.seed_capture import main as seed_main

    dump = tmp_path / "dump.jsonl"
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert seed_main(["--dump", str(dump), "--", str(bench), "engine-dir", "--n", "2"]) == 0
    import tensorrt_llm.bindings.executor as ex_mod

    assert ex_mod.seen["kv"] == {"enable_block_reuse": True, "free_gpu_memory_fraction": 0.9,
                                 "host_cache_size": 55000000000, "event_buffer_max_size": 1 << 20}
    lines = [json.loads(x) for x in dump.read_text().splitlines()]
    assert [x["event_id"] for x in lines] == [0, 1, 2]


FAKE_TRTLLM = '''
import asyncio, importlib.util, sys, threading
_spec = importlib.util.spec_from_file_location("kvs_generate", {generate!r})
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
__version__ = "1.2.0-standin"

class SamplingParams:
    def __init__(self, max_tokens, temperature=None, top_k=None, ignore_eos=False):
        self.max_tokens = max_tokens

class _Out:
    def __init__(self, ids):
        self.token_ids = ids

class _Res:
    def __init__(self, ids):
        self.outputs = [_Out(ids)]

class LLM:
    def __init__(self, model, kv_cache_config, **kw):
        self.kw = kw
        kv = kv_cache_config.kw
        self.sim = gen.TrtllmSim({gpu}, {host}, kv["tokens_per_block"], 4096, "v1")
        self.lock = threading.Lock()
        self.iter = 0
        self.stats = []

    def get_kv_cache_events(self, timeout=2):
        with self.lock:
            self.sim.flush()
            out, self.sim.out = self.sim.out, []
        return out

    def get_stats(self, timeout=2):
        with self.lock:
            out, self.stats = self.stats, []
        return out

    async def _stream(self, prompt, n):
        # one request at a time through the block manager, as whole: add, decode, store, release
        with self.lock:
            reused, fresh = self.sim.add_sequence(prompt, None)
            tpb = self.sim.tpb
            total = list(prompt) + [7] * n
            extra = -(-len(total) // tpb) - -(-len(prompt) // tpb)
            for _ in range(extra):
                self.sim.get_free_block()
            self.sim.store_and_release(total, reused, fresh + extra, 35)
            self.iter += 1
            self.stats.append({{"iter": self.iter, "iterLatencyMS": 1.5,
                               "kvCacheStats": {{"cacheHitRate": 0.5 if reused else 0.0, "reusedBlocks": len(reused)}}}})
        for i in range(1, n + 1):
            await asyncio.sleep(0)
            yield _Res([7] * i)

    def generate_async(self, prompt, sampling_params, streaming=False):
        return self._stream(prompt, sampling_params.max_tokens)

    def shutdown(self):
        pass
'''


def test_trtllm_run_engine_end_to_end_on_a_stand_in_engine(fake_packages, tmp_path):
    """run_engine's whole live path (event poller thread, waiting for `created`, the streaming
    driver, round extras, drain) against a stand-in LLM whose block manager is the fixture
    simulator: the log must satisfy docs/protocol.md and count the stand-in's moves once."""
    import os

    gen_path = os.path.join(os.path.dirname(__file__), "fixtures", "engine-dumps", "generate.py")
    fake_packages({
        "tensorrt_llm/__init__.py": FAKE_TRTLLM.format(generate=gen_path, gpu=30, host=40),
        "tensorrt_llm/llmapi/__init__.py": """
            class KvCacheConfig:
                model_fields = dict.fromkeys(["enable_block_reuse", "host_cache_size",
                    "free_gpu_memory_fraction", "event_buffer_max_size", "tokens_per_block"])
                def __init__(self, **kw):
                    self.kw = kw
        """,
    })
    from kvscope_agent.engines.tensorrt_llm import run_engine as trt_run

    clock = RunClock()
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, clock)
    cfg = {"model": "stand-in", "users": 3, "rounds": 2, "context_tokens": 256, "new_tokens": 32,
           "output_tokens": 32, "block_tokens": 32, "host_kv_bytes": 55e9, "free_gpu_memory_fraction": 0.9,
           "seed": 0, "out_dir": str(tmp_path)}
    summary = trt_run(cfg, w, clock)
    w.emit("run.end", status="ok", summary={k: summary[k] for k in
           ("blocks_offloaded", "blocks_onboarded", "blocks_evicted", "bytes_h2d", "bytes_d2h")})
    w.close()
    assert check_log(path) == []
    import tensorrt_llm

    assert summary["blocks_stored"] > 0 and summary["blocks_offloaded"] > 0
    lines = [json.loads(x) for x in open(path)]
    types = [ln["type"] for ln in lines]
    assert types.index("pool") < types.index("blocks")
    pools = {ln["pool"]: ln["capacity_blocks"] for ln in lines if ln["type"] == "pool"}
    assert pools == {"gpu": 30, "host": 40}
    rounds = [ln for ln in lines if ln["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all("engine_ttft_ns" in r for r in rounds)
    raw = [json.loads(x) for x in open(tmp_path / "engine-kv-events.jsonl")]
    offloads = sum(1 for e in raw if e["data"]["type"] == "updated" and (e["data"]["cache_level"] or {}).get("new_value") == 1)
    assert summary["blocks_offloaded"] == offloads
    assert tensorrt_llm.__version__ == summary["engine_version"]


@pytest.mark.skipif(not _installed("zmq"), reason="pyzmq is not installed here (Debian: python3-zmq)")
def test_vllm_subscriber_reads_a_real_pub_socket(tmp_path):
    """The subscriber against a real ZMQ PUB socket sending vLLM's frames (topic, 8-byte seq,
    payload): batches before the pools are known wait, a lost batch is reported, and the log
    satisfies docs/protocol.md. The payload is JSON here (msgspec, vLLM's msgpack codec, is absent);
    the decoder is the one piece swapped."""
    import time

    import zmq

    from kvscope_agent.engines.session import RawDump
    from kvscope_agent.engines.vllm import TOPIC, Subscriber, free_port
    from kvscope_agent.translate.common import Report
    from kvscope_agent.translate.vllm import VllmTranslator

    batches = [json.loads(x) for x in open(
        f"{__import__('os').path.dirname(__file__)}/fixtures/engine-dumps/vllm-offload-map.jsonl")][:40]
    port = free_port()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(f"tcp://*:{port}")
    clock = RunClock()
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, clock)
    report = Report(w)
    tr = VllmTranslator(w, report)
    sub = Subscriber(port, tr, report, clock, RawDump(str(tmp_path / "raw.jsonl")),
                     decode=lambda payload: json.loads(payload))
    sub.start()
    time.sleep(0.3)  # PUB/SUB: a subscriber sees only what is sent after it has joined
    skip = 7  # this batch is "lost": its seq is never sent
    for seq, b in enumerate(batches):
        if seq == 5:
            with sub.lock:
                tr.set_pools(70, 150, 16, 0, clock.now())  # the simulator's pools
                for held, t in sub.held:
                    tr.feed_batch(held, t)
                sub.held.clear()
        if seq == skip:
            continue
        pub.send_multipart([TOPIC.encode(), seq.to_bytes(8, "big"), json.dumps(b).encode()])
        time.sleep(0.005)
    time.sleep(0.3)
    sub.stop_and_drain()
    pub.close(linger=0)
    tr.finish(None)
    w.close()
    assert report.counts.get("lost_event_batches") == 1
    assert check_log(path) == []
    raw = (tmp_path / "raw.jsonl").read_text().splitlines()
    assert len(raw) == len(batches) - 1
    assert tr.emitter is not None and tr.emitter.moves["store"] > 0


def test_block_bytes_and_block_size_from_a_trtllm_engine_dir(tmp_path):
    # an engine directory's config.json nests the model under pretrained_config and the block
    # size under build_config.plugin_config
    from kvscope_agent.engines.session import engine_tokens_per_block, kv_element_bytes

    (tmp_path / "config.json").write_text(json.dumps({
        "pretrained_config": {"num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                              "hidden_size": 8192, "head_size": 128, "vocab_size": 128256,
                              "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}},
        "build_config": {"max_seq_len": 17800, "plugin_config": {"tokens_per_block": 64}}}))
    assert kv_element_bytes(str(tmp_path)) == 1
    assert engine_tokens_per_block(str(tmp_path)) == 64
    assert hf_kv_block_bytes(str(tmp_path), 64, 1) == 2 * 80 * 8 * 128 * 64


def _standin_trtllm(fake_packages, gpu=30, host=40):
    import os

    gen_path = os.path.join(os.path.dirname(__file__), "fixtures", "engine-dumps", "generate.py")
    fake_packages({
        "tensorrt_llm/__init__.py": FAKE_TRTLLM.format(generate=gen_path, gpu=gpu, host=host),
        "tensorrt_llm/llmapi/__init__.py": """
            class KvCacheConfig:
                model_fields = dict.fromkeys(["enable_block_reuse", "host_cache_size",
                    "free_gpu_memory_fraction", "event_buffer_max_size", "tokens_per_block"])
                def __init__(self, **kw):
                    self.kw = kw
        """,
    })


RUN_ARGS = ["--users", "3", "--rounds", "2", "--context-tokens", "256", "--new-tokens", "32",
            "--output-tokens", "32", "--block-tokens", "32", "--trace", "off", "--sample-ms", "0"]


def test_runner_writes_a_complete_run_on_a_stand_in_engine(fake_packages, tmp_path):
    from kvscope_agent.engines.runner import main_run_engine

    _standin_trtllm(fake_packages)
    out = tmp_path / "run"
    assert main_run_engine(["--engine", "tensorrt_llm", "--model", "stand-in", "--out", str(out), *RUN_ARGS]) == 0
    assert check_log(out / "events.jsonl") == []
    lines = [json.loads(x) for x in open(out / "events.jsonl")]
    assert lines[0]["type"] == "run.start"
    assert lines[0]["engine"] == {"name": "tensorrt_llm", "version": "1.2.0-standin"}
    assert lines[0]["config"]["users"] == 3 and lines[0]["config"]["host_kv_bytes"] == 55_000_000_000
    assert lines[-1]["type"] == "run.end" and lines[-1]["status"] == "ok"
    assert lines[-1]["summary"]["blocks_offloaded"] > 0
    phases = [(ln["name"], ln["state"]) for ln in lines if ln["type"] == "phase"]
    assert phases[0] == ("setup", "begin") and phases[-1] == ("teardown", "end")
    assert ("rounds", "end") in phases
    assert (out / "engine-kv-events.jsonl").exists()


@pytest.mark.skipif(_installed("tensorrt_llm"), reason="TensorRT-LLM is installed here")
def test_runner_without_the_engine_ends_the_log_with_a_clear_error(tmp_path, capsys):
    from kvscope_agent.engines.runner import main_run_engine

    out = tmp_path / "run"
    assert main_run_engine(["--engine", "tensorrt_llm", "--model", "m", "--out", str(out), *RUN_ARGS]) == 1
    end = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert end["type"] == "run.end" and end["status"] == "error"
    assert end["error"]["code"] == "engine_unavailable"
    assert "TensorRT-LLM is not usable here" in end["error"]["message"]
    assert "TensorRT-LLM is not usable here" in capsys.readouterr().err
    assert check_log(out / "events.jsonl") == []


def test_runner_bad_option_names_it(tmp_path, capsys):
    from kvscope_agent.engines.runner import main_run_engine

    out = tmp_path / "run"
    assert main_run_engine(["--engine", "vllm", "--out", str(out), *RUN_ARGS]) == 2
    assert "--model" in capsys.readouterr().err
    assert main_run_engine(["--engine", "vllm", "--model", "m", "--out", str(tmp_path / "b"), "--users", "zero"]) == 2
    assert "--users" in capsys.readouterr().err
    # the built-in engine's disk tier is refused, not ignored
    assert main_run_engine(["--engine", "tensorrt_llm", "--model", "m", "--out", str(tmp_path / "c"),
                            "--disk-kv-bytes", "1e9", "--disk-kv-path", str(tmp_path)]) == 2
    assert "--disk-kv-bytes" in capsys.readouterr().err
