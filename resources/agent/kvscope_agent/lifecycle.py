"""A run's life cycle, the same for the built-in engine (run_loop.py) and the engines runner
(engines/runner.py): exit codes and endings, SIGTERM as a cancel, the run's log opened once and
never over an earlier run's, run.start, and the last lines of every log (teardown and run.end);
a failure before the run starts is logged too when the run folder is usable.

Exit codes: 0 ok, 1 error, 2 bad option (the message names it), 143 cancelled by SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from . import PROTOCOL_VERSION, __version__
from .clock import RunClock
from .emit import EventWriter
from .options import OptionError
from .statistics import empty_summary

EXIT_OK, EXIT_ERROR, EXIT_BAD_OPTION, EXIT_CANCELLED = 0, 1, 2, 143


class RunFailed(Exception):
    """A run that cannot go on, with run.end's error code (gpu_oom, host_oom, unsupported, ...)."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_ERROR) -> None:
        self.code = code
        self.exit_code = exit_code
        super().__init__(message)


class Cancelled(BaseException):
    """Raised on SIGTERM (a BaseException so no `except Exception` swallows it)."""


class CancelState:
    """SIGTERM sets `requested`; the engine checks it between steps. While `raise_now` is set
    (long stretches with no event writes in the main thread: weight init, pool allocation) the
    handler raises at once. It never raises inside EventWriter.emit, whose seq must advance
    together with the line it wrote."""

    def __init__(self) -> None:
        self.requested = False
        self.raise_now = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.raise_now:
            self.raise_now = False
            raise Cancelled()

    def check(self) -> None:
        if self.requested:
            raise Cancelled()


@contextmanager
def sigterm_cancels(cancel: CancelState) -> Iterator[CancelState]:
    """SIGTERM goes to `cancel` while the block runs; the handler before is put back after."""
    prev = signal.signal(signal.SIGTERM, cancel.handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGTERM, prev)


def new_log_path(out_dir: str) -> str | None:
    """out_dir/events.jsonl, the folder made; None (said on stderr) where a run's log is already
    there: a run never writes over another's."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "events.jsonl")
    if os.path.exists(path):
        print(f"--out: {path} already exists; choose a new run folder", file=sys.stderr)
        return None
    return path


def open_run_log(out_dir: str) -> tuple[EventWriter, RunClock] | None:
    """The run's new log (new_log_path) with the run's clock, which starts now."""
    path = new_log_path(out_dir)
    if path is None:
        return None
    clock = RunClock()
    return EventWriter(path, clock), clock


def emit_run_start(writer: EventWriter, clock: RunClock, engine: dict[str, Any], config: dict[str, Any],
                   host: dict[str, Any], capabilities: dict[str, Any], argv: list[str]) -> None:
    """The run's first line (docs/protocol.md, run.start)."""
    writer.emit(
        "run.start", run_id=uuid.uuid4().hex, protocol=PROTOCOL_VERSION, agent_version=__version__,
        engine=engine, config=config, host=host,
        clock={"unix_ns_at_t0": clock.unix_ns_at_t0, "t0_monotonic_ns": clock.t0_monotonic_ns},
        capabilities=capabilities, argv=argv,
    )


def ending_of(e: BaseException) -> tuple[str, int, dict[str, Any]] | None:
    """(status, exit code, run.end error) of the endings every engine shares: SIGTERM, a bad
    option, a RunFailed; None for any other exception (the caller says what it was)."""
    if isinstance(e, Cancelled):
        return "cancelled", EXIT_CANCELLED, {"code": "cancelled", "message": "SIGTERM received"}
    if isinstance(e, OptionError):
        return "error", EXIT_BAD_OPTION, {"code": "bad_option", "message": str(e), "option": e.option}
    if isinstance(e, RunFailed):
        return "error", e.exit_code, {"code": e.code, "message": str(e)}
    return None


def end_run(writer: Any, sampler: Any, collector: Any, status: str, error: dict[str, Any] | None,
            summary: dict[str, Any] | None) -> None:
    """The last lines of every run, whatever the engine: teardown (stop sampling, drain the
    tracer's last copies into the log), the error as a log line, then run.end with the summary."""
    writer.emit("phase", name="teardown", state="begin")
    if sampler is not None:
        sampler.stop()
    if collector is not None:
        collector.stop()
    writer.emit("phase", name="teardown", state="end")
    fields: dict[str, Any] = {"status": status}
    if error is not None:
        fields["error"] = error
        writer.emit("log", level="error" if status == "error" else "warn", msg=error["message"])
    fields["summary"] = summary or empty_summary()
    writer.emit("run.end", **fields)


def early_failure(out: str | None, err: OptionError | None, code: str = "bad_option", message: str = "",
                   exit_code: int = EXIT_BAD_OPTION) -> int:
    """A failure before the run started (a bad option, no torch): log it in DIR/events.jsonl
    when DIR is usable, so whoever tails the log sees why."""
    message = str(err) if err is not None else message
    print(f"kvscope-agent: {'bad option ' if err is not None else ''}{message}", file=sys.stderr)
    if not out:
        return exit_code
    path = os.path.join(out, "events.jsonl")
    try:
        os.makedirs(out, exist_ok=True)
        writer = EventWriter(path, RunClock())
    except OSError:
        return exit_code
    error: dict[str, Any] = {"code": code, "message": message}
    if err is not None:
        error["option"] = err.option
    try:
        writer.emit("log", level="error", msg=message)
        writer.emit("run.end", status="error", error=error, summary=empty_summary())
    finally:
        writer.close()
    return exit_code


def torch_pythons_hint() -> str:
    """What to do when this Python lacks torch: the interpreters on this host that import it (the
    probe's search: PATH, the login shell's PATH, venvs and conda envs), or how to get one."""
    from .probe import probe_torch_pythons

    try:
        found = [p["executable"] for p in probe_torch_pythons()]
    except Exception:  # noqa: BLE001 - a hint must never hide the error it explains
        found = []
    if found:
        return "interpreters on this host that import it: " + ", ".join(found) + "; choose one as the host's Python (--python)"
    return "no interpreter on this host imports it: install torch, or point the host's Python setting at one that has it"
