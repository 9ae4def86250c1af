from __future__ import annotations

import subprocess
import sys

import pytest

from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.ledger import BlockLedger, LedgerError, check_log

from conftest import AGENT_ROOT


def test_ledger_moves_and_rules():
    """An engine's ledger raises the docs/protocol.md rule a move would break, and the move
    changes nothing."""
    L = BlockLedger(gpu_capacity=3, host_capacity=2)
    L.store([1, 2, 3])
    with pytest.raises(LedgerError) as e:
        L.store([4])
    assert e.value.rule == "over_capacity"
    assert list(L.gpu) == [1, 2, 3] and L.counts["store"] == 3
    with pytest.raises(LedgerError) as e:
        L.store([1])
    assert e.value.rule == "store_already_on_gpu" and e.value.block_id == 1
    L.offload([1, 2])
    assert list(L.gpu) == [3] and list(L.host) == [1, 2]
    with pytest.raises(LedgerError) as e:
        L.offload([3])
    assert e.value.rule == "over_capacity"
    assert list(L.gpu) == [3] and list(L.host) == [1, 2]
    with pytest.raises(LedgerError) as e:
        L.onboard([3])
    assert e.value.rule == "onboard_not_on_host"
    L.onboard([1], keep_source=True)
    assert 1 in L.gpu and 1 in L.host
    L.hit([1, 3])
    with pytest.raises(LedgerError) as e:
        L.hit([2])
    assert e.value.rule == "hit_not_on_gpu"
    L.evict("host", [1])
    with pytest.raises(LedgerError) as e:
        L.evict("host", [1])
    assert e.value.rule == "evict_not_in_pool"
    L.evict("gpu", [1])
    # The same id twice in one move: the second is already where the first put it.
    with pytest.raises(LedgerError) as e:
        L.store([7, 7])
    assert e.value.rule == "store_already_on_gpu" and 7 not in L.gpu
    assert L.counts == {"store": 3, "move": 0, "offload": 2, "onboard": 1, "evict": 2, "hit": 2}
    assert L.moved == {("gpu", "host"): 2, ("host", "gpu"): 1}


def test_no_host_pool_refuses_offload():
    L = BlockLedger(2, 0)
    L.store(["a"])
    with pytest.raises(LedgerError) as e:
        L.offload(["a"])
    assert e.value.rule == "move_without_host_pool"
    L.evict("gpu", ["a"])


def test_every_rule_code_the_ledger_can_report_is_in_the_data():
    """A code missing from protocol.json fails where it is reported, not silently."""
    L = BlockLedger.for_reading()
    with pytest.raises(KeyError):
        L._violate("capacity", 0, "an old code")


def write_log(path, events):
    w = EventWriter(path, RunClock())
    for typ, fields in events:
        w.emit(typ, **fields)
    w.close()


POOLS = [
    ("pool", dict(pool="gpu", capacity_blocks=2, block_tokens=4, block_bytes=100)),
    ("pool", dict(pool="host", capacity_blocks=4, block_tokens=4, block_bytes=100)),
]


def test_check_log_clean(tmp_path):
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
            ("run.end", dict(status="ok", summary=dict(blocks_offloaded=2, blocks_onboarded=1, blocks_evicted=0,
                                                       bytes_h2d=100, bytes_d2h=200))),
        ],
    )
    assert check_log(good) == []


def test_cli_check_exit_codes(tmp_path):
    p = tmp_path / "e.jsonl"
    write_log(p, POOLS + [("blocks", dict(op="hit", ids=[9]))])
    env = {"PYTHONPATH": AGENT_ROOT}
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "check", str(p)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "seq 2: hit_not_on_gpu" in r.stdout and "[rule: hit: the block must be" in r.stdout
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "check", str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kvscope_agent", "bogus"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_an_engine_with_a_disk_tier_moves_blocks_between_any_two_pools():
    """Protocol v2: pools are a list; a block is in exactly the pools the moves put it in."""
    L = BlockLedger(2, 2, disk_capacity=3)
    assert L.pools["disk"].tier == 2
    L.store([1, 2])
    L.move("gpu", "host", [1, 2])  # checked and counted as the offload it is
    assert L.counts["offload"] == 2 and L.counts["move"] == 0
    L.move("host", "disk", [1])
    L.move("host", "disk", [2], keep_source=True)
    assert list(L.holding("disk")) == [1, 2] and list(L.host) == [2] and list(L.gpu) == []
    L.move("disk", "host", [1])
    L.onboard([1], keep_source=True)
    assert 1 in L.gpu and 1 in L.host and 1 not in L.holding("disk")
    with pytest.raises(LedgerError) as e:
        L.move("disk", "host", [9])
    assert e.value.rule == "move_not_in_source"
    with pytest.raises(LedgerError) as e:
        L.move("disk", "disk", [2])
    assert e.value.rule == "move_to_self"
    with pytest.raises(LedgerError) as e:
        L.move("disk", "remote", [2])
    assert e.value.rule == "move_without_pool"
    L.add_pool("remote", 8)
    assert L.pools["remote"].tier == 3
    with pytest.raises(LedgerError) as e:
        L.add_pool("disk", 1)
    assert e.value.rule == "pool_redefined"
    with pytest.raises(LedgerError) as e:
        L.store([5, 6, 7, 8], pool="disk")
    assert e.value.rule == "over_capacity" and list(L.holding("disk")) == [2]
    with pytest.raises(LedgerError) as e:
        L.hit([1], pool="disk")
    assert e.value.rule == "hit_not_in_pool"
    L.evict("disk", [2])
    assert L.moved == {("gpu", "host"): 2, ("host", "disk"): 2, ("disk", "host"): 1, ("host", "gpu"): 1}
    assert L.peak == {"gpu": 2, "host": 2, "disk": 2, "remote": 0}
