"""`python3 -m kvscope_agent translate`: an engine's KV-cache event dump -> a KV Scope run.

    python3 -m kvscope_agent translate --engine tensorrt_llm|vllm --input DUMP --out DIR

DUMP is a JSON array or JSON lines: for `tensorrt_llm` the dicts `LLM.get_kv_cache_events()`
returns; for `vllm` decoded `KVEventBatch`es (msgspec `to_builtins`/JSON of the batches a ZMQ
subscriber receives, positional array_like or map form). DIR/events.jsonl gets a run in the events of docs/protocol.md:
run.start (engine version "imported"), the pool lines, the blocks lines, a `log` warn line for the
first few of every kind of oddity and run.end whose summary carries all the counts; the same counts
go to stderr. A dump with a tier below the host (TensorRT-LLM's disk cache level, vLLM's STORAGE
medium or REMOTE locality) gets those pools too (with their tiers) and `move` lines between them.
Exit 0 ok, 2 bad option, 1 unreadable or empty dump.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any, Sequence

from .. import PROTOCOL_VERSION, __version__
from ..clock import RunClock
from ..emit import EventWriter
from .common import PoolEmitter, Report
from .tensorrt_llm import (DEFAULT_CACHE_LEVELS, TrtllmTranslator, choose_stream, flatten_events, parse_cache_levels,
                           pool_sizes, scan)
from .vllm import VllmTranslator, is_batch_list

ENGINES = ("tensorrt_llm", "vllm")
DEFAULT_BLOCK_TOKENS = {"tensorrt_llm": 32, "vllm": 16}  # KvCacheConfig.tokens_per_block; vLLM block_size


class DumpError(Exception):
    pass


def load_dump(path: str, report: Report) -> list[Any]:
    """A JSON document (array, or one object) or JSON lines. Unreadable lines are counted and
    reported, not fatal; a dump with nothing readable is."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise DumpError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise DumpError(f"{path} is not UTF-8 text: {e}") from e
    stripped = text.strip()
    if not stripped:
        raise DumpError(f"{path} is empty")
    try:
        doc = json.loads(stripped)
    except ValueError:
        doc = None
        items: list[Any] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as e:
                report.warn("bad_dump_line", f"line {n} of the dump is not JSON ({e.msg})")
        if not items:
            raise DumpError(f"{path} holds no JSON (neither a document nor JSON lines)")
        return items
    if isinstance(doc, list):
        return doc
    return [doc]


def host_block(hostname: str | None) -> dict[str, Any]:
    # The dump says nothing of the machine it came from.
    return {
        "hostname": hostname or "unknown (imported dump)",
        "gpus": [],
        "driver_version": None,
        "cuda_version": None,
        "python_version": None,
        "torch_version": None,
    }


def base_config(engine: str, block_tokens: int) -> dict[str, Any]:
    """docs/protocol.md `config` keys, the options the engine takes (workload_options.json); a dump
    knows none of the workload's, so they are null."""
    from ..options import OPTIONS

    config: dict[str, Any] = {o["name"]: None for o in OPTIONS if engine in o["engines"] and "run" in o["commands"]}
    config.update(engine=engine, block_tokens=block_tokens, trace=False)
    return config


def run_end_summary(emitter: PoolEmitter | None, report: Report, extra: dict[str, Any]) -> dict[str, Any]:
    moves = emitter.moves if emitter is not None else {}
    tiers: dict[str, Any] = {}
    if emitter is not None and set(emitter.pools) - {"gpu", "host"}:
        moved = emitter.moved
        tiers = {
            "blocks_spilled": moved.get(("host", "disk"), 0),
            "blocks_promoted": moved.get(("disk", "host"), 0),
        }
        extra = {**extra, "moved": {f"{a}->{b}": n for (a, b), n in sorted(moved.items())}}
    return {**tiers,
        "e2e_ns": None,
        "ttft_ns_mean": None,
        "ttft_ns_p50": None,
        "ttft_ns_p99": None,
        "blocks_offloaded": moves.get("offload", 0),
        "blocks_onboarded": moves.get("onboard", 0),
        "blocks_evicted": moves.get("evict", 0),
        # no xfer lines in an imported run: the dump has no transfers
        "bytes_h2d": 0,
        "bytes_d2h": 0,
        "translate": {
            "blocks_stored": moves.get("store", 0),
            "counts": dict(sorted(report.counts.items())),
            **extra,
        },
    }


class Options(argparse.Namespace):
    engine: str
    input: str
    out: str
    gpu_blocks: int | None
    host_blocks: int | None
    disk_blocks: int | None
    cache_levels: tuple[str, ...] | None
    block_tokens: int | None
    block_bytes: int
    window_size: int | None
    dp_rank: int | None
    group_idx: int | None
    hostname: str | None


def _nonneg(name: str):
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {v!r}")
        if n < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {n}")
        return n

    return parse


def _cache_levels(text: str) -> tuple[str, ...]:
    try:
        return parse_cache_levels(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m kvscope_agent translate",
        description="Translate an engine's KV-cache event dump into a KV Scope run.",
    )
    p.add_argument("--engine", required=True, choices=ENGINES)
    p.add_argument("--input", required=True, metavar="DUMP")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--gpu-blocks", type=_nonneg("--gpu-blocks"), default=None,
                   help="GPU pool size; default: TensorRT-LLM's created event, else inferred")
    p.add_argument("--host-blocks", type=_nonneg("--host-blocks"), default=None,
                   help="host pool size; default as --gpu-blocks")
    p.add_argument("--disk-blocks", type=_nonneg("--disk-blocks"), default=None,
                   help="disk pool size (TensorRT-LLM's disk cache level, vLLM's STORAGE medium); default as --gpu-blocks")
    p.add_argument("--cache-levels", type=_cache_levels, default=None,
                   help="tensorrt_llm: the pool of each cache level, nearest first (default gpu,host,disk; "
                        "gpu,disk for an engine whose host tier was dropped)")
    p.add_argument("--block-tokens", type=_nonneg("--block-tokens"), default=None,
                   help="tokens per block; default: read from the stored blocks")
    p.add_argument("--block-bytes", type=_nonneg("--block-bytes"), default=0,
                   help="bytes of one block's KV (all layers); the dump does not carry it")
    p.add_argument("--window-size", type=int, default=None,
                   help="tensorrt_llm: the attention window whose pools to show")
    p.add_argument("--dp-rank", type=int, default=None,
                   help="the attention (TensorRT-LLM) / data (vLLM) parallel rank to show")
    p.add_argument("--group-idx", type=int, default=None, help="vllm: the KV cache group to show")
    p.add_argument("--hostname", default=None, help="the host the dump came from, for the run list")
    return p


def _infer_note(report: Report, what: str, value: int, t: int) -> None:
    report.warn(
        "pool_size_inferred",
        f"{what} pool size {value} blocks is inferred from the most blocks resident at once; "
        "pass --gpu-blocks/--host-blocks for the engine's real sizes",
        t,
    )


def translate_tensorrt_llm(
    items: list[Any], writer: EventWriter, report: Report, opts: Options, clock: RunClock
) -> dict[str, Any]:
    events = flatten_events(items, report)
    if not events:
        raise DumpError("the dump holds no TensorRT-LLM KV-cache events")
    stream = (opts.window_size, opts.dp_rank) if (
        opts.window_size is not None or opts.dp_rank is not None
    ) else choose_stream(events)
    info = scan(events, stream)
    block_tokens = opts.block_tokens or info["block_tokens"] or DEFAULT_BLOCK_TOKENS["tensorrt_llm"]

    levels = tuple(opts.cache_levels) if opts.cache_levels else DEFAULT_CACHE_LEVELS
    pools_from = "created"
    created = info["created"]
    sizes = pool_sizes(created, levels)
    gpu, host = (sizes.get("gpu"), sizes.get("host", 0)) if created else (None, None)
    lower: dict[str, int | None] = {k: v for k, v in sizes.items() if k not in ("gpu", "host")}
    if created is None:
        # Dry run with unbounded pools: the most blocks resident at once is a lower bound on
        # each pool's size, the best a dump without its `created` event can say.
        dry = TrtllmTranslator(None, Report(), stream, levels)
        dry.set_pools(None, None, block_tokens, 0, 0, lower={k: None for k in levels if k not in ("gpu", "host")})
        for i, ev in enumerate(events):
            dry.feed(ev, i)
        dry.finish(len(events))
        assert dry.emitter is not None
        gpu, host = max(dry.emitter.peak["gpu"], 1), dry.emitter.peak.get("host", 0)
        lower = {k: n for k, n in dry.emitter.peak.items() if k not in ("gpu", "host") and n > 0}
        pools_from = "inferred"
    if opts.gpu_blocks is not None or opts.host_blocks is not None or opts.disk_blocks is not None:
        pools_from = "options" if created is None else "options (created said %s)" % created
        gpu = opts.gpu_blocks if opts.gpu_blocks is not None else gpu
        host = opts.host_blocks if opts.host_blocks is not None else host
        if opts.disk_blocks is not None:
            lower["disk"] = opts.disk_blocks

    config = base_config("tensorrt_llm", block_tokens)
    config.update(
        {
            "source": "imported",
            "input": os.path.basename(opts.input),
            "window_size": stream[0] if stream else None,
            "attention_dp_rank": stream[1] if stream else None,
            "pools_from": pools_from,
            "cache_levels": list(levels),
            "time_source": "event order (t = position in the dump, ns); the events carry no time",
        }
    )
    try:
        unix0 = int(os.stat(opts.input).st_mtime_ns)
    except OSError:
        unix0 = clock.unix_ns_at_t0
    emit_run_start(writer, "tensorrt_llm", "imported", config, host_block(opts.hostname), unix0, t=0)
    report.info(
        "TensorRT-LLM events carry no timestamps: t is each event's position in the dump and "
        "clock.unix_ns_at_t0 the dump file's modification time",
        t=0,
    )
    if pools_from == "inferred":
        _infer_note(report, "gpu", int(gpu or 0), 0)
        _infer_note(report, "host", int(host or 0), 0)
        for name, n in lower.items():
            _infer_note(report, name, int(n or 0), 0)
    if opts.block_bytes == 0:
        report.warn("block_bytes_unknown", "block_bytes is 0: the dump does not carry it (--block-bytes)", 0)

    tr = TrtllmTranslator(writer, report, stream, levels)
    tr.created = created
    # events of the shown stream that come before its `created` event
    if created is not None:
        before = 0
        for ev in events:
            if ev.get("window_size") == stream[0] and ev.get("attention_dp_rank") == stream[1]:
                if (ev.get("data") or {}).get("type") == "created":
                    break
                before += 1
        if before:
            report.warn(
                "events_before_created",
                f"{before} event(s) came before the created event; translated with its pool sizes",
                0,
                n=before,
            )
    tr.set_pools(gpu, host, block_tokens, opts.block_bytes, 0, lower=lower or None)
    for i, ev in enumerate(events):
        tr.feed(ev, i)
    end_t = len(events)
    tr.finish(end_t)
    return run_end_summary(
        tr.emitter,
        report,
        {"events_in": len(events), "blocks_named": len(tr.ids), "pools_from": pools_from},
    ) | {"_t": end_t}


def translate_vllm(
    items: list[Any], writer: EventWriter, report: Report, opts: Options, clock: RunClock
) -> dict[str, Any]:
    batches = [items] if is_batch_list(items) else items
    if not batches:
        raise DumpError("the dump holds no vLLM KVEventBatch")
    dry = VllmTranslator(None, Report(), opts.group_idx, opts.dp_rank)
    dry.set_pools(None, None, 1, 0, 0, lower={"disk": None, "remote": None})
    for b in batches:
        dry.feed_batch(b)
    dry.finish(None)
    assert dry.emitter is not None
    block_tokens = opts.block_tokens or dry.block_tokens or DEFAULT_BLOCK_TOKENS["vllm"]
    gpu = opts.gpu_blocks if opts.gpu_blocks is not None else max(dry.peak_gpu, 1)
    host = opts.host_blocks if opts.host_blocks is not None else dry.emitter.peak["host"]
    # a pool below the host appears when the dump has a medium for it
    lower: dict[str, int | None] = {k: n for k in ("disk", "remote") if (n := dry.emitter.peak[k]) > 0}
    if opts.disk_blocks is not None:
        lower["disk"] = opts.disk_blocks
    inferred = [p for p, o in (("gpu", opts.gpu_blocks), ("host", opts.host_blocks)) if o is None]
    inferred += [p for p in lower if not (p == "disk" and opts.disk_blocks is not None)]

    config = base_config("vllm", block_tokens)
    config.update(
        {
            "source": "imported",
            "input": os.path.basename(opts.input),
            "group_idx": dry.group_idx,
            "data_parallel_rank": dry.dp_rank,
            "pools_from": "options" if not inferred else f"inferred ({', '.join(inferred)})",
            "event_forms": dry.forms,
            "time_source": "KVEventBatch.ts (publisher wall clock) relative to the first batch",
        }
    )
    unix0 = int(round(dry.ts0 * 1e9)) if dry.ts0 is not None else clock.unix_ns_at_t0
    emit_run_start(writer, "vllm", "imported", config, host_block(opts.hostname), unix0, t=0)
    sizes = {"gpu": gpu, "host": host, **lower}
    for pool in inferred:
        _infer_note(report, pool, int(sizes[pool] or 0), 0)
    if opts.block_bytes == 0:
        report.warn("block_bytes_unknown", "block_bytes is 0: the dump does not carry it (--block-bytes)", 0)
    if "array_like" in dry.forms:
        report.info("positional (array_like) batches decoded with vLLM's field order", t=0)

    tr = VllmTranslator(writer, report, dry.group_idx, dry.dp_rank)
    tr.set_pools(gpu, host, block_tokens, opts.block_bytes, 0, lower=lower or None)
    for b in batches:
        tr.feed_batch(b)
    tr.finish(tr.last_t)
    return run_end_summary(
        tr.emitter,
        report,
        {"batches_in": len(batches), "blocks_named": len(tr.ids), "pools_from": config["pools_from"]},
    ) | {"_t": tr.last_t}


def emit_run_start(
    writer: EventWriter,
    engine: str,
    version: str,
    config: dict[str, Any],
    host: dict[str, Any],
    unix_ns_at_t0: int,
    t: int | None = None,
    capabilities: dict[str, Any] | None = None,
) -> None:
    fields: dict[str, Any] = {
        "run_id": uuid.uuid4().hex,
        "protocol": PROTOCOL_VERSION,
        "agent_version": __version__,
        "engine": {"name": engine, "version": version},
        "config": config,
        "host": host,
        "clock": {"unix_ns_at_t0": int(unix_ns_at_t0)},
    }
    if capabilities is not None:
        fields["capabilities"] = capabilities
    writer.emit("run.start", t=t, **fields)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    try:
        opts = p.parse_args(args, namespace=Options())
    except SystemExit as e:  # argparse prints the message naming the option
        return 0 if e.code == 0 else 2
    out_dir = opts.out
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        print(f"translate: --out {out_dir}: {e.strerror}", file=sys.stderr)
        return 1
    log_path = os.path.join(out_dir, "events.jsonl")
    if os.path.exists(log_path):
        print(f"translate: {log_path} exists; choose an empty --out DIR", file=sys.stderr)
        return 1
    pre = Report()
    try:
        items = load_dump(opts.input, pre)
    except DumpError as e:
        print(f"translate: {e}", file=sys.stderr)
        return 1

    clock = RunClock()
    writer = EventWriter(log_path, clock)
    report = Report(writer)
    for kind, n in pre.counts.items():  # dump lines that were not JSON, reported in the run too
        report.warn(kind, pre.notes.get(kind, kind), 0, n=n)
    status, error, summary = "ok", None, None
    end_t = 0
    try:
        if opts.engine == "tensorrt_llm":
            summary = translate_tensorrt_llm(items, writer, report, opts, clock)
        else:
            summary = translate_vllm(items, writer, report, opts, clock)
        end_t = summary.pop("_t")
    except DumpError as e:
        status, error = "error", {"code": "bad_dump", "message": str(e)}
    fields: dict[str, Any] = {"status": status}
    if error is not None:
        if writer.count == 0:
            writer.close()
            os.unlink(log_path)
            print(f"translate: {error['message']}", file=sys.stderr)
            return 1
        fields["error"] = error
    fields["summary"] = summary if summary is not None else run_end_summary(None, report, {})
    writer.emit("run.end", t=end_t, **fields)
    writer.close()
    report.print_summary(
        f"translate: {opts.engine} dump {opts.input} -> {log_path} ({status}); "
        f"stored {fields['summary']['translate']['blocks_stored']}, "
        f"offloaded {fields['summary']['blocks_offloaded']}, "
        f"onboarded {fields['summary']['blocks_onboarded']}, "
        f"evicted {fields['summary']['blocks_evicted']}; unusual:"
    )
    return 0 if status == "ok" else 1


__all__ = ["main", "load_dump", "translate_tensorrt_llm", "translate_vllm", "emit_run_start", "DumpError"]
