"""Building the CUPTI injection library with the host's compiler and CUPTI, and loading it.

These need a C compiler and CUPTI headers + libcupti (the CUDA toolkit or NVIDIA's pip wheels);
they skip, naming the missing part, where those are absent. No GPU is needed: without a driver
the library's own error path (an error record for the CUPTI call that failed) is what is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from kvscope_agent.tracer import build
from kvscope_agent.tracer.collector import REC_ERROR, STEP_NAMES, TraceFile

AGENT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parts_or_skip() -> build.CuptiLocation:
    try:
        build.find_compiler()
        return build.find_cupti(None)
    except build.TracerBuildError as e:
        pytest.skip(f"cannot build the tracer here: missing {e.missing} ({e})")


def test_builds_once_and_reuses_the_cached_library(tmp_path) -> None:
    _parts_or_skip()
    t0 = time.monotonic()
    path, reused, cupti, _ = build.build(str(tmp_path))
    assert not reused and os.path.isfile(path)
    path2, reused2, _, _ = build.build(str(tmp_path))
    assert reused2 and path2 == path
    assert time.monotonic() - t0 < 120
    if shutil.which("nm"):
        syms = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True,
                              text=True, check=True).stdout
        for name in ("InitializeInjection", "kvscope_cupti_flush", "kvscope_cupti_active", "kvscope_cupti_hold"):
            assert f" T {name}" in syms
    # The library must find libcupti wherever it is loaded: rpath to CUPTI's folder.
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
        assert os.path.dirname(cupti.library) in dyn


def test_cache_key_follows_the_source(tmp_path, monkeypatch) -> None:
    _parts_or_skip()
    src = tmp_path / "src"
    src.mkdir()
    for name in build.SOURCES:
        shutil.copy(os.path.join(build.TRACER_DIR, name), src / name)
    monkeypatch.setattr(build, "TRACER_DIR", str(src))
    a, _, _, _ = build.build(str(tmp_path / "out"))
    with open(src / "kvscope_cupti.c", "a") as f:
        f.write("\n/* changed */\n")
    b, reused, _, _ = build.build(str(tmp_path / "out"))
    assert a != b and not reused


def test_pip_wheel_layout_with_only_a_versioned_libcupti(tmp_path) -> None:
    # CUDA 13 wheels put headers in nvidia/cu13/include and only libcupti.so.13 in nvidia/cu13/lib.
    loc = _parts_or_skip()
    root = tmp_path / "site-packages" / "nvidia" / "cu13"
    (root / "lib").mkdir(parents=True)
    os.symlink(loc.include_dirs[0], root / "include")
    real = os.path.realpath(loc.library)
    os.symlink(real, root / "lib" / "libcupti.so.13")
    found = build._from_root(str(root), "pip")
    assert found is not None and found.library.endswith("libcupti.so.13")
    assert os.path.join(str(root), "include") in found.include_dirs


def test_missing_cupti_names_it_and_how_to_get_it(tmp_path, capsys) -> None:
    try:
        build.find_compiler()
    except build.TracerBuildError as e:
        pytest.skip(f"no C compiler: {e}")
    empty = tmp_path / "cuda"
    empty.mkdir()
    assert build.main(["--cuda-home", str(empty), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "missing CUPTI" in err and str(empty) in err and "pip install" in err
    path, reason = build.ensure_tracer(str(empty), str(tmp_path / "out"))
    assert path is None and "CUPTI" in reason


def test_missing_compiler_names_it(tmp_path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "CC": "no-such-cc", "PYTHONPATH": AGENT_ROOT}
    proc = subprocess.run(
        [sys.executable, "-m", "kvscope_agent", "build-tracer", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 1
    assert "missing C compiler" in proc.stderr and "apt-get install gcc" in proc.stderr
    assert proc.stdout == ""


def test_cli_prints_the_library_path(tmp_path) -> None:
    _parts_or_skip()
    env = {**os.environ, "PYTHONPATH": AGENT_ROOT}
    proc = subprocess.run(
        [sys.executable, "-m", "kvscope_agent", "build-tracer", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert os.path.isfile(line) and line.startswith(str(tmp_path))
    bad = subprocess.run(
        [sys.executable, "-m", "kvscope_agent", "build-tracer", "--bogus"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert bad.returncode == 2 and "--out" in bad.stderr


_LOAD_AND_INIT = r"""
import ctypes, json, os, sys
lib = ctypes.CDLL(sys.argv[1])
rc = lib.InitializeInjection()
print(json.dumps({"pid": os.getpid(), "rc": rc, "active": lib.kvscope_cupti_active(),
                  "flush": lib.kvscope_cupti_flush(0)}))
"""


def test_injection_library_writes_a_header_and_reports_failures(tmp_path) -> None:
    """Loads the real library into a fresh process and calls the driver's entry point.

    With a GPU this traces; without one, CUPTI refuses to enable activity and the library must
    say so in the file (an error record naming the step), not crash or write nothing."""
    _parts_or_skip()
    path, _, _, _ = build.build(str(tmp_path / "lib"))
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {**os.environ, "KVSCOPE_TRACE_DIR": str(trace)}
    before = time.time_ns()
    proc = subprocess.run([sys.executable, "-c", _LOAD_AND_INIT, path], capture_output=True,
                          text=True, env=env, timeout=60)
    after = time.time_ns()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    files = sorted(os.listdir(trace))
    assert files == [f"cupti-{out['pid']}.bin"]
    tf = TraceFile(str(trace / files[0]))
    records = tf.poll()
    assert tf.error is None and tf.header is not None
    h = tf.header
    assert h.pid == out["pid"] and h.flush_period_ms == 100 and h.buffer_bytes == 4 << 20
    assert before <= h.anchor_realtime_ns <= after
    errors = [r for r in records if r.type == REC_ERROR]
    if out["active"]:
        assert out["flush"] == 0 and not errors
    else:
        # No usable GPU here: the failing step is recorded, and stderr says which.
        assert out["flush"] == -1
        assert errors and errors[0].correlation_id in STEP_NAMES
        assert "kvscope-cupti" in proc.stderr and "failed" in proc.stderr


def test_library_without_trace_dir_does_nothing(tmp_path) -> None:
    _parts_or_skip()
    path, _, _, _ = build.build(str(tmp_path / "lib"))
    env = {k: v for k, v in os.environ.items() if k != "KVSCOPE_TRACE_DIR"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_AND_INIT, path], capture_output=True,
                          text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["active"] == 0
    assert "KVSCOPE_TRACE_DIR is not set" in proc.stderr


def test_library_converts_real_cupti_record_structs(tmp_path) -> None:
    """kvscope_cupti.c's buffer callback on a buffer of CUPTI's own structs (Memcpy6, PtoP4,
    Memset4 from the installed headers), walked by CUPTI's cuptiActivityGetNextRecord."""
    loc = _parts_or_skip()
    cc = build.find_compiler()
    exe = str(tmp_path / "cconv")
    proc = subprocess.run(
        [cc.path, "-O2", "-std=gnu11", *[f"-I{d}" for d in loc.include_dirs], "-o", exe,
         os.path.join(build.TRACER_DIR, "cupti_convert_selftest.c"), loc.library,
         f"-Wl,-rpath,{os.path.dirname(loc.library)}", "-lpthread"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0 and "builds CUDA 13 CUPTI records" in proc.stderr:
        pytest.skip("CUPTI here is older than CUDA 13; the self-test builds CUDA 13 structs")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "conv.bin"
    run = subprocess.run([exe, str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from kvscope_agent.tracer.collector import decode_records

    recs = list(decode_records(out.read_bytes()))
    assert [r.type for r in recs] == [1, 3, 2]  # memcpy, peer memcpy, memset; no error records
    m, p, s = recs
    assert (m.copy_kind, m.src_kind, m.dst_kind, m.flags) == (1, 2, 3, 1)
    assert (m.bytes, m.start, m.end) == (0x123456789, 0x18EC0B625F4088EA, 0x18EC0B625F4188EA)
    assert (m.device_id, m.context_id, m.stream_id, m.correlation_id, m.extra) == (3, 4, 55, 0xABCDEF, 7)
    assert (p.copy_kind, p.bytes, p.start, p.end, p.stream_id, p.correlation_id) == (10, 1 << 20, 1000, 2000, 9, 42)
    assert (p.src_device_id, p.dst_device_id) == (1, 2)
    assert (s.src_kind, s.bytes, s.start, s.end, s.stream_id, s.correlation_id, s.flags) == (3, 4096, 3000, 3500, 7, 43, 1)


def test_result_names_match_the_installed_cupti_header() -> None:
    import re

    loc = _parts_or_skip()
    from kvscope_agent.tracer.collector import CUPTI_RESULTS

    with open(os.path.join(loc.include_dirs[0], "cupti_result.h")) as f:
        header = dict((int(n), name) for name, n in re.findall(r"(CUPTI_ERROR_\w+)\s*=\s*(\d+)", f.read()))
    assert {k: v for k, v in header.items() if k in CUPTI_RESULTS} == CUPTI_RESULTS
    assert CUPTI_RESULTS[39] == "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED"


_HOLD = r"""
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
out = {"hold": lib.kvscope_cupti_hold(1), "periodic_held": lib.kvscope_cupti_flush(0),
       "forced_held": lib.kvscope_cupti_flush(1)}
lib.kvscope_cupti_hold(0)
out["periodic_released"] = lib.kvscope_cupti_flush(0)
print(json.dumps(out))
"""


def test_held_flushes_skip_periodic_and_keep_forced(tmp_path) -> None:
    """kvscope_cupti_hold (the decode runner holds flushes while it captures a CUDA graph): a
    periodic flush returns 2 (skipped) while held; a forced one still runs (here, with no GPU,
    it reaches the "tracer not active" answer, -1); after the release periodic flushes run."""
    _parts_or_skip()
    path, _, _, _ = build.build(str(tmp_path / "lib"))
    proc = subprocess.run([sys.executable, "-c", _HOLD, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"hold": 0, "periodic_held": 2, "forced_held": -1, "periodic_released": -1}, got
