"""Subcommand dispatch for `python3 -m kvscope_agent`.

Each subcommand's module is imported only when that subcommand runs, so `check` and `translate`
work on a host without torch and a broken optional module cannot break the others.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from . import __version__

USAGE = """usage: python3 -m kvscope_agent <command> [options]

commands:
  run           run the multi-user multi-round workload, write DIR/events.jsonl (--out DIR)
  sweep         several runs (--users 2,4,8) in one process, reusing weights: DIR/users-N/
  presets       list the built-in model presets with their sizes
  check LOG     replay an events.jsonl against the protocol rules (exit 1 on violations)
  build-tracer  build the CUPTI transfer tracer library
  translate     translate an engine's KV-cache event dump into protocol events
  whatif RUN    replay recorded runs on another card (--profile gh200-96), simulated
  version       print the agent version
"""


def _run(argv: list[str]) -> int:
    # --engine tensorrt_llm|vllm drives a real engine (engines/runner.py, same options, log life
    # cycle and exit codes); the built-in torch engine is run.py (run_loop.py, sweep.py).
    from .engines.runner import REAL_ENGINES, engine_of

    if engine_of(argv) in REAL_ENGINES:
        from .engines.runner import main_run_engine

        return main_run_engine(argv)
    from .run import main_run

    return main_run(argv)


def _sweep(argv: list[str]) -> int:
    from .run import main_sweep

    return main_sweep(argv)


def _presets(argv: list[str]) -> int:
    from .presets import main

    return main(argv)


def _check(argv: list[str]) -> int:
    from .ledger import validate_log
    from .protocol import RULES

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python3 -m kvscope_agent check LOG", file=sys.stderr)
        return 2
    try:
        report = validate_log(argv[0])
    except OSError as e:
        print(f"check: cannot read {argv[0]}: {e.strerror}", file=sys.stderr)
        return 2
    for b in report.bad_lines:
        print(b)
    if report.bad_line_total > len(report.bad_lines):
        print(f"... and {report.bad_line_total - len(report.bad_lines)} more bad lines")
    for v in report.violations:
        print(f"{v} [rule: {RULES[v.rule]}]")
    total = sum(report.violation_counts.values())
    if total > len(report.violations):
        print(f"... and {total - len(report.violations)} more violations")
    print(f"{report.bad_line_total} bad line(s), {total} rule violation(s)", file=sys.stderr)
    return 0 if report.valid else 1


def _build_tracer(argv: list[str]) -> int:
    from .tracer.build import main

    return int(main(argv) or 0)


def _translate(argv: list[str]) -> int:
    from .translate import main

    return int(main(argv) or 0)


def _whatif(argv: list[str]) -> int:
    from .whatif.main import whatif

    return whatif(argv)


def _version(argv: list[str]) -> int:
    print(__version__)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "sweep": _sweep,
    "presets": _presets,
    "check": _check,
    "build-tracer": _build_tracer,
    "translate": _translate,
    "whatif": _whatif,
    "version": _version,
}


def _enable_faulthandler() -> None:
    """A native crash (CUDA, CUPTI, a torch kernel launch) kills the process before any run.end
    can be written; Python's fault handler at least prints each thread's stack to stderr, which
    the app keeps with the run, so the log says where it died."""
    import faulthandler

    try:
        if not faulthandler.is_enabled():
            faulthandler.enable(file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError):  # stderr without a file descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    _enable_faulthandler()
    cmd = COMMANDS.get(args[0])
    if cmd is None:
        print(f"unknown command {args[0]!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    return cmd(args[1:])
