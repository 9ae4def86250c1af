#!/usr/bin/env python3
"""Issue 9 results from the sweep's event logs: the H100 curve measured, plus a labelled projection.

    python3 bench/issue9_results.py RUNS_DIR [RUNS_DIR ...] --out OUT_DIR \
        [--link-gbps 900] [--command "the command that made the runs"] [--fp8-check FILE.json]

RUNS_DIR holds the sweep's `users-N/events.jsonl` (any events.jsonl[.gz] below it is read; give
several dirs when the sweep was split over two calls). Writes into OUT_DIR:
- issue9-results.md: per user count E2E, TTFT mean/p50/p99, blocks and bytes moved, achieved
  H2D/D2H GB/s, where the GPU pool runs out, card/date/command; then the PROJECTION section.
- projection.json: per user count measured and projected E2E/TTFT, for the app's Compare view
  (drawn dashed; `kind: "kvscope.projection"`).
- sample-70b-fp8-h100.jsonl.gz: the users=4 run (or the closest complete one), compressed.
Standard library only; re-runnable anywhere from the logs alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import projection as pj  # noqa: E402


def _s(ns: Optional[float]) -> str:
    return "–" if ns is None else f"{ns / 1e9:.2f}"


def _ms(ns: Optional[float]) -> str:
    return "–" if ns is None else f"{ns / 1e6:.0f}"


def _gb(b: Optional[float]) -> str:
    return "–" if b is None else f"{b / 1e9:.2f}"


def _rate(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.1f}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def _label(path: str) -> str:
    """The run's folder as the sweep names it (users-4, or host-X/users-4), not the whole path."""
    parts = os.path.normpath(path).split(os.sep)
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else path


def pick_sample(points: list, want_users: int = 4) -> Optional[dict]:
    """users=want_users if it completed, else the complete run nearest to it (more users first)."""
    ok = [p for p in points if p["measured"]["status"] == "ok" and p["measured"]["e2e_ns"] is not None]
    if not ok:
        return None
    return min(ok, key=lambda p: (abs((p["users"] or 0) - want_users), -(p["users"] or 0)))


def build(roots: list, bytes_per_s: float) -> tuple:
    points: list = []
    problems: list = []
    for path, run in pj.iter_runs(roots):
        if isinstance(run, Exception):
            problems.append(f"{path}: {run}")
            continue
        m = pj.summarize(run)
        if m["bad_lines"]:
            problems.append(f"{path}: {m['bad_lines']} bad line(s), first: {run.bad_lines[0]}")
        points.append(
            {
                "users": m["users"],
                "run_id": m["run_id"],
                "path": path,
                "measured": m,
                "projected": pj.project(run, bytes_per_s),
                "projected_per_direction": pj.project(run, pj.C2C_PER_DIRECTION_BYTES_PER_S),
            }
        )
    points.sort(key=lambda p: (p["users"] is None, p["users"] or 0))
    return points, problems


def render_md(points: list, problems: list, bytes_per_s: float, command: str, fp8_check: Optional[dict]) -> str:
    ms = [p["measured"] for p in points]
    card = next((m["card"] for m in ms if m["card"]), "unknown")
    dates = sorted({m["date_utc"] for m in ms if m["date_utc"]})
    cfg = ms[0]["config"] if ms else {}

    def c(key: str) -> str:
        """A config field as the runs have it: one value, or each value with its user counts when
        the runs differ (a combined sweep may mix traced and untraced runs: ms[0] alone misreports)."""
        vals: dict = {}
        for m in ms:
            vals.setdefault(repr((m["config"] or {}).get(key)), []).append(m["users"])
        if len(vals) <= 1:
            return str(cfg.get(key))
        return ", ".join(f"{str((next(m for m in ms if m['users'] in us)['config'] or {}).get(key))} (users {', '.join(str(u) for u in us)})"
                         for us in vals.values())
    L: list = []
    L.append("# Issue 9: Llama-3.1-70B-shaped model, FP8 weights and FP8 KV, one 80 GB H100, users 2..16")
    L.append("")
    L.append(f"- Card: {card}; runs started {', '.join(dates) or 'unknown'}")
    L.append(f"- Command: `{command}`" if command else "- Command: (not given)")
    L.append(
        f"- Config (from run.start): model `{c('model')}`, rounds {c('rounds')}, context "
        f"{c('context_tokens')} tokens, new {c('new_tokens')} + output {c('output_tokens')} "
        f"tokens a round, block {c('block_tokens')} tokens, host pool {c('host_kv_bytes')} B, "
        f"free_gpu_memory_fraction {c('free_gpu_memory_fraction')}, trace {c('trace')}"
    )
    L.append("- Weights are random (ARCHITECTURE.md): compute and memory traffic are the real model's, tokens are not.")
    L.append("")
    if fp8_check and not fp8_check.get("supported", True):
        L.append("## FP8 correctness at 70B shapes")
        L.append("")
        L.append(f"Not run: FP8 unsupported here ({fp8_check.get('reason')}).")
        L.append("")
    elif fp8_check:
        L.append("## FP8 correctness at 70B shapes (one layer's projections)")
        L.append("")
        L.append(f"Relative Frobenius error vs an fp32 product of the unquantised weights, M = {fp8_check.get('m')} tokens; "
                 f"tolerance {fp8_check.get('rtol')} (expected ≈ 0.037 from e4m3 rounding of both operands).")
        L.append("")
        L.append("| projection | K→N | bf16 | fp8 per-tensor | fp8 per-channel | pass |")
        L.append("|---|---|---|---|---|---|")
        for name, r in (fp8_check.get("rows") or {}).items():
            L.append(f"| {name} | {r.get('k')}→{r.get('n')} | {r.get('bf16')} | {r.get('tensor')} | {r.get('channel')} | {r.get('pass')} |")
        L.append("")
    L.append("## Measured")
    L.append("")
    L.append("E2E over the timed rounds (first queued of round 1 to last done of the last round); TTFT over every "
             "request of rounds 1..R. Blocks: ids moved over the whole run (round 0 prefill included); bytes and "
             "GB/s: host<->GPU copies from the `xfer` lines (source in the last column), GB/s = bytes of the block copies "
             "(≥ 1 MiB each) ÷ the time the link was busy with them in that direction.")
    L.append("")
    L.append("| users | status | rounds done | E2E s | TTFT mean ms | p50 ms | p99 ms | offloaded | onboarded | evicted | D2H GB | H2D GB | D2H GB/s | H2D GB/s | xfer source | log |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    partial = [m for m in ms if _is_partial(m)]
    for m in ms:
        b = m["blocks"]
        # a partial run's TTFT is over its complete rounds only (marked †); its E2E is not a 10-round E2E
        tt, mark = (m["ttft_rounds_done"], " †") if _is_partial(m) else (m["ttft"], "")
        L.append(
            f"| {m['users']} | {m['status']}{' (partial)' if _is_partial(m) else ''} | {m['rounds_done']} of {m['rounds']} | {_s(m['e2e_ns'])} | "
            f"{_ms(tt['mean'])}{mark} | {_ms(tt['p50'])}{mark} | "
            f"{_ms(tt['p99'])}{mark} | {b.get('offload', 0)} | {b.get('onboard', 0)} | {b.get('evict', 0)} | "
            f"{_gb(m['bytes_d2h'])} | {_gb(m['bytes_h2d'])} | {_rate(m['gbps_d2h'])} | {_rate(m['gbps_h2d'])} | {m['xfer_source']} | "
            f"{_label(m['path'])} |"
        )
    L.append("")
    if partial:
        L.append("### Partial runs (stopped before their last round)")
        L.append("")
        for m in partial:
            rs = ", ".join(_s(x) for x in m["round_e2e_ns"][: m["rounds_done"]])
            L.append(
                f"- users {m['users']}: {m['status']}"
                + (f" ({(m.get('error') or {}).get('message')})" if m.get("error") else "")
                + f" after {m['rounds_done']} of {m['rounds']} timed rounds. Measured over rounds 1..{m['rounds_done']} only: "
                f"E2E {_s(m['e2e_ns_rounds_done'])} s (per round, from the `round` lines: {rs} s); "
                f"† TTFT over the {m['ttft_rounds_done']['count']} requests of those rounds "
                f"(over every request with a first token, {m['ttft']['count']} incl. the unfinished round's first-served ones, the mean would read {_ms(m['ttft']['mean'])} ms). "
                "Blocks and bytes count the whole run up to the stop (round 0 and the unfinished round included). "
                f"No {m['rounds']}-round E2E is given: it was not measured, and none is extrapolated."
            )
        L.append("")
    L.append("### Where the GPU pool runs out")
    L.append("")
    g = next((m for m in ms if m["gpu_pool_blocks"]), None)
    if g:
        L.append(
            f"GPU pool: {g['gpu_pool_blocks']} blocks of {g['block_tokens']} tokens ({_gb((g['gpu_pool_blocks'] or 0) * (g['block_bytes'] or 0))} GB). "
            f"A user's context is {g['blocks_per_user_context']} blocks at {cfg.get('context_tokens')} tokens and "
            f"a request of the last round reserves {g['blocks_per_user_last_round']}, so the pool holds "
            f"{g['users_fit_gpu_at_context']} users' contexts after prefill and runs {g['users_fit_gpu_at_last_round']} last-round requests at once."
        )
        for line in g.get("memory_logs") or []:
            L.append(f"- agent log: {line}")
        # runs of another session build the weights into a slightly different free-memory remainder
        other = [m for m in ms if m["gpu_pool_blocks"] and m["gpu_pool_blocks"] != g["gpu_pool_blocks"]]
        if other:
            L.append("GPU pool of the other runs: " + "; ".join(
                f"users {m['users']}: {m['gpu_pool_blocks']} blocks ({_gb(m['gpu_pool_blocks'] * (m['block_bytes'] or 0))} GB), "
                f"holds {m['users_fit_gpu_at_context']} users' contexts, {m['users_fit_gpu_at_last_round']} last-round requests"
                for m in other) + ".")
        first = next((m["users"] for m in ms if (m["blocks"].get("offload", 0) or 0) > 0), None)
        none = [m["users"] for m in ms if (m["blocks"].get("offload", 0) or 0) == 0 and m["status"] == "ok"]
        L.append(f"Measured: no offload at users {none or '–'}; offload from users {first if first is not None else '– (none offloaded)'} on. "
                 "The seed reports that the H100 fits 2 users; docs/h100-70b.md has this engine's memory plan.")
    else:
        L.append("No `pool` line found in the logs.")
    L.append("")
    L.append(f"## PROJECTION — not a measurement: the same runs on a {bytes_per_s / 1e9:.0f} GB/s link (NVLink-C2C, as on GH200)")
    L.append("")
    L.append("Method: in each window (a request's TTFT, the rounds' E2E) the time the host<->GPU link was busy in the "
             "measured run is replaced by the bytes it carried in that window ÷ the link bandwidth. Compute unchanged; "
             "GPU memory unchanged (H100's 80 GB, so the same blocks move from the same user count on). Every busy-link "
             "interval counts as on the critical path: where copies overlapped compute, the gain is overstated. "
             f"The '{pj.C2C_PER_DIRECTION_BYTES_PER_S / 1e9:.0f} GB/s' columns count C2C one direction at a time "
             "(its 900 GB/s is both directions together), a more conservative reading.")
    L.append("")
    L.append(f"| users | E2E s measured | E2E s projected | E2E ratio | TTFT mean ms measured | TTFT mean ms projected | TTFT ratio | E2E ratio @{pj.C2C_PER_DIRECTION_BYTES_PER_S / 1e9:.0f} | TTFT ratio @{pj.C2C_PER_DIRECTION_BYTES_PER_S / 1e9:.0f} | link s replaced | method |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        m, q, q2 = p["measured"], p["projected"], p["projected_per_direction"]
        if _is_partial(m):
            # its own table below: a partial run's numbers cover fewer rounds than the others'
            continue
        L.append(
            f"| {p['users']} | {_s(m['e2e_ns'])} | {_s(q['e2e_ns'])} | {_ratio(m['e2e_ns'], q['e2e_ns'])} | "
            f"{_ms(m['ttft']['mean'])} | {_ms(q['ttft']['mean'])} | {_ratio(m['ttft']['mean'], q['ttft']['mean'])} | "
            f"{_ratio(m['e2e_ns'], q2['e2e_ns'])} | {_ratio(m['ttft']['mean'], q2['ttft']['mean'])} | "
            f"{_s(q['link_ns_replaced_in_e2e'])} | {q['method']} |"
        )
    L.append("")
    part = [p for p in points if _is_partial(p["measured"])]
    if part:
        L.append("Partial runs, over their complete rounds only (measured there, then projected the same way; not comparable "
                 "with the 10-round rows above and not drawn in Compare):")
        L.append("")
        L.append("| users | rounds | E2E s measured | E2E s projected | E2E ratio | TTFT mean ms measured | TTFT mean ms projected | TTFT ratio | link s replaced |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for p in part:
            m, q = p["measured"], p["projected"]
            L.append(
                f"| {p['users']} | 1..{m['rounds_done']} of {m['rounds']} | {_s(m['e2e_ns_rounds_done'])} | {_s(q['e2e_ns_rounds_done'])} | "
                f"{_ratio(m['e2e_ns_rounds_done'], q['e2e_ns_rounds_done'])} | {_ms(m['ttft_rounds_done']['mean'])} | "
                f"{_ms(q['ttft_rounds_done']['mean'])} | {_ratio(m['ttft_rounds_done']['mean'], q['ttft_rounds_done']['mean'])} | "
                f"{_s(q['link_ns_replaced_in_rounds_done'])} |"
            )
        L.append("")
    sr = pj.SEED_RATIOS
    L.append(f"Seed's published ratios, measured on real hardware (not projected): GH200 vs H100 {sr['ttft']}× TTFT and "
             f"~{sr['e2e']:.0f}× E2E past {sr['past_users']} users ({sr['source']}).")
    L.append("")
    L.append(f"Why they differ from this projection: {sr['why_they_differ']}. Below the point where H100's pool runs "
             "out, the projection equals the measurement (nothing moves), while on GH200 nothing moves up to 7 users.")
    L.append("")
    if problems:
        L.append("## Problems found while reading the logs")
        L.append("")
        for pr in problems:
            L.append(f"- {pr}")
        L.append("")
    return "\n".join(L) + "\n"


def _is_partial(m: dict) -> bool:
    """Stopped before its last round but with at least one complete timed round."""
    return m["e2e_ns"] is None and (m.get("rounds_done") or 0) > 0


def _figures(e2e_ns, ttft: dict) -> dict:
    """The E2E and TTFT figures a projection.json point carries, measured or projected."""
    return {"e2e_ns": e2e_ns, "ttft_ns_mean": ttft["mean"], "ttft_ns_p50": ttft["p50"], "ttft_ns_p99": ttft["p99"]}


def partial_points(points: list) -> list:
    """Runs stopped early, over their complete rounds: kept out of `points` (which Compare draws as
    a curve of 10-round runs) so a 3-round number is never plotted as a full run's."""
    out = []
    for p in points:
        m, q = p["measured"], p["projected"]
        if not _is_partial(m):
            continue
        out.append(
            {
                "users": p["users"],
                "run_id": p["run_id"],
                "log": _label(p["path"]),
                "status": m["status"],
                "rounds_done": m["rounds_done"],
                "rounds": m["rounds"],
                "measured": _figures(m["e2e_ns_rounds_done"], m["ttft_rounds_done"]),
                "projected": _figures(q["e2e_ns_rounds_done"], q["ttft_rounds_done"]),
                "round_e2e_ns": m["round_e2e_ns"][: m["rounds_done"]],
                "link_ns_replaced": q["link_ns_replaced_in_rounds_done"],
                "note": f"cancelled after {m['rounds_done']} of {m['rounds']} rounds: E2E and TTFT over rounds 1..{m['rounds_done']} only, not extrapolated",
            }
        )
    return out


def compare_points(points: list) -> list:
    out = []
    for p in points:
        m, q = p["measured"], p["projected"]
        if _is_partial(m):
            continue
        out.append(
            {
                "users": p["users"],
                "run_id": p["run_id"],
                "log": _label(p["path"]),
                "status": m["status"],
                "measured": _figures(m["e2e_ns"], m["ttft"]),
                "projected": _figures(q["e2e_ns"], q["ttft"]),
                "bytes_h2d": m["bytes_h2d"],
                "bytes_d2h": m["bytes_d2h"],
                "link_ns_replaced_in_e2e": q["link_ns_replaced_in_e2e"],
                "method": q["method"],
            }
        )
    return out


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="sweep output dirs or events.jsonl files")
    ap.add_argument("--out", required=True, help="where to write issue9-results.md, projection.json, the sample")
    ap.add_argument("--link-gbps", type=float, default=pj.C2C_BYTES_PER_S / 1e9, help="projected link bandwidth, GB/s (900)")
    ap.add_argument("--command", default="", help="the command that produced the runs (recorded)")
    ap.add_argument("--fp8-check", default=None, help="JSON from bench/issue9-fp8-check.py to include")
    ap.add_argument("--sample-users", type=int, default=4)
    a = ap.parse_args(argv)
    if a.link_gbps <= 0:
        print("--link-gbps must be positive", file=sys.stderr)
        return 2
    bps = a.link_gbps * 1e9
    points, problems = build(a.roots, bps)
    if not points:
        print(f"no readable events.jsonl under {', '.join(a.roots)}" + (f": {problems}" if problems else ""), file=sys.stderr)
        return 1
    fp8_check = None
    if a.fp8_check and os.path.isfile(a.fp8_check):
        try:
            with open(a.fp8_check, encoding="utf-8") as f:
                fp8_check = json.load(f)
        except ValueError as e:
            problems.append(f"{a.fp8_check}: not JSON ({e})")
    os.makedirs(a.out, exist_ok=True)
    md = render_md(points, problems, bps, a.command, fp8_check)
    with open(os.path.join(a.out, "issue9-results.md"), "w", encoding="utf-8") as f:
        f.write(md)
    m0 = points[0]["measured"]
    doc = pj.projection_doc(
        compare_points(points),
        bps,
        {
            "measured_on": {"card": m0["card"], "dates": sorted({p["measured"]["date_utc"] for p in points if p["measured"]["date_utc"]})},
            "command": a.command,
            **({"partial_points": partial_points(points)} if partial_points(points) else {}),
        },
    )
    with open(os.path.join(a.out, "projection.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    sample = pick_sample(points, a.sample_users)
    if sample:
        dst = os.path.join(a.out, "sample-70b-fp8-h100.jsonl.gz")
        if sample["path"].endswith(".gz"):
            shutil.copyfile(sample["path"], dst)
        else:
            with open(sample["path"], "rb") as src, gzip.open(dst, "wb", compresslevel=9) as out:
                shutil.copyfileobj(src, out)
        print(f"sample: users={sample['users']} -> {dst} ({os.path.getsize(dst)} bytes)", file=sys.stderr)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
