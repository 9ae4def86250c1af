"""A sweep: several runs of the built-in engine in one process, users outer and host pool sizes
inner, each into its own complete log (DIR/users-N, or DIR/host-<size>/users-N with several host
sizes). The model and the pools are built once: weights of a 70B model take minutes to build and
its pinned host pool seconds to pin, so rebuilding per run would dominate.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any

from .lifecycle import EXIT_BAD_OPTION, EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelState
from .memory_plan import Built, build
from .options import Options
from .run_loop import run_one


def run_sweep(opts: Options, cancel: CancelState, trace_info: dict[str, Any]) -> int:
    """Every (users, host pool) run of the sweep; the worst exit code (a deadline reached counts
    as an error; a cancel or a bad option before anything was built ends the sweep)."""
    start = time.monotonic()
    built: Built | None = None
    worst = EXIT_OK
    multi_host = len(opts.host_kv_bytes) > 1
    # Users outer, host pool inner, in the order given: under a deadline the runs that are cut
    # are the last user counts, and each user count that ran has its with/without-host pair.
    plan = [(h, lab, u) for u in opts.users for h, lab in zip(opts.host_kv_bytes, opts.host_kv_labels)]
    for i, (host, label, users) in enumerate(plan):
        if opts.deadline_s and time.monotonic() - start > opts.deadline_s:
            skipped = [f"users {u} host {lab}" for _, lab, u in plan[i:]]
            print(f"sweep: deadline of {opts.deadline_s} s reached; not run: {', '.join(skipped)}", file=sys.stderr)
            worst = max(worst, EXIT_ERROR)
            break
        sub = f"users-{users}" if not multi_host else os.path.join(f"host-{folder_label(label)}", f"users-{users}")
        print(f"sweep: users {users}, host pool {label} -> {sub}", file=sys.stderr, flush=True)
        code, built = run_one(opts, built, users, host, os.path.join(opts.out, sub), cancel, trace_info, build)
        if code == EXIT_CANCELLED:
            return code
        if code == EXIT_BAD_OPTION and built is None:
            return code
        worst = max(worst, code if code != EXIT_BAD_OPTION else EXIT_ERROR)
    return worst


def folder_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)
