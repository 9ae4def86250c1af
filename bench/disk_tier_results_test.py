"""bench/disk-tier-results.py's checks: a request's ttft_parts against its measured TTFT (within
2%), and the disk tier's promotion bandwidth against the plain sequential read (80%), on small
hand-made logs."""

from __future__ import annotations

import json

from script_loader import load_script


def _parts(queued: int, disk: int, host: int, recompute: int, other: int) -> dict:
    return {"queued_ns": queued, "gpu_hit_blocks": 0, "host_reload": {"blocks": 1, "bytes": 1, "ns": host},
            "disk_promote": {"blocks": 1, "bytes": 1, "ns": disk}, "recompute": {"tokens": 1, "ns": recompute},
            "other_ns": other}


def _log(path, firsts: list[tuple[int, int, dict]], xfers: list[dict], disk: dict) -> None:
    lines = [{"type": "run.start", "config": {"users": len(firsts)}},
             {"type": "phase", "name": "rounds", "state": "begin", "t": 100}]
    for user, ttft, parts in firsts:
        lines += [{"type": "req", "user": user, "round": 1, "phase": "queued", "t": 1000},
                  {"type": "req", "user": user, "round": 1, "phase": "first_token", "t": 1000 + ttft, "ttft_parts": parts}]
    lines += [{"type": "xfer", "source": "engine", **x} for x in xfers]
    lines += [{"type": "phase", "name": "rounds", "state": "end", "t": 10**9},
              {"type": "run.end", "status": "ok", "summary": {"e2e_ns": 5 * 10**9, "ttft_ns_mean": 10**6, "disk": disk}}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_parts_within_two_percent_pass_and_beyond_fail(tmp_path) -> None:
    m = load_script("disk-tier-results.py")
    # 1000 ns measured: parts summing to 1015 are within 2% (1.5%), to 1030 are not (3%)
    _log(tmp_path / "a.jsonl", [(0, 1000, _parts(100, 200, 300, 400, 15))], [], {})
    c = m.parts_check(m.read_run(str(tmp_path / "a.jsonl"), "a"))
    assert c["result"] == "PASS" and c["worst_gap_ns"] == 15
    _log(tmp_path / "b.jsonl", [(0, 1000, _parts(100, 200, 300, 400, 0)), (1, 1000, _parts(100, 200, 300, 400, 30))], [], {})
    c = m.parts_check(m.read_run(str(tmp_path / "b.jsonl"), "b"))
    assert c["result"] == "FAIL" and c["within_2pct"] == 1 and c["requests"] == 2


def test_promotion_bandwidth_against_the_plain_read(tmp_path) -> None:
    m = load_script("disk-tier-results.py")
    plain = {"path_fs": "ext4", "io": "o_direct", "plain_read_bytes_per_s": 2 * 10**9, "plain_write_bytes_per_s": 10**9}
    # two reads in the rounds: 3e6 bytes in 1.5e6 ns = 2 GB/s (100%); one before the rounds is left out
    reads = [{"dir": "f2h", "bytes": 10**6, "start": 200, "end": 200 + 5 * 10**5},
             {"dir": "f2h", "bytes": 2 * 10**6, "start": 10**6, "end": 2 * 10**6},
             {"dir": "f2h", "bytes": 10**9, "start": 0, "end": 50}]
    _log(tmp_path / "host-disk" / "events.jsonl", [(0, 1000, _parts(1000, 0, 0, 0, 0))], reads, plain)
    d = m.disk_check(m.read_run(str(tmp_path / "host-disk" / "events.jsonl"), "host-disk"))
    assert d["promote"]["bytes"] == 3 * 10**6 and d["promote"]["ratio"] == 1.0 and d["result"] == "PASS"
    slow = [{"dir": "f2h", "bytes": 10**6, "start": 200, "end": 200 + 10**6}]  # 1 GB/s: 50%
    _log(tmp_path / "slow" / "events.jsonl", [(0, 1000, _parts(1000, 0, 0, 0, 0))], slow, plain)
    assert m.disk_check(m.read_run(str(tmp_path / "slow" / "events.jsonl"), "slow"))["result"] == "FAIL"
    # no reads at all: not measured, never a pass
    _log(tmp_path / "none" / "events.jsonl", [(0, 1000, _parts(1000, 0, 0, 0, 0))], [], plain)
    assert m.disk_check(m.read_run(str(tmp_path / "none" / "events.jsonl"), "none"))["result"] == "not measured"
    # the table names each config, missing runs included
    text, data = m.report({k: m.read_run(str(tmp_path / k / "events.jsonl"), k) for k, _ in m.CONFIGS}, "card", "cmd")
    assert "| +host+disk | ok |" in text and "| GPU-only | missing |" in text
    assert data["disk"]["result"] == "PASS"
