"""Read KV Scope event logs (protocol v1) and project them onto a link of another bandwidth.

Standard library only, so it runs wherever the logs are (the GPU host, a laptop, CI).

Measured numbers follow PROTOCOL.md and the app's run analysis (src/shared/run-analysis.ts):
E2E runs from the first `req queued` of round 1 to the last `req done` of the last round; TTFT of
a request is `first_token.t - queued.t`; percentiles are linear-interpolated (numpy's default).

THE PROJECTION IS NOT A MEASUREMENT. It answers "what would these same runs take if every
recorded host<->GPU copy had run at B bytes/s instead?" (B = 900e9 for NVLink-C2C as on GH200):
for a time window (a request's TTFT, or the rounds' E2E), the time the link was busy inside the
window (union of the recorded `xfer` intervals, h2d and d2h together) is removed and the bytes
those copies carried inside the window, divided by B, are added back. Compute is unchanged, the
GPU memory is unchanged (H100's 80 GB: the same blocks move as in the measured run), and every
busy-link interval is treated as on the critical path, so where the engine overlapped copies with
compute the projection overstates the gain. Without `xfer` lines (tracing off and no engine
timings) the copy time is estimated from the `blocks` lines (block count × block_bytes at the
pinned-copy bandwidth measured on the H100: 54.5 GB/s H2D, 55.0 GB/s D2H) and marked so.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

C2C_BYTES_PER_S = 900e9  # NVLink-C2C, GH200 (total of both directions, as the seed quotes it)
C2C_PER_DIRECTION_BYTES_PER_S = 450e9  # the same link counted one direction at a time
H100_PINNED_H2D = 54.5e9  # /work/shared/reference/h100-measurements.md
H100_PINNED_D2H = 55.0e9

SEED_RATIOS = {
    "ttft": 1.9,
    "e2e": 3.0,
    "past_users": 7,
    "source": "TensorRT-LLM benchmarks/python/kv_cache_offload/README.md: GH200 (96 GB) vs H100, "
    "Llama-3.1-70B FP8, more than 7 users: 1.9x TTFT, ~3x E2E over 10 rounds; H100 fits 2 users' KV "
    "on GPU, GH200 fits 7",
    "why_they_differ": "GH200 has 96 GB of HBM, so up to 7 users' KV stay on the GPU and nothing moves "
    "(and its HBM3 is faster); this projection keeps H100's 80 GB, so the same blocks move from the "
    "same user count on, and only their copy time changes",
}


class LogError(ValueError):
    pass


@dataclass
class Xfer:
    dir: str
    bytes: int
    start: int
    end: int
    source: str


@dataclass
class Req:
    user: int
    round: int
    queued: Optional[int] = None
    first_token: Optional[int] = None
    done: Optional[int] = None
    done_fields: dict = field(default_factory=dict)


@dataclass
class RunLog:
    path: str
    run_id: str = ""
    config: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    unix_ns_at_t0: Optional[int] = None
    pools: dict = field(default_factory=dict)
    block_ops: dict = field(default_factory=dict)  # op -> ids moved over the whole run
    block_ops_by_round: dict = field(default_factory=dict)  # (op, round) -> ids
    block_moves: list = field(default_factory=list)  # (t, op, n_ids, user, round)
    xfers: list = field(default_factory=list)
    reqs: dict = field(default_factory=dict)
    rounds: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # (name, state) -> t
    end: Optional[dict] = None
    logs: list = field(default_factory=list)
    bad_lines: list = field(default_factory=list)  # (line number, reason)
    last_t: int = 0


def _open_text(path: str) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def load(path: str) -> RunLog:
    """Parse one events.jsonl (or .jsonl.gz). Bad lines are counted with their line number,
    never fatal; a file with no run.start is a LogError."""
    run = RunLog(path=path)
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError as ex:
                run.bad_lines.append((n, f"not JSON: {ex}"))
                continue
            if not isinstance(e, dict) or "type" not in e:
                run.bad_lines.append((n, "no type"))
                continue
            _take(run, e, n)
    if not run.run_id and not run.config:
        raise LogError(f"{path}: no run.start line")
    return run


def _take(run: RunLog, e: dict, n: int) -> None:
    t = e.get("t")
    if isinstance(t, int):
        run.last_t = max(run.last_t, t)
    typ = e["type"]
    if typ == "run.start":
        run.run_id = str(e.get("run_id", ""))
        run.config = e.get("config") or {}
        run.host = e.get("host") or {}
        run.engine = e.get("engine") or {}
        run.unix_ns_at_t0 = (e.get("clock") or {}).get("unix_ns_at_t0")
    elif typ == "pool":
        run.pools[e.get("pool")] = {k: e.get(k) for k in ("capacity_blocks", "block_tokens", "block_bytes")}
    elif typ == "blocks":
        op = e.get("op")
        ids = e.get("ids") or []
        run.block_ops[op] = run.block_ops.get(op, 0) + len(ids)
        rnd = e.get("round")
        key = (op, rnd)
        run.block_ops_by_round[key] = run.block_ops_by_round.get(key, 0) + len(ids)
        run.block_moves.append((t, op, len(ids), e.get("user"), rnd))
    elif typ == "xfer":
        try:
            run.xfers.append(Xfer(str(e["dir"]), int(e["bytes"]), int(e["start"]), int(e["end"]), str(e.get("source", ""))))
        except (KeyError, TypeError, ValueError):
            run.bad_lines.append((n, "xfer without dir/bytes/start/end"))
    elif typ == "req":
        try:
            key = (int(e["user"]), int(e["round"]))
        except (KeyError, TypeError, ValueError):
            run.bad_lines.append((n, "req without user/round"))
            return
        r = run.reqs.setdefault(key, Req(*key))
        ph = e.get("phase")
        if ph in ("queued", "first_token", "done"):
            setattr(r, ph, t)
            if ph == "done":
                r.done_fields = {k: e.get(k) for k in ("prompt_tokens", "output_tokens", "reused_gpu_tokens", "reused_host_tokens", "computed_tokens")}
    elif typ == "round":
        run.rounds[e.get("round")] = {"e2e_ns": e.get("e2e_ns"), "ttft_ns": e.get("ttft_ns")}
    elif typ == "phase":
        run.phases[(e.get("name"), e.get("state"))] = t
    elif typ == "run.end":
        run.end = e
    elif typ == "log":
        run.logs.append((e.get("level"), e.get("msg")))


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_vals: list, p: float) -> Optional[float]:
    if not sorted_vals:
        return None
    rank = p / 100 * (len(sorted_vals) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (rank - lo)


def distribution(vals: Iterable[float]) -> dict:
    s = sorted(vals)
    if not s:
        return {"count": 0, "mean": None, "p50": None, "p99": None}
    return {"count": len(s), "mean": sum(s) / len(s), "p50": percentile(s, 50), "p99": percentile(s, 99)}


def merge_intervals(iv: Iterable[tuple]) -> list:
    out: list = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def link_xfers(run: RunLog) -> tuple:
    """The host<->GPU copies to count: CUPTI's if the run has any (every copy of the process,
    exact bytes), else the engine's own; (list, source name)."""
    hd = [x for x in run.xfers if x.dir in ("h2d", "d2h")]
    cupti = [x for x in hd if x.source == "cupti"]
    if cupti:
        return cupti, "cupti"
    eng = [x for x in hd if x.source == "engine"]
    if eng:
        return eng, "engine"
    return hd, (hd[0].source if hd else "none")


def timed_window(run: RunLog) -> Optional[tuple]:
    """(first queued of round 1, last done of the last round) when every timed request finished."""
    timed = [r for (u, rd), r in run.reqs.items() if rd >= 1]
    if not timed:
        return None
    last_round = int(run.config.get("rounds") or max(r.round for r in timed))
    users = int(run.config.get("users") or len({r.user for r in timed}))
    q1 = [r.queued for r in timed if r.round == 1 and r.queued is not None]
    dl = [r.done for r in timed if r.round == last_round and r.done is not None]
    complete = len([r for r in timed if r.done is not None]) >= users * last_round
    if not q1 or not dl or not complete:
        return None
    return min(q1), max(dl)


def rounds_done_window(run: RunLog) -> Optional[tuple]:
    """For a run stopped before its last round (cancelled, out of time): (first queued of round 1,
    last done of round k, k) where k is the last round whose every request finished, rounds 1..k
    all complete; None if not even round 1 finished. On a complete run k is the last round and the
    window is `timed_window`'s. What it covers is measured; nothing past round k is inferred."""
    timed = [r for (u, rd), r in run.reqs.items() if rd >= 1]
    if not timed:
        return None
    users = int(run.config.get("users") or len({r.user for r in timed}))
    last = int(run.config.get("rounds") or max(r.round for r in timed))
    k = 0
    for rd in range(1, last + 1):
        if len([r for r in timed if r.round == rd and r.done is not None]) < users:
            break
        k = rd
    if k == 0:
        return None
    q1 = [r.queued for r in timed if r.round == 1 and r.queued is not None]
    dk = [r.done for r in timed if r.round == k and r.done is not None]
    if not q1 or not dk:
        return None
    return min(q1), max(dk), k


def busy_in(xs: list, a: int, b: int) -> tuple:
    """(ns the link was busy within [a, b], bytes carried within [a, b] prorated by overlap)."""
    busy = sum(_overlap(i0, i1, a, b) for i0, i1 in merge_intervals((x.start, x.end) for x in xs))
    by = 0.0
    for x in xs:
        d = x.end - x.start
        if d <= 0:
            by += x.bytes if a <= x.start <= b else 0
        else:
            by += x.bytes * _overlap(x.start, x.end, a, b) / d
    return busy, by


def summarize(run: RunLog) -> dict:
    cfg = run.config
    users = cfg.get("users")
    xs, src = link_xfers(run)
    win = timed_window(run)
    timed = sorted((r for r in run.reqs.values() if r.round >= 1 and r.queued is not None and r.first_token is not None), key=lambda r: (r.round, r.user))
    ttft = distribution(r.first_token - r.queued for r in timed)
    gpu = run.pools.get("gpu") or {}
    host = run.pools.get("host") or {}
    bt = int(gpu.get("block_tokens") or cfg.get("block_tokens") or 32)
    ctx = int(cfg.get("context_tokens") or 0)
    rounds = int(cfg.get("rounds") or 0)
    grow = int(cfg.get("new_tokens") or 0) + int(cfg.get("output_tokens") or 0)
    blocks_ctx = -(-ctx // bt) if ctx else None
    # what the agent's scheduler reserves for a request of the last round (prompt + output)
    blocks_end = -(-(ctx + rounds * grow + int(cfg.get("output_tokens") or 0) - 1) // bt) if ctx else None
    cap = gpu.get("capacity_blocks")
    part = rounds_done_window(run)
    k = part[2] if part else 0
    # TTFT over the complete rounds only: a cancelled run's last, unfinished round has first tokens
    # only for the requests served first (the shortest waits), which would bias the mean low
    ttft_done = distribution(r.first_token - r.queued for r in timed if r.round <= k)
    out: dict = {
        "path": run.path,
        "run_id": run.run_id,
        "users": users,
        "rounds": rounds,
        "status": (run.end or {}).get("status", "incomplete (no run.end)"),
        "error": (run.end or {}).get("error"),
        "e2e_ns": (win[1] - win[0]) if win else None,
        "ttft": ttft,
        "rounds_completed": len({r.round for r in run.reqs.values() if r.round >= 1 and r.done is not None}),
        # rounds 1..k all finished (k = rounds on a complete run); E2E and TTFT over just those rounds
        "rounds_done": k,
        "e2e_ns_rounds_done": (part[1] - part[0]) if part else None,
        "ttft_rounds_done": ttft_done,
        # the agent's own per-round E2E (`round` lines), rounds 1.. in order
        "round_e2e_ns": [run.rounds[rd].get("e2e_ns") for rd in sorted(x for x in run.rounds if isinstance(x, int) and x >= 1)],
        "gpu_pool_blocks": cap,
        "host_pool_blocks": host.get("capacity_blocks"),
        "block_bytes": gpu.get("block_bytes"),
        "block_tokens": bt,
        "blocks_per_user_context": blocks_ctx,
        "blocks_per_user_last_round": blocks_end,
        "users_fit_gpu_at_context": (cap // blocks_ctx) if cap and blocks_ctx else None,
        "users_fit_gpu_at_last_round": (cap // blocks_end) if cap and blocks_end else None,
        "blocks": dict(run.block_ops),
        "blocks_timed": {op: sum(v for (o, rd), v in run.block_ops_by_round.items() if o == op and isinstance(rd, int) and rd >= 1) for op in ("offload", "onboard", "evict", "hit", "store")},
        "xfer_source": src,
        "bad_lines": len(run.bad_lines),
        # the agent's own account of weights and pool sizing (free memory, workspace), as logged
        "memory_logs": [str(m) for lvl, m in run.logs if m and ("gpu pool" in str(m) or "weights built" in str(m))],
        "card": _card(run),
        "date_utc": _date(run),
        "config": cfg,
    }
    for d in ("h2d", "d2h"):
        dx = [x for x in xs if x.dir == d]
        tot = sum(x.bytes for x in dx)
        # achieved bandwidth of the block copies (>= 1 MiB): the engine's small token-id and
        # sampling copies would only dilute it; all copies if there are no large ones
        big = [x for x in dx if x.bytes >= 1 << 20] or dx
        busy = sum(b - a for a, b in merge_intervals((x.start, x.end) for x in big))
        out[f"bytes_{d}"] = tot
        out[f"gbps_{d}"] = (sum(x.bytes for x in big) / busy) if busy > 0 else None  # bytes/ns == GB/s
        out[f"copies_{d}"] = len(dx)
        if win:
            _, wb = busy_in(dx, *win)
            out[f"bytes_{d}_timed"] = int(round(wb))
    return out


def _card(run: RunLog) -> str:
    gpus = run.host.get("gpus") or []
    dev = run.config.get("device")
    names = [g.get("name") for g in gpus if g.get("name")]
    return names[0] if names else str(dev or "unknown")


def _date(run: RunLog) -> Optional[str]:
    if not run.unix_ns_at_t0:
        return None
    import datetime as _dt

    return _dt.datetime.fromtimestamp(run.unix_ns_at_t0 / 1e9, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def estimated_xfers(run: RunLog) -> list:
    """Copies inferred from `blocks` lines when a run recorded no `xfer` lines: each onboard or
    offload line becomes one copy of n × block_bytes at the H100's measured pinned bandwidth,
    ending at the line's time (the engine logs a move once it is issued or done)."""
    bb = int((run.pools.get("gpu") or {}).get("block_bytes") or 0)
    out = []
    for t, op, n, user, rnd in run.block_moves:
        if op not in ("onboard", "offload") or t is None or not n or not bb:
            continue
        rate = H100_PINNED_H2D if op == "onboard" else H100_PINNED_D2H
        dur = int(n * bb / rate * 1e9)
        out.append(Xfer("h2d" if op == "onboard" else "d2h", n * bb, t - dur, t, "estimated"))
    return out


def project(run: RunLog, bytes_per_s: float) -> dict:
    """E2E and TTFT of `run` with its host<->GPU copy time re-timed at `bytes_per_s` (see the
    module docstring for what this assumes), plus how much link time was replaced."""
    xs, src = link_xfers(run)
    method = "recorded xfer intervals"
    if not xs:
        xs, src = estimated_xfers(run), "estimated"
        method = "estimated from blocks lines at the H100's pinned bandwidth (no xfer lines in the log)"
    win = timed_window(run)
    timed = [r for r in run.reqs.values() if r.round >= 1 and r.queued is not None and r.first_token is not None]
    ttfts = []
    for r in timed:
        busy, by = busy_in(xs, r.queued, r.first_token)
        ttfts.append(r.first_token - r.queued - busy + by / bytes_per_s * 1e9)
    e2e = None
    replaced = 0
    moved = 0.0
    if win:
        replaced, moved = busy_in(xs, *win)
        e2e = (win[1] - win[0]) - replaced + moved / bytes_per_s * 1e9
    # the same over the rounds that finished (a cancelled run's measured part; nothing extrapolated)
    part = rounds_done_window(run)
    e2e_done = None
    replaced_done = 0
    k = part[2] if part else 0
    if part:
        replaced_done, moved_done = busy_in(xs, part[0], part[1])
        e2e_done = (part[1] - part[0]) - replaced_done + moved_done / bytes_per_s * 1e9
    ttfts_done = []
    for r in timed:
        if r.round <= k:
            busy, by = busy_in(xs, r.queued, r.first_token)
            ttfts_done.append(r.first_token - r.queued - busy + by / bytes_per_s * 1e9)
    return {
        "rounds_done": k,
        "e2e_ns_rounds_done": e2e_done,
        "ttft_rounds_done": distribution(ttfts_done),
        "link_ns_replaced_in_rounds_done": replaced_done,
        "bytes_per_s": bytes_per_s,
        "method": method,
        "xfer_source": src,
        "e2e_ns": e2e,
        "ttft": distribution(ttfts),
        "link_ns_replaced_in_e2e": replaced,
        "link_ns_projected_in_e2e": moved / bytes_per_s * 1e9,
    }


def _untar(path: str) -> str:
    """A .tar.gz of run folders (bench/gpu/issue9.sh packs its runs so) unpacked to a temp dir."""
    import tarfile
    import tempfile

    dst = tempfile.mkdtemp(prefix="kvscope-runs-")
    with tarfile.open(path, "r:*") as tf:
        for m in tf.getmembers():  # regular files only, nothing outside dst
            if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                continue
            tf.extract(m, dst)
    return dst


def find_logs(root: str) -> list:
    """Every events.jsonl / events.jsonl.gz / *.jsonl.gz under root (a dir), inside a .tar.gz of
    run folders, or the file itself."""
    if os.path.isfile(root) and (root.endswith(".tar.gz") or root.endswith(".tgz")):
        root = _untar(root)
    elif os.path.isfile(root):
        return [root]
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            if f in ("events.jsonl", "events.jsonl.gz") or (f.endswith(".jsonl.gz") and "sample" not in f):
                found.append(os.path.join(d, f))
    return sorted(found)


def iter_runs(roots: Iterable[str]) -> Iterator[tuple]:
    """(path, RunLog or LogError) for every log under the roots."""
    for root in roots:
        for p in find_logs(root):
            try:
                yield p, load(p)
            except (LogError, OSError) as e:
                yield p, e


def projection_doc(points: list, bytes_per_s: float, extra: Optional[dict] = None) -> dict:
    """The projection.json the app's Compare view reads: one point per user count."""
    return {
        "kind": "kvscope.projection",
        "version": 1,
        "label": f"PROJECTION (not measured): H100 runs with host<->GPU copies re-timed at {bytes_per_s / 1e9:.0f} GB/s "
        "(NVLink-C2C as on GH200); compute and GPU memory unchanged",
        "line_style": "dashed",
        "link_bytes_per_s": bytes_per_s,
        "method": __doc__.split("THE PROJECTION IS NOT A MEASUREMENT.", 1)[1].strip().split("\n\n")[0].replace("\n", " "),
        "seed_ratios": SEED_RATIOS,
        "points": points,
        **(extra or {}),
    }
