"""What a step, a copy and an admission cost on a card: the simulator's cost model.

A step of the built-in engine is costed from what it does, with factors calibrated on a recorded
run (calibrate.py) and the card's numbers from its profile:

    step = weights_factor × weight bytes read / HBM bandwidth   (the weights, once a step)
         + kv_factor × K/V bytes read / HBM bandwidth          (each piece's context)
         + prefill_step_ns                                     (if the step prefills: eager launch)
         + prefill_factor × prefill FLOPs / dense FLOP/s        (linears and attention of prompts)
         + step_ns                                             (every step: time that no bandwidth
                                                                 or FLOP rate shortens: launches,
                                                                 host work)

The factors are the recorded run's: weights_factor = 1 / (the fraction of the HBM bandwidth the
engine's matrix products reached reading weights), kv_factor the same for its attention reading
K/V (the two differ: the built-in engine's attention reaches a far smaller fraction, ~18 ms a user
a step for the 70B FP8 preset at 17,280 tokens on the H100, bench/gpu/sweep-70b-fp8.sh), prefill_factor
the same for FLOP/s, prefill_step_ns the host time an eager prefill step costs beyond its FLOPs.
step_ns and the weights term are both a fixed time a step on one card, so one card's runs cannot
part them (calibrate.py holds the split and says how far it moves a prediction for a card with
other HBM bandwidth). They carry to another card unchanged, so a card with 1.2× the HBM bandwidth
decodes up to 1.2× faster (all of it only where no step time is fixed) and one with more memory
holds more users, each of whom costs its K/V a step; an engine whose
kernels reach another fraction of the hardware needs its own recorded run.

A copy batch costs the profile's fixed latency plus its bytes at the card's copy rate in that
direction (both directions at once share `both_bytes_per_s`), times the recorded engine's
efficiency against a plain copy. An admission costs host time: admit_ns + admit_ns_per_block × the
blocks it moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..presets import ModelConfig
from .profiles import Profile


@dataclass
class Calibration:
    """Card-independent factors fitted on a recorded run (calibrate.py)."""

    weights_factor: float
    kv_factor: float
    prefill_step_ns: float
    prefill_factor: float
    admit_ns: float
    admit_ns_per_block: float
    copy_efficiency_h2d: float
    copy_efficiency_d2h: float
    copy_efficiency_both: float
    step_ns: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepWork:
    """What one step does: weight and K/V bytes read from HBM, FLOPs of its prompt pieces, whether
    it prefills."""

    weight_bytes: float
    kv_bytes: float
    prefill_flops: float
    prefills: bool


class ModelShape:
    """The model's sizes the cost model needs, from run.start's config."""

    def __init__(self, cfg: ModelConfig, weight_bytes: int, kv_bytes_per_token: int) -> None:
        self.cfg = cfg
        self.weight_bytes = int(weight_bytes)
        self.kv_bytes_per_token = int(kv_bytes_per_token)
        hd = cfg.head_dim
        self.layer_linear_params = (cfg.hidden * (cfg.heads + 2 * cfg.kv_heads) * hd + cfg.heads * hd * cfg.hidden
                                    + 3 * cfg.hidden * cfg.ffn)
        # Weights a step reads: all but the embedding table, of which it reads only its tokens' rows
        # (the embedding and the output head are bf16 in every preset: 2 bytes an element).
        self.weights_read = max(0, self.weight_bytes - cfg.vocab * cfg.hidden * 2)
        self.dtype = "fp8" if cfg.weight_format == "fp8" else "bf16"

    def work(self, pieces: Sequence[Any]) -> StepWork:
        """pieces: objects with `start`, `n`, `want_logits` and `token_ids` (None for a decode token)."""
        cfg = self.cfg
        kv = 0
        flops = 0.0
        prefills = False
        for p in pieces:
            kv += (p.start + p.n) * self.kv_bytes_per_token
            if p.token_ids is None:  # a decode token
                continue
            prefills = True
            n, s = p.n, p.start
            flops += 2.0 * self.layer_linear_params * cfg.layers * n
            flops += 4.0 * cfg.layers * cfg.heads * cfg.head_dim * (n * s + n * (n + 1) / 2)
            if p.want_logits:
                flops += 2.0 * cfg.vocab * cfg.hidden
        return StepWork(self.weights_read, kv, flops, prefills)


@dataclass(frozen=True)
class CardRates:
    """A profile's numbers as the simulator uses them, with a recorded engine's copy efficiency."""

    hbm_bytes_per_s: float
    flops_per_s: float
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    both_bytes_per_s: float
    copy_latency_ns: float

    @classmethod
    def of(cls, profile: Profile, dtype: str, cal: Calibration) -> "CardRates":
        return cls(
            profile.hbm_bytes_per_s,
            profile.flops(dtype),
            profile.value("link.h2d_bytes_per_s") * cal.copy_efficiency_h2d,
            profile.value("link.d2h_bytes_per_s") * cal.copy_efficiency_d2h,
            profile.value("link.both_bytes_per_s") * cal.copy_efficiency_both,
            profile.value("link.copy_latency_s") * 1e9,
        )


STEP_FACTORS = ("weights_factor", "kv_factor", "prefill_step_ns", "prefill_factor", "step_ns")


def step_terms(work: StepWork, rates: CardRates) -> tuple[float, float, float, float, float]:
    """The terms a step's cost is linear in, one per factor of STEP_FACTORS, in ns per unit of the
    factor: (weights at HBM bandwidth, K/V at HBM bandwidth, the prefill step, FLOPs at peak, the
    step)."""
    return (work.weight_bytes / rates.hbm_bytes_per_s * 1e9, work.kv_bytes / rates.hbm_bytes_per_s * 1e9,
            1.0 if work.prefills else 0.0, work.prefill_flops / rates.flops_per_s * 1e9, 1.0)


def step_ns(work: StepWork, rates: CardRates, cal: Calibration) -> float:
    return sum(getattr(cal, f) * t for f, t in zip(STEP_FACTORS, step_terms(work, rates)))


def copy_ns(nbytes: int, bytes_per_s: float, latency_ns: float) -> float:
    return latency_ns + nbytes / bytes_per_s * 1e9


def overlapped_copy_ns(d2h: int, h2d: int, rates: CardRates, chunk_bytes: int) -> tuple[float, float, float]:
    """Offload and onboard of one batch run together (the engine's --copy-overlap): the onboards
    start once the first offload chunk has left, then both directions share the link (each at most
    its one-way rate, together at most `both`); the one left alone runs at its one-way rate.
    Returns (d2h end, h2d start, h2d end), ns from the batch's start."""
    lat = rates.copy_latency_ns
    rd, rh = rates.d2h_bytes_per_s, rates.h2d_bytes_per_s
    share = min(1.0, rates.both_bytes_per_s / (rd + rh))
    first = min(chunk_bytes, d2h)
    t = lat + first / rd * 1e9
    h_start = t
    d_left, h_left = float(d2h - first), float(h2d)
    while d_left > 0 and h_left > 0:
        cd, ch = rd * share, rh * share
        dt = min(d_left / cd, h_left / ch)
        d_left -= cd * dt
        h_left -= ch * dt
        t += dt * 1e9
        if d_left <= 1:
            d_left = 0.0
        if h_left <= 1:
            h_left = 0.0
    d_end = t + d_left / rd * 1e9
    h_end = t + h_left / rh * 1e9
    return d_end, h_start, h_end
