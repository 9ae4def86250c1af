#!/usr/bin/env python3
"""The measurements of bench/ssh-path-gpu.sh (the SSH path end to end on a GPU host).

  watch  --host-glob G --local F --out J   poll the host's events.jsonl (found by glob once it
                                           appears) and the local copy the CLI writes, every
                                           2 ms, and record when each line first appears in each;
                                           stops when the local file holds run.end (or on TERM).
                                           Both files sit on one machine, so one clock times both.
  report --record DIR                      read what the script left in DIR and write
                                           summary.json and summary.md.

Streaming latency of line i = (time line i appeared locally) - (time it appeared on the host),
to within the 2 ms poll period. Standard library only (it runs on the GPU host's python3).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import signal
import sys
import time
from typing import Any


class LineClock:
    """Times at which each complete line of a growing file first became visible."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.pos = 0
        self.partial = b""
        self.times: list[float] = []
        self.ended = False

    def poll(self, now: float) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.pos += len(data)
        buf = self.partial + data
        lines = buf.split(b"\n")
        self.partial = lines.pop()
        for ln in lines:
            self.times.append(now)
            if b'"run.end"' in ln:
                self.ended = True


def cmd_watch(a: argparse.Namespace) -> int:
    host, local = LineClock(), LineClock()
    local.path = a.local
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    deadline = time.monotonic() + a.max_s
    before = set(glob.glob(a.host_glob))  # earlier runs' logs: the run to time is a new file
    while not stop["now"] and time.monotonic() < deadline:
        if host.path is None:
            found = sorted(set(glob.glob(a.host_glob)) - before, key=lambda p: os.path.getmtime(p))
            if found:
                host.path = found[-1]
        now = time.monotonic()
        host.poll(now)
        local.poll(now)
        if local.ended and len(local.times) >= len(host.times):
            break
        time.sleep(0.002)
    lat = [lt - ht for ht, lt in zip(host.times, local.times)]
    json.dump({"host_path": host.path, "local_path": local.path, "host_lines": len(host.times),
               "local_lines": len(local.times), "latency_s": lat}, open(a.out, "w"))
    return 0


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _read_events(path: str) -> list[dict[str, Any]]:
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _sha(path: str) -> str | None:
    if not path or not os.path.exists(path):
        return None
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _stages(stderr_path: str) -> dict[str, Any]:
    """First time each progress stage appears in the CLI's timestamped stderr ("<unix s> line")."""
    first: dict[str, float] = {}
    lines = []
    if os.path.exists(stderr_path):
        for raw in open(stderr_path, errors="replace"):
            m = re.match(r"^(\d+\.\d+) (.*)$", raw.rstrip("\n"))
            if not m:
                continue
            t, line = float(m.group(1)), m.group(2)
            lines.append((t, line))
            st = re.match(r"^([a-z_]+):", line)
            if st and st.group(1) not in first:
                first[st.group(1)] = t
    t0 = lines[0][0] if lines else None
    return {"first_s": {k: round(v - t0, 3) for k, v in first.items()} if t0 else {}, "lines": len(lines)}


def cmd_report(a: argparse.Namespace) -> int:
    d = a.record
    out: dict[str, Any] = {}
    env = {}
    if os.path.exists(os.path.join(d, "env.txt")):
        for line in open(os.path.join(d, "env.txt")):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    out["env"] = env
    # Probe.
    try:
        probe = json.load(open(os.path.join(d, "probe.json")))
    except (OSError, ValueError) as e:
        probe = {"error": f"no probe.json: {e}"}
    out["probe"] = probe
    # The default-interpreter run: its exit code and the CLI's last lines.
    dflt = {}
    for name in ("default-python.rc", "default-python.err"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            dflt[name] = open(p, errors="replace").read()[-3000:]
    out["default_python_run"] = dflt
    # The traced run.
    run = {"rc": open(os.path.join(d, "traced.rc")).read().strip() if os.path.exists(os.path.join(d, "traced.rc")) else None}
    run["stages"] = _stages(os.path.join(d, "traced.err"))
    local_log = env.get("LOCAL_LOG", "")
    host_log = env.get("HOST_LOG", "")
    run["local_sha256"], run["host_sha256"] = _sha(local_log), _sha(host_log)
    run["byte_identical"] = bool(run["local_sha256"]) and run["local_sha256"] == run["host_sha256"]
    if local_log and os.path.exists(local_log):
        ev = _read_events(local_log)
        run["events"] = len(ev)
        start = next((e for e in ev if e.get("type") == "run.start"), {})
        end = next((e for e in ev if e.get("type") == "run.end"), {})
        run["status"] = end.get("status")
        run["summary"] = end.get("summary")
        run["capabilities"] = start.get("capabilities")
        run["gpus"] = (start.get("host") or {}).get("gpus")
        pools = {e["pool"]: e for e in ev if e.get("type") == "pool"}
        bb = (pools.get("gpu") or {}).get("block_bytes") or 0
        moved = {"h2d": 0, "d2h": 0}
        for e in ev:
            if e.get("type") == "blocks" and e.get("op") in ("onboard", "offload"):
                moved["h2d" if e["op"] == "onboard" else "d2h"] += len(e.get("ids") or [])
        rounds_begin = next((e["t"] for e in ev if e.get("type") == "phase" and e.get("name") == "rounds"
                             and e.get("state") == "begin"), None)
        ctx_begin = next((e["t"] for e in ev if e.get("type") == "phase" and e.get("name") == "context"
                          and e.get("state") == "begin"), None)
        first_kv = ctx_begin if ctx_begin is not None else rounds_begin
        cupti = {"h2d": 0, "d2h": 0}
        cupti_before = {"h2d": 0, "d2h": 0}
        for e in ev:
            if e.get("type") == "xfer" and e.get("source") == "cupti" and e.get("dir") in cupti:
                if first_kv is not None and e["start"] < first_kv:
                    cupti_before[e["dir"]] += e["bytes"]  # set-up copies: weights, the plain-copy check
                else:
                    cupti[e["dir"]] += e["bytes"]
        run["blocks_moved"] = moved
        run["block_bytes"] = bb
        run["block_bytes_moved"] = {k: v * bb for k, v in moved.items()}
        run["cupti_bytes_after_setup"] = cupti
        run["cupti_bytes_in_setup"] = cupti_before
        run["cupti_over_blocks"] = {k: (cupti[k] / (moved[k] * bb) if moved[k] * bb else None) for k in cupti}
        logs = [e.get("msg") for e in ev if e.get("type") == "log"]
        run["agent_log_lines"] = logs[:40]
    try:
        w = json.load(open(os.path.join(d, "watch.json")))
        lat = w["latency_s"]
        run["streaming"] = {"lines_host": w["host_lines"], "lines_local": w["local_lines"],
                            "latency_ms_p50": None if not lat else round(_pct(lat, 50) * 1e3, 1),
                            "latency_ms_p95": None if not lat else round(_pct(lat, 95) * 1e3, 1),
                            "latency_ms_max": None if not lat else round(max(lat) * 1e3, 1)}
    except (OSError, ValueError, KeyError) as e:
        run["streaming"] = {"error": str(e)}
    for name in ("validate.txt", "deploy.txt"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            run[name] = open(p, errors="replace").read()[-4000:]
    out["traced_run"] = run
    json.dump(out, open(os.path.join(d, "summary.json"), "w"), indent=1, default=str)
    md = ["# SSH path end to end on a GPU host", ""]
    md.append(f"- card: {env.get('GPU', '?')}; date: {env.get('DATE', '?')}; commit: {env.get('COMMIT', '?')}")
    md.append(f"- non-login shell's python3: {env.get('SSH_PYTHON3', '?')}; interpreter with torch: {env.get('TORCH_PY', '?')}")
    md.append(f"- sshd: {env.get('SSHD', '?')}")
    md.append(f"- traced run rc {run.get('rc')}, status {run.get('status')}, {run.get('events')} events; byte-identical: {run.get('byte_identical')}")
    md.append(f"- stage first-seen (s from the CLI's first line): {run.get('stages', {}).get('first_s')}")
    md.append(f"- streaming latency: {run.get('streaming')}")
    md.append(f"- blocks moved {run.get('blocks_moved')} × {run.get('block_bytes')} B; CUPTI bytes after set-up {run.get('cupti_bytes_after_setup')}; ratio {run.get('cupti_over_blocks')}")
    open(os.path.join(d, "summary.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--host-glob", required=True)
    w.add_argument("--local", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--max-s", type=float, default=600)
    r = sub.add_parser("report")
    r.add_argument("--record", required=True)
    a = p.parse_args(argv)
    return cmd_watch(a) if a.cmd == "watch" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
