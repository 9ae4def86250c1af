"""GPU profiles: what a card brings to the benchmark, each number with the source it comes from.

A profile is one JSON file (docs/whatif.md, "Profile files"): the built-in ones are
`whatif/profiles/*.json`; a user writes their own in the same format and passes its path. Every
number is an object {"value": number > 0, "source": "where it comes from", "basis": "datasheet" |
"measured" | "specification" | "assumed" | "estimated"}, so a prediction can always be traced back
to what it assumed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

PROFILE_KIND = "kvscope.gpu-profile"
PROFILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
BASES = ("datasheet", "measured", "specification", "assumed", "estimated")

# The numbers the simulator reads, as (key path, what it is).
REQUIRED = (
    ("memory_total_bytes", "GPU memory the driver reports (what the memory plan divides)"),
    ("hbm_bytes_per_s", "HBM bandwidth"),
    ("dense_flops_per_s.bf16", "dense BF16 tensor FLOP/s"),
    ("dense_flops_per_s.fp8", "dense FP8 tensor FLOP/s"),
    ("link.h2d_bytes_per_s", "host-to-GPU copy rate (a plain pinned copy)"),
    ("link.d2h_bytes_per_s", "GPU-to-host copy rate"),
    ("link.both_bytes_per_s", "both directions at once, in total"),
    ("link.copy_latency_s", "fixed cost of one batch of copies"),
)


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Number:
    value: float
    source: str
    basis: str


@dataclass
class Profile:
    id: str
    name: str
    match: list[str]
    numbers: dict[str, Number]
    path: str
    doc: dict[str, Any] = field(repr=False, default_factory=dict)

    def value(self, key: str) -> float:
        return self.numbers[key].value

    @property
    def memory_total_bytes(self) -> int:
        return int(self.value("memory_total_bytes"))

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.value("hbm_bytes_per_s")

    def flops(self, dtype: str) -> float:
        return self.value(f"dense_flops_per_s.{dtype}")

    @property
    def link_name(self) -> str:
        link = self.doc.get("link")
        return str(link.get("name", "")) if isinstance(link, dict) else ""

    def summary(self) -> dict[str, Any]:
        """What run.start's `simulated.profile` carries: the id, the name and every number the
        simulator read, each with its source."""
        return {
            "id": self.id,
            "name": self.name,
            "link": self.link_name,
            "numbers": {k: {"value": n.value, "source": n.source, "basis": n.basis} for k, n in self.numbers.items()},
        }


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _number(where: str, key: str, raw: Any) -> Number:
    if raw is None:
        raise ProfileError(f"{where}: {key} is missing")
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: {key} must be an object {{\"value\", \"source\"}}, not {json.dumps(raw)[:60]}")
    v = raw.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
        raise ProfileError(f"{where}: {key}.value must be a positive number, not {json.dumps(v)[:60]}")
    src = raw.get("source")
    if not isinstance(src, str) or not src.strip():
        raise ProfileError(f"{where}: {key}.source must say where the number comes from")
    basis = raw.get("basis", "datasheet")
    if basis not in BASES:
        raise ProfileError(f"{where}: {key}.basis must be one of {', '.join(BASES)}, not {json.dumps(basis)[:40]}")
    return Number(float(v), src.strip(), str(basis))


def parse_profile(doc: Any, where: str) -> Profile:
    """A profile from its parsed JSON; ProfileError names what is wrong."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: not a JSON object")
    if doc.get("kind") != PROFILE_KIND:
        raise ProfileError(f"{where}: kind must be {PROFILE_KIND!r}, not {json.dumps(doc.get('kind'))[:40]}")
    if doc.get("version") != 1:
        raise ProfileError(f"{where}: version must be 1, not {json.dumps(doc.get('version'))[:20]}")
    pid = doc.get("id")
    if not isinstance(pid, str) or not pid.strip() or any(c.isspace() or c in "/\\" for c in pid):
        raise ProfileError(f"{where}: id must be a short name without spaces or slashes")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ProfileError(f"{where}: name is missing")
    match = doc.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) and m.strip() for m in match):
        raise ProfileError(f"{where}: match must be a list of GPU-name fragments")
    numbers = {key: _number(where, key, _get(doc, key)) for key, _ in REQUIRED}
    return Profile(pid, name.strip(), [m.lower().strip() for m in match], numbers, where, doc)


def load_profile_file(path: str) -> Profile:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read the profile ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ProfileError(f"{path}: not JSON ({e})") from None
    return parse_profile(doc, path)


def builtin_profiles() -> list[Profile]:
    return [load_profile_file(os.path.join(PROFILE_DIR, n)) for n in sorted(os.listdir(PROFILE_DIR)) if n.endswith(".json")]


def resolve_profile(name_or_path: str) -> Profile:
    """A built-in profile by id, or a profile file by path."""
    for p in builtin_profiles():
        if p.id == name_or_path:
            return p
    if os.path.sep in name_or_path or name_or_path.endswith(".json") or os.path.exists(name_or_path):
        return load_profile_file(name_or_path)
    ids = ", ".join(p.id for p in builtin_profiles())
    raise ProfileError(f"no profile {name_or_path!r}: built-in profiles are {ids}; or give a profile file's path")


def profile_for_gpu(gpu_name: str | None, memory_total_bytes: int | None = None) -> Profile | None:
    """The built-in profile of a card as nvidia-smi names it: the longest matching name fragment
    wins ("GH200 480GB" is a GH200, not an H200)."""
    if not gpu_name:
        return None
    low = gpu_name.lower()
    best: tuple[int, Profile] | None = None
    for p in builtin_profiles():
        for m in p.match:
            if m in low and (best is None or len(m) > best[0]):
                best = (len(m), p)
    return best[1] if best else None
