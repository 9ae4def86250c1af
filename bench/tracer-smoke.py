"""GPU smoke test of the transfer tracer and the telemetry sampler (run by bench/gpu/smoke-tracer.sh).

Runs in a process started with CUDA_INJECTION64_PATH and KVSCOPE_TRACE_DIR already set, as the
agent's `run` does: known copies (pinned/pageable H2D and D2H, D2D, 512 block-sized H2D copies,
and a spawned child process's copies), the agent's collector tailing the trace files and the
agent's sampler running, all into one events.jsonl. Then it checks what came back against what
was copied and prints a JSON summary.

usage: python3 bench/tracer-smoke.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent"))

from kvscope_agent import telemetry  # noqa: E402
from kvscope_agent.clock import RunClock  # noqa: E402
from kvscope_agent.emit import EventWriter  # noqa: E402
from kvscope_agent.tracer import collector  # noqa: E402

MIB = 1 << 20


def child_copies(n: int, size: int) -> None:
    import torch

    src = torch.ones(size // 4, dtype=torch.float32)  # pageable
    dst = torch.empty_like(src, device="cuda")
    for _ in range(n):
        dst.copy_(src)
    torch.cuda.synchronize()


def main(out: str) -> int:
    import torch
    import torch.multiprocessing as mp

    os.makedirs(out, exist_ok=True)
    trace_dir = os.environ["KVSCOPE_TRACE_DIR"]
    clock = RunClock()
    writer = EventWriter(os.path.join(out, "smoke-events.jsonl"), clock)
    col = collector.start_collector(writer, clock, trace_dir)
    sampler = telemetry.start_sampler(writer, clock, [0], 100)
    expected = {"h2d": 0, "d2h": 0, "d2d": 0}
    counts = {"h2d": 0, "d2h": 0, "d2d": 0}
    timings: dict[str, float] = {}

    torch.cuda.init()
    t_begin = clock.now()
    big = 256 * MIB
    host_pinned = torch.empty(big, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(big, dtype=torch.uint8, device="cuda")
    dev2 = torch.empty(big, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    t_copies = clock.now()
    for _ in range(4):
        dev.copy_(host_pinned, non_blocking=True)
        expected["h2d"] += big
        counts["h2d"] += 1
    for _ in range(4):
        host_pinned.copy_(dev, non_blocking=True)
        expected["d2h"] += big
        counts["d2h"] += 1
    small = 64 * MIB
    pageable = torch.empty(small, dtype=torch.uint8)
    for _ in range(2):
        dev[:small].copy_(pageable)
        pageable.copy_(dev[:small])
        expected["h2d"] += small
        expected["d2h"] += small
        counts["h2d"] += 1
        counts["d2h"] += 1
    for _ in range(2):
        dev2.copy_(dev)
        expected["d2d"] += big
        counts["d2d"] += 1
    # 512 block-sized copies from a pinned pool, as the engine onboards blocks.
    block = 2 * MIB
    pool = torch.empty((512, block), dtype=torch.uint8, pin_memory=True)
    dst = torch.empty((512, block), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    start_ev = torch.cuda.Event(enable_timing=True)
    end_ev = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        start_ev.record()
        for i in range(512):
            dst[i].copy_(pool[i], non_blocking=True)
        end_ev.record()
    stream.synchronize()
    timings["blocks_cuda_events_s"] = start_ev.elapsed_time(end_ev) / 1000
    expected["h2d"] += 512 * block
    counts["h2d"] += 512
    # Sustained pinned H2D for ~1.5 s, so PCIe rx samples can be set against a known rate.
    torch.cuda.synchronize()
    s_begin = clock.now()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 1.5:
        dev.copy_(host_pinned, non_blocking=True)
        n += 1
        if n % 4 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    sustained_s = time.perf_counter() - t0
    s_end = clock.now()
    expected["h2d"] += n * big
    counts["h2d"] += n
    timings["sustained_h2d_gbps"] = n * big / sustained_s / 1e9
    # A spawned child: its copies must land in its own trace file.
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=child_copies, args=(10, 8 * MIB))
    p.start()
    p.join(60)
    child_ok = p.exitcode == 0
    expected["h2d"] += 10 * 8 * MIB
    counts["h2d"] += 10
    torch.cuda.synchronize()
    t_end = clock.now()

    live_xfers = col.totals.xfers if col else 0  # seen before stop(): the periodic flush works
    totals = col.stop() if col else {}
    tele = sampler.stop() if sampler else {}
    writer.close()

    print(f"collector: {totals}", flush=True)
    print(f"telemetry: {tele}", flush=True)
    print(f"child exit code: {p.exitcode}", flush=True)
    events = [json.loads(line) for line in open(os.path.join(out, "smoke-events.jsonl"))]
    xfers = [e for e in events if e["type"] == "xfer"]
    gpu = [e for e in events if e["type"] == "gpu"]
    by_dir = {d: sum(x["bytes"] for x in xfers if x["dir"] == d) for d in ("h2d", "d2h", "d2d", "h2h")}
    cnt = {d: sum(1 for x in xfers if x["dir"] == d) for d in ("h2d", "d2h", "d2d", "h2h")}
    block_x = [x for x in xfers if x["dir"] == "h2d" and x["bytes"] == block]
    bw = [x["bytes"] / (x["end"] - x["start"]) for x in block_x if x["end"] > x["start"]]
    in_window = sum(1 for x in xfers if t_begin <= x["start"] <= x["end"] <= t_end)
    pids = sorted({x.get("pid") for x in xfers})
    during = [g for g in gpu if s_begin + 200_000_000 <= g["t"] <= s_end]
    rx = [g.get("pcie_rx_bytes_per_s") for g in during if g.get("pcie_rx_bytes_per_s")]
    t_gpu = [g["t"] for g in gpu]
    gaps = [(b - a) / 1e6 for a, b in zip(t_gpu, t_gpu[1:])]
    summary = {
        "expected_bytes": expected,
        "expected_counts_at_least": counts,
        "traced_bytes": by_dir,
        "traced_counts": cnt,
        "traced_minus_expected": {d: by_dir[d] - expected[d] for d in expected},
        "pids_seen": pids,
        "child_ok": child_ok,
        "xfers_inside_workload_window": f"{in_window}/{len(xfers)}",
        "xfers_seen_before_stop": live_xfers,
        "block_copies_traced": len(block_x),
        "block_copy_gbps_median_cupti": statistics.median(bw) if bw else None,
        "block_copies_cuda_events_s": timings["blocks_cuda_events_s"],
        "block_copies_span_cupti_s": (
            (max(x["end"] for x in block_x) - min(x["start"] for x in block_x)) / 1e9
            if block_x else None
        ),
        "sustained_h2d_gbps_torch": timings["sustained_h2d_gbps"],
        "pcie_rx_during_sustained_median": statistics.median(rx) if rx else None,
        "pcie_rx_over_copy_rate": (
            statistics.median(rx) / (timings["sustained_h2d_gbps"] * 1e9) if rx else None
        ),
        "collector_totals": totals,
        "telemetry": tele,
        "gpu_sample_gap_ms_median": statistics.median(gaps) if gaps else None,
        "gpu_sample_gap_ms_max": max(gaps) if gaps else None,
        "logs": [(e["level"], e["msg"]) for e in events if e["type"] == "log"],
    }
    with open(os.path.join(out, "smoke-summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
