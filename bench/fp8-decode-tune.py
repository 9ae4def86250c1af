#!/usr/bin/env python3
"""The 70B FP8 decode step's kernels, one configuration against another, in one call on a GPU.

What it times (each call captured as a CUDA graph of --calls back-to-back calls, as the decode
step replays them; median of 5 replays):
  * the four linear shapes of a decode layer (qkv 8192 -> 10240, o 8192 -> 8192, gate_up
    8192 -> 57344, down 28672 -> 8192 for llama-3.1-70b-fp8) at 1, 2, 4 and 8 rows: Fp8Linear's
    general path (per-tensor activation quantisation + torch._scaled_mm, what decode ran before
    the weight-only kernel) against engine/fp8_gemv.py's kernel under each configuration of
    GEMV_CANDIDATES; weight GB/s; every output checked against x @ dequantised W on the first
    1,024 output channels (a configuration that disagrees is reported, never picked);
  * the decode attention over an FP8 KV pool (every layer, 1 and 2 users at --context tokens):
    the bf16 tiles in bf16 products (what ran before), and each configuration of
    ATTENTION_CANDIDATES at the planned splits (and half and double of them for the engine's
    line); KV GB/s; each output checked against the one that ran before.
It ends with the lines to paste: fp8_gemv.GEMV_CONFIGS (per row count, the configuration with the
least time over the four shapes: a layer runs all four) and paged_attention.DECODE_CONFIGS["fp8"].
Writes DIR/fp8-decode-tune.json and DIR/fp8-decode-tune.md.

    python3 bench/fp8-decode-tune.py --out DIR                        # on the GPU host, ~1-2 min
    TRITON_INTERPRET=1 python3 bench/fp8-decode-tune.py --out DIR --device cpu --model tiny \\
        --rows 1,2 --context 300 --calls 1 --quick                    # the logic, on a CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from script_loader import load_script  # noqa: E402  (also puts resources/agent on sys.path)

_roofline = load_script("engine-roofline.py")
_tables = load_script("apply-tuned-configs.py")  # the table lines it prints are the ones the applier writes
log, commit = _roofline.log, _roofline.commit

# Weight-only GEMV configurations tried at every row count ("dot": tensor-core tiles or per-row
# reductions; the engine's own line for the row count is always tried too).
GEMV_CANDIDATES = [
    {"block_n": bn, "block_k": bk, "num_warps": w, "num_stages": st, "dot": 0}
    for bn, bk, w, st in [(16, 512, 4, 3), (16, 256, 4, 3), (8, 1024, 4, 3), (16, 1024, 8, 3), (32, 256, 4, 3),
                          (32, 512, 8, 3), (16, 512, 4, 1)]
] + [
    {"block_n": bn, "block_k": bk, "num_warps": w, "num_stages": st, "dot": 1}
    for bn, bk, w, st in [(64, 256, 4, 3), (32, 256, 4, 3), (128, 128, 4, 3), (64, 512, 8, 3), (16, 512, 4, 3)]
]
FMA_MAX_ROWS = 8  # per-row reductions beyond this many rows are not tried (a multiply-add per byte and row)

# Decode attention over FP8 KV ("f16": products in fp16 instead of bf16).
BEFORE = {"f16": 0, "block_n": 64, "num_warps": 4, "num_stages": 3}  # what ran before: DECODE_CONFIGS["native"]'s tiles
ATTENTION_CANDIDATES = [BEFORE] + [
    {"f16": f, "block_n": bn, "num_warps": w, "num_stages": st}
    for f, bn, w, st in [(1, 128, 4, 2), (1, 128, 4, 3), (1, 64, 4, 3), (1, 64, 4, 2), (1, 128, 8, 2), (1, 256, 8, 2),
                         (1, 32, 4, 3), (0, 128, 4, 2)]
]
TOL_GEMV = 1e-2  # relative to the largest output: bf16 output rounding is ~4e-3
TOL_ATTENTION = 3e-2  # absolute on outputs of magnitude ~1: bf16 / fp16 rounding


def linear_shapes(cfg: Any) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of a decoder layer's four products, as model.py builds them."""
    hd = cfg.head_dim
    return [("qkv", cfg.hidden, (cfg.heads + 2 * cfg.kv_heads) * hd), ("o", cfg.heads * hd, cfg.hidden),
            ("gate_up", cfg.hidden, 2 * cfg.ffn), ("down", cfg.ffn, cfg.hidden)]


class Clock:
    """ms per call of fn: a CUDA graph of `calls` calls, median of 5 replays (the CPU: one call)."""

    def __init__(self, torch: Any, dev: Any, calls: int) -> None:
        self.torch, self.dev, self.calls = torch, dev, calls
        self.cuda = dev.type == "cuda"

    def ms(self, fn: Callable[[], Any]) -> float:
        torch = self.torch
        if not self.cuda:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        s = torch.cuda.Stream(device=self.dev)
        s.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(s):
            fn()  # compiles, picks cuBLAS kernels, allocates outside the capture
        torch.cuda.current_stream(self.dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(self.calls):
                fn()
        g.replay()
        times = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / self.calls)
        del g
        return statistics.median(times)


def tune_gemv(torch: Any, dev: Any, clock: Clock, cfg: Any, rows: list[int], quick: bool,
              deadline: float) -> dict[str, Any]:
    from kvscope_agent.engine import fp8, fp8_gemv

    dtype = torch.bfloat16 if clock.cuda else torch.float32
    g = torch.Generator(device=dev)
    g.manual_seed(0)
    out: dict[str, Any] = {"shapes": []}
    for name, k, n in linear_shapes(cfg):
        layer = fp8.Fp8Linear.from_random(k, n, dev, g)  # per-tensor scale, as the engine builds them
        w, s = layer.weight, layer.scale
        ref_w = (w[:1024].float() * s).t()
        shape: dict[str, Any] = {"name": name, "in": k, "out": n, "weight_bytes": n * k, "rows": []}
        for m in rows:
            x = torch.randn(m, k, device=dev, generator=g).to(dtype)
            want = x.float() @ ref_w
            row: dict[str, Any] = {"rows": m}
            layer.decode_gemv = False
            row["scaled_mm_ms"] = clock.ms(lambda: layer(x))
            layer.decode_gemv = True
            own = fp8_gemv.config_for(m)
            cands = [own] + [c for c in GEMV_CANDIDATES if c != own and (c["dot"] or m <= FMA_MAX_ROWS)]
            if quick:
                cands = [own] + [c for c in cands[1:] if c["dot"] != own["dot"]][:1]
            row["configs"] = []
            for c in cands:
                if time.monotonic() > deadline:
                    row["configs"].append({"config": c, "error": "not run: past --budget-s"})
                    continue
                try:
                    got = fp8_gemv.gemv(x, w, s, config=c)
                    err = float((got[:, :1024].float() - want).abs().max() / want.abs().max())
                    r: dict[str, Any] = {"config": c, "splits": fp8_gemv.plan_split(n, k, {**own, **c}, dev)[0],
                                         "rel_err": err}
                    if err > TOL_GEMV:
                        r["error"] = f"disagrees with the reference (relative error {err:.3g})"
                    else:
                        r["ms"] = clock.ms(lambda: fp8_gemv.gemv(x, w, s, config=c))
                        r["gb_per_s"] = n * k / (r["ms"] / 1e3) / 1e9
                except Exception as e:  # noqa: BLE001 - a configuration that does not compile is reported, not fatal
                    r = {"config": c, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
                row["configs"].append(r)
            timed = [r for r in row["configs"] if "ms" in r]
            row["configs"] = sorted(timed, key=lambda r: r["ms"]) + [r for r in row["configs"] if "ms" not in r]
            row["scaled_mm_gb_per_s"] = n * k / (row["scaled_mm_ms"] / 1e3) / 1e9
            if timed:
                row["engine_ms"] = next((r["ms"] for r in timed if r["config"] == own), None)
            best = row["configs"][0] if timed else None
            log(f"{name} {k}->{n}, {m} rows: _scaled_mm {row['scaled_mm_ms'] * 1e3:.1f} µs "
                f"({row['scaled_mm_gb_per_s']:.0f} GB/s); engine config {fmt_us(row.get('engine_ms'))}; best "
                + (f"{best['ms'] * 1e3:.1f} µs ({best['gb_per_s']:.0f} GB/s) {best['config']}" if best else "none"))
            shape["rows"].append(row)
        out["shapes"].append(shape)
        del layer, w, s, ref_w
    out["suggested"] = suggest_gemv(out["shapes"], rows)
    return out


def fmt_us(ms: float | None) -> str:
    return "-" if ms is None else f"{ms * 1e3:.1f} µs"


def suggest_gemv(shapes: list[dict[str, Any]], rows: list[int]) -> list[dict[str, Any]]:
    """Per row count: the configuration with the least summed time over the four shapes (among
    those that ran on all four), and the engine's own configuration's sum."""
    from kvscope_agent.engine import fp8_gemv

    out = []
    for m in rows:
        sums: dict[str, list[Any]] = {}
        for sh in shapes:
            for row in sh["rows"]:
                if row["rows"] != m:
                    continue
                for r in row["configs"]:
                    if "ms" in r:
                        key = json.dumps(r["config"], sort_keys=True)
                        sums.setdefault(key, [r["config"], 0.0, 0])
                        sums[key][1] += r["ms"]
                        sums[key][2] += 1
        full = [v for v in sums.values() if v[2] == len(shapes)]
        if not full:
            continue
        best = min(full, key=lambda v: v[1])
        own = sums.get(json.dumps(fp8_gemv.config_for(m), sort_keys=True))
        scaled = sum(row["scaled_mm_ms"] for sh in shapes for row in sh["rows"] if row["rows"] == m)
        out.append({"rows": m, "config": best[0], "layer_ms": best[1], "engine_layer_ms": own[1] if own else None,
                    "scaled_mm_layer_ms": scaled})
    return out


def tune_attention(torch: Any, dev: Any, clock: Clock, cfg: Any, users: list[int], context: int, quick: bool,
                   deadline: float) -> dict[str, Any]:
    from kvscope_agent.clock import RunClock
    from kvscope_agent.engine import paged_attention as pa
    from kvscope_agent.engine.kv_cache import PagedKVCache

    dtype = torch.bfloat16 if clock.cuda else torch.float32
    bt = 32
    per_user = -(-(context + 1) // bt)
    cache = PagedKVCache(cfg, dev, dtype, "fp8", bt, max(users) * per_user, 0, RunClock().now)
    g = torch.Generator(device=dev)
    g.manual_seed(1)
    for b0 in range(0, cache.num_blocks, 16):  # N(0, 1) K/V as e4m3 (a bf16 copy of 16 blocks at a time)
        blk = cache.pool[b0 : b0 + 16]
        blk.copy_(torch.randn(blk.shape, device=dev, generator=g, dtype=dtype))
    out: dict[str, Any] = {"context": context, "users": []}
    own = pa.decode_config(True)
    cands = [own] + [c for c in ATTENTION_CANDIDATES if {**own, **c} != own]
    if quick:
        cands = cands[:3]
    for b in users:
        q = torch.randn(b, 1, cfg.heads, cfg.head_dim, device=dev, generator=g).to(dtype)
        table = torch.stack([torch.arange(u * per_user, (u + 1) * per_user, device=dev, dtype=torch.int32)
                             for u in range(b)])
        lens = torch.full((b,), context + 1, dtype=torch.int32, device=dev)
        span = -(-(context + 1) // 4096) * 4096
        planned = pa.plan(b, 1, cfg.heads, cfg.kv_heads, span, dev, fp8=True)[1]
        kv_bytes = b * (context + 1) * cfg.kv_bytes_per_token(1)

        def run(c: dict[str, Any], sp: int, layers: int = cfg.layers) -> Any:
            o = None
            for li in range(layers):
                o = pa._launch(q, cache.rows, table, lens, layer=li, layers=cfg.layers, block_tokens=bt,
                               kv_heads=cfg.kv_heads, fp8=True, splits=sp, config=c)
            return o

        ref = run(BEFORE, planned, 1).float()
        trials = [(c, planned) for c in cands] + [(own, max(1, planned // 2)), (own, planned * 2)]
        res: dict[str, Any] = {"users": b, "kv_bytes": kv_bytes, "planned_splits": planned, "configs": []}
        for c, sp in trials:
            if time.monotonic() > deadline:
                res["configs"].append({"config": c, "splits": sp, "error": "not run: past --budget-s"})
                continue
            try:
                err = float((run(c, sp, 1).float() - ref).abs().max())
                r: dict[str, Any] = {"config": c, "splits": sp, "max_err": err}
                if not err <= TOL_ATTENTION:
                    r["error"] = f"disagrees with the configuration that ran before (max error {err:.3g})"
                else:
                    r["ms"] = clock.ms(lambda: run(c, sp))
                    r["kv_gb_per_s"] = kv_bytes / (r["ms"] / 1e3) / 1e9
            except Exception as e:  # noqa: BLE001 - a configuration that does not compile (shared memory) is reported
                r = {"config": c, "splits": sp, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
            res["configs"].append(r)
            if "ms" in r:
                log(f"attention {b} user(s): {c} splits {sp}: {r['ms']:.3f} ms ({r['kv_gb_per_s']:.0f} GB/s)")
        timed = sorted([r for r in res["configs"] if "ms" in r], key=lambda r: r["ms"])
        res["configs"] = timed + [r for r in res["configs"] if "ms" not in r]
        out["users"].append(res)
    sums: dict[str, list[Any]] = {}
    for res in out["users"]:
        for r in res["configs"]:
            if "ms" in r and r["splits"] == res["planned_splits"]:
                key = json.dumps(r["config"], sort_keys=True)
                sums.setdefault(key, [r["config"], 0.0, 0])
                sums[key][1] += r["ms"]
                sums[key][2] += 1
    full = [v for v in sums.values() if v[2] == len(out["users"])]
    if full:
        best = min(full, key=lambda v: v[1])
        out["suggested"] = {"config": {**best[0], "programs_per_sm": own["programs_per_sm"]}, "ms_sum": best[1]}
    del cache
    return out


def markdown(r: dict[str, Any]) -> str:
    L = [f"# FP8 decode kernels: {r['device']}", "", f"{r['date']}, commit {r['commit']}, PyTorch {r['torch']}, "
         f"Triton {r['triton']}; {r['args']['calls']} calls a graph, median of 5 replays.", "",
         "## Linear layers (weight-only GEMV vs activation quantisation + torch._scaled_mm)", "",
         "| shape | rows | _scaled_mm µs | GB/s | engine config µs | best µs | GB/s | speedup vs _scaled_mm | best config |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for sh in r.get("gemv", {}).get("shapes", []):
        for row in sh["rows"]:
            best = row["configs"][0] if row["configs"] and "ms" in row["configs"][0] else None
            L.append(f"| {sh['name']} {sh['in']}->{sh['out']} | {row['rows']} | {row['scaled_mm_ms'] * 1e3:.1f} | "
                     f"{row['scaled_mm_gb_per_s']:.0f} | {fmt_us(row.get('engine_ms'))[:-3]} | "
                     + (f"{best['ms'] * 1e3:.1f} | {best['gb_per_s']:.0f} | {row['scaled_mm_ms'] / best['ms']:.2f} | "
                        f"`{json.dumps(best['config'])}` |" if best else "- | - | - | - |"))
    sug = r.get("gemv", {}).get("suggested", [])
    if sug:
        L += ["", "Per row count, the configuration with the least time over the four shapes (a layer):", ""]
        L += [f"- {s['rows']} rows: {s['layer_ms'] * 1e3:.1f} µs a layer (engine's config "
              f"{fmt_us(s['engine_layer_ms'])}, _scaled_mm {s['scaled_mm_layer_ms'] * 1e3:.1f} µs): "
              f"`{json.dumps(s['config'])}`" for s in sug]
        L += ["", "Paste into resources/agent/kvscope_agent/engine/fp8_gemv.py (a measured row count's line covers "
              "the counts up to the next measured one):", "", "```python", _tables.gemv_table(sug), "```"]
    att = r.get("attention")
    if att:
        L += ["", f"## Decode attention over FP8 KV ({att['context'] + 1} keys a user, every layer)", "",
              "| users | config | splits | ms a step | KV GB/s |", "|---:|---|---:|---:|---:|"]
        for res in att["users"]:
            for c in res["configs"]:
                if "ms" in c:
                    L.append(f"| {res['users']} | `{json.dumps(c['config'])}` | {c['splits']} | {c['ms']:.3f} | "
                             f"{c['kv_gb_per_s']:.0f} |")
                else:
                    L.append(f"| {res['users']} | `{json.dumps(c['config'])}` | {c['splits']} | {c['error']} | |")
        if att.get("suggested"):
            L += ["", "Paste into resources/agent/kvscope_agent/engine/paged_attention.py, DECODE_CONFIGS:", "",
                  "```python", _tables.decode_fp8_line(att["suggested"]["config"]), "```",
                  "(splits: if a half or double of the planned splits won above, scale programs_per_sm the same way)"]
    errs = [f"{sh['name']} {row['rows']} rows: {c['config']}: {c['error']}" for sh in r.get("gemv", {}).get("shapes", [])
            for row in sh["rows"] for c in row["configs"] if "error" in c]
    if errs:
        L += ["", "## Configurations that did not run or disagreed", ""] + [f"- {e}" for e in errs]
    L += ["", f"Command: `{r['command']}`; wall {r['wall_s']:.0f} s.", ""]
    return "\n".join(L)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT"), help="output directory (default $OUT)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="llama-3.1-70b-fp8", help="a preset whose shapes to time")
    ap.add_argument("--rows", default="1,2,4,8", help="activation rows (decode batch sizes) for the linear layers")
    ap.add_argument("--users", default="1,2", help="users for the attention part")
    ap.add_argument("--context", type=int, default=16000)
    ap.add_argument("--calls", type=int, default=10, help="calls a captured graph")
    ap.add_argument("--quick", action="store_true", help="the engine's configuration and one other only (dry runs)")
    ap.add_argument("--budget-s", type=float, default=95,
                    help="start no new linear-layer configuration after this many seconds (attention: 35 s more)")
    ap.add_argument("--skip-attention", action="store_true")
    a = ap.parse_args(argv)
    if not a.out:
        ap.error("--out (or $OUT) is required")
    t0 = time.monotonic()
    import torch

    from kvscope_agent.engine import fp8_gemv, paged_attention
    from kvscope_agent.presets import PRESETS

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (a dry run: --device cpu under TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    deadline = t0 + a.budget_s
    for what, (ok, why) in (("FP8 GEMV", fp8_gemv.available(dev)), ("paged attention", paged_attention.available(dev))):
        if not ok:
            print(f"{what} does not run here: {why}", file=sys.stderr)
            return 2
    if a.model not in PRESETS:
        ap.error(f"unknown preset {a.model!r}: choose from {sorted(PRESETS)}")
    cfg = PRESETS[a.model]
    r: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (Triton interpreter)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(), "torch": torch.__version__, "triton": paged_attention._kernels()[0].__version__,
        "command": "python3 bench/fp8-decode-tune.py " + " ".join(argv), "args": vars(a), "model": a.model,
    }
    log(f"{r['device']}, torch {r['torch']}, triton {r['triton']}, commit {r['commit']}")
    clock = Clock(torch, dev, a.calls if dev.type == "cuda" else 1)
    rows = [int(x) for x in a.rows.split(",") if x]
    if any(not 0 < m <= fp8_gemv.MAX_ROWS for m in rows):
        ap.error(f"--rows must be 1..{fp8_gemv.MAX_ROWS}")
    r["gemv"] = tune_gemv(torch, dev, clock, cfg, rows, a.quick, deadline)
    if not a.skip_attention:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        # A call is already every layer's launches: fewer calls a graph.
        r["attention"] = tune_attention(torch, dev, Clock(torch, dev, min(clock.calls, 2)), cfg,
                                        [int(x) for x in a.users.split(",") if x], a.context, a.quick, deadline + 35)
    r["wall_s"] = time.monotonic() - t0
    _roofline.write_results(a.out, "fp8-decode-tune", r, markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
