"""The trace file format: the C writer (kvscope_record.h, through record_selftest.c) against the
Python decoder and collector. Needs a C compiler (not CUDA)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.tracer import build, collector
from kvscope_agent.tracer.collector import (
    Collector,
    TraceFile,
    TraceFormatError,
    copy_direction,
    decode_header,
    memory_name,
)


def _compiler_or_skip() -> None:
    try:
        build.find_compiler()
    except build.TracerBuildError as e:
        pytest.skip(f"no C compiler on this machine to build record_selftest.c: {e}")


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> str:
    _compiler_or_skip()
    return build.build_selftest(str(tmp_path_factory.mktemp("selftest")))


def _write(selftest: str, path: str, *extra: str) -> list[dict]:
    out = subprocess.run([selftest, path, *extra], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def _traced_log(selftest: str, tmp_path):
    """A trace folder holding the self-test's records of one process, and an event log to read
    them into: (trace_dir, clock, log path, writer)."""
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    _write(selftest, str(trace_dir / "cupti-4242.bin"))
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    return trace_dir, clock, log, EventWriter(str(log), clock)


def test_decoder_reads_exactly_what_the_c_writer_wrote(selftest: str, tmp_path) -> None:
    path = str(tmp_path / "cupti-4242.bin")
    written = _write(selftest, path)
    header, records = written[0], written[1:]
    tf = TraceFile(path)
    decoded = tf.poll()
    assert tf.error is None
    assert tf.header is not None
    assert {k: getattr(tf.header, k) for k in header if k != "header"} == {
        k: v for k, v in header.items() if k != "header"
    }
    assert [r.__dict__ for r in decoded] == records
    assert len(decoded) == 12
    assert os.path.getsize(path) == 64 + 64 * 12
    assert tf.poll() == []  # nothing new


def test_partial_record_waits_for_the_rest(selftest: str, tmp_path) -> None:
    # A poll can land in the middle of the library's write(): the tail must not be decoded.
    whole = str(tmp_path / "whole.bin")
    all_records = _write(selftest, whole)[1:]
    path = str(tmp_path / "cupti-1.bin")
    with open(whole, "rb") as f:
        data = f.read()
    cut = 64 + 64 * 11 + 20
    with open(path, "wb") as f:
        f.write(data[:30])  # not even a whole header yet
    tf = TraceFile(path)
    assert tf.poll() == [] and tf.header is None
    with open(path, "ab") as f:
        f.write(data[30:cut])
    first = tf.poll()
    assert len(first) == 11
    with open(path, "ab") as f:
        f.write(data[cut:])
    rest = tf.poll()
    assert [r.__dict__ for r in first + rest] == all_records


def test_bad_files_are_refused_with_a_reason(tmp_path) -> None:
    with pytest.raises(TraceFormatError, match="magic"):
        decode_header(b"NOTATRACE" + bytes(55))
    good = bytearray(b"KVSCUPTI" + bytes(56))
    good[8] = 2  # a future format version
    with pytest.raises(TraceFormatError, match="version 2"):
        decode_header(bytes(good))
    path = tmp_path / "cupti-9.bin"
    path.write_bytes(b"garbage" * 20)
    tf = TraceFile(str(path))
    assert tf.poll() == [] and "magic" in (tf.error or "")


def test_copy_kinds_and_memory_kinds_map_to_protocol_names() -> None:
    assert copy_direction(1, 2, 3) == "h2d"  # HTOD pinned -> device
    assert copy_direction(2, 3, 1) == "d2h"
    assert copy_direction(8, 3, 3) == "d2d"
    assert copy_direction(9, 1, 2) == "h2h"
    assert copy_direction(10, 3, 3) == "d2d"  # peer
    assert copy_direction(3, 2, 4) == "h2d"  # to a CUDA array
    # CUPTI's UNKNOWN copy kind: inferred only where both memory kinds are plain.
    assert copy_direction(0, 2, 3) == "h2d"
    assert copy_direction(0, 3, 1) == "d2h"
    assert copy_direction(0, 5, 3) is None  # managed: could be either side
    assert [memory_name(k) for k in range(9)] == [
        "unknown", "pageable", "pinned", "device", "device", "managed", "device", "managed",
        "unknown",
    ]


def test_collector_emits_xfers_on_the_run_clock_and_reports_what_it_could_not(
    selftest: str, tmp_path
) -> None:
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    written = _write(selftest, str(trace_dir / "cupti-4242.bin"))
    header = written[0]
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    col = collector.start_collector(writer, clock, str(trace_dir))
    assert col is not None
    summary = col.stop(settle_s=0.1, timeout_s=2.0)
    writer.close()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    xfers = [e for e in events if e["type"] == "xfer"]
    logs = [e for e in events if e["type"] == "log"]

    assert [x["dir"] for x in xfers] == ["h2d", "d2h", "d2d", "h2h", "d2d", "h2d"]
    first = xfers[0]
    mono = header["anchor_monotonic_ns"]
    # start = anchor's CLOCK_MONOTONIC + (CUPTI ns - anchor's CUPTI ns), on the run clock.
    assert first["start"] == clock.from_monotonic(mono + 1000)
    assert first["end"] - first["start"] == 40000
    assert first == {
        **first,
        "bytes": 2097152,
        "src_mem": "pinned",
        "dst_mem": "device",
        "device": 0,
        "stream": 13,
        "source": "cupti",
        "pid": 4242,
    }
    assert xfers[1]["bytes"] == 0x123456789 and xfers[1]["src_mem"] == "device"
    assert xfers[1]["dst_mem"] == "pageable"
    # The last copy comes after a newer anchor pair in which CUPTI ran 500 ns slow: it is mapped
    # through that pair, not the header's.
    assert xfers[-1]["start"] == clock.from_monotonic(mono + 1000000500 + 500)

    assert summary["dropped"] == 5
    assert summary["memsets"] == 1 and summary["memset_bytes"] == 512
    assert summary["untimed"] == 1 and summary["unclassified"] == 1
    assert summary["bytes_by_dir"]["h2d"] == 2097152 + 8192
    msgs = [(e["level"], e["msg"]) for e in logs]
    assert any(
        lvl == "warn" and "MULTIPLE_SUBSCRIBERS" in m and "cuptiActivityEnable(MEMSET)" in m
        for lvl, m in msgs
    )
    assert any(lvl == "warn" and "dropped 5" in m for lvl, m in msgs)
    assert any(lvl == "info" and "6 copies" in m for lvl, m in msgs)
    assert any(lvl == "warn" and "untimed 1" in m and "unclassified 1" in m for lvl, m in msgs)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(events)))


def test_xfer_lines_are_the_bytes_emit_would_write(selftest: str, tmp_path) -> None:
    """The collector formats xfer bodies itself (one write a poll, EventWriter.emit_bodies): every
    line must be byte for byte what emit() writes for the same fields, in the same order (compact
    JSON: seq, t, type first)."""
    trace_dir, clock, log, writer = _traced_log(selftest, tmp_path)
    collector.Collector(writer, clock, str(trace_dir)).poll_once()
    writer.close()
    lines = [x for x in log.read_text().splitlines() if '"type":"xfer"' in x]
    assert len(lines) == 6
    for line in lines:
        e = json.loads(line)
        fields = {k: v for k, v in e.items() if k not in ("seq", "t", "type")}
        assert list(fields) == ["dir", "bytes", "start", "end", "src_mem", "dst_mem", "device", "stream", "source", "pid"]
        emitted = '{"seq":%d,"t":%d,"type":"xfer",' % (e["seq"], e["t"]) + json.dumps(
            fields, separators=(",", ":"), allow_nan=False, ensure_ascii=False)[1:]
        assert line == emitted


def test_a_later_run_of_a_sweep_skips_what_earlier_runs_left(selftest: str, tmp_path) -> None:
    # run.py's sweep: every run after the first shares the trace files; skip_existing() reads past
    # the old records (through both write paths: xfer bodies and the warnings) and counts afresh.
    trace_dir, clock, log, writer = _traced_log(selftest, tmp_path)
    col = Collector(writer, clock, str(trace_dir))
    assert col.skip_existing() == 12
    assert col.totals.xfers == 0 and col.writer is writer
    assert col.poll_once() == 0
    _write(selftest, str(trace_dir / "cupti-4243.bin"))  # this run's process
    assert col.poll_once() == 12
    writer.close()
    xfers = [json.loads(l) for l in log.read_text().splitlines() if '"type":"xfer"' in l]
    assert len(xfers) == 6 and col.totals.xfers == 6


def test_collector_tails_a_growing_file_live(selftest: str, tmp_path) -> None:
    # Records appended after start() reach the event log without stop(): the app sees them live.
    import time

    whole = str(tmp_path / "whole.bin")
    _write(selftest, whole)
    data = open(whole, "rb").read()
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    col = collector.start_collector(writer, clock, str(trace_dir))
    assert col is not None
    target = trace_dir / "cupti-77.bin"
    target.write_bytes(data[: 64 + 64])
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and col.totals.xfers < 1:
        time.sleep(0.02)
    assert col.totals.xfers == 1
    with open(target, "ab") as f:
        f.write(data[64 + 64 : 64 + 64 * 3])
    while time.monotonic() < deadline and col.totals.xfers < 3:
        time.sleep(0.02)
    assert col.totals.xfers == 3
    col.stop(settle_s=0.05)
    writer.close()
    lines = log.read_text().splitlines()
    assert sum(1 for l in lines if '"type":"xfer"' in l) == 3


def test_start_collector_warns_when_the_folder_cannot_exist(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    assert collector.start_collector(writer, clock, str(blocker / "trace")) is None
    writer.close()
    (line,) = [json.loads(l) for l in log.read_text().splitlines()]
    assert line["type"] == "log" and line["level"] == "warn" and "tracing off" in line["msg"]


@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm (binutils) to list symbols")
def test_selftest_does_not_link_cuda(selftest: str) -> None:
    # The harness must run where no CUDA exists; only libc.
    out = subprocess.run(["nm", "-u", selftest], capture_output=True, text=True, check=True).stdout
    assert "cupti" not in out.lower()


def test_drain_emits_finished_copies_before_returning(selftest: str, tmp_path) -> None:
    # The agent drains before a `phase` line so the copies of a window precede the line that
    # closes it; drain must not depend on the background thread's timing.
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    col = Collector(writer, clock, str(trace_dir), poll_s=10.0)  # thread would never poll in time
    col.start()
    _write(selftest, str(trace_dir / "cupti-4242.bin"))
    col.drain(settle_s=0.05)
    writer.emit("phase", name="rounds", state="end")
    col.stop(settle_s=0.01, timeout_s=0.2)
    writer.close()
    types = [json.loads(l)["type"] for l in log.read_text().splitlines()]
    before = types[: types.index("phase")]
    assert before.count("xfer") == 6 and "xfer" not in types[types.index("phase") :]


_NOLOAD = r"""
import ctypes, os, sys
sys.path.insert(0, sys.argv[2])
os.environ["CUDA_INJECTION64_PATH"] = sys.argv[1]
from kvscope_agent.tracer import collector
before = collector.loaded_tracer() is not None
ctypes.CDLL(sys.argv[1])
after = collector.loaded_tracer() is not None
# Loaded but never initialised by a driver: inactive, so there is nothing to flush.
print(before, after, collector.flush_in_process())
"""


def test_in_process_flush_finds_only_a_loaded_library(tmp_path) -> None:
    try:
        build.find_compiler()
        build.find_cupti(None)
    except build.TracerBuildError as e:
        pytest.skip(f"cannot build the tracer here: missing {e.missing}")
    import sys

    lib, _, _, _ = build.build(str(tmp_path))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _NOLOAD, lib, root], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["False", "True", "False"]


REAL_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "cupti-trace",
                          "h100-smoke-cupti-476.bin")


def test_real_h100_trace_file(tmp_path) -> None:
    """The file the library wrote on the H100 (fixtures/cupti-trace/README.md says what was
    copied); bytes per direction are what the smoke test copied in that process."""
    tf = TraceFile(REAL_TRACE)
    recs = tf.poll()
    assert tf.error is None and tf.header is not None
    assert tf.header.pid == 476 and tf.header.cupti_api_version == 130001
    assert tf.header.flush_period_ms == 100 and tf.header.buffer_bytes == 4 << 20
    # CUPTI read as CLOCK_REALTIME there (h100-measurements.md); the anchors show it too.
    assert abs(tf.header.anchor_cupti_ns - tf.header.anchor_realtime_ns) < 1000
    memcpy = [r for r in recs if r.type == collector.REC_MEMCPY]
    anchors = [r for r in recs if r.type == collector.REC_ANCHOR]
    assert len(memcpy) == 814 and len(anchors) >= 5 and len(recs) == len(memcpy) + len(anchors)
    by_dir: dict[str, int] = {}
    for r in memcpy:
        d = copy_direction(r.copy_kind, r.src_kind, r.dst_kind)
        assert d is not None
        by_dir[d] = by_dir.get(d, 0) + r.bytes
    mib = 1 << 20
    assert by_dir["d2h"] == 4 * 256 * mib + 2 * 64 * mib
    assert by_dir["d2d"] == 2 * 256 * mib
    # h2d: 4 × 256 MiB + 2 × 64 MiB + 512 × 2 MiB + n × 256 MiB of the sustained loop.
    rest = by_dir["h2d"] - (4 * 256 + 2 * 64 + 512 * 2) * mib
    assert rest > 0 and rest % (256 * mib) == 0
    assert sum(1 for r in memcpy if r.bytes == 2 * mib and memory_name(r.src_kind) == "pinned") == 512
    # Anchors a second apart; CUPTI and CLOCK_MONOTONIC drift apart by far less than a copy lasts.
    drift = [(a.start - tf.header.anchor_cupti_ns) - (a.extra - tf.header.anchor_monotonic_ns)
             for a in anchors]
    assert max(abs(d) for d in drift) < 100_000

    # Through the collector: every copy becomes an xfer, ordered start <= end, none dropped.
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    shutil.copy(REAL_TRACE, trace_dir / "cupti-476.bin")
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    col = Collector(writer, clock, str(trace_dir))
    col.poll_once()
    summary = col.stop(settle_s=0.01, timeout_s=0.2)
    writer.close()
    xfers = [json.loads(l) for l in log.read_text().splitlines() if '"type":"xfer"' in l]
    assert len(xfers) == 814 and summary["dropped"] == 0
    assert all(x["start"] <= x["end"] for x in xfers)
    assert summary["bytes_by_dir"]["h2d"] == by_dir["h2d"]


@pytest.mark.parametrize("raw, expect", [("", collector.POLL_S), ("200", 0.2), ("1", 0.001), ("0", collector.POLL_S),
                                         ("1001", collector.POLL_S), ("fast", collector.POLL_S)])
def test_poll_period_comes_from_the_environment_within_range(monkeypatch, raw, expect) -> None:
    monkeypatch.setenv("KVSCOPE_TRACE_POLL_MS", raw)
    assert collector.poll_period_s() == expect
