"""The CUPTI library's activity-buffer pool (kvscope_cupti.c, "Buffers"): the library tells CUPTI
its buffers come zeroed (so CUPTI does not zero 4 MiB on the application's thread at every buffer
request) and recycles completed buffers, zeroed by the flusher thread. buffer_pool_selftest.c
drives the real callbacks without a GPU. Needs a C compiler and CUPTI (headers + libcupti)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from kvscope_agent.tracer import build


def _run_selftest(tmp_path) -> dict[str, dict]:
    try:
        cc = build.find_compiler()
        loc = build.find_cupti(None)
    except build.TracerBuildError as e:
        pytest.skip(f"cannot build the tracer here: missing {e.missing} ({e})")
    exe = str(tmp_path / "pool")
    proc = subprocess.run(
        [cc.path, "-O2", "-std=gnu11", "-Wall", "-Werror", *[f"-I{d}" for d in loc.include_dirs], "-o", exe,
         os.path.join(build.TRACER_DIR, "buffer_pool_selftest.c"), loc.library,
         f"-Wl,-rpath,{os.path.dirname(loc.library)}", "-lpthread"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out: dict[str, dict] = {}
    for line in run.stdout.splitlines():
        d = json.loads(line)
        out.setdefault(d["check"], {}).update(d)
    return out


def test_buffers_handed_to_cupti_are_zeroed_and_reused(tmp_path) -> None:
    r = _run_selftest(tmp_path)
    # Two buffers are ready before CUDA starts; the first request takes one, zeroed and aligned.
    assert (r["prefill"]["allocated"], r["prefill"]["clean"]) == (2, 2)
    assert r["first"] == {"check": "first", "size": 1 << 20, "zero": 1, "aligned": 1, "max_records": 0}
    # Completed -> dirty; the flusher's clean step zeroes it and makes it ready again.
    assert (r["completed"]["clean"], r["completed"]["dirty"]) == (1, 1)
    assert (r["cleaned"]["clean"], r["cleaned"]["dirty"]) == (2, 0)
    # The buffer CUPTI filled with 0xA5 comes back, zeroed over its whole size, not reallocated.
    assert r["reuse"]["saw_first"] == 1 and r["reuse"]["zero"] == 1
    assert r["cleaned"]["allocated"] == 2


def test_a_request_before_the_flusher_ran_zeroes_a_completed_buffer(tmp_path) -> None:
    r = _run_selftest(tmp_path)["dirty_request"]
    assert r["same"] == 1 and r["zero"] == 1
    assert r["zeroed_on_request"] == 1 and r["allocated"] == 2


def test_the_pool_is_bounded_and_keeps_only_its_own_buffers(tmp_path) -> None:
    r = _run_selftest(tmp_path)
    # 6 buffers in flight at once (4 new), all completed: the pool keeps 4, frees 2.
    assert r["overflow"]["allocated"] == 6 and r["overflow"]["dirty"] == 4
    assert (r["overflow_cleaned"]["clean"], r["overflow_cleaned"]["dirty"]) == (4, 0)
    # A 4 KiB buffer that is not the pool's size is freed, not kept to be handed out.
    assert (r["foreign"]["clean"], r["foreign"]["dirty"]) == (4, 0)


def test_pool_off_allocates_each_buffer_as_before(tmp_path) -> None:
    # KVSCOPE_TRACE_POOL=0 (the A/B switch of bench/gpu/tracer-overhead-micro.py): two more allocations,
    # nothing taken from or added to the pool.
    r = _run_selftest(tmp_path)
    assert r["pool_off"]["allocated"] == r["foreign"]["allocated"] + 2
    assert r["pool_off"]["reused"] == r["foreign"]["reused"]
    assert (r["pool_off"]["clean"], r["pool_off"]["dirty"]) == (4, 0)
