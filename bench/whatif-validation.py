#!/usr/bin/env python3
"""The what-if simulator against measured runs: predicted, measured and error for every point.

    python3 bench/whatif-validation.py --check capacity --source H100CAP_RUNS --measured GH200CAP_RUNS \
        --profile h200 --gpu-kv-bytes N --out table.md
    python3 bench/whatif-validation.py --check link --source PINNED_RUNS --measured PAGEABLE_RUNS \
        --profile slow-link.json --out table.md
    python3 bench/whatif-validation.py --check cross-card --source H100_RUNS --measured H200_RUNS --profile h200
    python3 bench/whatif-validation.py --check self --measured resources/samples/*.jsonl.gz

Runs are run folders, events.jsonl(.gz) files or sweep folders. The simulator is calibrated on the
--source runs only (one model, one card) and predicts, on --profile, each user count the --measured
runs have; `self` replays each measured run on its own card from its own calibration. Targets
(docs/whatif.md, "Validation"): capacity 10% E2E and 15% mean TTFT; link and cross-card 10% both;
self 3% both. Prints a markdown table (card, date and commit of each side above it) and writes it
with --out (and the same as JSON beside it, .json). Exit 0 when every point meets its target, 1
when one does not, 2 on bad arguments. Standard library + the agent package (resources/agent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "resources", "agent"))

from kvscope_agent.whatif.calibrate import calibrate  # noqa: E402
from kvscope_agent.whatif.main import predict, source_profile  # noqa: E402
from kvscope_agent.whatif.profiles import ProfileError, resolve_profile  # noqa: E402
from kvscope_agent.whatif.recorded import RecordedRun, RecordedRunError, find_logs, read_run  # noqa: E402

TARGETS = {  # (E2E, mean TTFT) relative error allowed
    "capacity": (0.10, 0.15),
    "link": (0.10, 0.10),
    "cross-card": (0.10, 0.10),
    "self": (0.03, 0.03),
}


def _runs(paths: list[str], skip_incomplete: bool = False) -> list[RecordedRun]:
    """The runs the paths name; with skip_incomplete, a run cut before its last round is left out
    with a note on stderr (a sweep stopped by its budget) instead of failing the table."""
    out = []
    for path in paths:
        for p in find_logs(path):
            try:
                out.append(read_run(p))
            except RecordedRunError as e:
                if not skip_incomplete:
                    raise
                print(f"whatif-validation: left out {e}", file=sys.stderr)
    if not out:
        raise RecordedRunError(f"no complete run in {', '.join(paths)}")
    return out


def describe(runs: list[RecordedRun]) -> str:
    cards = sorted({str(r.gpu.get("name") or "no GPU (device " + str(r.config.get("device")) + ")") for r in runs})
    dates = sorted({dt.datetime.fromtimestamp(r.unix_ns_at_t0 / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                    for r in runs if r.unix_ns_at_t0})
    cfg = runs[0].config
    models = sorted({str(r.config.get("model")) for r in runs})
    if len(models) > 1:
        return f"{', '.join(cards)}; {', '.join(models)}"
    what = (f"{cfg.get('model')}, {cfg.get('context_tokens')}-token contexts, {cfg.get('rounds')} rounds, "
            f"users {', '.join(str(u) for u in sorted({r.users for r in runs}))}, GPU pool "
            f"{', '.join(sorted({str(r.pools['gpu']['capacity_blocks']) for r in runs}))} blocks, "
            f"host pool {cfg.get('host_kv_bytes')} ({cfg.get('host_kv_memory', 'pinned')}), "
            f"{cfg.get('offload_policy')}, copy overlap {cfg.get('copy_overlap')}")
    span = f"{dates[0]} – {dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "date unknown")
    return f"{', '.join(cards)}; {span}; {what}"


def err(pred: float | None, meas: float | None) -> float | None:
    return None if pred is None or not meas else pred / meas - 1


def validate(check: str, source: list[RecordedRun], measured: list[RecordedRun], profile: str | None,
             source_prof: str | None, gpu_kv: int | None, plan: bool) -> dict[str, Any]:
    e2e_tol, ttft_tol = TARGETS[check]
    rows = []
    if check == "self":
        for m in measured:
            card = source_profile([m], source_prof)
            report = calibrate([m], card)
            (c,) = report.self_check
            name = os.path.basename(m.path)
            if name.startswith("events.jsonl"):
                name = os.path.basename(os.path.dirname(m.path))
            rows.append((m, c["e2e_ns"]["simulated"], c["ttft_ns_mean"]["simulated"], name, None))
        target_name = "each run's own card"
        held = {}
    else:
        target = resolve_profile(profile) if profile else None
        if target is None:
            raise ProfileError("--profile is needed for every check but self")
        src = source_profile(source, source_prof)
        report = calibrate(source, src)
        users = sorted({m.users for m in measured})
        doc = predict(source, report, src, target, users, gpu_kv, plan, None)
        by_users = {p["users"]: p for p in doc["points"]}
        for m in measured:
            p = by_users[m.users]
            rows.append((m, p["e2e_ns"], p["ttft_ns_mean"], "", p.get("range")))
        target_name = f"{target.id} ({target.name}), GPU pool {doc['gpu_pool']['blocks']} blocks"
        held = doc["uncertain"]  # the held factors that move this prediction (none for the step split on its own card)
    points = []
    for m, e2e, ttft, name, spread in sorted(rows, key=lambda r: (r[0].users, r[3])):
        e_err, t_err = err(e2e, m.e2e_ns()), err(ttft, m.ttft_mean_ns())
        ok = e_err is not None and t_err is not None and abs(e_err) <= e2e_tol and abs(t_err) <= ttft_tol
        points.append({"users": m.users, "run": name or m.run_id,
                       "e2e_ns": {"predicted": e2e, "measured": m.e2e_ns(), "error": e_err,
                                  "range": spread["e2e_ns"] if spread else None},
                       "ttft_ns_mean": {"predicted": ttft, "measured": m.ttft_mean_ns(), "error": t_err,
                                        "range": spread["ttft_ns_mean"] if spread else None},
                       "meets_target": ok})
    return {"check": check, "targets": {"e2e": e2e_tol, "ttft_mean": ttft_tol}, "predicted_on": target_name,
            "source": describe(source) if source else None, "measured": describe(measured), "points": points,
            "held": held}


def markdown(doc: dict[str, Any], commit: str) -> str:
    t = doc["targets"]
    lines = [f"### What-if validation: {doc['check']} (targets: E2E within {t['e2e']:.0%}, mean TTFT within "
             f"{t['ttft_mean']:.0%})", ""]
    if doc["source"]:
        lines.append(f"- calibrated on: {doc['source']}")
    lines += [f"- measured: {doc['measured']}", f"- predicted on: {doc['predicted_on']}",
              f"- simulator at commit {commit}", "",
              "| users | run | E2E predicted s | E2E measured s | error | TTFT mean predicted ms | TTFT mean measured ms | error | within target |",
              "|---|---|---|---|---|---|---|---|---|"]
    f = (lambda v, s: f"{v / s:,.2f}" if v is not None else "–")
    g = (lambda v: f"{v * 100:+.1f}%" if v is not None else "–")
    for p in doc["points"]:
        e, tt = p["e2e_ns"], p["ttft_ns_mean"]
        lines.append(f"| {p['users']} | {p['run']} | {f(e['predicted'], 1e9)} | {f(e['measured'], 1e9)} | {g(e['error'])} "
                     f"| {f(tt['predicted'], 1e6)} | {f(tt['measured'], 1e6)} | {g(tt['error'])} | {'yes' if p['meets_target'] else '**no**'} |")
    if doc.get("held"):
        lines += ["", "The source runs could not determine every factor; the prediction is the middle of what they allow:"]
        lines += [f"- {name}: {why}" for name, why in doc["held"].items()]
        lines += ["", "The range is what that factor alone moves the prediction by (the other factors as fitted):", "",
                  "| users | E2E could be s | measured inside | TTFT mean could be ms | measured inside |",
                  "|---|---|---|---|---|"]

        def inside(x: dict[str, Any]) -> str:
            return "–" if x["measured"] is None else ("yes" if x["range"][0] <= x["measured"] <= x["range"][1] else "no")

        for p in doc["points"]:
            e, tt = p["e2e_ns"], p["ttft_ns_mean"]
            if not e.get("range"):
                continue
            lines.append(f"| {p['users']} | {f(e['range'][0], 1e9)}–{f(e['range'][1], 1e9)} | {inside(e)} "
                         f"| {f(tt['range'][0], 1e6)}–{f(tt['range'][1], 1e6)} | {inside(tt)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", required=True, choices=sorted(TARGETS))
    ap.add_argument("--source", nargs="*", default=[], help="runs the simulator is calibrated on")
    ap.add_argument("--measured", nargs="+", required=True, help="runs it must predict")
    ap.add_argument("--profile", help="the card the measured runs ran on (built-in id or profile file)")
    ap.add_argument("--source-profile", help="the source runs' card when its name matches no built-in profile")
    ap.add_argument("--gpu-kv-bytes", help="GPU pool of the predicted runs: bytes, 'plan', or 'measured' (the measured runs' pool)")
    ap.add_argument("--out", help="write the markdown table here (and .json beside it)")
    a = ap.parse_args(argv)
    try:
        source = _runs(a.source) if a.source else []
        measured = _runs(a.measured, skip_incomplete=True)
        if a.check != "self" and not source:
            raise RecordedRunError("--source runs are needed for every check but self")
        gpu_kv: int | None = None
        plan = a.gpu_kv_bytes == "plan"
        if a.gpu_kv_bytes == "measured":
            pools = {int(m.pools["gpu"]["capacity_blocks"]) * int(m.pools["gpu"]["block_bytes"]) for m in measured}
            if len(pools) != 1:
                raise RecordedRunError(f"the measured runs have {len(pools)} GPU pool sizes: give --gpu-kv-bytes")
            gpu_kv = pools.pop()
        elif a.gpu_kv_bytes not in (None, "plan"):
            gpu_kv = int(float(a.gpu_kv_bytes))
        doc = validate(a.check, source, measured, a.profile, a.source_profile, gpu_kv, plan)
    except (RecordedRunError, ProfileError, ValueError) as e:
        print(f"whatif-validation: {e}", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    text = markdown(doc, commit)
    print(text, end="")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.splitext(a.out)[0] + ".json", "w", encoding="utf-8") as f:
            json.dump({**doc, "commit": commit}, f, indent=2)
            f.write("\n")
    return 0 if all(p["meets_target"] for p in doc["points"]) else 1


if __name__ == "__main__":
    sys.exit(main())
