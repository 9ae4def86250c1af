"""Tracing overhead, micro: attribute the tracing/sampling overhead in seconds of GPU time, not minutes.

A launch-bound loop shaped like the built-in engine's decode step, timed in a FRESH subprocess
per configuration (CUDA_INJECTION64_PATH is read by the driver at cuInit, so it must be in the
environment before torch touches CUDA):

- one "step" = ~1,000 small kernel launches on bf16 tensors of decode shapes (batch 4, hidden
  4096: rms-norm pieces, matmuls, index_select from a block pool, softmax, silu), plus one pinned
  H2D copy of 4 int64 token ids every step (as model.py uploads the ids) and one D2H of 4 int64
  with .tolist() every 16 steps (as the scheduler reads tokens back), plus every 50 steps a 64 MiB
  pinned H2D and a 64 MiB D2H copy on a side stream (the engine's onboard/offload block copies);
- the same step's kernels captured once as a torch.cuda.CUDAGraph and replayed (the copies stay
  outside the graph, as they must), to show the graph case the engine is moving to.

Configurations: off; trace (CUPTI library injected + the agent's collector thread tailing the
trace files, exactly what run.py starts); sample (telemetry.start_sampler at 100 ms, as run.py
calls it); on (both); trace200 (trace with KVSCOPE_TRACE_FLUSH_MS=200); lib (library injected,
no collector: separates the C side from the Python collector thread); tracenopool (trace with
KVSCOPE_TRACE_POOL=0: a new CUPTI-zeroed activity buffer per request, as the library was before
its buffer pool, for A/B against "trace"). Rounds interleave the
configurations, rotating the order each round.

  python3 bench/gpu/tracer-overhead-micro.py --out DIR                # on a GPU host (~100 s)
  python3 bench/gpu/tracer-overhead-micro.py --out DIR --device cpu   # dry run: CPU tensors, no tracer

Results: DIR/tracer-overhead-micro.json, DIR/tracer-overhead-micro.md; each subprocess's output in DIR/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AGENT = os.path.join(REPO, "resources", "agent")
ALL_CONFIGS = ("off", "trace", "sample", "on", "trace200", "lib", "tracenopool", "tracegraph", "tracenomemset", "tracenodes")
TRACED = {"trace", "on", "trace200", "lib", "tracenopool", "tracegraph", "tracenomemset", "tracenodes"}
SAMPLED = {"sample", "on"}
# Every traced config but "lib" runs the Python collector, as a real run does. (Until 2026-11-28c
# tracegraph/tracenomemset were missing here, so those two ran without it: their rows in
# bench/results/h100-2026-11-28c/micro compare with each other, not with "trace".)
COLLECTED = TRACED - {"lib"}
BIG_COPY_BYTES = 64 << 20


# --------------------------------------------------------------------------------- the worker


class DecodeLoop:
    """The decode-shaped step. Static tensors throughout, so eager and graph run the same ops."""

    def __init__(self, torch: Any, device: str, hidden: int, inner: int, layers: int, batch: int = 4) -> None:
        self.torch, self.device, self.cuda = torch, device, device.startswith("cuda")
        dt = torch.bfloat16
        torch.manual_seed(0)

        def w(*shape: int) -> Any:
            # Made on the device: 200 M CPU randn would cost each fresh worker seconds.
            return torch.randn(*shape, device=device, dtype=dt) * 0.02

        self.layers = layers
        # 8 weight sets cycled over the layers: launch count is what matters, not weight bytes.
        self.sets = [dict(n=w(hidden) + 1, q=w(hidden, inner), o=w(inner, hidden), w1=w(hidden, inner),
                          w3=w(hidden, inner), w2=w(inner, hidden)) for _ in range(min(8, layers))]
        self.pool = w(256, inner)  # a GPU block pool the step gathers from
        self.blk = torch.randint(0, 256, (64,), device=device)
        self.emb = w(4096, hidden)
        self.head = w(hidden, 4096)
        self.x = torch.zeros(batch, hidden, dtype=dt, device=device)
        self.tok = torch.zeros(batch, dtype=torch.int64, device=device)
        self.ids = torch.zeros(batch, dtype=torch.int64, device=device)
        pin = self.cuda
        self.ids_host = torch.arange(batch, dtype=torch.int64).pin_memory() if pin else torch.arange(batch)
        self.big_dev_src = torch.empty(BIG_COPY_BYTES, dtype=torch.uint8, device=device)
        self.big_dev_dst = torch.empty(BIG_COPY_BYTES, dtype=torch.uint8, device=device)
        self.big_host_src = torch.empty(BIG_COPY_BYTES, dtype=torch.uint8, pin_memory=pin)
        self.big_host_dst = torch.empty(BIG_COPY_BYTES, dtype=torch.uint8, pin_memory=pin)
        self.side = torch.cuda.Stream() if self.cuda else None
        self.scale = inner ** -0.5

    def kernels(self) -> None:
        """~25 launches a layer + 7: the per-token work of a small decoder, batch 4."""
        t, F = self.torch, self.torch.nn.functional
        x = self.x + t.index_select(self.emb, 0, self.ids)
        for i in range(self.layers):
            p = self.sets[i % len(self.sets)]
            h = x.float()
            var = h.pow(2).mean(-1, keepdim=True)
            h = (h * t.rsqrt(var + 1e-5)).to(t.bfloat16) * p["n"]
            q = h @ p["q"]
            kv = t.index_select(self.pool, 0, self.blk)
            s = (q.float() @ kv.float().t()) * self.scale
            o = t.softmax(s, -1).to(t.bfloat16) @ kv
            x = x + o @ p["o"]
            x = x + (F.silu(h @ p["w1"]) * (h @ p["w3"])) @ p["w2"]
        self.tok.copy_(t.argmax(x @ self.head, -1))
        self.x.copy_(x * 1e-3)  # bounded state: the next step reads the same static tensor

    def big_copies(self) -> None:
        """64 MiB each way on a side stream, ordered with the compute stream as the engine's
        copy stream is (kv_cache.py: the copy stream waits for compute, compute for the copy)."""
        t = self.torch
        ctx = t.cuda.stream(self.side) if self.cuda else contextlib.nullcontext()
        if self.cuda:
            self.side.wait_stream(t.cuda.current_stream())
        with ctx:
            self.big_dev_dst.copy_(self.big_host_src, non_blocking=True)  # onboard-like H2D
            self.big_host_dst.copy_(self.big_dev_src, non_blocking=True)  # offload-like D2H
        if self.cuda:
            t.cuda.current_stream().wait_stream(self.side)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def run(self, step_fn: Any, n: int) -> dict[str, Any]:
        """n steps; ms per step over the whole loop (ending in a sync), and per-step host times."""
        per: list[float] = []
        self.sync()
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            ts = time.perf_counter()
            self.ids.copy_(self.ids_host, non_blocking=True)  # 4 int64 H2D, every step
            step_fn()
            if i % 16 == 0:
                self.tok.tolist()  # 4 int64 D2H + wait, every 16 steps
            if i % 50 == 0:
                self.big_copies()
            per.append((time.perf_counter() - ts) * 1e3)
        self.sync()
        total = time.perf_counter() - t0
        per.sort()
        return {"steps": n, "ms_per_step": total * 1e3 / n, "step_p50_ms": per[len(per) // 2],
                "step_p99_ms": per[min(len(per) - 1, int(len(per) * 0.99))], "step_max_ms": per[-1]}


def count_events(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"gpu_samples": 0, "xfers": 0, "xfer_bytes": 0, "warns": []}
    try:
        with open(path) as f:
            for line in f:
                e = json.loads(line)
                if e.get("type") == "gpu":
                    out["gpu_samples"] += 1
                elif e.get("type") == "xfer":
                    out["xfers"] += 1
                    out["xfer_bytes"] += int(e.get("bytes") or 0)
                elif e.get("type") == "log" and e.get("level") in ("warn", "error"):
                    out["warns"].append(e.get("msg"))
    except OSError as e:
        out["warns"].append(f"events log unreadable: {e}")
    return out


def worker(a: argparse.Namespace) -> int:
    sys.path.insert(0, AGENT)
    import torch
    from kvscope_agent.clock import RunClock
    from kvscope_agent.emit import EventWriter
    from kvscope_agent.run_loop import host_block

    import faulthandler

    faulthandler.enable()  # a native crash (two traced workers died rc -11) leaves its stacks in the log
    os.makedirs(a.rundir, exist_ok=True)
    t_start = time.perf_counter()
    device = "cuda:0" if a.device == "cuda" else "cpu"
    if a.device == "cuda":
        torch.cuda.init()  # cuInit: the injected library (if any) starts here
    clock = RunClock()
    writer = EventWriter(os.path.join(a.rundir, "events.jsonl"), clock)
    writer.emit("log", level="info", msg=f"tracer-overhead-micro worker {a.worker}")
    res: dict[str, Any] = {"config": a.worker, "device": device, "torch": torch.__version__}
    collector = sampler = None
    tracer_loaded = False
    if a.worker in TRACED and a.device == "cuda":
        from kvscope_agent.tracer.collector import loaded_tracer, start_collector

        lib = loaded_tracer()
        # Loaded and tracing: InitializeInjection enabled MEMCPY activity (kvscope_cupti_active).
        tracer_loaded = lib is not None and lib.kvscope_cupti_active() == 1
        if a.worker in COLLECTED:
            collector = start_collector(writer, clock, os.environ["KVSCOPE_TRACE_DIR"])
    if a.worker in SAMPLED:
        from kvscope_agent.telemetry import start_sampler

        # As run.py: indices from host_block (nvidia-smi order), then start_sampler at 100 ms.
        _, gpu_indices = host_block(torch, torch.device(device))
        sampler = start_sampler(writer, clock, gpu_indices, a.sample_ms)
    res.update(tracer_loaded=tracer_loaded, collector=collector is not None, sampler=sampler is not None,
               flush_ms=os.environ.get("KVSCOPE_TRACE_FLUSH_MS"))

    loop = DecodeLoop(torch, device, a.hidden, a.inner, a.layers)
    for _ in range(a.warmup):  # allocator, cuBLAS handles, lazy module loads
        loop.kernels()
    loop.run(loop.kernels, a.warmup)
    res["eager"] = loop.run(loop.kernels, a.steps)
    if a.device == "cuda":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                loop.kernels()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loop.kernels()
        loop.run(graph.replay, a.warmup)
        res["graph"] = loop.run(graph.replay, a.graph_steps)
    else:
        res["graph"] = None
    if tracer_loaded:
        # The library's buffer-pool counters: with the pool, "reused" should carry nearly every
        # buffer request after the first two; with KVSCOPE_TRACE_POOL=0, "allocated" does.
        import ctypes

        from kvscope_agent.tracer.collector import loaded_tracer

        lib = loaded_tracer()
        if lib is not None and hasattr(lib, "kvscope_cupti_pool_stats"):
            vals = [ctypes.c_uint64() for _ in range(3)]
            lib.kvscope_cupti_pool_stats(*[ctypes.byref(v) for v in vals])
            res["pool"] = dict(zip(("allocated", "reused", "zeroed_on_request"), (v.value for v in vals)))
    if sampler is not None:
        sampler.stop()
    totals = collector.stop() if collector is not None else {}
    writer.close()
    res.update(count_events(os.path.join(a.rundir, "events.jsonl")))
    res["dropped"] = int(totals.get("dropped", 0) or 0)  # CUPTI records lost (collector totals)
    tdir = os.environ.get("KVSCOPE_TRACE_DIR")
    # Without a collector ("lib"), the trace files' size still shows the library wrote records.
    res["trace_file_bytes"] = sum(os.path.getsize(os.path.join(tdir, n)) for n in os.listdir(tdir)) if tdir and os.path.isdir(tdir) else 0
    res["worker_wall_s"] = time.perf_counter() - t_start
    with open(os.path.join(a.rundir, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("config", "eager", "graph", "xfers", "gpu_samples")}))
    return 0


# --------------------------------------------------------------------------------- the parent


def build_tracer(out: str) -> str:
    env = dict(os.environ, PYTHONPATH=AGENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "kvscope_agent", "build-tracer", "--out", os.path.join(out, "tracer")],
                       env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"build-tracer failed (rc {p.returncode}): {p.stderr.strip()}")
    return p.stdout.strip().splitlines()[-1]


def summarise(results: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {c: [r for r in results if r.get("config") == c and "eager" in r] for c in configs}
    summary: dict[str, Any] = {}
    for mode in ("eager", "graph"):
        off = {r["round"]: r[mode]["ms_per_step"] for r in by.get("off", []) if r.get(mode)}
        off_med = statistics.median(off.values()) if off else None
        for c in configs:
            vals = [r[mode]["ms_per_step"] for r in by[c] if r.get(mode)]
            if not vals:
                continue
            paired = [r[mode]["ms_per_step"] / off[r["round"]] for r in by[c] if r.get(mode) and r["round"] in off]
            p99 = [r[mode]["step_p99_ms"] for r in by[c] if r.get(mode)]
            summary.setdefault(c, {})[mode] = {
                "n": len(vals), "median_ms": statistics.median(vals), "min_ms": min(vals), "max_ms": max(vals),
                "step_p99_median_ms": statistics.median(p99),
                "ratio_of_medians": statistics.median(vals) / off_med if off_med else None,
                "paired_ratio_median": statistics.median(paired) if paired else None,
                "paired_ratio_min": min(paired) if paired else None,
                "paired_ratio_max": max(paired) if paired else None,
            }
        for c in configs:
            rs = by[c]
            if rs:
                summary.setdefault(c, {})["checks"] = {
                    "xfers_per_run": sorted({r["xfers"] for r in rs}), "gpu_samples_per_run": sorted({r["gpu_samples"] for r in rs}),
                    "tracer_loaded": all(r["tracer_loaded"] for r in rs) if c in TRACED else None,
                    "dropped": sum(r["dropped"] for r in rs),
                    "trace_file_bytes_per_run": sorted({r["trace_file_bytes"] for r in rs}),
                    "pool_per_run": [r.get("pool") for r in rs]}
    return summary


def table(summary: dict[str, Any], configs: list[str]) -> str:
    def f(v: Any, p: int = 3) -> str:
        return "-" if v is None else f"{v:.{p}f}"

    lines = ["| config | mode | n | median ms/step | min | max | p99 step ms | median/off median | paired ratio median (min-max) | xfers/run | gpu samples/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        s = summary.get(c, {})
        for mode in ("eager", "graph"):
            m = s.get(mode)
            if not m:
                continue
            ck = s.get("checks", {})
            lines.append(f"| {c} | {mode} | {m['n']} | {f(m['median_ms'])} | {f(m['min_ms'])} | {f(m['max_ms'])} | "
                         f"{f(m['step_p99_median_ms'])} | {f(m['ratio_of_medians'], 4)} | {f(m['paired_ratio_median'], 4)} "
                         f"({f(m['paired_ratio_min'], 4)}-{f(m['paired_ratio_max'], 4)}) | {ck.get('xfers_per_run')} | {ck.get('gpu_samples_per_run')} |")
    return "\n".join(lines)


def parent(a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in ALL_CONFIGS]
    if bad or "off" not in configs:
        print(f"--configs: unknown {bad} or no 'off' (known: {', '.join(ALL_CONFIGS)})", file=sys.stderr)
        return 2
    lib = None
    if a.device == "cuda" and TRACED & set(configs):
        lib = a.lib or build_tracer(a.out)
    info = {"argv": sys.argv[1:], "lib": lib, "device": a.device, "configs": configs, "budget_s": a.budget_s,
            "step": f"{a.layers} layers x ~25 launches + 7 (~{a.layers * 25 + 7} launches), batch 4, hidden {a.hidden}, inner {a.inner}"}
    results: list[dict[str, Any]] = []
    last_round_s = 0.0
    stopped = None
    for rnd in range(a.reps):
        if rnd > 0 and time.monotonic() - t0 + last_round_s > a.budget_s:
            stopped = f"stopped before round {rnd + 1}: {last_round_s:.0f} s more would pass the {a.budget_s} s budget"
            break
        r0 = time.monotonic()
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for c in order:
            rundir = os.path.join(a.out, "runs", f"{c}-r{rnd + 1}")
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            for k in ("CUDA_INJECTION64_PATH", "KVSCOPE_TRACE_DIR", "KVSCOPE_TRACE_FLUSH_MS", "KVSCOPE_TRACE_POOL",
                      "KVSCOPE_TRACE_GRAPH_LEVEL", "KVSCOPE_TRACE_MEMSET"):
                env.pop(k, None)
            if c in TRACED and lib:
                env["CUDA_INJECTION64_PATH"] = lib
                env["KVSCOPE_TRACE_DIR"] = os.path.join(rundir, "trace")
                os.makedirs(env["KVSCOPE_TRACE_DIR"], exist_ok=True)
                if c == "trace200":
                    env["KVSCOPE_TRACE_FLUSH_MS"] = "200"
                if c == "tracenopool":
                    env["KVSCOPE_TRACE_POOL"] = "0"  # the library as before its buffer pool
                if c == "tracegraph":
                    env["KVSCOPE_TRACE_GRAPH_LEVEL"] = "1"  # graphs traced whole (the default since 2026-11-28c)
                if c == "tracenodes":
                    env["KVSCOPE_TRACE_GRAPH_LEVEL"] = "0"  # every graph node traced (the default before)
                if c == "tracenomemset":
                    env["KVSCOPE_TRACE_MEMSET"] = "0"
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", c, "--rundir", rundir, "--device", a.device,
                   "--steps", str(a.steps), "--graph-steps", str(a.graph_steps), "--warmup", str(a.warmup),
                   "--layers", str(a.layers), "--hidden", str(a.hidden), "--inner", str(a.inner), "--sample-ms", str(a.sample_ms)]
            log = os.path.join(a.out, "logs", f"{c}-r{rnd + 1}.log")
            w0 = time.monotonic()
            with open(log, "w") as lf:
                try:
                    rc = subprocess.run(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, timeout=a.worker_timeout_s).returncode
                except subprocess.TimeoutExpired:
                    rc = 124
            rec: dict[str, Any] = {"config": c, "round": rnd + 1, "rc": rc, "wall_s": time.monotonic() - w0}
            try:
                with open(os.path.join(rundir, "result.json")) as f:
                    rec.update(json.load(f))
                rec["round"] = rnd + 1
            except (OSError, ValueError) as e:
                rec["error"] = f"no result ({e}); see logs/{c}-r{rnd + 1}.log"
            # A traced/sampled run that did not trace/sample would pass off as "no overhead".
            if a.device == "cuda" and "error" not in rec:
                missing = ([] if c not in TRACED or rec.get("tracer_loaded") else ["the CUPTI library was not tracing"]) + (
                    [] if c not in SAMPLED or rec.get("sampler") else ["the sampler did not start"])
                if missing:
                    rec["error"] = "; ".join(missing) + " in the worker"
            results.append(rec)
            eg = rec.get("eager") or {}
            gr = rec.get("graph") or {}
            print(f"round {rnd + 1} {c:8s} rc={rc} eager={eg.get('ms_per_step', float('nan')):.3f} ms/step "
                  f"graph={gr.get('ms_per_step', float('nan')):.3f} ms/step xfers={rec.get('xfers')} "
                  f"samples={rec.get('gpu_samples')} wall={rec['wall_s']:.1f}s", flush=True)
        last_round_s = time.monotonic() - r0
    summary = summarise(results, configs)
    info.update(total_wall_s=time.monotonic() - t0, stopped=stopped, rounds_done=max([r["round"] for r in results] or [0]))
    with open(os.path.join(a.out, "tracer-overhead-micro.json"), "w") as f:
        json.dump({"info": info, "summary": summary, "runs": results}, f, indent=1)
    md = [f"# Tracing overhead microbenchmark ({a.device})", "", "```", json.dumps(info, indent=1), "```", "",
          "ms per step = wall time of the whole loop (ending in a sync) / steps; paired ratio = the config's run / "
          "the off run of the same round.", "", table(summary, configs), ""]
    failed = [r for r in results if r.get("rc") != 0 or "error" in r]
    if failed:
        md += ["Failed workers: " + ", ".join(f"{r['config']}-r{r['round']} rc={r.get('rc')} {r.get('error', '')}" for r in failed), ""]
    with open(os.path.join(a.out, "tracer-overhead-micro.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    return 1 if failed or not results else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="results folder (parent mode)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu = dry run of the harness, no tracer")
    p.add_argument("--configs", default="off,trace,sample,on", help=f"comma list of {', '.join(ALL_CONFIGS)}")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=105.0, help="no new round starts that would pass this")
    p.add_argument("--steps", type=int, default=100, help="eager steps measured per worker")
    p.add_argument("--graph-steps", type=int, default=200, help="graph replays measured per worker")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--layers", type=int, default=40, help="~25 launches each; 40 = ~1,000 a step")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--inner", type=int, default=1024)
    p.add_argument("--sample-ms", type=int, default=100)
    p.add_argument("--lib", help="an already built libkvscope_cupti (default: build-tracer into OUT/tracer)")
    p.add_argument("--worker-timeout-s", type=float, default=60.0)
    p.add_argument("--worker", choices=ALL_CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--rundir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    if not a.out:
        p.error("--out DIR is required")
    return parent(a)


if __name__ == "__main__":
    sys.exit(main())
