"""The seed's workload driven through a real engine's streaming API, shared by both engines.

Mirrors the built-in engine's `run_workload` (run_loop.py) line for line where the protocol is
concerned: the same `Workload` token ids, round 0 = each user's context, every round's requests of
all users enqueued together, next prompt = prompt + output + new input, phases context/rounds,
one `round` line per round, and the summary's e2e over rounds 1..R. TTFT is measured here, in
the client, from `queued` to the first streamed token (docs/protocol.md: first_token.t - queued.t).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any, Awaitable, Callable

from ..workload import Workload

# submit(user, round, prompt_ids, max_tokens, on_first_token) -> (output ids, reused prompt tokens | None)
Submit = Callable[[int, int, list[int], int, Callable[[], None]], Awaitable[tuple[list[int], int | None]]]


def percentile(values: list[int], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def workload_from(cfg: dict[str, Any], vocab: int) -> Workload:
    return Workload(
        int(cfg["users"]),
        int(cfg["rounds"]),
        int(cfg["context_tokens"]),
        int(cfg["new_tokens"]),
        int(cfg["output_tokens"]),
        int(vocab),
        int(cfg.get("seed") or 0),
    )


class RawDump:
    """Appends what the engine handed over, as JSON lines, beside events.jsonl, so the run can be
    translated again (`python3 -m kvscope_agent translate`) or inspected."""

    def __init__(self, path: str | None) -> None:
        self._f = open(path, "x", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def write(self, item: Any) -> None:
        if self._f is None:
            return
        line = json.dumps(item, separators=(",", ":"), default=str)
        with self._lock:
            self._f.write(line + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def side_file(cfg: dict[str, Any], name: str) -> str | None:
    out = cfg.get("out_dir")
    return os.path.join(out, name) if out else None


async def drive(
    cfg: dict[str, Any],
    writer: Any,
    clock: Any,
    vocab: int,
    submit: Submit,
    round_extra: Callable[[int, int, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Runs rounds 0..R; returns the timing part of run.end's summary."""
    wl = workload_from(cfg, vocab)
    users = wl.users
    prompts = {u: wl.context(u) for u in range(users)}
    ttft_timed: list[int] = []
    first_queued = last_done = None
    reuse_split_noted = False

    cancel_check = cfg.get("cancel_check")
    for rnd in range(wl.rounds + 1):
        if callable(cancel_check):
            cancel_check()  # lifecycle.CancelState.check: raises on SIGTERM, between rounds
        if rnd == 0:
            writer.emit("phase", name="context", state="begin")
        elif rnd == 1:
            writer.emit("phase", name="rounds", state="begin")
        t_queued = [0] * users
        t_first: list[int | None] = [None] * users
        t_done = [0] * users

        async def one(u: int) -> tuple[list[int], int | None]:
            prompt = prompts[u]
            t_queued[u] = clock.now()
            writer.emit("req", t=t_queued[u], user=u, round=rnd, phase="queued")

            def first() -> None:
                if t_first[u] is None:
                    t_first[u] = clock.now()
                    writer.emit("req", t=t_first[u], user=u, round=rnd, phase="first_token")

            out, reused = await submit(u, rnd, prompt, wl.output_tokens, first)
            first()  # a non-streaming fallback still marks the first token when the output arrives
            t_done[u] = clock.now()
            reused_tokens = int(reused or 0)
            writer.emit(
                "req", t=t_done[u], user=u, round=rnd, phase="done",
                prompt_tokens=len(prompt), output_tokens=len(out),
                # the engines report prefix reuse per request but not which pool it came from
                reused_gpu_tokens=reused_tokens, reused_host_tokens=0,
                computed_tokens=max(0, len(prompt) - reused_tokens),
                reuse_split="unknown" if reused is not None else "unreported",
            )
            return out, reused

        results = await asyncio.gather(*(one(u) for u in range(users)))
        if not reuse_split_noted:
            writer.emit("log", level="info", msg=(
                "req done: reused_gpu_tokens holds all the prompt tokens the engine reused (GPU or "
                "onboarded from host; the engine does not split them), reused_host_tokens is 0; the "
                "blocks lines show the onboards"))
            reuse_split_noted = True
        t_q, t_d = min(t_queued), max(t_done)
        ttfts = [int((tf if tf is not None else td) - tq) for tf, td, tq in zip(t_first, t_done, t_queued)]
        extra = round_extra(rnd, t_q, t_d) if round_extra else {}
        writer.emit("round", round=rnd, e2e_ns=t_d - t_q, ttft_ns=ttfts, **extra)
        if rnd >= 1:
            ttft_timed.extend(ttfts)
            first_queued = t_q if first_queued is None else first_queued
            last_done = t_d
        for u, (out, _) in enumerate(results):
            prompts[u] = prompts[u] + list(out) + wl.new_input(u, rnd + 1)
        if rnd == 0:
            writer.emit("phase", name="context", state="end")
    if wl.rounds >= 1:
        writer.emit("phase", name="rounds", state="end")
    return {
        "e2e_ns": (last_done - first_queued) if first_queued is not None and last_done is not None else None,
        "ttft_ns_mean": int(sum(ttft_timed) / len(ttft_timed)) if ttft_timed else None,
        "ttft_ns_p50": int(percentile(ttft_timed, 0.5)) if ttft_timed else None,
        "ttft_ns_p99": int(percentile(ttft_timed, 0.99)) if ttft_timed else None,
    }


def block_summary(emitter: Any, report: Any) -> dict[str, Any]:
    moves = emitter.moves if emitter is not None else {}
    return {
        "blocks_offloaded": moves.get("offload", 0),
        "blocks_onboarded": moves.get("onboard", 0),
        "blocks_evicted": moves.get("evict", 0),
        "blocks_stored": moves.get("store", 0),
        # xfer bytes come from the CUPTI collector's lines when tracing is on, not from this summary
        "bytes_h2d": 0,
        "bytes_d2h": 0,
        "engine_events": dict(sorted(report.counts.items())),
    }


def _model_config(model_dir: str) -> dict[str, Any] | None:
    """config.json of a Hugging Face checkpoint, or the `pretrained_config` of a TensorRT-LLM
    engine directory's config.json."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(c, dict):
        return None
    if isinstance(c.get("pretrained_config"), dict):
        c = c["pretrained_config"]
    return c.get("text_config", c) if isinstance(c.get("text_config"), dict) else c


def kv_element_bytes(model_dir: str, default: int = 2) -> int:
    """1 for an FP8/INT8 KV cache named in the config's quantization, else `default`."""
    c = _model_config(model_dir) or {}
    q = c.get("quantization") or c.get("quantization_config") or {}
    algo = str(q.get("kv_cache_quant_algo") or q.get("kv_cache_dtype") or "").upper() if isinstance(q, dict) else ""
    return 1 if algo in ("FP8", "INT8") else default


def engine_tokens_per_block(model_dir: str) -> int | None:
    """tokens_per_block a TensorRT-LLM engine was built with (build_config.plugin_config)."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        v = c["build_config"]["plugin_config"]["tokens_per_block"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(v) if isinstance(v, int) and v > 0 else None


def hf_kv_block_bytes(model_dir: str, block_tokens: int, kv_dtype_bytes: int) -> int | None:
    """Bytes of one block's K and V over all layers, from the model's config.json:
    2 x layers x kv_heads x head_dim x block_tokens x element size. None when unknown."""
    c = _model_config(model_dir)
    if c is None:
        return None
    try:
        layers = int(c["num_hidden_layers"])
        heads = int(c["num_attention_heads"])
        kv_heads = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or c.get("head_size") or int(c["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * int(block_tokens) * int(kv_dtype_bytes)


def hf_vocab_size(model_dir: str) -> int | None:
    c = _model_config(model_dir) or {}
    v = c.get("vocab_size")
    return int(v) if isinstance(v, int) and v > 0 else None
