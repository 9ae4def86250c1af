"""The built-in engine's disk tier (--disk-kv-bytes / --disk-kv-path) on the CPU, tiny preset:
the file's I/O both ways (O_DIRECT where the filesystem takes it, and the buffered fallback),
spill and promotion keeping the greedy tokens of a run without the tier, the log the run writes
(protocol 2's pools and moves) and the ledger's verdict on it, the TTFT split on every first token, and a full disk
(a file-size limit) degrading spills with the reason logged and nothing finished lost."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys

import pytest

from conftest import AGENT_ROOT
from kvscope_agent.engine.disk_tier import ALIGN, IOV_MAX, DiskTierError, FileTier, filesystem_of
from kvscope_agent.ledger import check_log
from test_run import events, run_inproc

BLOCK_BYTES = 8192  # tiny preset, 16-token blocks, fp32 (as test_run.py)
# 4 users whose last requests need 18 blocks each: the GPU pool holds 2 users (40 blocks), the host
# pool 24 blocks (more than one admission's victims, fewer than the users left out), the disk the rest.
BASE = ["--device", "cpu", "--model", "tiny", "--users", "4", "--rounds", "3", "--context-tokens", "200",
        "--new-tokens", "16", "--output-tokens", "8", "--block-tokens", "16", "--seed", "7",
        "--gpu-kv-bytes", str(40 * BLOCK_BYTES)]
HOST = ["--host-kv-bytes", str(24 * BLOCK_BYTES)]
AMPLE = ["--gpu-kv-bytes", str(4 * 18 * BLOCK_BYTES), "--host-kv-bytes", "0"]


def run(tmp_path, name, extra):
    return run_inproc(tmp_path, name, extra, BASE)


@pytest.fixture(scope="module")
def reference_tokens(tmp_path_factory):
    """Every request's greedy tokens with every block on the GPU (nothing moves)."""
    code, built, log = run(tmp_path_factory.mktemp("ref"), "ref", AMPLE)
    assert code == 0
    assert summary(log)["blocks_offloaded"] == 0
    return built.engine.last_outputs


def summary(log):
    end = events(log)[-1]
    assert end["type"] == "run.end" and end["status"] == "ok", end
    return end["summary"]


def disk_args(tmp_path, *more):
    folder = tmp_path / "tier"
    folder.mkdir(exist_ok=True)
    return HOST + ["--disk-kv-bytes", str(200 * BLOCK_BYTES), "--disk-kv-path", str(folder), *more]


# ---- the file ---------------------------------------------------------------------------------


def aligned_buffer(nbytes, offset=0):
    m = mmap.mmap(-1, nbytes + ALIGN)
    return m, ctypes.addressof(ctypes.c_char.from_buffer(m)) + offset


def o_direct_here(folder) -> bool:
    tier = FileTier(str(folder), 4, ALIGN)
    try:
        return tier.io == "o_direct"
    finally:
        tier.close()


@pytest.mark.parametrize("io", ["o_direct", "buffered"])
@pytest.mark.parametrize("misaligned", [False, True])
def test_file_tier_round_trips_blocks_both_ways(tmp_path, io, misaligned):
    """Blocks written from host memory come back byte for byte, by O_DIRECT (aligned memory, or a
    bounce buffer when the memory is not) and by the buffered fallback."""
    if io == "o_direct" and not o_direct_here(tmp_path):
        pytest.skip(f"{filesystem_of(str(tmp_path))} refuses O_DIRECT here; the buffered case covers the tier")
    bb = 2 * ALIGN
    tier = FileTier(str(tmp_path), 16, bb, io)
    assert tier.io == io
    src_map, src = aligned_buffer(6 * bb, 8 if misaligned else 0)
    dst_map, dst = aligned_buffer(6 * bb, 8 if misaligned else 0)
    ctypes.memmove(src, bytes(range(256)) * (6 * bb // 256), 6 * bb)
    # two runs: 4 blocks into slots 3..6 from one segment, 2 blocks into slots 10..11 from two
    # segments out of order in memory (one vectored transfer)
    w = tier.write_runs([(3, [(src, 4 * bb)]), (10, [(src + 5 * bb, bb), (src + 4 * bb, bb)])])
    assert w.bytes == 6 * bb and w.end_ns >= w.start_ns
    r = tier.read_runs([(10, [(dst + 5 * bb, bb), (dst + 4 * bb, bb)]), (3, [(dst, 4 * bb)])])
    assert r.bytes == 6 * bb
    assert ctypes.string_at(dst, 6 * bb) == ctypes.string_at(src, 6 * bb)
    # a run of more segments than one vectored call takes is cut into several
    many = [(src + (i % 6) * bb, bb) for i in range(IOV_MAX + 3)]
    tier2 = FileTier(str(tmp_path), IOV_MAX + 3, bb, io)
    tier2.write_runs([(0, many)])
    back_map, back = aligned_buffer(bb, 8 if misaligned else 0)
    tier2.read_runs([(IOV_MAX + 1, [(back, bb)])])
    assert ctypes.string_at(back, bb) == ctypes.string_at(src + ((IOV_MAX + 1) % 6) * bb, bb)
    tier2.close()
    del back_map
    tier.close()
    del src_map, dst_map
    # the file was unlinked once open: nothing is left in the folder
    assert not [p for p in os.listdir(tmp_path) if p.startswith("kvscope-kv-")]


def test_file_tier_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(DiskTierError, match="not a folder"):
        FileTier(str(tmp_path / "missing"), 4, ALIGN)
    with pytest.raises(DiskTierError, match="not one of"):
        FileTier(str(tmp_path), 4, ALIGN, "sometimes")
    # a block size O_DIRECT cannot move falls back to buffered, and says why
    tier = FileTier(str(tmp_path), 4, ALIGN + 512)
    assert tier.io == "buffered" and "not a multiple" in tier.io_reason
    tier.close()
    with pytest.raises(DiskTierError, match="o_direct"):
        FileTier(str(tmp_path), 4, ALIGN + 512, "o_direct")


def test_a_write_past_the_file_size_limit_is_a_disk_write_error(tmp_path):
    """RLIMIT_FSIZE makes a write past it fail with EFBIG, as a full disk fails with ENOSPC; the
    tier reports which write failed (in a child: the limit would bind this process's files too)."""
    code = f"""
import ctypes, mmap, resource, sys
sys.path.insert(0, {AGENT_ROOT!r})
from kvscope_agent.engine.disk_tier import FileTier, DiskWriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 8192, resource.RLIM_INFINITY))
tier = FileTier({str(tmp_path)!r}, 16, 8192, "buffered")
m = mmap.mmap(-1, 8 * 8192)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
tier.write_runs([(0, [(addr, 4 * 8192)])])
try:
    tier.write_runs([(4, [(addr, 2 * 8192)])])
except DiskWriteError as e:
    print(e.errno, e.offset, e.message)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    err, offset, message = out.stdout.split(" ", 2)
    assert int(err) == 27 and int(offset) == 4 * 8192  # EFBIG
    assert "File too large" in message and str(tmp_path) in message


# ---- whole runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("io", ["auto", "buffered"])
def test_spill_and_promotion_keep_the_greedy_tokens_and_the_ledger(tmp_path, reference_tokens, io):
    """With a disk tier the host pool's evictions spill to the file and come back disk -> host ->
    GPU; every request's greedy tokens equal those of a run that never moved a block, and the
    protocol 2 log passes the ledger's rules with every move it made."""
    code, built, log = run(tmp_path, "disk", disk_args(tmp_path, "--disk-kv-io", io))
    assert code == 0
    assert check_log(log) == []
    assert built.engine.last_outputs == reference_tokens
    evs = events(log)
    assert evs[0]["type"] == "run.start" and evs[0]["protocol"] == 2
    assert evs[0]["config"]["disk_kv_bytes"] == 200 * BLOCK_BYTES
    pools = {e["pool"]: e for e in evs if e["type"] == "pool"}
    assert [(p, pools[p]["tier"]) for p in ("gpu", "host", "disk")] == [("gpu", 0), ("host", 1), ("disk", 2)]
    assert pools["disk"]["medium"] == "file" and pools["disk"]["capacity_blocks"] == 200
    s = summary(log)
    assert pools["disk"]["io"] == s["disk"]["io"] == built.cache.disk.io
    if io == "buffered":
        assert s["disk"]["io"] == "buffered" and s["disk"]["io_reason"] == "--disk-kv-io buffered"
    moves = {}
    for e in evs:
        if e["type"] == "blocks" and e["op"] == "move":
            moves[(e["from"], e["to"])] = moves.get((e["from"], e["to"]), 0) + len(e["ids"])
    assert moves[("host", "disk")] == s["blocks_spilled"] > 0
    assert moves[("disk", "host")] == s["blocks_promoted"] > 0
    xfers = {}
    for e in evs:
        if e["type"] == "xfer":
            assert e["source"] == "engine" and e["from_pool"] and e["to_pool"]
            xfers[e["dir"]] = xfers.get(e["dir"], 0) + e["bytes"]
    # every block read back from the file was written to it first; the bytes are the blocks'
    assert xfers["f2h"] == s["bytes_disk_read"] == s["blocks_promoted"] * BLOCK_BYTES
    assert xfers["h2f"] == s["bytes_disk_write"] == s["blocks_spilled"] * BLOCK_BYTES
    assert s["disk"]["plain_read_bytes_per_s"] > 0 and s["disk"]["plain_write_bytes_per_s"] > 0
    assert s["disk"]["path_fs"] == filesystem_of(str(tmp_path)) and s["disk"]["spill_off"] is None
    done = [e for e in evs if e["type"] == "req" and e["phase"] == "done"]
    assert sum(e["reused_disk_tokens"] for e in done) == s["blocks_promoted"] * 16
    for e in done:
        assert (e["reused_gpu_tokens"] + e["reused_host_tokens"] + e["reused_disk_tokens"] + e["computed_tokens"]
                == e["prompt_tokens"])


def test_a_promotion_larger_than_its_staging_ring_reuses_the_slots(tmp_path, reference_tokens, monkeypatch):
    """Under lazy offload a promotion stages through a ring of two pipeline chunks of host slots,
    reused as each chunk's copy to the GPU ends: with 2-block chunks every promotion of more than 4
    blocks goes round the ring, and the lines still hold the host pool within its capacity."""
    from kvscope_agent.engine import scheduler

    monkeypatch.setattr(scheduler, "IO_CHUNK_BYTES", 2 * BLOCK_BYTES)
    code, built, log = run(tmp_path, "ring", disk_args(tmp_path))
    assert code == 0 and check_log(log) == []
    assert built.engine.last_outputs == reference_tokens
    evs = events(log)
    promoted = [e for e in evs if e["type"] == "blocks" and e["op"] == "move" and e["from"] == "disk"]
    assert promoted and max(len(e["ids"]) for e in promoted) <= 2
    per_request = {}
    for e in promoted:
        per_request[(e["user"], e["round"])] = per_request.get((e["user"], e["round"]), 0) + len(e["ids"])
    assert max(per_request.values()) > 4


@pytest.mark.parametrize("policy", ["lazy-keep", "write-through"])
def test_policies_that_keep_host_copies_promote_into_their_own_slots(tmp_path, reference_tokens, policy):
    code, built, log = run(tmp_path, policy, disk_args(tmp_path, "--offload-policy", policy))
    assert code == 0 and check_log(log) == []
    assert built.engine.last_outputs == reference_tokens
    assert summary(log)["blocks_spilled"] > 0


def test_ttft_parts_sum_exactly_to_each_ttft(tmp_path):
    code, _, log = run(tmp_path, "parts", disk_args(tmp_path))
    assert code == 0
    evs = events(log)
    queued = {(e["user"], e["round"]): e["t"] for e in evs if e["type"] == "req" and e["phase"] == "queued"}
    firsts = [e for e in evs if e["type"] == "req" and e["phase"] == "first_token"]
    assert len(firsts) == 4 * 4
    promoted_seen = False
    for e in firsts:
        p = e["ttft_parts"]
        parts = [p["queued_ns"], p["host_reload"]["ns"], p["disk_promote"]["ns"], p["recompute"]["ns"], p["other_ns"]]
        assert all(x >= 0 for x in parts)
        assert sum(parts) == e["t"] - queued[(e["user"], e["round"])]
        if p["disk_promote"]["blocks"]:
            promoted_seen = True
            assert p["disk_promote"]["ns"] > 0 and p["host_reload"]["blocks"] >= p["disk_promote"]["blocks"]
            assert p["disk_promote"]["bytes"] == p["disk_promote"]["blocks"] * BLOCK_BYTES
    assert promoted_seen
    # the ledger's rule catches parts that do not add up
    bad = tmp_path / "bad.jsonl"
    lines = open(log).read().splitlines()
    i = next(k for k, ln in enumerate(lines) if '"first_token"' in ln)
    e = json.loads(lines[i])
    e["ttft_parts"]["other_ns"] += 5000
    lines[i] = json.dumps(e)
    bad.write_text("\n".join(lines) + "\n")
    assert [v.rule for v in check_log(str(bad))] == ["ttft_parts_sum"]


def test_without_a_disk_tier_the_log_has_only_the_gpu_and_host_pools(tmp_path):
    """No disk tier: nothing of it in the log (the pools, moves and keys of version 1, besides
    ttft_parts), as a run wrote before the tier existed."""
    code, _, log = run(tmp_path, "v1", HOST)
    assert code == 0 and check_log(log) == []
    evs = events(log)
    assert evs[0]["config"]["disk_kv_bytes"] == 0
    assert [e["pool"] for e in evs if e["type"] == "pool"] == ["gpu", "host"]
    assert not any("tier" in e for e in evs if e["type"] == "pool")
    assert not any(e["type"] == "blocks" and e["op"] == "move" for e in evs)
    assert not any("from_pool" in e for e in evs if e["type"] == "xfer")
    s = summary(log)
    assert "disk" not in s and "blocks_spilled" not in s
    assert all("reused_disk_tokens" not in e for e in evs if e["type"] == "req")


@pytest.mark.parametrize(
    "args,option",
    [
        (["--disk-kv-bytes", "1e6"], "--disk-kv-path"),
        (["--disk-kv-bytes", "1e6", "--disk-kv-path", "/no/such/folder"], "--disk-kv-path"),
        (["--disk-kv-bytes", "1e6", "--disk-kv-path", "TMP", "--host-kv-bytes", "0"], "--disk-kv-bytes"),
        (["--disk-kv-bytes", "100", "--disk-kv-path", "TMP"], "--disk-kv-bytes"),
        (["--disk-kv-io", "fast"], "--disk-kv-io"),
    ],
)
def test_bad_disk_options_end_the_run_naming_the_option(tmp_path, args, option):
    args = [str(tmp_path) if a == "TMP" else a for a in args]
    out = tmp_path / "bad"
    env = dict(os.environ, PYTHONPATH=AGENT_ROOT)
    p = subprocess.run([sys.executable, "-m", "kvscope_agent", "run"] + BASE + HOST + args + ["--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert option in p.stderr
    end = events(out / "events.jsonl")[-1]
    assert end["type"] == "run.end" and end["status"] == "error" and end["error"]["option"] == option


def test_a_full_disk_stops_spilling_with_the_reason_and_loses_nothing(tmp_path, reference_tokens):
    """The disk tier's file may not grow past the slots the run filled before its first promotion,
    less one (RLIMIT_FSIZE: a write past it fails as on a full disk; slots are taken in ascending
    order): the plain measurement's failure is reported, the run ends ok, the log says why spilling
    stopped, the blocks whose write failed leave the disk again (and are recomputed), the blocks
    written before it are still promoted, and every request's tokens are the reference's."""
    _, _, free_log = run(tmp_path, "unlimited", disk_args(tmp_path))
    spilled = 0
    for e in events(free_log):
        if e["type"] == "blocks" and e["op"] == "move":
            if e["from"] == "disk":
                break
            spilled += len(e["ids"]) if e["to"] == "disk" else 0
    limit = max(1, spilled - 1) * BLOCK_BYTES
    out = tmp_path / "full"
    argv = BASE + disk_args(tmp_path) + ["--out", str(out)]
    code = f"""
import json, resource, sys
sys.path.insert(0, {AGENT_ROOT!r})
from kvscope_agent.lifecycle import CancelState
from kvscope_agent.memory_plan import build
from kvscope_agent.options import parse_options, resolve_device
from kvscope_agent.run_loop import run_one
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
opts, _, err = parse_options({argv!r}, sweep=False)
resolve_device(opts)
code, built = run_one(opts, None, opts.users[0], opts.host_kv_bytes[0], opts.out, CancelState(),
                      {{"on": False, "source": "cupti", "reason": "device cpu"}}, build)
print(json.dumps({{"code": code, "tokens": [[list(k), v] for k, v in built.engine.last_outputs.items()]}}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"] == 0
    assert {tuple(k): v for k, v in res["tokens"]} == reference_tokens
    log = str(out / "events.jsonl")
    assert check_log(log) == []
    evs = events(log)
    s = summary(log)
    assert "File too large" in s["disk"]["plain_error"]
    assert s["disk"]["spill_off"] and "File too large" in s["disk"]["spill_off"]
    warn = [i for i, e in enumerate(evs) if e["type"] == "log" and "spilling stopped" in e["msg"]]
    assert len(warn) == 1 and "File too large" in evs[warn[0]]["msg"]
    # the blocks whose write failed leave the disk in the lines just before the warning
    lost: set[int] = set()
    i = warn[0] - 1
    while evs[i]["type"] == "blocks" and evs[i]["op"] == "evict" and evs[i]["pool"] == "disk":
        lost.update(evs[i]["ids"])
        i -= 1
    assert lost
    assert not any(e["type"] == "blocks" and e["op"] == "move" and e["to"] == "disk" for e in evs[warn[0]:])
    promoted = [b for e in evs if e["type"] == "blocks" and e["op"] == "move" and e["from"] == "disk"
                for b in e["ids"]]
    assert promoted and not lost & set(promoted)
    # what reached the disk is what was spilled less what was lost
    assert s["bytes_disk_write"] == (s["blocks_spilled"] - len(lost)) * BLOCK_BYTES


def test_the_what_if_simulator_refuses_a_run_with_a_disk_tier():
    """It does not model the disk tier: replaying such a run without it would answer wrongly."""
    from kvscope_agent.whatif.recorded import RecordedRunError
    from kvscope_agent.whatif.replay import options_for

    with pytest.raises(RecordedRunError, match="disk tier"):
        options_for({"offload_policy": "lazy", "disk_kv_bytes": 200 * BLOCK_BYTES}, 4, None)
