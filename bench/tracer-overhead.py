"""Tracing overhead from event logs: tracing + sampling overhead (on/off pairs), the achieved
telemetry sample rate, dropped CUPTI records, and docs/protocol.md "Transfers and blocks agree".

usage: python3 bench/tracer-overhead.py RUNS_DIR [--out results.md] [--json results.json]
         [--command "..."] [--note "..."]

RUNS_DIR holds pair-<n>/on/events.jsonl and pair-<n>/off/events.jsonl (bench/gpu/tracer-overhead.sh makes
them). Everything is computed from the logs; nothing is typed in.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
from typing import Any

DROPPED_RE = re.compile(r"transfer trace: .*; dropped (\d+)")


def load(path: str) -> list[dict[str, Any]]:
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                events.append(json.loads(line))
    return events


def phase_window(events: list[dict[str, Any]], name: str) -> tuple[int | None, int | None]:
    begin = end = None
    for e in events:
        if e["type"] == "phase" and e["name"] == name:
            if e["state"] == "begin" and begin is None:
                begin = e["t"]
            elif e["state"] == "end":
                end = e["t"]
    return begin, end


def agreement(events: list[dict[str, Any]]) -> dict[str, Any]:
    """During `rounds`: cupti h2d bytes vs onboarded blocks × block_bytes, d2h vs offloaded.

    Copies are placed in the window by their own `start` (run clock); blocks lines by `t`. The
    position-based count (what check_log does: xfer lines between the phase lines) is reported
    beside it, since the collector writes a copy up to ~0.2 s after it happened."""
    begin, end = phase_window(events, "rounds")
    pools = {e["pool"]: e for e in events if e["type"] == "pool"}
    if begin is None or end is None or "gpu" not in pools:
        return {"error": "no rounds phase or no gpu pool line"}
    bb = int(pools["gpu"]["block_bytes"])
    blocks = {"onboard": 0, "offload": 0}
    by_time = {"h2d": 0, "d2h": 0}
    n_copies = {"h2d": 0, "d2h": 0}
    small = {"h2d": 0, "d2h": 0}
    engine = {"h2d": 0, "d2h": 0}
    by_position = {"h2d": 0, "d2h": 0}
    in_rounds = False
    for e in events:
        typ = e["type"]
        if typ == "phase" and e["name"] == "rounds":
            in_rounds = e["state"] == "begin"
        elif typ == "blocks" and e["op"] in blocks and begin <= e["t"] <= end:
            blocks[e["op"]] += len(e["ids"])
        elif typ == "xfer" and e["dir"] in by_time:
            if e["source"] == "engine" and begin <= e["start"] <= end:
                engine[e["dir"]] += e["bytes"]
            if e["source"] != "cupti":
                continue
            if in_rounds:
                by_position[e["dir"]] += e["bytes"]
            if begin <= e["start"] <= end:
                by_time[e["dir"]] += e["bytes"]
                n_copies[e["dir"]] += 1
                if e["bytes"] < bb:
                    small[e["dir"]] += e["bytes"]
    out: dict[str, Any] = {"block_bytes": bb, "rounds_s": (end - begin) / 1e9}
    for op, d in (("onboard", "h2d"), ("offload", "d2h")):
        need = blocks[op] * bb
        out[d] = {
            f"blocks_{op}ed": blocks[op],
            "block_bytes_total": need,
            "cupti_bytes": by_time[d],
            "cupti_copies": n_copies[d],
            "excess_bytes": by_time[d] - need,
            "copies_smaller_than_a_block_bytes": small[d],
            "cupti_bytes_by_line_position": by_position[d],
            "engine_reported_bytes": engine[d],
            "covers": by_time[d] >= need,
        }
    return out


def run_metrics(path: str) -> dict[str, Any]:
    events = load(path)
    end = next((e for e in events if e["type"] == "run.end"), None)
    start = next((e for e in events if e["type"] == "run.start"), None)
    m: dict[str, Any] = {"path": path, "events": len(events)}
    if start:
        m["card"] = ", ".join(g.get("name") or "?" for g in start["host"].get("gpus", []))
        m["config"] = start["config"]
        m["capabilities"] = start.get("capabilities")
    if end:
        m["status"] = end["status"]
        s = end.get("summary") or {}
        m["e2e_ns"] = s.get("e2e_ns")
        m["ttft_ns_mean"] = s.get("ttft_ns_mean")
        m["ttft_ns_p50"] = s.get("ttft_ns_p50")
        m["blocks_onboarded"] = s.get("blocks_onboarded")
        m["blocks_offloaded"] = s.get("blocks_offloaded")
        m["wall_s"] = end["t"] / 1e9
    gpu = [e for e in events if e["type"] == "gpu"]
    rates = {}
    for idx in sorted({e["index"] for e in gpu}):
        ts = [e["t"] for e in gpu if e["index"] == idx]
        gaps = [(b - a) / 1e6 for a, b in zip(ts, ts[1:])]
        span = (ts[-1] - ts[0]) / 1e9 if len(ts) > 1 else 0
        rates[idx] = {
            "samples": len(ts),
            "per_s": (len(ts) - 1) / span if span > 0 else None,
            "gap_ms_median": statistics.median(gaps) if gaps else None,
            "gap_ms_max": max(gaps) if gaps else None,
            "with_pcie": sum(1 for e in gpu if e["index"] == idx and "pcie_rx_bytes_per_s" in e),
            "sources": sorted({e["source"] for e in gpu if e["index"] == idx}),
        }
    m["telemetry"] = rates
    dropped = [int(x.group(1)) for e in events if e["type"] == "log"
               for x in [DROPPED_RE.search(e["msg"])] if x]
    m["dropped"] = sum(dropped) if dropped else None
    m["cupti_xfers"] = sum(1 for e in events if e["type"] == "xfer" and e["source"] == "cupti")
    m["warnings"] = [e["msg"] for e in events if e["type"] == "log" and e["level"] in ("warn", "error")]
    if m["cupti_xfers"]:
        m["agreement"] = agreement(events)
    return m


def spread(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2], "n": len(s)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir")
    ap.add_argument("--out")
    ap.add_argument("--json")
    ap.add_argument("--command", default="")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    pairs = []
    for d in sorted(glob.glob(os.path.join(args.runs_dir, "pair-*")),
                    key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0)):
        on, off = os.path.join(d, "on", "events.jsonl"), os.path.join(d, "off", "events.jsonl")
        if os.path.isfile(on) and os.path.isfile(off):
            pairs.append((os.path.basename(d), run_metrics(on), run_metrics(off)))
    ok = [(n, a, b) for n, a, b in pairs if a.get("status") == "ok" and b.get("status") == "ok"
          and a.get("e2e_ns") and b.get("e2e_ns")]
    e2e = [a["e2e_ns"] / b["e2e_ns"] for _, a, b in ok]
    ttft = [a["ttft_ns_mean"] / b["ttft_ns_mean"] for _, a, b in ok
            if a.get("ttft_ns_mean") and b.get("ttft_ns_mean")]
    # Attribution runs (bench/gpu/tracer-overhead.sh CONFIGS="off trace sample traceslow on"): tracing only,
    # sampling only, tracing with slower flush/poll, each against the same pair's untraced run.
    by_config: dict[str, dict[str, Any]] = {}
    for cfg in ("trace", "sample", "smi", "traceslow"):
        e2e_c, ttft_c = [], []
        for d in glob.glob(os.path.join(args.runs_dir, "pair-*")):
            a_path, b_path = os.path.join(d, cfg, "events.jsonl"), os.path.join(d, "off", "events.jsonl")
            if not (os.path.isfile(a_path) and os.path.isfile(b_path)):
                continue
            a, b = run_metrics(a_path), run_metrics(b_path)
            if a.get("status") == "ok" and b.get("status") == "ok" and a.get("e2e_ns") and b.get("e2e_ns"):
                e2e_c.append(a["e2e_ns"] / b["e2e_ns"])
                if a.get("ttft_ns_mean") and b.get("ttft_ns_mean"):
                    ttft_c.append(a["ttft_ns_mean"] / b["ttft_ns_mean"])
        if e2e_c:
            by_config[cfg] = {"e2e_ratio": spread(e2e_c), "ttft_ratio": spread(ttft_c) if ttft_c else None}
    result: dict[str, Any] = {
        "by_config": by_config,
        "pairs_found": len(pairs),
        "pairs_ok": len(ok),
        "e2e_ratio": spread(e2e) if e2e else None,
        "ttft_ratio": spread(ttft) if ttft else None,
        "runs": [{"pair": n, "on": a, "off": b} for n, a, b in pairs],
    }
    lines = ["# Tracing on the GPU: tracing + telemetry overhead, sample rate, drops, agreement", ""]
    card = next((a.get("card") for _, a, _ in pairs if a.get("card")), "?")
    cfg = next((a.get("config") for _, a, _ in pairs if a.get("config")), {}) or {}
    lines += [f"- card: {card}", f"- command: `{args.command}`" if args.command else "- command: (see bench/gpu/tracer-overhead.sh)",
              "- config: " + ", ".join(f"{k}={cfg.get(k)}" for k in
                                        ("model", "users", "rounds", "context_tokens", "gpu_kv_bytes",
                                         "host_kv_bytes", "block_tokens") if k in cfg)]
    lines += [f"- note: {n}" for n in args.note]
    lines += ["", f"Pairs: {len(ok)} complete of {len(pairs)} (on = tracing + 100 ms sampling, off = "
              "`--trace off --sample-ms 0`; order alternates by pair).", ""]

    def fmt(sp: dict[str, float] | None) -> str:
        if not sp:
            return "n/a"
        return (f"median {sp['median']:.4f} (min {sp['min']:.4f}, q1 {sp['q1']:.4f}, "
                f"q3 {sp['q3']:.4f}, max {sp['max']:.4f}, n={sp['n']})")

    lines += [f"- E2E ratio on/off: {fmt(result['e2e_ratio'])} — target ≤ 1.02",
              f"- TTFT (mean) ratio on/off: {fmt(result['ttft_ratio'])} — target ≤ 1.02"]
    for cfg, label in (("trace", "tracing only"), ("sample", "sampling only"),
                       ("smi", "sampling without PCIe reads"),
                       ("traceslow", "tracing only, flush and poll at 200 ms")):
        if cfg in by_config:
            lines += [f"- E2E ratio {label}/off: {fmt(by_config[cfg]['e2e_ratio'])}",
                      f"- TTFT (mean) ratio {label}/off: {fmt(by_config[cfg]['ttft_ratio'])}"]
    lines += [""]
    lines += ["| pair | E2E on s | E2E off s | ratio | TTFT on ms | TTFT off ms | ratio | samples/s | dropped | cupti xfers |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for n, a, b in pairs:
        rate = ", ".join(f"{v['per_s']:.2f}" for v in (a.get("telemetry") or {}).values() if v["per_s"])
        def s(v: Any, scale: float) -> str:
            return f"{v / scale:.3f}" if isinstance(v, (int, float)) else "n/a"
        r1 = a["e2e_ns"] / b["e2e_ns"] if a.get("e2e_ns") and b.get("e2e_ns") else None
        r2 = a["ttft_ns_mean"] / b["ttft_ns_mean"] if a.get("ttft_ns_mean") and b.get("ttft_ns_mean") else None
        lines.append(
            f"| {n} | {s(a.get('e2e_ns'), 1e9)} | {s(b.get('e2e_ns'), 1e9)} | {s(r1, 1)} | "
            f"{s(a.get('ttft_ns_mean'), 1e6)} | {s(b.get('ttft_ns_mean'), 1e6)} | {s(r2, 1)} | "
            f"{rate or 'n/a'} | {a.get('dropped')} | {a.get('cupti_xfers')} |"
        )
    lines += ["", "## Telemetry (traced runs)", ""]
    for n, a, _ in pairs:
        for idx, v in (a.get("telemetry") or {}).items():
            lines.append(f"- {n} GPU {idx}: {v['samples']} samples, {v['per_s'] and round(v['per_s'], 2)}/s, "
                         f"gap median {v['gap_ms_median']} ms, max {v['gap_ms_max']} ms, "
                         f"{v['with_pcie']} with PCIe rx/tx, sources {v['sources']}")
    lines += ["", "## Transfers and blocks agree (during `rounds`, copies placed by their start time)", "",
              "| pair | dir | blocks | blocks × block_bytes | cupti bytes | excess | copies < 1 block (bytes) | by line position | engine-reported | covers |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for n, a, _ in pairs:
        ag = a.get("agreement") or {}
        for d in ("h2d", "d2h"):
            x = ag.get(d)
            if not x:
                continue
            nblk = x.get("blocks_onboarded", x.get("blocks_offloaded"))
            lines.append(f"| {n} | {d} | {nblk} | {x['block_bytes_total']} | {x['cupti_bytes']} | "
                         f"{x['excess_bytes']} | {x['copies_smaller_than_a_block_bytes']} | "
                         f"{x['cupti_bytes_by_line_position']} | {x['engine_reported_bytes']} | {x['covers']} |")
    warns = sorted({w for _, a, _ in pairs for w in a.get("warnings", [])})
    if warns:
        lines += ["", "## Warnings in the traced runs", ""] + [f"- {w}" for w in warns[:20]]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=str)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
