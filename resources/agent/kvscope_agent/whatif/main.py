"""`python3 -m kvscope_agent whatif`: replay recorded runs on another card (docs/whatif.md).

    whatif RUN [RUN ...] --profile gh200-96 [--users 2..16] [--out DIR] [--gpu-kv-bytes N|plan]
           [--source-profile ID|FILE] [--json]
    whatif --list-profiles [--json]

RUN: a run folder, an events.jsonl(.gz), or a sweep folder (its users-N runs). All runs must be of
one model on one card: they are the calibration. With --out, DIR/users-N/events.jsonl is each
simulated run (run.start carries `simulated`) and DIR/whatif.json the table. Exit 0 ok, 1 error,
2 bad option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any, Sequence

from ..emit import EventWriter
from ..lifecycle import end_run
from ..options import OptionError, parse_bytes
from .calibrate import CalibrationReport, calibrate
from .costs import Calibration, CardRates
from .profiles import Profile, ProfileError, builtin_profiles, profile_for_gpu, resolve_profile
from .recorded import RecordedRun, RecordedRunError, find_logs, read_run
from .replay import CaptureWriter, decode_before_copies, plan_gpu_pool, shape_of, simulate, write_run_start

WHATIF_KIND = "kvscope.whatif"
MAX_USERS = 256


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionError("arguments", message)


def parse_users(text: str) -> list[int]:
    """"2..16" (every count from 2 to 16), "2,4,8", or "4"."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("..")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise OptionError("--users", f"{text!r}: expected counts like 2..16 or 2,4,8") from None
        if a < 1 or b < a or b > MAX_USERS:
            raise OptionError("--users", f"{part!r}: counts run from 1 to {MAX_USERS}, low to high")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def build_parser() -> _Parser:
    p = _Parser(prog="python3 -m kvscope_agent whatif", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="recorded runs: run folders, events.jsonl(.gz), or a sweep folder")
    p.add_argument("--profile", help="the card to simulate: a built-in profile id or a profile file")
    p.add_argument("--users", help="user counts to simulate: 2..16, 2,4,8 (default: the recorded runs')")
    p.add_argument("--out", help="folder for the simulated runs (DIR/users-N/events.jsonl) and whatif.json")
    p.add_argument("--gpu-kv-bytes", help="GPU KV pool on the simulated card: bytes, or 'plan' for the agent's "
                   "memory plan on that card (default: the recorded run's --gpu-kv-bytes if it gave one, else plan)")
    p.add_argument("--source-profile", help="the recorded runs' card, when its name matches no built-in profile")
    p.add_argument("--list-profiles", action="store_true", help="list the built-in profiles")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def list_profiles(as_json: bool) -> int:
    profiles = builtin_profiles()
    if as_json:
        print(json.dumps([{**p.summary(), "match": p.match} for p in profiles], indent=2))
        return 0
    for p in profiles:
        link = p.link_name
        print(f"{p.id:10} {p.name}: {p.memory_total_bytes / 1e9:.1f} GB, HBM {p.hbm_bytes_per_s / 1e12:.2f} TB/s, "
              f"{link} copies {p.value('link.h2d_bytes_per_s') / 1e9:.0f}/{p.value('link.d2h_bytes_per_s') / 1e9:.0f} GB/s")
    return 0


def source_profile(runs: list[RecordedRun], given: str | None) -> Profile:
    if given:
        return resolve_profile(given)
    gpu = runs[0].gpu
    p = profile_for_gpu(gpu.get("name"), gpu.get("memory_total_bytes"))
    if p is None:
        raise ProfileError(f"the recorded runs' card {gpu.get('name')!r} matches no built-in profile: write a profile "
                           "file for it (docs/whatif.md) and pass --source-profile FILE")
    return p


def _pct(sim: float | None, meas: float | None) -> str:
    return f"{(sim / meas - 1) * 100:+.1f}%" if sim is not None and meas else ""


def whatif(argv: Sequence[str]) -> int:
    try:
        ns = build_parser().parse_args(list(argv))
    except OptionError as e:
        print(f"whatif: {e}", file=sys.stderr)
        return 2
    if ns.list_profiles:
        return list_profiles(ns.json)
    if not ns.runs or not ns.profile:
        print("whatif: give recorded runs and --profile (or --list-profiles); --help says more", file=sys.stderr)
        return 2
    try:
        users = parse_users(ns.users) if ns.users else None
        gpu_kv: int | None = None
        plan = False
        if ns.gpu_kv_bytes == "plan":
            plan = True
        elif ns.gpu_kv_bytes is not None:
            gpu_kv = parse_bytes("--gpu-kv-bytes", ns.gpu_kv_bytes)
        if ns.out and os.path.exists(ns.out) and not os.path.isdir(ns.out):
            raise OptionError("--out", f"{ns.out} is not a folder")
        if ns.out and os.path.isdir(ns.out) and os.listdir(ns.out):
            raise OptionError("--out", f"{ns.out} exists and is not empty; choose a new folder")
        target = resolve_profile(ns.profile)
    except OptionError as e:
        print(f"whatif: bad option {e}", file=sys.stderr)
        return 2
    except ProfileError as e:
        print(f"whatif: {e}", file=sys.stderr)
        return 2
    try:
        logs = [p for r in ns.runs for p in find_logs(r)]
        runs = [read_run(p) for p in logs]
        simulated_src = [r.path for r in runs if r.simulated]
        if simulated_src:
            raise RecordedRunError(f"{simulated_src[0]} is itself simulated: calibrate on measured runs")
        src = source_profile(runs, ns.source_profile)
        report = calibrate(runs, src)
        doc = predict(runs, report, src, target, users or sorted({r.users for r in runs}), gpu_kv, plan, ns.out)
    except (RecordedRunError, ProfileError, OSError) as e:
        print(f"whatif: {e}", file=sys.stderr)
        return 1
    if ns.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


def corners_on(report: CalibrationReport, src: Profile, target: Profile) -> tuple[list[Calibration], dict[str, str]]:
    """The calibrations a prediction on `target` is bounded by, and the held factors that move it
    (name → why). A step's fixed time and its weight reads cost the same on a card with the source
    card's HBM bandwidth however they are split, so there that split moves nothing."""
    held = dict(report.held)
    corners = list(report.ends)
    if "step_ns" in held and target.hbm_bytes_per_s == src.hbm_bytes_per_s:
        del held["step_ns"]
        mid = report.calibration
        corners = [replace(c, weights_factor=mid.weights_factor, step_ns=mid.step_ns) for c in corners]
    unique: list[Calibration] = []
    for c in corners:
        if c != report.calibration and c not in unique:
            unique.append(c)
    return (unique, held) if held else ([], {})


def predict(runs: list[RecordedRun], report: Any, src: Profile, target: Profile, users_list: list[int],
            gpu_kv: int | None, plan: bool, out: str | None) -> dict[str, Any]:
    cal = report.calibration
    template = max(runs, key=lambda r: r.users)
    shape = shape_of(template)
    rates = CardRates.of(target, shape.dtype, cal)
    mem = plan_gpu_pool(template, target, max(users_list), gpu_kv, plan)
    measured = {r.users: r for r in runs}
    source = {
        "run_ids": [r.run_id for r in runs], "paths": [os.path.abspath(r.path) for r in runs],
        "gpu": template.gpu.get("name"), "profile": src.id, "model": template.config.get("model"),
        "users": sorted(measured),
    }
    corners, uncertain = corners_on(report, src, target)
    points = []
    made_at = time.time_ns()
    for u in users_list:
        spread = None
        if corners:  # a factor the source runs could not determine: the prediction at each end of it
            # The corners differ from `cal` in step factors only, so the card's rates are the same.
            ends = [simulate(template, u, rates, c, mem, CaptureWriter).summary for c in corners]
            if all(e[k] is not None for e in ends for k in ("e2e_ns", "ttft_ns_mean")):
                spread = {k: [min(e[k] for e in ends), max(e[k] for e in ends)] for k in ("e2e_ns", "ttft_ns_mean")}
        simulated = {
            "profile": target.summary(), "source": {**source, "run_id": (measured.get(u) or template).run_id},
            "calibration": report.to_dict(), "users": u,
            "method": "trace-driven replay of the built-in engine's scheduler (docs/whatif.md)",
            "uncertain": uncertain, **({"range": spread} if spread else {}),
        }
        if out:
            folder = os.path.join(out, f"users-{u}")
            os.makedirs(folder, exist_ok=True)

            holder: dict[str, EventWriter] = {}

            def writer_for(gpu: Any, folder: str = folder, holder: dict[str, EventWriter] = holder) -> EventWriter:
                gpu.unix_ns_at_t0 = made_at
                holder["w"] = EventWriter(os.path.join(folder, "events.jsonl"), gpu)
                return holder["w"]

            def header(writer: Any, opts: Any, simulated: dict[str, Any] = simulated, u: int = u) -> None:
                write_run_start(writer, opts, target, mem, simulated, u, int(template.config.get("host_kv_bytes") or 0),
                                decode_before_copies(template.config))
                writer.emit("phase", name="setup", state="begin")
                writer.emit("phase", name="load_model", state="begin")
                writer.emit("phase", name="load_model", state="end")
                pool = template.pools["gpu"]
                host = template.pools.get("host") or {}
                writer.emit("pool", pool="gpu", capacity_blocks=mem.gpu_blocks, block_tokens=pool["block_tokens"],
                            block_bytes=pool["block_bytes"], bytes=mem.gpu_blocks * int(pool["block_bytes"]))
                hb = int(host.get("capacity_blocks") or 0) if int(template.config.get("host_kv_bytes") or 0) else 0
                writer.emit("pool", pool="host", capacity_blocks=hb, block_tokens=pool["block_tokens"],
                            block_bytes=pool["block_bytes"], bytes=hb * int(pool["block_bytes"]),
                            pinned=bool(host.get("pinned", True)))
                writer.emit("phase", name="setup", state="end")

            try:
                result = simulate(template, u, rates, cal, mem, writer_for, header)
                end_run(holder["w"], None, None, "ok", None, result.summary)
            finally:
                if "w" in holder:
                    holder["w"].close()
        else:
            result = simulate(template, u, rates, cal, mem, CaptureWriter)
        m = measured.get(u)
        points.append({
            "users": u, "e2e_ns": result.summary["e2e_ns"], "ttft_ns_mean": result.summary["ttft_ns_mean"],
            "ttft_ns_p50": result.summary["ttft_ns_p50"], "ttft_ns_p99": result.summary["ttft_ns_p99"],
            "blocks_offloaded": result.summary["blocks_offloaded"], "blocks_onboarded": result.summary["blocks_onboarded"],
            "blocks_evicted": result.summary["blocks_evicted"],
            "measured_on_source": {"e2e_ns": m.e2e_ns(), "ttft_ns_mean": m.ttft_mean_ns()} if m else None,
            "run": os.path.join(out, f"users-{u}") if out else None,
            "range": spread,
        })
    per_request = -(-(template.config["context_tokens"] + template.config["rounds"] * (template.config["new_tokens"]
                    + template.config["output_tokens"]) + template.config["output_tokens"] - 1) // int(template.pools["gpu"]["block_tokens"]))
    doc = {
        "kind": WHATIF_KIND, "version": 1, "label": f"SIMULATED on {target.name}",
        "profile": target.summary(), "source": source, "calibration": report.to_dict(), "uncertain": uncertain,
        "gpu_pool": {"blocks": mem.gpu_blocks, "bytes": mem.gpu_kv_bytes, "note": mem.note,
                     "users_it_holds": mem.gpu_blocks // per_request},
        "points": points,
    }
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "whatif.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return doc


def print_table(doc: dict[str, Any]) -> None:
    src = doc["source"]
    pool = doc["gpu_pool"]
    print(f"{doc['label']} — from {len(src['run_ids'])} run(s) of {src['model']} on {src['gpu']}")
    print(f"GPU pool {pool['blocks']} blocks ({pool['bytes'] / 1e9:.2f} GB): holds {pool['users_it_holds']} users' last "
          f"requests; {pool['note']}")
    print(f"{'users':>5}  {'E2E s':>9}  {'TTFT mean ms':>12}  {'measured on ' + str(src['gpu']):>40}")
    for p in doc["points"]:
        m = p["measured_on_source"]
        meas = (f"E2E {m['e2e_ns'] / 1e9:.2f} s, TTFT {m['ttft_ns_mean'] / 1e6:.1f} ms" if m else "")
        print(f"{p['users']:>5}  {p['e2e_ns'] / 1e9:>9.2f}  {p['ttft_ns_mean'] / 1e6:>12.1f}  {meas:>40}")
    for p in doc["points"]:
        if p.get("range"):
            e, t = p["range"]["e2e_ns"], p["range"]["ttft_ns_mean"]
            print(f"users {p['users']}: could be E2E {e[0] / 1e9:.2f}–{e[1] / 1e9:.2f} s, TTFT {t[0] / 1e6:.1f}–{t[1] / 1e6:.1f} ms "
                  "(a factor the source runs could not determine, below)")
    for name, why in doc["uncertain"].items():
        print(f"calibration: {name} {why}")
    for c in doc["calibration"]["self_check"]:
        e, t = c["e2e_ns"], c["ttft_ns_mean"]
        print(f"calibration check, users {c['users']} on its own card: E2E {_pct(e['simulated'], e['measured'])}, "
              f"TTFT {_pct(t['simulated'], t['measured'])}")
    if doc["points"] and doc["points"][0]["run"]:
        print(f"simulated runs: {os.path.dirname(doc['points'][0]['run'])}")
