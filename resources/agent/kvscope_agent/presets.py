"""Model shapes for the built-in engine: Llama-architecture presets or a Hugging Face config.json.

Weights are random (resources/agent/README.md, "The engine"), so a preset only fixes shapes and
number formats; compute and memory traffic match the real model's.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    max_position: int
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    # "native": bf16 on GPU / fp32 on CPU. "fp8": e4m3 weights through engine/fp8.py.
    weight_format: str = "native"
    kv_dtype: str = "native"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def kv_bytes_per_token(self, elt_bytes: int) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * elt_bytes

    def param_count(self) -> int:
        hd = self.head_dim
        per_layer = (
            self.hidden * (self.heads + 2 * self.kv_heads) * hd  # qkv
            + self.heads * hd * self.hidden  # o
            + 3 * self.hidden * self.ffn  # gate, up, down
            + 2 * self.hidden  # norms
        )
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_dim"] = self.head_dim
        return d


# The presets live in presets.json beside this file, the one list the app reads too (New run's
# pre-flight check sizes blocks from them):
# - tiny: small enough for CPU tests; GQA (4 query heads share 2 KV heads) like the real shapes.
# - llama-3.1-8b / -70b: Llama 3.1 shapes (config.json of meta-llama/Llama-3.1-8B / -70B). RoPE is
#   plain theta 500000 without the llama3 long-context frequency scaling: with random weights the
#   scaling changes no compute or traffic.
# - llama-3.1-70b-fp8: the seed benchmark's model, 70B quantised to FP8 (trtllm-bench
#   --quantization FP8), whose KV cache is FP8 too; weights about 70 GB, so it fits one 80 GB H100
#   with a small KV pool.
PRESETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets.json")


def _load_presets() -> dict[str, ModelConfig]:
    with open(PRESETS_FILE, encoding="utf-8") as f:
        doc = json.load(f)
    return {name: ModelConfig(name=name, **shape) for name, shape in doc["presets"].items()}


PRESETS: dict[str, ModelConfig] = _load_presets()


class ModelConfigError(ValueError):
    pass


def load_model_config(name_or_path: str) -> ModelConfig:
    """A preset name, or the path of a Hugging Face Llama config.json."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if not os.path.isfile(name_or_path):
        raise ModelConfigError(
            f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a config.json file"
        )
    try:
        with open(name_or_path, encoding="utf-8") as f:
            c = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"cannot read model config {name_or_path!r}: {e}") from e
    try:
        heads = int(c["num_attention_heads"])
        quant = c.get("quantization_config") or {}
        fp8 = str(quant.get("quant_method", "")).lower() in ("fp8", "fbgemm_fp8", "modelopt")
        cfg = ModelConfig(
            name=os.path.basename(os.path.dirname(os.path.abspath(name_or_path))) or name_or_path,
            layers=int(c["num_hidden_layers"]),
            hidden=int(c["hidden_size"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads", heads)),
            ffn=int(c["intermediate_size"]),
            vocab=int(c["vocab_size"]),
            max_position=int(c.get("max_position_embeddings", 8192)),
            rope_theta=float(c.get("rope_theta", 10000.0)),
            rms_eps=float(c.get("rms_norm_eps", 1e-5)),
            weight_format="fp8" if fp8 else "native",
            kv_dtype="fp8" if fp8 else "native",
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelConfigError(f"model config {name_or_path!r} lacks a Llama field: {e}") from e
    if cfg.hidden % cfg.heads or cfg.heads % cfg.kv_heads:
        raise ModelConfigError(f"model config {name_or_path!r}: heads do not divide hidden / kv heads")
    return cfg


def describe(cfg: ModelConfig) -> dict[str, Any]:
    kv_elt = 1 if cfg.kv_dtype == "fp8" else 2
    # FP8 presets quantise the decoder's linear layers; embedding, lm_head and norms stay bf16
    # (engine/model.py, as FP8 checkpoints keep them).
    unquantised = 2 * cfg.vocab * cfg.hidden + (2 * cfg.layers + 1) * cfg.hidden
    linear = cfg.param_count() - unquantised
    weight_bytes = (linear if cfg.weight_format == "fp8" else 2 * linear) + 2 * unquantised
    return {
        **cfg.to_dict(),
        "params": cfg.param_count(),
        "weight_bytes_gpu": weight_bytes,
        "kv_bytes_per_token_gpu": cfg.kv_bytes_per_token(kv_elt),
    }


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    rows = [describe(c) for c in PRESETS.values()]
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<20}{'layers':>7}{'hidden':>7}{'heads':>6}{'kv':>4}{'params':>9}{'weights':>10}{'KV/token':>10}  format")
    for r in rows:
        print(
            f"{r['name']:<20}{r['layers']:>7}{r['hidden']:>7}{r['heads']:>6}{r['kv_heads']:>4}"
            f"{r['params'] / 1e9:>8.2f}B{r['weight_bytes_gpu'] / 1e9:>8.1f}GB{r['kv_bytes_per_token_gpu'] / 1024:>8.0f}KiB"
            f"  weights {r['weight_format']}, kv {r['kv_dtype']}"
        )
    print("sizes on GPU (bf16 unless fp8); on CPU the engine computes in fp32 (twice the bytes)", file=sys.stderr)
    return 0
