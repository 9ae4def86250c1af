#!/usr/bin/env python3
"""The offload sweep's TTFT bound, request by request, on one agent log, three ways.

The target: service TTFT of a request whose blocks come back from host
    <= 1.15 x (onboarded bytes / plain pinned H2D + service TTFT of the same round on GPU).
bench/offload-sweep-results.py checks it over a whole sweep. This script takes one log and shows,
for every timed request that onboarded blocks, what "onboarded bytes" has to mean for the bound to
hold, and where the time went on the engine's copy stream:

  (a) own      the blocks this request onboarded (its `blocks` op=onboard lines)
  (b) window   every block onboarded for the requests whose prefill step gave this request its
               first token (they are admitted in the same step and their copies form one batch)
  (c) +offload (b) plus the offloads (engine `xfer` d2h) issued in that window, at plain D2H speed:
               the lazy policy offloads other users' blocks to make room at admission, on the same
               copy stream, before the onboard

The window of a request: from the earliest admission (its onboard line or `scheduled`) of any
request in its prefill step to its first token. Requests in one prefill step share the
first_token timestamp (one step, one clock reading). The timeline columns come from the engine's
own copy records (`xfer` source "engine": start/end on the run's clock), so the log must be the
first run of a sweep or come from an agent at 21227ab or later (earlier sweeps put later runs'
engine copy records on the first run's clock).

The on-GPU service TTFT is one number (--gpu-ttft-ms), not per round: the sweep's per-run logs
that held per-round values were lost for the 2026-11-28b session (see the results README).

    python3 bench/ttft-bound.py LOG.jsonl[.gz] --copy copy-baseline.json --gpu-ttft-ms 72.5

stdlib only; prints markdown.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agentlog  # noqa: E402


@dataclass
class Req(agentlog.Req):
    onboard_blocks: int = 0
    first_onboard_t: int | None = None  # t of this request's first onboard line at admission


def load(path: str) -> tuple[dict[str, Any], int, dict[tuple[int, int], Req], list[dict[str, Any]]]:
    opener = gzip.open if path.endswith(".gz") else open
    config: dict[str, Any] = {}
    block_bytes = 0
    reqs: dict[tuple[int, int], Req] = {}
    xfers: list[dict[str, Any]] = []
    with opener(path, "rt") as f:
        for n, line in enumerate(f, 1):
            try:
                e = json.loads(line)
            except ValueError as err:
                raise SystemExit(f"{path}:{n}: not JSON ({err})")
            t = e.get("type")
            if t == "run.start":
                config = e.get("config", {})
            elif t == "pool" and e.get("pool") == "gpu":
                block_bytes = int(e["block_bytes"])
            elif t == "req":
                agentlog.note_req(reqs, e, Req)
            elif t == "blocks" and e.get("op") == "onboard" and "user" in e and "round" in e:
                # An onboard line names the request that needs the blocks. (An offload line names
                # the blocks' owner, not the request whose admission made room, so offloads are
                # counted from the engine's copy records in the window instead.)
                r = agentlog.request(reqs, e["user"], e["round"], Req)
                if r.first:
                    continue
                r.onboard_blocks += len(e["ids"])
                if r.first_onboard_t is None:
                    r.first_onboard_t = e["t"]
            elif t == "xfer" and e.get("source") == "engine":
                xfers.append(e)
    if not config or not block_bytes:
        raise SystemExit(f"{path}: no run.start or no gpu pool line: not an agent log")
    return config, block_bytes, reqs, xfers


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--copy", required=True, help="bench/agent-copy-bandwidth.py JSON (plain pinned copy of the same call)")
    ap.add_argument("--gpu-ttft-ms", type=float, required=True, help="service TTFT with the blocks already on GPU (ms)")
    ap.add_argument("--slack", type=float, default=1.15)
    a = ap.parse_args(argv)

    for path in (a.log, a.copy):
        if not os.path.isfile(path):
            raise SystemExit(f"no such file: {path}")
    try:
        with open(a.copy) as f:
            copy = json.load(f)
        h2d = float(copy["h2d_whole"]["gb_per_s_best"])  # GB/s == bytes/ns
        d2h = float(copy["d2h_whole"]["gb_per_s_best"])
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{a.copy}: not a bench/agent-copy-bandwidth.py result ({err!r})")
    if a.gpu_ttft_ms <= 0:
        raise SystemExit("--gpu-ttft-ms must be > 0")
    base_ns = a.gpu_ttft_ms * 1e6
    config, bb, reqs, xfers = load(a.log)

    timed = [r for r in reqs.values() if r.round >= 1 and r.first and r.onboard_blocks > 0]
    if not timed:
        print(f"{a.log}: no timed request onboarded blocks", file=sys.stderr)
        return 1
    steps: dict[int, list[Req]] = {}
    for r in reqs.values():
        if r.round >= 1 and r.first:
            steps.setdefault(r.first, []).append(r)

    def bound(bytes_h2d: float, bytes_d2h: float = 0.0) -> float:
        return a.slack * (bytes_h2d / h2d + bytes_d2h / d2h + base_ns)

    L: list[str] = []
    L.append(f"Log: `{a.log}` ({config.get('model')}, users {config.get('users')}, host pool "
             f"{int(config.get('host_kv_bytes', 0)) / 1e9:g} GB, policy {config.get('offload_policy', 'lazy')}). "
             f"Plain pinned copy: H2D {h2d} GB/s, D2H {d2h} GB/s. On-GPU service TTFT {a.gpu_ttft_ms} ms; slack {a.slack}.\n")
    L.append("Per request: service TTFT (admitted → first token) ÷ bound, with the bound's bytes taken as (a) its own "
             "onboarded blocks, (b) every block onboarded for its prefill step, (c) (b) plus the offloads issued in its "
             "window at plain D2H. Copy stream: the engine's copy records that started in the window, from the "
             "request's admission (ms after `scheduled`, negative = before its own `scheduled` line) to the end of the "
             "last copy; after copies = last copy end → first token (the prefill).\n")
    L.append("| round | user | queued→sched ms | service TTFT ms | own MB | step onboard MB | step offload MB | "
             "(a) ratio | (b) ratio | (c) ratio | copies (dir GB ms) | copy start ms | copies end ms | after copies ms |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ra: list[float] = []
    rb: list[float] = []
    rc: list[float] = []
    for r in sorted(timed, key=lambda q: (q.round, q.first, q.user)):
        group = steps[r.first]
        t_lo = min(min(q.scheduled, q.first_onboard_t or q.scheduled) for q in group)
        own = r.onboard_blocks * bb
        step_on = sum(q.onboard_blocks for q in group) * bb
        win = [x for x in xfers if t_lo <= int(x["start"]) <= r.first]
        win_off = sum(int(x["bytes"]) for x in win if x["dir"] == "d2h")
        svc = r.first - r.scheduled
        a_, b_, c_ = svc / bound(own), svc / bound(step_on), svc / bound(step_on, win_off)
        ra.append(a_)
        rb.append(b_)
        rc.append(c_)
        if win:
            c0 = min(int(x["start"]) for x in win)
            c1 = max(int(x["end"]) for x in win)
            desc = ", ".join(f"{x['dir']} {int(x['bytes']) / 1e9:.2f} {(int(x['end']) - int(x['start'])) / 1e6:.1f}"
                             for x in sorted(win, key=lambda x: int(x["start"])))
            tl = f"{(c0 - r.scheduled) / 1e6:.1f} | {(c1 - r.scheduled) / 1e6:.1f} | {(r.first - c1) / 1e6:.1f}"
        else:
            desc, tl = "none", "– | – | –"
        L.append(f"| {r.round} | {r.user} | {(r.scheduled - r.queued) / 1e6:.1f} | {svc / 1e6:.1f} | {own / 1e6:.0f} | "
                 f"{step_on / 1e6:.0f} | {win_off / 1e6:.0f} | {a_:.2f} | {b_:.2f} | {c_:.2f} | {desc} | {tl} |")
    L.append("")
    L.append("| bytes in the bound | requests | ratio mean | worst | over 1.0 |")
    L.append("|---|---|---|---|---|")
    for name, rs in (("(a) own onboarded", ra), ("(b) all onboarded in its step", rb), ("(c) (b) + offloads in its window", rc)):
        L.append(f"| {name} | {len(rs)} | {statistics.mean(rs):.2f} | {max(rs):.2f} | {sum(x > 1.0 for x in rs)} |")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
