#!/usr/bin/env python3
"""The disk tier side by side (bench/gpu/disk-tier.sh): four runs of one workload, GPU-only (a GPU
pool for every user), +host (a GPU pool for 2 users and a host pool too small for the rest), +host+disk
(the same with a disk tier behind the host pool) and recompute (the 2-user GPU pool alone), read from
RUNS/<config>/events.jsonl into one table:

- E2E and mean / p50 / p99 TTFT of each config (the timed rounds, from run.end's summary);
- every request's `ttft_parts` against its measured TTFT (first_token.t − queued.t): the parts must
  sum to it within 2% (target), and the worst gap is shown;
- the disk tier's promotion bandwidth (its f2h reads in the timed rounds: bytes over their summed
  durations) against the plain sequential read the same run measured in setup by the same method
  (run.end summary.disk), target 80%; its spill writes against the plain write likewise (shown).

Usage: disk-tier-results.py RUNS --out DIR [--card NAME] [--command CMD]
Writes DIR/disk-tier-results.md and DIR/disk-tier-results.json; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentlog import Req, iter_events, note_req  # noqa: E402

CONFIGS = (("gpu-only", "GPU-only"), ("host", "+host"), ("host-disk", "+host+disk"), ("recompute", "recompute"))
PARTS_TOLERANCE = 0.02  # the parts sum to the measured TTFT within 2%
PROMOTE_TARGET = 0.80  # promotion bandwidth at least 80% of the plain sequential read


@dataclass
class PartsReq(Req):
    parts: dict[str, Any] | None = None


@dataclass
class Run:
    name: str
    start: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    status: str = "missing"
    reqs: dict[tuple[int, int], PartsReq] = field(default_factory=dict)
    xfers: list[dict[str, Any]] = field(default_factory=list)
    rounds: tuple[int | None, int | None] = (None, None)


def parts_sum(p: dict[str, Any]) -> int:
    return int(p["queued_ns"]) + int(p["other_ns"]) + sum(int(p[k]["ns"]) for k in ("host_reload", "disk_promote", "recompute"))


def read_run(path: str, name: str) -> Run:
    run = Run(name)
    if not os.path.exists(path):
        return run
    begin = end = None
    for e in iter_events(path):
        typ = e.get("type")
        if typ == "run.start":
            run.start = e
        elif typ == "req":
            r = note_req(run.reqs, e, PartsReq)
            if e["phase"] == "first_token":
                r.parts = e.get("ttft_parts")
        elif typ == "xfer" and e.get("source") == "engine":
            run.xfers.append(e)
        elif typ == "phase" and e.get("name") == "rounds":
            if e.get("state") == "begin":
                begin = e["t"]
            else:
                end = e["t"]
        elif typ == "run.end":
            run.status = e.get("status", "?")
            run.summary = e.get("summary") or {}
    run.rounds = (begin, end)
    return run


def parts_check(run: Run) -> dict[str, Any]:
    """Every request with a first token: its parts' sum against its measured TTFT."""
    n = within = 0
    worst_ns = 0
    worst_rel = 0.0
    missing = 0
    for r in run.reqs.values():
        if not r.first or not r.queued:
            continue
        n += 1
        if r.parts is None:
            missing += 1
            continue
        gap = abs(parts_sum(r.parts) - r.ttft)
        rel = gap / r.ttft if r.ttft > 0 else (0.0 if gap == 0 else 1.0)
        within += rel <= PARTS_TOLERANCE
        worst_ns = max(worst_ns, gap)
        worst_rel = max(worst_rel, rel)
    return {"requests": n, "within_2pct": within, "without_parts": missing, "worst_gap_ns": worst_ns,
            "worst_gap_rel": worst_rel, "result": "not measured" if n == 0 else "PASS" if within == n else "FAIL"}


def tier_means(run: Run) -> dict[str, Any]:
    """Mean TTFT parts over the timed rounds (ms), where the TTFT went on average."""
    rows = [r.parts for r in run.reqs.values() if r.round >= 1 and r.parts is not None]
    if not rows:
        return {}

    def mean(get: Any) -> float:
        return round(sum(get(p) for p in rows) / len(rows) / 1e6, 2)

    return {
        "queued_ms": mean(lambda p: p["queued_ns"]),
        "disk_promote_ms": mean(lambda p: p["disk_promote"]["ns"]),
        "host_reload_ms": mean(lambda p: p["host_reload"]["ns"]),
        "recompute_ms": mean(lambda p: p["recompute"]["ns"]),
        "other_ms": mean(lambda p: p["other_ns"]),
    }


def io_rate(run: Run, direction: str) -> tuple[int, int]:
    """(bytes, summed ns) of the engine's file transfers one way during the timed rounds."""
    lo, hi = run.rounds
    nbytes = ns = 0
    for x in run.xfers:
        if x.get("dir") != direction:
            continue
        start = x.get("start")
        if lo is not None and isinstance(start, int) and (start < lo or (hi is not None and start > hi)):
            continue
        nbytes += int(x["bytes"])
        ns += max(0, int(x["end"]) - int(x["start"]))
    return nbytes, ns


def disk_check(run: Run) -> dict[str, Any]:
    disk = run.summary.get("disk") or {}
    out: dict[str, Any] = {"fs": disk.get("path_fs"), "io": disk.get("io"), "io_reason": disk.get("io_reason"),
                           "spill_off": disk.get("spill_off"), "plain_error": disk.get("plain_error")}
    for direction, plain_key, label in (("f2h", "plain_read_bytes_per_s", "promote"), ("h2f", "plain_write_bytes_per_s", "spill")):
        nbytes, ns = io_rate(run, direction)
        plain = disk.get(plain_key)
        rate = nbytes * 1e9 / ns if ns > 0 else None
        out[label] = {"bytes": nbytes, "bytes_per_s": round(rate) if rate else None, "plain_bytes_per_s": plain,
                      "ratio": round(rate / plain, 3) if rate and plain else None}
    p = out["promote"]
    out["result"] = ("not measured" if p["ratio"] is None else "PASS" if p["ratio"] >= PROMOTE_TARGET else "FAIL")
    return out


def gb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e9:.2f}"


def ms(ns: float | None) -> str:
    return "—" if ns is None else f"{ns / 1e6:.1f}"


def sec(ns: float | None) -> str:
    return "—" if ns is None else f"{ns / 1e9:.1f}"


def report(runs: dict[str, Run], card: str, command: str) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"card": card, "command": command, "configs": {}}
    lines = [f"# Disk tier side by side ({card})", "", f"Command: `{command}`", ""]
    base = runs["recompute"].summary.get("e2e_ns")
    lines += ["| config | status | E2E s | TTFT mean ms | p50 | p99 | vs recompute E2E | blocks on/off/spill/promote | "
              "mean TTFT parts ms (queued / disk / host / recompute / other) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, label in CONFIGS:
        r = runs[key]
        s = r.summary
        parts = tier_means(r)
        e2e = s.get("e2e_ns")
        cfg = r.start.get("config", {})
        data["configs"][key] = {
            "status": r.status, "e2e_ns": e2e, "ttft_ns_mean": s.get("ttft_ns_mean"), "ttft_ns_p50": s.get("ttft_ns_p50"),
            "ttft_ns_p99": s.get("ttft_ns_p99"), "users": cfg.get("users"), "gpu_kv_bytes": s.get("gpu_kv_bytes"),
            "host_kv_bytes": cfg.get("host_kv_bytes"), "disk_kv_bytes": cfg.get("disk_kv_bytes"),
            "blocks": {k: s.get(k) for k in ("blocks_onboarded", "blocks_offloaded", "blocks_spilled", "blocks_promoted")},
            "ttft_parts_mean_ms": parts, "ttft_parts_check": parts_check(r),
        }
        vs = f"{base / e2e:.2f}×" if e2e and base else "—"
        b = data["configs"][key]["blocks"]
        moved = "/".join(str(b[k] if b[k] is not None else "—") for k in ("blocks_onboarded", "blocks_offloaded",
                                                                            "blocks_spilled", "blocks_promoted"))
        split = " / ".join(str(parts.get(k, "—")) for k in ("queued_ms", "disk_promote_ms", "host_reload_ms",
                                                             "recompute_ms", "other_ms"))
        lines.append(f"| {label} | {r.status} | {sec(e2e)} | {ms(s.get('ttft_ns_mean'))} | "
                     f"{ms(s.get('ttft_ns_p50'))} | {ms(s.get('ttft_ns_p99'))} | {vs} | {moved} | {split} |")
    lines += ["", "## Checks", ""]
    for key, label in CONFIGS:
        c = data["configs"][key]["ttft_parts_check"]
        lines.append(f"- TTFT parts sum to the measured TTFT within 2%, {label}: **{c['result']}** — "
                     f"{c['within_2pct']} of {c['requests']} requests (worst gap {c['worst_gap_ns']} ns, "
                     f"{c['worst_gap_rel'] * 100:.3f}%; {c['without_parts']} without parts)")
    d = disk_check(runs["host-disk"])
    data["disk"] = d
    pr, sp = d["promote"], d["spill"]
    lines.append(f"- Disk promotion bandwidth at least 80% of the plain sequential read (same run, same method: "
                 f"{d['io']}, {d['fs']}): **{d['result']}** — promotion {gb(pr['bytes_per_s'])} GB/s over "
                 f"{gb(pr['bytes'])} GB in the timed rounds, plain read {gb(pr['plain_bytes_per_s'])} GB/s"
                 + (f" ({pr['ratio'] * 100:.0f}%)" if pr["ratio"] is not None else ""))
    lines.append(f"- Spill writes {gb(sp['bytes_per_s'])} GB/s over {gb(sp['bytes'])} GB in the timed rounds (the window's "
                 f"Summary counts the whole run, round 0 too), plain write "
                 f"{gb(sp['plain_bytes_per_s'])} GB/s" + (f" ({sp['ratio'] * 100:.0f}%)" if sp["ratio"] is not None else ""))
    if d["io"] != "o_direct":
        lines.append(f"- The disk tier ran buffered ({d['io_reason']}): its rates go through the page cache, "
                     "dropped after each transfer (fadvise DONTNEED)")
    if d["fs"] == "tmpfs":
        lines.append("- The disk tier's folder is on tmpfs (memory): no disk was measured")
    if d["spill_off"]:
        lines.append(f"- Spilling stopped during the run: {d['spill_off']}")
    if d["plain_error"]:
        lines.append(f"- The plain measurement failed: {d['plain_error']}")
    return "\n".join(lines) + "\n", data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs")
    p.add_argument("--out", required=True)
    p.add_argument("--card", default="unknown card")
    p.add_argument("--command", default="bash bench/gpu/disk-tier.sh")
    a = p.parse_args(argv)
    runs = {key: read_run(os.path.join(a.runs, key, "events.jsonl"), key) for key, _ in CONFIGS}
    text, data = report(runs, a.card, a.command)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "disk-tier-results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "disk-tier-results.json"), "w") as f:
        json.dump(data, f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
