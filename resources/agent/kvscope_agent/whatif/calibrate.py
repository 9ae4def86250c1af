"""Fitting the cost model's factors on recorded runs (costs.py says what they mean).

- Copies: each direction's engine copy rate (its `xfer` lines with source "engine") against the
  plain copy the run measured beside it (`summary.plain_copy`; else the card's profile), and the
  two directions' rate together where the run overlapped them.
- Admissions: the host time from the request line before a `scheduled` line to it, as a constant
  plus a cost per block the admission moved (least squares).
- Steps: the simulator replays the run on its own card; each request's two intervals (scheduled →
  first token: its copies and prefill; first token → done: its decode) are the measured ones minus
  the simulated idle time (waiting for copies or the host), and the step factors are the
  non-negative least squares fit of those intervals (relative errors) to the work of the steps the
  simulation ran in them. The replay is repeated with the new factors until they settle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .costs import STEP_FACTORS, Calibration, CardRates, step_terms
from .profiles import Profile
from .recorded import RecordedRun, RecordedRunError
from .replay import CaptureWriter, MemoryPlan, shape_of, simulate

MAX_ROUNDS_OF_FIT = 8
SETTLED = 0.002  # relative change of every factor below which the fit has settled
# How strongly the weights and K/V factors are held equal (as if every interval also missed by
# this fraction for each 100% they differ): where a run's K/V reads barely vary (8B: a tenth of the
# bytes a step reads) the data cannot tell them apart and they stay one factor; where they carry
# half the step (70B FP8: the attention reaches a few percent of HBM bandwidth) and grow 8% over the
# rounds, the data separate them.
SPLIT_PRIOR = 0.03


@dataclass
class CalibrationReport:
    calibration: Calibration
    iterations: int
    rows: int
    # Self-simulation of each source run on its own card: (users, measured, simulated) E2E and TTFT.
    self_check: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"factors": self.calibration.to_dict(), "iterations": self.iterations, "intervals": self.rows,
                "self_check": self.self_check}


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def copy_efficiency(runs: list[RecordedRun], profile: Profile) -> tuple[float, float, float]:
    """(h2d, d2h, both) engine copy rate ÷ the plain copy rate of the same card."""
    rates: dict[str, list[float]] = {"h2d": [0.0, 0.0], "d2h": [0.0, 0.0]}  # bytes, ns, alone
    both_bytes_per_ns: list[tuple[float, float]] = []  # (combined rate, overlap ns)
    refs: dict[str, list[float]] = {"h2d": [], "d2h": []}
    for run in runs:
        plain = run.summary.get("plain_copy") if isinstance(run.summary.get("plain_copy"), dict) else {}
        for d in ("h2d", "d2h"):
            v = plain.get(f"{d}_gb_per_s")
            refs[d].append(float(v) * 1e9 if isinstance(v, (int, float)) and v > 0 else profile.value(f"link.{d}_bytes_per_s"))
        xs = [x for x in run.xfers if x.end > x.start]
        for x in xs:
            other = [y for y in xs if y.dir != x.dir and _overlap(x.start, x.end, y.start, y.end) > 0]
            if not other:
                rates[x.dir][0] += x.bytes
                rates[x.dir][1] += x.end - x.start
            elif x.dir == "h2d":
                for y in other:
                    ov = _overlap(x.start, x.end, y.start, y.end)
                    both_bytes_per_ns.append((x.bytes / (x.end - x.start) + y.bytes / (y.end - y.start), ov))
    eff = {}
    for d in ("h2d", "d2h"):
        ref = sum(refs[d]) / len(refs[d])
        eff[d] = (rates[d][0] / rates[d][1] * 1e9) / ref if rates[d][1] > 0 else None
    known = [v for v in eff.values() if v is not None]
    fallback = sum(known) / len(known) if known else 1.0
    h2d = eff["h2d"] if eff["h2d"] is not None else fallback
    d2h = eff["d2h"] if eff["d2h"] is not None else fallback
    if both_bytes_per_ns:
        total = sum(ov for _, ov in both_bytes_per_ns)
        combined = sum(r * ov for r, ov in both_bytes_per_ns) / total * 1e9
        both = combined / profile.value("link.both_bytes_per_s")
    else:
        both = (h2d + d2h) / 2
    return h2d, d2h, both


def admission_cost(runs: list[RecordedRun]) -> tuple[float, float]:
    """(ns per admission, ns per moved block): least squares, both kept ≥ 0."""
    pts = [(a.moved_blocks, a.gap_ns) for run in runs for a in run.admissions if a.gap_ns >= 0]
    if not pts:
        return 0.0, 0.0
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    beta = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else 0.0
    beta = max(0.0, beta)
    alpha = max(0.0, my - beta * mx)
    return alpha, beta


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-300:
            return None
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    return [m[i][n] / m[i][i] for i in range(n)]


def nnls(rows: list[tuple[list[float], float, float]], k: int) -> list[float]:
    """min Σ (w (y − x·θ))² over θ ≥ 0, by trying each set of free factors (k is small)."""
    best: tuple[float, list[float]] | None = None
    for size in range(k, 0, -1):
        for free in itertools.combinations(range(k), size):
            ata = [[sum((w * x[i]) * (w * x[j]) for x, _, w in rows) for j in free] for i in free]
            atb = [sum((w * x[i]) * (w * y) for x, y, w in rows) for i in free]
            sol = _solve(ata, atb)
            if sol is None or any(v < 0 for v in sol):
                continue
            theta = [0.0] * k
            for i, v in zip(free, sol):
                theta[i] = v
            res = sum((w * (y - sum(t * xi for t, xi in zip(theta, x)))) ** 2 for x, y, w in rows)
            if best is None or res < best[0]:
                best = (res, theta)
    if best is None:
        raise RecordedRunError("the step costs could not be fitted (no interval the steps explain)")
    return best[1]


def fit_step_factors(rows: list[tuple[list[float], float, float]]) -> list[float]:
    """STEP_FACTORS by non-negative least squares, the weights and K/V factors held together by
    SPLIT_PRIOR around their common value."""
    tied = nnls([([x[0] + x[1]] + x[2:], y, w) for x, y, w in rows], len(STEP_FACTORS) - 1)
    ref = max(tied[0], 1e-9)
    s = SPLIT_PRIOR * len(rows) ** 0.5 / ref
    return nnls(rows + [([s, -s] + [0.0] * (len(STEP_FACTORS) - 2), 0.0, 1.0)], len(STEP_FACTORS))


def _interval_rows(run: RecordedRun, sim_reqs: dict[tuple[int, int], dict[str, int]], steps: list[Any],
                   rates: CardRates) -> list[tuple[list[float], float, float]]:
    rows = []
    starts = [s.start for s in steps]
    for key, meas in run.reqs.items():
        sim = sim_reqs.get(key)
        if sim is None:
            continue
        for a, b, ma, mb in (("scheduled", "first_token", meas.scheduled, meas.first),
                             ("first_token", "done", meas.first, meas.done)):
            if a not in sim or b not in sim or ma is None or mb is None or mb <= ma:
                continue
            t0, t1 = sim[a], sim[b]
            x = [0.0] * len(STEP_FACTORS)
            busy = 0
            i = max(0, _bisect(starts, t0) - 1)
            while i < len(steps) and steps[i].start < t1:
                s = steps[i]
                ov = _overlap(s.start, s.end, t0, t1)
                if ov > 0 and s.end > s.start:
                    f = ov / (s.end - s.start)
                    for j, v in enumerate(step_terms(s.work, rates)):
                        x[j] += f * v
                    busy += ov
                i += 1
            idle = (t1 - t0) - busy
            y = (mb - ma) - idle
            rows.append((x, y, 1.0 / (mb - ma)))
    return rows


def _bisect(a: list[int], v: int) -> int:
    lo, hi = 0, len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


def self_plan(run: RecordedRun) -> MemoryPlan:
    pool = run.pools["gpu"]
    blocks = int(pool["capacity_blocks"])
    return MemoryPlan(blocks * int(pool["block_bytes"]), blocks, "the recorded run's GPU pool")


def replay_on_own_card(run: RecordedRun, rates: CardRates, cal: Calibration) -> tuple[dict[str, Any], Any, CaptureWriter]:
    holder: dict[str, CaptureWriter] = {}

    def writer_for(gpu: Any) -> CaptureWriter:
        holder["w"] = CaptureWriter(gpu)
        return holder["w"]

    result = simulate(run, run.users, rates, cal, self_plan(run), writer_for)
    return result.summary, result.gpu, holder["w"]


def calibrate(runs: list[RecordedRun], profile: Profile) -> CalibrationReport:
    """Factors that make the simulated replay of `runs` on `profile` (their own card) match them."""
    if not runs:
        raise RecordedRunError("no recorded run to calibrate from")
    models = {str(r.config.get("model")) for r in runs}
    if len(models) > 1:
        raise RecordedRunError(f"the runs are of different models ({', '.join(sorted(models))}): calibrate on one model's runs")
    gpus = {str(r.gpu.get("name")) for r in runs}
    if len(gpus) > 1:
        raise RecordedRunError(f"the runs ran on different cards ({', '.join(sorted(gpus))}): calibrate on one card's runs")
    h2d, d2h, both = copy_efficiency(runs, profile)
    alpha, beta = admission_cost(runs)
    dtype = shape_of(runs[0]).dtype
    cal = Calibration(weights_factor=4.0, kv_factor=4.0, prefill_step_ns=0.0, prefill_factor=3.0, admit_ns=alpha,
                      admit_ns_per_block=beta, copy_efficiency_h2d=h2d, copy_efficiency_d2h=d2h,
                      copy_efficiency_both=both)
    rates = CardRates.of(profile, dtype, cal)
    iterations = 0
    nrows = 0
    for iterations in range(1, MAX_ROUNDS_OF_FIT + 1):
        rows: list[tuple[list[float], float, float]] = []
        for run in runs:
            _, gpu, capture = replay_on_own_card(run, rates, cal)
            rows.extend(_interval_rows(run, capture.reqs, gpu.steps, rates))
        nrows = len(rows)
        theta = fit_step_factors(rows)
        old = [getattr(cal, f) for f in STEP_FACTORS]
        for f, v in zip(STEP_FACTORS, theta):
            setattr(cal, f, v)
        if all(abs(n - o) <= SETTLED * max(abs(o), 1e-9) for n, o in zip(theta, old)):
            break
    checks = []
    for run in runs:
        summary, _, _ = replay_on_own_card(run, rates, cal)
        checks.append({
            "run_id": run.run_id, "users": run.users,
            "e2e_ns": {"measured": run.e2e_ns(), "simulated": summary["e2e_ns"]},
            "ttft_ns_mean": {"measured": run.ttft_mean_ns(), "simulated": summary["ttft_ns_mean"]},
        })
    return CalibrationReport(cal, iterations, nrows, checks)
