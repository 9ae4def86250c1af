#!/usr/bin/env python3
"""The paged prefill attention kernel's configurations, timed on the GPU: one command, ~1-2 min.

What it times: one layer's attention of a --chunk-query prefill chunk (the engine's
--prefill-chunk-tokens, 2,048) over a cached prefix of --prefixes tokens (13,952: the last full
chunk of a 16,000-token prompt; 6,000; 0), read in place from a paged pool (32-token blocks,
scattered block table, layer 1 of 2), for the presets' attention shapes:
  * llama-3.1-8b: 32 query heads, 8 KV heads, head_dim 128, bf16 KV;
  * llama-3.1-70b-fp8: 64 query heads, 8 KV heads, head_dim 128, FP8 (e4m3) KV, bf16 queries.
Per configuration of the prefill kernel (`paged_attention.PREFILL_CONFIGS`' keys: block_m query
rows, block_n keys, num_warps, num_stages, and for FP8 KV "f16": 1, the products in fp16, or 0, in bf16) it prints
ms, TFLOP/s (4 · heads · head_dim per visible query-key pair) and the largest difference from
the gather path's output (`PagedKVCache.read` + `model.attention`: SDPA in bf16); a
configuration off by more than --max-err is marked WRONG and never chosen. Beside them: the
general kernel at its old prefill configuration (the one bench/results/h100-2026-12-07 measured:
303 / 225 TFLOP/s) and the gather path itself. Every configuration is timed at the first
prefix; the --top fastest at the others too. Last it prints the best configuration per model
as PREFILL_CONFIGS rows, to paste into resources/agent/kvscope_agent/engine/paged_attention.py.

All configurations compile first, in parallel (Triton's AsyncCompileMode), then run one at a
time; --budget-s stops starting new timings past it (what was measured is still reported).
Writes DIR/prefill-attention-tune.json.

    python3 bench/prefill-attention-tune.py --out DIR                                   # GPU host
    TRITON_INTERPRET=1 <venv>/bin/python bench/prefill-attention-tune.py --device cpu --out DIR \\
        --models tiny,tiny-fp8 --chunk-queries 24 --prefixes 40,0 --block-tokens 8 --grid dry-run   # CPU
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from script_loader import load_script  # noqa: E402  (also puts resources/agent on sys.path)

_roofline = load_script("engine-roofline.py")
_tables = load_script("apply-tuned-configs.py")  # the PREFILL_CONFIGS rows it prints are the ones the applier writes
log, commit = _roofline.log, _roofline.commit

# name -> (preset whose attention shape it is, KV storage)
MODELS = {"8b": ("llama-3.1-8b", "native"), "70b-fp8": ("llama-3.1-70b-fp8", "fp8"),
          "tiny": ("tiny", "native"), "tiny-fp8": ("tiny", "fp8")}

# (block_m, block_n, num_warps, num_stages): the grid every model runs. 128 × 64 / 8 warps / 3
# stages is the default row; 128 × 128 halves the rescales of the accumulator per key; 64-row
# tiles give 2× the programs (8B: 1,024, 70B: 2,048) for 4 warps; 256-row tiles (16 warps, four
# warp groups of 64 rows) halve the K/V reads per FLOP.
GRID = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3), (128, 32, 8, 4),
        (128, 64, 4, 3), (64, 64, 4, 3), (64, 64, 4, 4), (64, 128, 4, 2), (256, 64, 16, 2), (256, 64, 16, 3)]
# FP8 KV: every grid row with the products in fp16; these in bf16 too (the conversion's cost).
GRID_FP8_BF16 = [(128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2)]
DRY_RUN_GRID = [(16, 16, 4, 2), (32, 16, 4, 2)]
# The general kernel at the configuration the 2026-12-07 roofline measured (before the prefill kernel).
GENERAL_BEFORE = {"kernel": "general", "block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3}


def chunk_flops(heads: int, head_dim: int, n: int, prefix: int) -> float:
    """QK^T and P·V of n queries at positions prefix.. (each sees prefix + i + 1 keys)."""
    return 4.0 * heads * head_dim * n * (prefix + (n + 1) / 2)


def configs(kv: str, grid: list[tuple[int, int, int, int]], grid_bf16: list[tuple[int, int, int, int]]) -> list[dict[str, Any]]:
    """The prefill kernel's configurations for one KV storage, in PREFILL_CONFIGS' form."""
    out = []
    for bm, bn, w, st in grid:
        c: dict[str, Any] = {"block_m": bm, "block_n": bn, "num_warps": w, "num_stages": st}
        out.append({**c, "f16": 1} if kv == "fp8" else c)
    if kv == "fp8":
        out += [{"block_m": bm, "block_n": bn, "num_warps": w, "num_stages": st, "f16": 0}
                for bm, bn, w, st in grid_bf16]
    return out


def label(c: dict[str, Any]) -> str:
    s = f"m{c['block_m']} n{c['block_n']} w{c['num_warps']} s{c['num_stages']}"
    if "f16" in c:
        s += " fp16" if c["f16"] else " bf16"
    if c.get("kernel"):
        s = f"{c['kernel']} kernel {s}"
    return s


def best(rows: list[dict[str, Any]], prefix: int) -> dict[str, Any] | None:
    """The fastest correct prefill-kernel configuration at `prefix`."""
    ok = [r for r in rows if r["kind"] == "prefill" and r["ok"] and r["ms"].get(str(prefix)) is not None]
    return min(ok, key=lambda r: r["ms"][str(prefix)], default=None)


class Bench:
    """One model's pool, queries, references and timing."""

    def __init__(self, torch: Any, dev: Any, name: str, a: argparse.Namespace) -> None:
        from dataclasses import replace

        from kvscope_agent.clock import RunClock
        from kvscope_agent.engine.kv_cache import PagedKVCache
        from kvscope_agent.presets import PRESETS

        self.torch = torch
        self.dev = dev
        self.cuda = dev.type == "cuda"
        preset, self.kv = MODELS[name]
        self.name = name
        self.cfg = replace(PRESETS[preset], layers=2, kv_dtype=self.kv)
        self.dtype = torch.bfloat16 if self.cuda else torch.float32  # (the interpreter's bf16 dot is wrong)
        self.n = a.chunk_queries
        self.prefixes = a.prefixes
        self.bt = a.block_tokens
        blocks = -(-(max(self.prefixes) + self.n) // self.bt)
        self.cache = PagedKVCache(self.cfg, dev, self.dtype, self.kv, self.bt, blocks + 7, 0, RunClock().now)
        g = torch.Generator(device=dev)
        g.manual_seed(0)
        pool = self.cache.pool
        for i in range(pool.shape[0]):  # one block at a time: no full-pool fp32 temporary
            pool[i].copy_(torch.randn(pool[i].shape, generator=g, device=dev))
        perm = torch.randperm(blocks + 7, generator=torch.Generator().manual_seed(1))[:blocks].tolist()
        self.rows = self.cache.request_rows(perm)
        self.table = self.cache.block_table(self.rows)[None]
        # Queries of std 2: scores of std 2, a softmax led by tens of keys rather than flat over
        # thousands, so a wrong key or mask moves the output well past bf16's rounding.
        q = torch.randn(self.n, self.cfg.heads, self.cfg.head_dim, generator=g, device=dev) * 2
        self.q = q.to(self.dtype)
        self.group = self.cfg.heads // self.cfg.kv_heads
        self.lens = {p: torch.full((1,), p + self.n, dtype=torch.int32, device=dev) for p in self.prefixes}
        self.out = torch.empty((1, self.n, self.cfg.heads, self.cfg.head_dim), dtype=self.dtype, device=dev)
        self.ref: dict[int, Any] = {}

    def gather(self, prefix: int) -> Any:
        from kvscope_agent.engine.model import attention

        k, v = self.cache.read(1, self.rows, prefix + self.n, self.dtype)
        return attention(self.q, k, v, prefix)

    def launch(self, c: dict[str, Any], prefix: int) -> Any:
        from kvscope_agent.engine import paged_attention as pa

        return pa._launch(self.q[None], self.cache.rows, self.table, self.lens[prefix], layer=1, layers=self.cfg.layers,
                          block_tokens=self.bt, kv_heads=self.cfg.kv_heads, fp8=self.cache.fp8, splits=1,
                          block_m=max(c["block_m"], self.group), out=self.out, config=c)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def time_ms(self, fn: Callable[[], Any], min_ms: float = 30.0, max_reps: int = 50) -> float:
        """Median ms of fn over reps: 3 on the CPU, on the GPU enough (≤ max_reps) for ≥ min_ms."""
        fn()
        self.sync()
        if not self.cuda:
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t) * 1e3)
            return statistics.median(ts)
        torch = self.torch
        ts = []
        total = 0.0
        while len(ts) < 5 or (total < min_ms and len(ts) < max_reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
            total += ts[-1]
        return statistics.median(ts)

    def measure(self, c: dict[str, Any], prefix: int, max_err: float) -> dict[str, Any]:
        ms = self.time_ms(lambda: self.launch(c, prefix))
        err = float((self.out[0].float() - self.ref[prefix].float()).abs().max())
        tf = chunk_flops(self.cfg.heads, self.cfg.head_dim, self.n, prefix) / (ms / 1e3) / 1e12
        return {"ms": ms, "tflops": tf, "err": err, "ok": err <= max_err}


def precompile(work: list[tuple[Bench, dict[str, Any]]]) -> str:
    """Compile every (model, configuration)'s kernel in parallel, before any timing; what fails
    to compile fails again (with its message) when it is timed. Returns how it went, for the log."""
    if not work or not work[0][0].cuda:
        return "interpreter: nothing to compile"
    import triton
    from kvscope_agent.engine import paged_attention as pa

    mode = getattr(triton, "AsyncCompileMode", None)
    if mode is None:
        return f"Triton {triton.__version__} has no AsyncCompileMode: each compiles at its first launch"
    kernels = pa._kernels()[4]
    fns = {"prefill": kernels.paged_prefill_fwd, "general": kernels.paged_attention_fwd}

    class Warmup:  # kernel[grid](...) compiles without launching
        def __init__(self, fn: Any) -> None:
            self.fn = fn

        def __getitem__(self, grid: Any) -> Callable[..., Any]:
            return lambda *args, **kw: self.fn.warmup(*args, grid=grid, **kw)

    t0 = time.monotonic()
    real = pa._kernels
    saved = dict(fns)
    try:
        kernels.paged_prefill_fwd = Warmup(fns["prefill"])
        kernels.paged_attention_fwd = Warmup(fns["general"])
        pa._kernels = lambda: (*real()[:2], kernels.paged_attention_fwd, real()[3], kernels)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, min(16, os.cpu_count() or 2))) as ex:
            with mode(ex, ignore_errors=True):
                for b, c in work:
                    try:
                        b.launch(c, b.prefixes[0])
                    except Exception:  # noqa: BLE001 - reported when the configuration is timed
                        pass
    finally:
        kernels.paged_prefill_fwd = saved["prefill"]
        kernels.paged_attention_fwd = saved["general"]
        pa._kernels = real
    return f"{len(work)} kernels compiled in {time.monotonic() - t0:.1f} s"


def model_configs(b: Bench, a: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
    """(configuration, kernel) pairs one model runs: the prefill kernel's grid, then the general
    kernel at its configuration before."""
    grid = DRY_RUN_GRID if a.grid == "dry-run" else GRID
    grid_bf16 = DRY_RUN_GRID[:1] if a.grid == "dry-run" else GRID_FP8_BF16
    cfgs = [(c, "prefill") for c in configs(b.kv, grid, grid_bf16)]
    cfgs.append((dict(GENERAL_BEFORE, **({"block_m": 32, "block_n": 16} if a.grid == "dry-run" else {})), "general"))
    return cfgs


def run_model(b: Bench, a: argparse.Namespace, deadline: float) -> dict[str, Any]:
    name = b.name
    res: dict[str, Any] = {"model": name, "preset": b.cfg.name, "heads": b.cfg.heads,
                           "kv_heads": b.cfg.kv_heads, "head_dim": b.cfg.head_dim, "kv": b.kv, "group": b.group,
                           "chunk_queries": b.n, "prefixes": b.prefixes, "rows": []}
    log(f"{name}: {b.cfg.heads} query heads / {b.cfg.kv_heads} KV heads, head_dim {b.cfg.head_dim}, {b.kv} KV; "
        f"{b.n} queries over prefixes {b.prefixes}")
    for p in b.prefixes:
        b.ref[p] = b.gather(p).clone()
    cfgs = model_configs(b, a)
    rows = res["rows"]
    p0 = b.prefixes[0]
    # The gather path (what the engine ran before the kernel, and the reference).
    g = {"config": {"kernel": "gather + SDPA"}, "kind": "gather", "ok": True, "ms": {}, "tflops": {}, "err": {}}
    g["ms"][str(p0)] = b.time_ms(lambda: b.gather(p0))
    g["tflops"][str(p0)] = chunk_flops(b.cfg.heads, b.cfg.head_dim, b.n, p0) / (g["ms"][str(p0)] / 1e3) / 1e12
    rows.append(g)
    log(f"{name}: prefix {p0}: gather + SDPA {g['ms'][str(p0)]:.3f} ms, {g['tflops'][str(p0)]:.0f} TFLOP/s")
    for c, kind in cfgs:
        row: dict[str, Any] = {"config": c, "kind": kind, "ok": True, "ms": {}, "tflops": {}, "err": {}}
        rows.append(row)
        if time.monotonic() > deadline:
            row.update(ok=False, error="not run: past --budget-s")
            continue
        try:
            m = b.measure(c, p0, a.max_err)
        except Exception as e:  # noqa: BLE001 - a configuration that does not compile (shared memory) is skipped
            row.update(ok=False, error=(str(e).strip().splitlines() or [type(e).__name__])[0][:200])
            log(f"{name}: {label(c)}: error: {row['error']}")
            continue
        row["ms"][str(p0)], row["tflops"][str(p0)], row["err"][str(p0)] = m["ms"], m["tflops"], m["err"]
        row["ok"] = m["ok"]
        log(f"{name}: prefix {p0}: {label(c):34s} {m['ms']:8.3f} ms {m['tflops']:6.0f} TFLOP/s  "
            f"max err {m['err']:.2e}{'' if m['ok'] else '  WRONG'}")
    # The fastest at the other prefixes, with the general kernel and the gather path beside them.
    ranked = sorted((r for r in rows if r["kind"] == "prefill" and r["ok"] and r["ms"]), key=lambda r: r["ms"][str(p0)])
    again = ranked[: a.top] + [r for r in rows if r["kind"] in ("general", "gather") and r["ms"]]
    for p in b.prefixes[1:]:
        for r in again:
            if time.monotonic() > deadline:
                break
            try:
                if r["kind"] == "gather":
                    ms = b.time_ms(lambda: b.gather(p))
                    err = 0.0
                else:
                    m = b.measure(r["config"], p, a.max_err)
                    ms, err = m["ms"], m["err"]
                    r["ok"] = r["ok"] and m["ok"]
            except Exception as e:  # noqa: BLE001
                r["error"] = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                continue
            r["ms"][str(p)], r["err"][str(p)] = ms, err
            r["tflops"][str(p)] = chunk_flops(b.cfg.heads, b.cfg.head_dim, b.n, p) / (ms / 1e3) / 1e12
            log(f"{name}: prefix {p}: {label(r['config']) if r['kind'] != 'gather' else 'gather + SDPA':34s} "
                f"{ms:8.3f} ms {r['tflops'][str(p)]:6.0f} TFLOP/s  max err {err:.2e}")
    top = best(rows, p0)
    res["best"] = top["config"] if top else None
    return res


def report(r: dict[str, Any]) -> str:
    L = [f"# Paged prefill attention configurations: {r['device']}", "",
         f"{r['date']}, commit {r['commit']}, PyTorch {r['torch']}, Triton {r['triton']}. Command: `{r['command']}`; "
         f"wall {r['wall_s']:.0f} s.", ""]
    pastes = []
    for m in r["models"]:
        if m.get("error"):
            L += [f"## {m['model']}: error: {m['error']}", ""]
            continue
        ps = [str(p) for p in m["prefixes"]]
        L += [f"## {m['model']}: {m['heads']} / {m['kv_heads']} heads, {m['kv']} KV, {m['chunk_queries']} queries", "",
              "| configuration | " + " | ".join(f"ms @{p}" for p in ps) + " | " + " | ".join(f"TFLOP/s @{p}" for p in ps)
              + " | max err |", "|---|" + "---:|" * (2 * len(ps) + 1)]
        rows = sorted(m["rows"], key=lambda x: x["ms"].get(ps[0], math.inf))
        for x in rows:
            name = label(x["config"]) if x["kind"] != "gather" else "gather + SDPA (reference)"
            if x.get("error") and not x["ms"]:
                L.append(f"| {name} | {x['error']} |")
                continue
            errs = [v for v in x["err"].values()]
            L.append(f"| {name}{'' if x['ok'] else ' WRONG'} | "
                     + " | ".join(f"{x['ms'][p]:.3f}" if p in x["ms"] else "-" for p in ps) + " | "
                     + " | ".join(f"{x['tflops'][p]:.0f}" if p in x["tflops"] else "-" for p in ps)
                     + (f" | {max(errs):.1e} |" if errs else " | - |"))
        top = best(m["rows"], m["prefixes"][0])
        if top:
            tf = top["tflops"][ps[0]]
            L += ["", f"Best at prefix {ps[0]}: {label(top['config'])}, {top['ms'][ps[0]]:.3f} ms, {tf:.0f} TFLOP/s.", ""]
            pastes.append(_tables.prefill_row(m["group"], m["kv"], top["config"]))
    if pastes:
        L += ["## PREFILL_CONFIGS rows (resources/agent/kvscope_agent/engine/paged_attention.py)", "", "```python",
              *pastes, "```", ""]
    return "\n".join(L)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="output directory (default $OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="70b-fp8,8b", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--chunk-queries", type=int, default=2048)
    ap.add_argument("--prefixes", default="13952,6000,0", help="cached tokens before the chunk; the first ranks them")
    ap.add_argument("--block-tokens", type=int, default=32)
    ap.add_argument("--grid", choices=["full", "dry-run"], default="full")
    ap.add_argument("--top", type=int, default=3, help="the fastest this many are timed at the other prefixes")
    ap.add_argument("--max-err", type=float, default=5e-2, help="largest difference from the gather path that counts as right")
    ap.add_argument("--budget-s", type=float, default=130, help="start no new timing after this many seconds")
    a = ap.parse_args(argv)
    a.prefixes = [int(x) for x in a.prefixes.split(",") if x]
    if not a.out:
        ap.error("--out (or $OUT) is required")
    unknown = [m for m in a.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}: choose from {list(MODELS)}")
    t_start = time.monotonic()
    import torch

    from kvscope_agent.engine import paged_attention as pa

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (--device cpu under TRITON_INTERPRET=1 for a dry run)", file=sys.stderr)
        return 2
    ok, why = pa.available(dev)
    if not ok:
        print(f"the paged attention kernel does not run here: {why}", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    import triton

    r: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (Triton interpreter)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(), "torch": torch.__version__,
        "triton": triton.__version__, "command": "python3 bench/prefill-attention-tune.py " + " ".join(argv),
        "args": vars(a), "defaults": {f"{k[0]},{k[1]}": v for k, v in pa.PREFILL_CONFIGS.items()}, "models": [],
    }
    log(f"{r['device']}, torch {r['torch']}, triton {r['triton']}, commit {r['commit']}: {why}")
    deadline = t_start + a.budget_s
    benches: list[Bench | dict[str, Any]] = []
    for name in a.models.split(","):  # every model's pool first (~0.3 GB each), so all compile at once
        try:
            benches.append(Bench(torch, dev, name, a))
        except Exception as e:  # noqa: BLE001 - one model's failure must not lose the other's numbers
            benches.append(_failed(name, e))
    try:
        log(precompile([(b, c) for b in benches if isinstance(b, Bench) for c, _ in model_configs(b, a)]))
    except Exception as e:  # noqa: BLE001 - then each configuration compiles at its first launch
        log(f"parallel compile failed ({type(e).__name__}: {e}); each configuration compiles when first timed")
    for b in benches:
        if not isinstance(b, Bench):
            r["models"].append(b)
            continue
        try:
            r["models"].append(run_model(b, a, deadline))
        except Exception as e:  # noqa: BLE001
            r["models"].append(_failed(b.name, e))
    r["wall_s"] = time.monotonic() - t_start
    _roofline.write_results(a.out, "prefill-attention-tune", r, report(r))
    return 1 if any(m.get("error") for m in r["models"]) else 0


def _failed(name: str, e: BaseException) -> dict[str, Any]:
    import traceback

    traceback.print_exc()
    return {"model": name, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"}




if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
