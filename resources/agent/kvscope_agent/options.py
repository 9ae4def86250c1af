"""The workload options of `run` and `sweep`, from the one table (workload_options.json beside this
file, which the app reads too: src/shared/workload-options.ts).

Each row gives an option's name (the run.start config key; the flag is --name with - for _), its
type, bounds, default, help and the engines that take it. From it come the parser (every option
defaults to None, so a value given can be told from a default) and the check of each value:
`value_of` turns the text given, or the row's default, into the typed value, or raises OptionError
naming the flag as typed. `parse_options` gives the built-in engine's resolved Options. No torch
at import: the engines runner, `whatif` and the engine's own option checks use it too (the engine
package imports this module, so the few engine functions used here are imported where used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .presets import PRESETS, ModelConfig, ModelConfigError, load_model_config
from .workload import Workload

TABLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workload_options.json")

with open(TABLE_FILE, encoding="utf-8") as _f:
    TABLE: dict[str, Any] = json.load(_f)

OPTIONS: tuple[dict[str, Any], ...] = tuple(TABLE["options"])
BY_NAME: dict[str, dict[str, Any]] = {o["name"]: o for o in OPTIONS}
BYTE_UNITS: dict[str, int] = TABLE["byte_units"]
ENGINES: tuple[str, ...] = tuple(TABLE["engines"])


class OptionError(Exception):
    """A bad option value: `option` is the flag as typed on the command line."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def default(name: str) -> Any:
    """The row's default as a typed value (on_off: True/False; "auto" stays "auto")."""
    o = BY_NAME[name]
    d = o.get("default")
    if o["type"] == "on_off" and d in ("on", "off"):
        return d == "on"
    return d


def choices(name: str) -> tuple[str, ...]:
    return tuple(BY_NAME[name]["choices"])


# ---- values ------------------------------------------------------------------------------------


def parse_bytes(option: str, text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in BYTE_UNITS:
        raise OptionError(option, f"{text!r} is not a byte count (e.g. 55e9, 16GiB, 0)")
    value = float(m.group(1)) * BYTE_UNITS[m.group(2).lower()]
    if value < 0:
        raise OptionError(option, f"{text!r} is negative")
    return int(value)


def parse_int(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OptionError(option, f"{text!r} is not an integer") from None


def _bounded(o: dict[str, Any], option: str, v: float) -> None:
    lo, hi = o.get("min"), o.get("max")
    if lo is not None and (v <= lo if o.get("min_exclusive") else v < lo):
        raise OptionError(option, f"{v} is {'not above' if o.get('min_exclusive') else 'below'} the minimum {lo}")
    if hi is not None and v > hi:
        raise OptionError(option, f"{v} is above the maximum {hi}")


def check_text(name: str, text: str) -> Any:
    """One value as typed on the command line, checked against its row; the typed value."""
    o = BY_NAME[name]
    option = flag(name)
    kind = o["type"]
    if kind == "int":
        v: Any = parse_int(option, text)
        _bounded(o, option, v)
    elif kind == "bytes":
        v = parse_bytes(option, text)
        _bounded(o, option, v)
    elif kind == "number":
        try:
            v = float(text)
        except ValueError:
            raise OptionError(option, f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise OptionError(option, f"{text!r} is not a finite number")
        _bounded(o, option, v)
    elif kind == "choice":
        if text not in o["choices"]:
            raise OptionError(option, f"{text!r} is not one of {', '.join(o['choices'])}")
        v = text
    elif kind == "on_off":
        words = ("auto", "on", "off") if o.get("auto") else ("on", "off")
        if text not in words:
            raise OptionError(option, f"{text!r} is not {' or '.join(words) if len(words) == 2 else 'auto, on or off'}")
        v = text if text == "auto" else text == "on"
    elif kind == "text":
        if not text or len(text) > o.get("max_length", 4096):
            raise OptionError(option, f"{text!r} is empty or longer than {o.get('max_length', 4096)} characters")
        if "pattern" in o and not re.fullmatch(o["pattern"], text):
            raise OptionError(option, f"{text!r} is not {o.get('pattern_help', o['pattern'])}")
        v = text
    else:  # a row the table's own test refuses; never a silent pass
        raise OptionError(option, f"option type {kind!r} is unknown to this agent")
    return v


def value_of(ns: argparse.Namespace, name: str) -> Any:
    """The option's value: the text given checked against its row, else the row's default."""
    text = getattr(ns, name)
    return default(name) if text is None else check_text(name, text)


def list_of(ns: argparse.Namespace, name: str) -> tuple[list[Any], list[str]]:
    """A sweep's comma list (users, host pool sizes): the values and the texts as given."""
    o = BY_NAME[name]
    text = getattr(ns, name)
    if text is None:
        text = o.get("sweep_default") or str(o["default"])
    texts = [t.strip() for t in text.split(",") if t.strip()]
    if not texts:
        raise OptionError(flag(name), f"{text!r} names no value")
    return [check_text(name, t) for t in texts], texts


def given(ns: argparse.Namespace) -> list[str]:
    """The table's options given on the command line (not left to their defaults)."""
    return [o["name"] for o in OPTIONS if getattr(ns, o["name"], None) is not None]


# ---- the parser --------------------------------------------------------------------------------


def _help(o: dict[str, Any], sweep: bool) -> str:
    text = o["help"]
    if o["type"] == "choice" and o.get("choice_help"):
        text += ": " + "; ".join(f"{c}: {o['choice_help'][c]}" for c in o["choices"])
    if sweep and o.get("sweep_list"):
        text += " (a comma list)"
    d = o.get("sweep_default") if sweep and o.get("sweep_default") else o.get("default_help", o.get("default"))
    if o["type"] == "bytes" and isinstance(d, int) and d and d % 10**9 == 0:
        d = f"{d // 10**9}e9"
    if d is not None:
        text += f" (default: {d})"
    return text.replace("%", "%%")


def _metavar(o: dict[str, Any]) -> str | None:
    if o["type"] == "choice":
        return "|".join(o["choices"])
    if o["type"] == "on_off":
        return "auto|on|off" if o.get("auto") else "on|off"
    return None


def add_workload_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Every row of the table that `command` (run or sweep) takes, in the table's order."""
    sweep = command == "sweep"
    for o in OPTIONS:
        if command not in o["commands"]:
            continue
        parser.add_argument(flag(o["name"]), dest=o["name"], default=None, metavar=_metavar(o), help=_help(o, sweep))
        if o.get("off_flag"):
            parser.add_argument(o["off_flag"], dest=o["name"], action="store_const", const="off",
                                help=f"same as {flag(o['name'])} off")


def value_in_argv(argv: Sequence[str], option: str) -> str | None:
    """The value of `option` in argv (`--out DIR` or `--out=DIR`; the last one, as argparse takes),
    read without parsing the rest: --out even when another option is bad, so the error can be
    written into the run's log; --engine to choose the runner."""
    args = list(argv)
    value = None
    for i, a in enumerate(args):
        if a == option and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
    return value


class OptionParser(argparse.ArgumentParser):
    """argparse that raises OptionError (exit 2 after the log records it) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.search(r"(--[a-z0-9-]+)", message)
        raise OptionError(m.group(1) if m else "arguments", message)


def build_parser(sweep: bool) -> OptionParser:
    """--out and the workload options of the table that run or sweep takes."""
    command = "sweep" if sweep else "run"
    p = OptionParser(prog=f"python3 -m kvscope_agent {command}", add_help=True)
    p.add_argument("--out", required=True, help="run folder (events.jsonl is created there)")
    add_workload_arguments(p, command)
    return p


# ---- the built-in engine's options ---------------------------------------------------------------


def _torch_run_rows() -> list[dict[str, Any]]:
    return [o for o in OPTIONS if "torch" in o["engines"] and "run" in o["commands"]]


@dataclass
class Options:
    """A built-in engine's run (or sweep), resolved: one field per option of the table the torch
    engine's run takes (same name, typed), the sweep's lists, and the model's shape."""

    out: str
    model: ModelConfig
    model_arg: str
    users: list[int]
    host_kv_bytes: list[int]
    host_kv_labels: list[str]
    engine: str
    device: str
    rounds: int
    context_tokens: int
    new_tokens: int
    output_tokens: int
    block_tokens: int
    gpu_kv_bytes: int | None
    free_gpu_memory_fraction: float
    seed: int
    trace: bool
    sample_ms: int
    prefill_chunk_tokens: int
    max_batch: int
    dtype: str
    block_reuse: bool
    offload_policy: str
    decode_graphs: bool
    copy_overlap: bool
    host_kv_memory: str
    disk_kv_bytes: int
    disk_kv_path: str | None
    disk_kv_io: str
    deadline_s: float = field(default_factory=lambda: float(default("deadline_s")))  # a sweep's only
    raw: dict[str, Any] = field(default_factory=dict)

    def workload(self, users: int, vocab: int) -> Workload:
        return Workload(users, self.rounds, self.context_tokens, self.new_tokens, self.output_tokens, vocab, self.seed)

    def config(self, users: int, host_kv_bytes: int) -> dict[str, Any]:
        """run.start `config`: the table's options of the torch engine's run, snake_case
        (docs/protocol.md), with the model's name and shape and the engine's step order."""
        from .engine import decode_before_copies_from_env

        config = {o["name"]: getattr(self, o["name"]) for o in _torch_run_rows()}
        config.update(model=self.model.name, users=users, host_kv_bytes=host_kv_bytes,
                      decode_before_copies=decode_before_copies_from_env(), model_config=self.model.to_dict(),
                      model_arg=self.model_arg)
        return config


def parse_options(argv: Sequence[str], sweep: bool) -> tuple[Options | None, str | None, OptionError | None]:
    """(options, out dir, error): the out dir is returned even when another option is bad, so
    the error can be written into the run's log."""
    parser = build_parser(sweep)
    try:
        ns = parser.parse_args(list(argv))
    except OptionError as e:
        return None, value_in_argv(argv, "--out"), e
    try:
        return resolve_options(ns, sweep), ns.out, None
    except OptionError as e:
        return None, ns.out, e


def resolve_options(ns: argparse.Namespace, sweep: bool) -> Options:
    """The built-in engine's Options from parsed arguments (the device and the default model are
    resolve_device's, once torch is imported)."""
    from .engine import default_copy_overlap

    if ns.engine not in (None, "torch"):
        raise OptionError(
            "--engine",
            f"{ns.engine!r}: not an engine of this agent ({', '.join(ENGINES)}; a sweep runs torch only)",
        )
    command = "sweep" if sweep else "run"
    values = {o["name"]: value_of(ns, o["name"]) for o in OPTIONS
              if command in o["commands"] and not (sweep and o.get("sweep_list"))}
    if sweep:
        users, _ = list_of(ns, "users")
        host, host_texts = list_of(ns, "host_kv_bytes")
    else:
        users, host, host_texts = [values["users"]], [values["host_kv_bytes"]], [ns.host_kv_bytes or str(values["host_kv_bytes"])]
    model = None
    if ns.model is not None:
        try:
            model = load_model_config(ns.model)
        except ModelConfigError as e:
            raise OptionError("--model", str(e)) from None
    if values["copy_overlap"] == "auto":
        values["copy_overlap"] = default_copy_overlap(values["offload_policy"])
    values.update(out=ns.out, engine="torch", model=model or PRESETS["tiny"], model_arg=ns.model or "",
                  device=values["device"] or "", users=users, host_kv_bytes=host, host_kv_labels=host_texts,
                  raw=dict(vars(ns), _model_given=ns.model is not None))
    return Options(**values)


def check_disk_tier(disk_kv_bytes: int, path: str | None, host_kv_bytes: list[int]) -> None:
    """A disk tier needs a writable folder and a host pool in front of it (every run of a sweep)."""
    if not disk_kv_bytes:
        return
    if not path:
        raise OptionError("--disk-kv-path", "a disk tier (--disk-kv-bytes) needs a folder for its file")
    if not os.path.isdir(path):
        raise OptionError("--disk-kv-path", f"{path!r} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OptionError("--disk-kv-path", f"{path!r} is not writable")
    if 0 in host_kv_bytes:
        raise OptionError("--disk-kv-bytes", "the disk tier sits behind the host pool: --host-kv-bytes must be "
                          "above 0 (blocks move disk -> host -> GPU)")


def check_context_limit(opts: Options) -> None:
    w = opts.workload(1, opts.model.vocab)
    need = w.max_request_tokens()
    if need > opts.model.max_position:
        raise OptionError(
            "--context-tokens",
            f"{opts.context_tokens} context tokens grow to {need} tokens by round {opts.rounds} "
            f"(+{opts.new_tokens} new and {opts.output_tokens} output tokens a round), above "
            f"{opts.model.name}'s limit of {opts.model.max_position}",
        )


def resolve_device(opts: Options) -> None:
    """The device (cuda if torch sees one, else cpu) and, when --model was not given, its model."""
    import torch

    if not opts.device:
        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError("--device", f"{opts.device}: torch {torch.__version__} sees no CUDA device")
    if opts.device.startswith("cuda") and ":" in opts.device:
        idx = int(opts.device.split(":")[1])
        if idx >= torch.cuda.device_count():
            raise OptionError("--device", f"{opts.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if not opts.raw.get("_model_given"):
        opts.model = PRESETS["llama-3.1-8b" if opts.device.startswith("cuda") else "tiny"]
        opts.model_arg = opts.model.name
