"""`run` and `sweep` of the built-in engine: parse the options, then one run (run_loop.py) or a
sweep (sweep.py) in this process.

A run: parse options (options.py) -> (tracing: point CUDA_INJECTION64_PATH at the CUPTI library
before CUDA starts; tracing.py) -> open DIR/events.jsonl -> run.start -> setup / load_model /
context (round 0) / rounds 1..R / teardown phases -> run.end with the summary. Whatever goes wrong
after the log is open ends it with a `run.end` whose status says so: "error" with a code
(bad_option, gpu_oom, host_oom, unsupported, internal) or "cancelled" (SIGTERM); what goes wrong
before is logged too when DIR is usable (lifecycle.py). The model and the pools: memory_plan.py.

Exit codes: 0 ok, 1 error, 2 bad option (the message names it), 143 cancelled by SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Sequence

from .lifecycle import EXIT_ERROR, CancelState, early_failure, sigterm_cancels, torch_pythons_hint
from .memory_plan import build
from .options import OptionError, parse_options, resolve_device
from .run_loop import run_one
from .sweep import run_sweep
from .tracing import setup_tracing

CPU_NO_TRACE = {"on": False, "source": "cupti", "reason": "device cpu"}


def main(argv: Sequence[str], sweep: bool) -> int:
    opts, out, err = parse_options(argv, sweep)
    if err is not None or opts is None:
        return early_failure(out, err or OptionError("arguments", "invalid"))
    try:
        import torch  # noqa: F401 - the engine's one dependency; fail here with a clear ending
    except ImportError as e:
        return early_failure(opts.out, None, code="no_torch", message=(
            f"PyTorch is not importable by {sys.executable} ({e}); the built-in engine needs it "
            f"({torch_pythons_hint()})"), exit_code=EXIT_ERROR)
    with sigterm_cancels(CancelState()) as cancel:
        trace_info = setup_tracing(opts.trace, opts.device, opts.out) if opts.device != "cpu" else dict(CPU_NO_TRACE)
        try:
            resolve_device(opts)
        except OptionError as e:
            return early_failure(opts.out, e)
        if opts.device == "cpu" and trace_info.get("on"):
            trace_info = dict(CPU_NO_TRACE)
        if not sweep:
            code, _ = run_one(opts, None, opts.users[0], opts.host_kv_bytes[0], opts.out, cancel, trace_info, build)
            return code
        return run_sweep(opts, cancel, trace_info)


def main_run(argv: Sequence[str]) -> int:
    return main(argv, sweep=False)


def main_sweep(argv: Sequence[str]) -> int:
    return main(argv, sweep=True)
