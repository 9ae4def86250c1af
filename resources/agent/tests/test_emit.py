from __future__ import annotations

import json
import os
import threading
import time

import pytest

from kvscope_agent.clock import RunClock
from kvscope_agent.emit import MAX_LINE_BYTES, EventWriter


def read(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f]


def test_clock_is_monotonic_and_maps_realtime():
    c = RunClock()
    a = c.now()
    time.sleep(0.002)
    b = c.now()
    assert 0 <= a < b
    assert c.from_monotonic(time.monotonic_ns()) >= b
    # A realtime reading now maps to within 50 ms of the monotonic run time.
    assert abs(c.from_realtime(time.time_ns()) - c.now()) < 50_000_000


def test_lines_have_seq_t_type_first_and_compact(tmp_path):
    p = tmp_path / "events.jsonl"
    w = EventWriter(p, RunClock())
    assert w.emit("log", level="info", msg="héllo") == 0
    assert w.emit("phase", t=123, name="setup", state="begin") == 1
    assert w.emit("run.end") == 2
    w.close()
    raw = p.read_bytes().decode().splitlines()
    assert raw[0].startswith('{"seq":0,"t":')
    assert '"type":"log","level":"info","msg":"héllo"}' in raw[0]
    assert raw[1] == '{"seq":1,"t":123,"type":"phase","name":"setup","state":"begin"}'
    assert raw[2].endswith('"type":"run.end"}')
    assert " " not in raw[1]
    assert w.count == 3


def test_refuses_oversize_line_and_reserved_keys_without_writing(tmp_path):
    p = tmp_path / "events.jsonl"
    w = EventWriter(p, RunClock())
    with pytest.raises(ValueError):
        w.emit("log", level="info", msg="x" * MAX_LINE_BYTES)
    with pytest.raises(ValueError):
        w.emit("log", seq=5)
    with pytest.raises(ValueError):
        w.emit("log", level="info", msg=float("nan"))
    assert w.emit("log", level="info", msg="ok") == 0  # no seq consumed by refused lines
    w.close()
    assert [e["seq"] for e in read(p)] == [0]


def test_existing_log_is_not_overwritten(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_text("old\n")
    with pytest.raises(FileExistsError):
        EventWriter(p, RunClock())
    assert p.read_text() == "old\n"


def test_thread_safe_seq_without_gaps(tmp_path):
    p = tmp_path / "events.jsonl"
    w = EventWriter(p, RunClock())

    def worker(k):
        for i in range(300):
            w.emit("log", level="debug", msg=f"{k}-{i}")

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    w.close()
    evs = read(p)
    assert [e["seq"] for e in evs] == list(range(1200))
    ts_ = [e["t"] for e in evs]
    assert ts_ == sorted(ts_)  # default t is taken under the same lock as seq


def test_timer_flushes_for_tails_and_close_is_idempotent(tmp_path):
    p = tmp_path / "events.jsonl"
    w = EventWriter(p, RunClock(), flush_interval_s=0.02)
    w.emit("log", level="info", msg="a")
    w.emit("log", level="info", msg="b")  # second emit lands within the interval: buffered
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and p.read_bytes().count(b"\n") < 2:
        time.sleep(0.01)
    assert p.read_bytes().count(b"\n") == 2, "the flush timer did not flush a quiet writer"
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.emit("log", level="info", msg="late")
    assert os.path.getsize(p) > 0


def test_emit_bodies_writes_a_batch_with_contiguous_seq_and_one_time(tmp_path):
    p = tmp_path / "events.jsonl"
    w = EventWriter(p, RunClock())
    assert w.emit("log", level="info", msg="before") == 0
    assert w.emit_bodies("xfer", ['"dir":"h2d","bytes":1', '"dir":"d2h","bytes":2']) == 1
    assert w.emit_bodies("xfer", []) == 3  # nothing written, the next seq
    assert w.emit("log", level="info", msg="after") == 3
    # A body that would break the one-line rule is refused and nothing of the batch is written.
    with pytest.raises(ValueError):
        w.emit_bodies("xfer", ['"dir":"h2d","bytes":3', '"x":1\n{"seq":99}'])
    with pytest.raises(ValueError):
        w.emit_bodies("xfer", ['"big":"' + "x" * MAX_LINE_BYTES + '"'])
    w.close()
    with pytest.raises(ValueError):
        w.emit_bodies("xfer", ['"dir":"h2d","bytes":4'])
    ev = read(p)
    assert [e["seq"] for e in ev] == [0, 1, 2, 3]
    assert [e["type"] for e in ev] == ["log", "xfer", "xfer", "log"]
    assert ev[1]["t"] == ev[2]["t"] and ev[1]["bytes"] == 1 and ev[2]["dir"] == "d2h"
