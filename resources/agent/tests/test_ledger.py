from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.ledger import BlockLedger, LedgerError, check_log

from conftest import AGENT_ROOT


def test_ledger_moves_and_rules():
    L = BlockLedger(gpu_capacity=3, host_capacity=2)
    L.store([1, 2, 3])
    with pytest.raises(LedgerError) as e:
        L.store([4])
    assert e.value.rule == "capacity"
    with pytest.raises(LedgerError) as e:
        L.store([1])
    assert e.value.rule == "store-present" and e.value.block_id == 1
    L.offload([1, 2])
    assert list(L.gpu) == [3] and list(L.host) == [1, 2]
    with pytest.raises(LedgerError) as e:
        L.offload([3])
    assert e.value.rule == "capacity"
    with pytest.raises(LedgerError) as e:
        L.onboard([3])
    assert e.value.rule == "onboard-absent"
    L.onboard([1], keep_source=True)
    assert 1 in L.gpu and 1 in L.host
    L.hit([1, 3])
    with pytest.raises(LedgerError) as e:
        L.hit([2])
    assert e.value.rule == "hit-absent"
    L.evict("host", [1])
    with pytest.raises(LedgerError) as e:
        L.evict("host", [1])
    assert e.value.rule == "evict-absent"
    with pytest.raises(LedgerError) as e:
        L.store([7, 7])
    assert e.value.rule == "duplicate-id"


def test_no_host_pool_refuses_offload():
    L = BlockLedger(2, 0)
    L.store(["a"])
    with pytest.raises(LedgerError) as e:
        L.offload(["a"])
    assert e.value.rule == "no-host-pool"
    L.evict("gpu", ["a"])


def write_log(path, events):
    w = EventWriter(path, RunClock())
    for typ, fields in events:
        w.emit(typ, **fields)
    w.close()


POOLS = [
    ("pool", dict(pool="gpu", capacity_blocks=2, block_tokens=4, block_bytes=100)),
    ("pool", dict(pool="host", capacity_blocks=4, block_tokens=4, block_bytes=100)),
]


def test_check_log_clean_and_broken(tmp_path):
    good = tmp_path / "good.jsonl"
    write_log(
        good,
        POOLS
        + [
            ("blocks", dict(op="store", ids=["a", "b"], user=0, round=0)),
            ("blocks", dict(op="offload", ids=["a"], user=0, round=1)),
            ("blocks", dict(op="store", ids=["c"], user=1, round=1)),
            ("blocks", dict(op="offload", ids=["b"], user=1, round=1)),
            ("blocks", dict(op="onboard", ids=["a"], user=0, round=1)),
            ("run.end", dict(status="ok", summary=dict(blocks_offloaded=2, blocks_onboarded=1, blocks_evicted=0))),
        ],
    )
    assert check_log(good) == []

    bad = tmp_path / "bad.jsonl"
    write_log(
        bad,
        POOLS
        + [
            ("blocks", dict(op="store", ids=["a", "b"])),
            ("blocks", dict(op="store", ids=["c"])),  # over capacity
            ("blocks", dict(op="hit", ids=["z"])),
            ("blocks", dict(op="evict", ids=["a"])),  # evict without pool
            ("mystery", dict()),
            ("run.end", dict(status="ok", summary=dict(blocks_offloaded=5))),
        ],
    )
    rules = [v.rule for v in check_log(bad)]
    assert rules == ["capacity", "hit-absent", "missing-key", "unknown-type", "summary-mismatch"]
    seqs = [v.seq for v in check_log(bad)]
    assert seqs[:2] == [3, 4]


def test_check_log_seq_gap_repeat_bad_json(tmp_path):
    p = tmp_path / "e.jsonl"
    lines = [
        {"seq": 0, "t": 0, "type": "log", "level": "info", "msg": "a"},
        {"seq": 2, "t": 1, "type": "log", "level": "info", "msg": "b"},
        {"seq": 2, "t": 1, "type": "log", "level": "info", "msg": "b"},
    ]
    with open(p, "w") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")
        f.write("{not json\n")
    rules = [(v.rule, v.seq) for v in check_log(p)]
    assert rules == [("seq-gap", 2), ("seq-repeat", 2), ("bad-json", None)]


def test_ample_pool_forbids_offload_and_no_host_pool_forbids_onboard(tmp_path):
    p = tmp_path / "e.jsonl"
    write_log(
        p,
        [
            ("pool", dict(pool="gpu", capacity_blocks=10, block_tokens=4, block_bytes=1)),
            ("pool", dict(pool="host", capacity_blocks=10, block_tokens=4, block_bytes=1)),
            ("blocks", dict(op="store", ids=[1, 2])),
            ("blocks", dict(op="offload", ids=[1])),
        ],
    )
    assert [v.rule for v in check_log(p)] == ["ample-gpu-pool"]
    q = tmp_path / "f.jsonl"
    write_log(
        q,
        [
            ("pool", dict(pool="gpu", capacity_blocks=1, block_tokens=4, block_bytes=1)),
            ("blocks", dict(op="store", ids=[1])),
            ("blocks", dict(op="offload", ids=[1])),
        ],
    )
    assert [v.rule for v in check_log(q)] == ["no-host-pool"]


def test_cli_check_exit_codes(tmp_path):
    p = tmp_path / "e.jsonl"
    write_log(p, POOLS + [("blocks", dict(op="hit", ids=[9]))])
    env = {"PYTHONPATH": AGENT_ROOT}
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "check", str(p)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "hit-absent" in r.stdout
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "check", str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "bogus"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_cupti_bytes_must_cover_moved_blocks_by_copy_start_time(tmp_path):
    def log(name, h2d_bytes):
        p = tmp_path / name
        write_log(
            p,
            POOLS
            + [
                ("blocks", dict(op="store", ids=["a", "b"])),
                ("blocks", dict(op="offload", ids=["a"])),
                ("blocks", dict(op="store", ids=["c"])),
                ("phase", dict(name="rounds", state="begin")),
                ("blocks", dict(op="offload", ids=["b"])),
                ("blocks", dict(op="onboard", ids=["a"])),
                ("phase", dict(name="rounds", state="end")),
            ],
        )
        evs = [json.loads(x) for x in p.read_text().splitlines()]
        lo, hi = evs[-2]["t"], evs[-1]["t"]
        with open(p, "a") as f:  # the collector's late line: emitted after the phase ended
            for seq, (direction, nbytes, start) in enumerate(
                # the d2h before the rounds (lo - 1) does not count; the one inside does
                [("h2d", h2d_bytes, (lo + hi) // 2), ("d2h", 100, lo - 1), ("d2h", 100, hi)], start=len(evs)
            ):
                f.write(json.dumps({"seq": seq, "t": hi + 10, "type": "xfer", "dir": direction, "bytes": nbytes,
                                    "start": start, "end": start + 5, "src_mem": "pinned", "dst_mem": "device",
                                    "device": 0, "stream": 1, "source": "cupti"}) + "\n")
        return p

    assert check_log(log("ok.jsonl", 100)) == []
    assert [v.rule for v in check_log(log("short.jsonl", 99))] == ["xfer-short"]
