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
  simulation ran in them, each factor at or above its physical floor (STEP_FLOORS). The replay is
  repeated with the new factors until they settle. A factor the intervals cannot determine (the
  prefill step's fixed cost, where every prefill is of one size; a step's fixed time against its
  weight reads, always) is held, and the report carries why and the calibrations at each corner of
  what the runs allow, for a prediction's range.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
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
# Each factor is the engine's time over the card's bound for that work, so none can be below 1: no
# engine reads faster than the card's HBM bandwidth or computes faster than its peak. The prefill
# step's fixed cost and a step's fixed time are times, at least 0. A fit that wants less (a run
# whose K/V reads hardly vary trading weights against K/V) is held at the floor.
STEP_FLOORS = (1.0, 1.0, 0.0, 1.0, 0.0)
# A prefill step's fixed cost and its cost per FLOP separate only where the runs prefill steps of
# different sizes (whole-context chunks and short prompts over a cached context). Where they do not
# (every request recomputes its whole context in equal chunks), freeing the fixed cost barely
# lowers the residual and any split fits: then it is held (fit_step_factors says at what) and the
# report says so. The test: the F statistic of that one extra factor, (RSS at 0 − RSS free) ÷
# (RSS free ÷ (intervals − factors)), against 3.84, F(1, ∞) at the 5% level.
SPLIT_EVIDENCE_F = 3.84


@dataclass
class CalibrationReport:
    calibration: Calibration
    iterations: int
    rows: int
    # Self-simulation of each source run on its own card: (users, measured, simulated) E2E and TTFT.
    self_check: list[dict[str, Any]]
    # Factors the runs could not determine, each with what it was held at and why.
    held: dict[str, str] = field(default_factory=dict)
    # Where a factor is held: the calibrations at each corner of what the runs allow (every held
    # factor at either end), for a prediction's range.
    ends: list[Calibration] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"factors": self.calibration.to_dict(), "iterations": self.iterations,
                             "intervals": self.rows, "self_check": self.self_check, "held": dict(self.held)}
        if self.ends:
            d["ends"] = [{f: getattr(c, f) for f in STEP_FACTORS} for c in self.ends]
        return d


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
    """min Σ (w (y − x·θ))² over θ ≥ 0, by trying each set of free factors (k is small); θ = 0 (every
    factor at its floor, in _fit's terms) is where it starts."""
    zero = [0.0] * k
    best: tuple[float, list[float]] | None = (sum((w * y) ** 2 for _, y, w in rows), zero) if rows else None
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


Rows = list[tuple[list[float], float, float]]
WEIGHTS = STEP_FACTORS.index("weights_factor")
KV = STEP_FACTORS.index("kv_factor")
PREFILL_STEP = STEP_FACTORS.index("prefill_step_ns")
PREFILL_FACTOR = STEP_FACTORS.index("prefill_factor")
STEP_FIXED = STEP_FACTORS.index("step_ns")


def _rss(rows: Rows, theta: list[float]) -> float:
    return sum((w * (y - sum(t * xi for t, xi in zip(theta, x)))) ** 2 for x, y, w in rows)


def _fit(rows: Rows, held: dict[int, float] | None = None) -> list[float]:
    """STEP_FACTORS ≥ STEP_FLOORS by non-negative least squares of what the floors leave, the
    factors in `held` (index → value) kept at their value; the weights and K/V factors are held
    together by SPLIT_PRIOR around their common value. A step's fixed time (step_ns) is never
    fitted here: on one card it is the weights term under another name (split_step_time)."""
    held = {STEP_FIXED: 0.0, **(held or {})}
    k = len(STEP_FACTORS)
    base = [held.get(i, f) for i, f in enumerate(STEP_FLOORS)]
    free = [i for i in range(k) if i not in held]
    left = [([x[i] for i in free], y - sum(b * xi for b, xi in zip(base, x)), w) for x, y, w in rows]

    def place(sol: list[float]) -> list[float]:
        theta = list(base)
        for i, v in zip(free, sol):
            theta[i] += v
        return theta

    w_i, kv_i = free.index(WEIGHTS), free.index(KV)
    merged = [i for i in range(len(free)) if i != kv_i]
    tied = nnls([([x[i] + x[kv_i] if i == w_i else x[i] for i in merged], y, w) for x, y, w in left], len(merged))
    ref = max(base[0] + tied[merged.index(w_i)], 1e-9)
    s = SPLIT_PRIOR * len(rows) ** 0.5 / ref
    prior = [0.0] * len(free)
    prior[w_i], prior[kv_i] = s, -s
    return place(nnls(left + [(prior, 0.0, 1.0)], len(free)))


@dataclass
class StepFit:
    factors: list[float]
    # Factors the rows cannot determine: name → what it was held at and why.
    held: dict[str, str] = field(default_factory=dict)
    # Where a factor is held: the factors at each corner of what the rows allow (every held factor
    # at either end), for a prediction's range.
    ends: list[list[float]] = field(default_factory=list)


def _middle_of(top: float) -> str:
    return f"held at {top / 2e6:.1f} ms, the middle of 0 to {top / 1e6:.1f} ms"


def split_step_time(theta: list[float], weights_ns: float) -> tuple[list[float], list[list[float]], str | None]:
    """A step's fixed time (launches, host work) and its weight reads (which a card with more HBM
    bandwidth shortens) are both one constant a step on the runs' card: the runs fit any split of
    `weights_factor × weights_ns` between them, from all of it at bandwidth to weights_factor at its
    floor (1) and the rest fixed. The split is held at the middle (the flat-prior expectation, as
    for the prefill split) and both ends returned: (middle, [all at bandwidth, most fixed], why);
    on the runs' own card every split costs the same, so the self-check cannot move."""
    w = theta[WEIGHTS]
    top = max(0.0, (w - STEP_FLOORS[WEIGHTS]) * weights_ns)
    if top <= 0:
        return theta, [], None

    def at(fixed: float) -> list[float]:
        t = list(theta)
        t[STEP_FIXED] = fixed
        t[WEIGHTS] = w - fixed / weights_ns
        return t

    why = (f"{_middle_of(top)}: one card's runs cannot tell a step's fixed time (launches, host work) from its reading "
           f"of the weights ({w:.2f}× what the card's HBM bandwidth needs), since both take the same time every "
           "step; a card with other HBM bandwidth is uncertain by that range (none where the bandwidth is the "
           "same). The nearer the engine runs to the bandwidth bound, the narrower it is")
    return at(top / 2), [at(0.0), at(top)], why


def fit_step_factors(rows: Rows) -> StepFit:
    """STEP_FACTORS fitted on the intervals. Where the prefill step's fixed cost is not determined
    (SPLIT_EVIDENCE_F), it is held at the middle of what the rows allow: from 0 (all of the prefill
    cost per FLOP) to where prefill_factor reaches its floor (the FLOPs at the card's peak, the rest
    fixed); with a flat prior over that range and data that cannot prefer a point, the middle is the
    expected value, and the ends go with it so a prediction can say how far it could move. The step's
    fixed time is then split from the weights term (split_step_time), held the same way."""
    theta = _fit(rows)
    held: dict[str, str] = {}
    ends: list[list[float]] = []
    if any(x[PREFILL_STEP] > 0 for x, _, _ in rows):
        at_zero = _fit(rows, {PREFILL_STEP: 0.0})
        rss_free, rss_zero = _rss(rows, theta), _rss(rows, at_zero)
        dof = len(rows) - len(STEP_FACTORS)
        f_stat = (rss_zero - rss_free) / (rss_free / dof) if dof > 0 and rss_free > 0 else float("inf")
        if f_stat < SPLIT_EVIDENCE_F:
            top = _fit(rows, {PREFILL_FACTOR: STEP_FLOORS[PREFILL_FACTOR]})[PREFILL_STEP]
            theta = _fit(rows, {PREFILL_STEP: top / 2})
            ends = [at_zero, _fit(rows, {PREFILL_STEP: top})]
            held["prefill_step_ns"] = (
                f"{_middle_of(top)}: the runs' prefill steps are all of about one size, so their fixed cost and "
                f"their cost per FLOP cannot be told apart (freeing it lowers the misfit by F = {f_stat:.2f} < "
                f"{SPLIT_EVIDENCE_F}). Prefills much shorter than the runs' (a user whose context stays on the GPU) "
                "are uncertain by that range: calibrate on a run that also prefills short prompts over a cached "
                "context to measure it")
    stepped = [(x[WEIGHTS] / x[STEP_FIXED]) for x, _, _ in rows if x[STEP_FIXED] > 0]
    if stepped:
        weights_ns = sum(stepped) / len(stepped)  # the same in every row: the weights' read time a step
        middle, step_ends, why = split_step_time(theta, weights_ns)
        if why:
            held["step_ns"] = why
            # Every corner: each end of the prefill split (where it is held) at each end of this one.
            ends = [e for base in ends for e in (split_step_time(base, weights_ns)[1] or [base])] if ends else step_ends
            theta = middle
    return StepFit(theta, held, ends)


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
    fit = StepFit([])
    for iterations in range(1, MAX_ROUNDS_OF_FIT + 1):
        rows: list[tuple[list[float], float, float]] = []
        for run in runs:
            _, gpu, capture = replay_on_own_card(run, rates, cal)
            rows.extend(_interval_rows(run, capture.reqs, gpu.steps, rates))
        nrows = len(rows)
        fit = fit_step_factors(rows)
        theta = fit.factors
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
    ends = [replace(cal, **dict(zip(STEP_FACTORS, e))) for e in fit.ends]
    return CalibrationReport(cal, iterations, nrows, checks, fit.held, ends)
