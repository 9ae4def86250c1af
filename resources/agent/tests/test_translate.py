"""Translation of engine KV-event dumps (TensorRT-LLM and vLLM).

The dumps in fixtures/engine-dumps/ are shaped exactly as the engines' serializers write them
(TensorRT-LLM tensorrt_llm/_utils.py KVCacheEventSerializer at commit ed53795b, with the KV cache
manager v2's cache levels, disk included, at commit 00043967; vLLM vllm/distributed/kv_events.py
at commits b4e69e0a (v0.9, array_like) and 0181ea31 (map form with medium), the offloading
connector's tier fields (medium STORAGE, locality, ownership) as
kv_connector/v1/offloading/events.py at 030ea52e and vllm/v1/kv_offload/base.py at 0105e232 write
them); generate.py beside them says how, and records in expected-moves.json what its simulated
engine actually did, so each test below can check that every move is counted once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from conftest import AGENT_ROOT
from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter
from kvscope_agent.ledger import BlockLedger, LedgerError, check_log
from kvscope_agent.translate import emit_run_start, run_end_summary
from kvscope_agent.translate import main as translate_main
from kvscope_agent.translate.common import Report
from kvscope_agent.translate.tensorrt_llm import TrtllmTranslator
from kvscope_agent.translate.vllm import VllmTranslator

DUMPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "engine-dumps")
with open(os.path.join(DUMPS, "expected-moves.json")) as _f:
    EXPECTED: dict[str, dict[str, int]] = json.load(_f)


def engine_of(name: str) -> str:
    return "tensorrt_llm" if name.startswith("trtllm") else "vllm"


def translate(tmp_path, name: str, *extra: str) -> tuple[list[dict[str, Any]], str]:
    out = tmp_path / name
    rc = translate_main(
        ["--engine", engine_of(name), "--input", os.path.join(DUMPS, name), "--out", str(out), *extra]
    )
    assert rc == 0
    path = str(out / "events.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f], path


def read_dump(name: str) -> list[Any]:
    with open(os.path.join(DUMPS, name)) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    assert lines[-1]["type"] == "run.end" and lines[-1]["status"] == "ok"
    return lines[-1]["summary"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_translation_satisfies_protocol_and_counts_each_move_once(tmp_path, name):
    lines, path = translate(tmp_path, name)
    assert check_log(path) == []
    assert lines[0]["type"] == "run.start"
    assert lines[0]["engine"] == {"name": engine_of(name), "version": "imported"}
    want = EXPECTED[name]
    tiered = "spill" in want  # a dump with a tier below the host: a disk pool
    assert [ln["pool"] for ln in lines if ln["type"] == "pool"] == ["gpu", "host"] + (["disk"] if tiered else [])
    s = summary(lines)
    assert s["translate"]["blocks_stored"] == want["store"]
    assert s["blocks_offloaded"] == want["offload"]
    assert s["blocks_onboarded"] == want["onboard"]
    assert s["blocks_evicted"] == want["evict_gpu"] + want["evict_host"] + want.get("evict_disk", 0)
    # the evictions land in the pool the engine dropped them from
    by_pool = {"gpu": 0, "host": 0, "disk": 0}
    moved: dict[tuple[str, str], int] = {}
    for ln in lines:
        if ln["type"] == "blocks" and ln["op"] == "evict":
            by_pool[ln["pool"]] += len(ln["ids"])
        if ln["type"] == "blocks" and ln["op"] == "move":
            moved[(ln["from"], ln["to"])] = moved.get((ln["from"], ln["to"]), 0) + len(ln["ids"])
    assert by_pool == {"gpu": want["evict_gpu"], "host": want["evict_host"], "disk": want.get("evict_disk", 0)}
    # and every move between tiers is the engine's, once: host -> disk (spill), disk -> host
    # (promote), disk -> gpu straight
    if tiered:
        assert moved.get(("host", "disk"), 0) == want["spill"] == s["blocks_spilled"]
        assert moved.get(("disk", "host"), 0) == want["promote"] == s["blocks_promoted"]
        assert moved.get(("disk", "gpu"), 0) == want.get("disk_to_gpu", 0)
    else:
        assert moved == {}


def test_trtllm_pools_come_from_created(tmp_path):
    lines, _ = translate(tmp_path, "trtllm-8users-offload.json")
    pools = {ln["pool"]: ln for ln in lines if ln["type"] == "pool"}
    created = read_dump("trtllm-8users-offload.json")[0]["data"]["num_blocks_per_cache_level"]
    assert [pools["gpu"]["capacity_blocks"], pools["host"]["capacity_blocks"]] == created
    assert pools["gpu"]["block_tokens"] == 32  # the longest tokens list of a stored block
    assert lines[0]["config"]["pools_from"] == "created"


def test_trtllm_offload_before_host_removal_would_break_capacity_if_replayed_literally():
    """kvCacheManager.cpp getFreeBlock enqueues the 0->1 update of the GPU victim before the
    removal of the host block whose slot it takes. Replayed literally the host pool overflows;
    the translator waits for the removal instead (offload_waited_for_host_slot)."""
    events = read_dump("trtllm-8users-offload.json")
    gpu, host = events[0]["data"]["num_blocks_per_cache_level"]
    ledger = BlockLedger(gpu, host)
    where: dict[int, str] = {}
    with pytest.raises(LedgerError) as e:
        for ev in events[1:]:
            d = ev["data"]
            if d["type"] == "stored":
                ids = [b["block_hash"] for b in d["blocks"]]
                ledger.store(ids)
                where.update((i, "gpu") for i in ids)
            elif d["type"] == "updated" and d["cache_level"]:
                h = d["block_hash"]
                if d["cache_level"]["new_value"] == 1:
                    ledger.offload([h])
                    where[h] = "host"
                else:
                    ledger.onboard([h])
                    where[h] = "gpu"
            elif d["type"] == "removed":
                for h in d["block_hashes"]:
                    ledger.evict(where.pop(h), [h])
    assert e.value.rule == "over_capacity"


def test_trtllm_updates_with_null_priority_and_priority_only_updates(tmp_path):
    name = "trtllm-early-priority.jsonl"
    events = read_dump(name)
    prio_only = [e for e in events if e["data"]["type"] == "updated" and e["data"]["cache_level"] is None]
    moves = [e for e in events if e["data"]["type"] == "updated" and e["data"]["cache_level"] is not None]
    assert prio_only and all(e["data"]["priority"] is not None for e in prio_only)
    assert moves and all(e["data"]["priority"] is None for e in moves)
    assert all("window_size" not in e for e in events)  # the early serializer
    lines, _ = translate(tmp_path, name)
    s = summary(lines)
    assert s["translate"]["counts"]["priority_only_update"] == len(prio_only)
    assert s["blocks_offloaded"] + s["blocks_onboarded"] == len(moves)


def test_trtllm_dump_without_created_with_odd_items_is_reported_not_dropped(tmp_path):
    name = "trtllm-no-created-mixed.jsonl"
    lines, path = translate(tmp_path, name)
    assert check_log(path) == []
    s = summary(lines)
    counts = s["translate"]["counts"]
    assert counts["pool_size_inferred"] == 2
    assert counts["unknown_event_type"] == 1
    assert counts["nested_event_list"] == 1
    assert counts["empty_event"] == 1
    assert counts["update_of_unknown_block"] > 0  # blocks stored before the dump began
    warns = [ln["msg"] for ln in lines if ln["type"] == "log" and ln["level"] == "warn"]
    assert any("'spilled'" in m for m in warns)
    assert any("inferred" in m for m in warns)
    # every event of the dump was read: the JSON-string item and the nested one too
    raw = read_dump(name)
    n_events = sum(1 for x in raw if x)
    assert s["translate"]["events_in"] == n_events
    assert lines[0]["config"]["pools_from"] == "inferred"


def test_trtllm_events_before_created_are_translated_with_its_pools(tmp_path):
    lines, path = translate(tmp_path, "trtllm-created-late.json")
    assert check_log(path) == []
    counts = summary(lines)["translate"]["counts"]
    assert counts["events_before_created"] == 3
    assert counts["event_out_of_order"] == 1
    pools = {ln["pool"]: ln["capacity_blocks"] for ln in lines if ln["type"] == "pool"}
    assert pools == {"gpu": 16, "host": 20}


def test_trtllm_live_feed_waits_for_created_then_replays(tmp_path):
    """A live run may see events before `created` (gathered out of order): they wait, nothing is
    lost, and the pools come out before any blocks line."""
    events = read_dump("trtllm-created-late.json")
    clock = RunClock()
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, clock)
    report = Report(w)
    tr = TrtllmTranslator(w, report)
    for i, ev in enumerate(events):
        tr.feed(ev, i)
        tr.start_pools_from_created(32, 0, i)
    tr.finish(len(events))
    w.emit("run.end", status="ok", summary=run_end_summary(tr.emitter, report, {}))
    w.close()
    assert check_log(path) == []
    with open(path) as f:
        types = [json.loads(x)["type"] for x in f]
    assert types.index("pool") < types.index("blocks")
    assert tr.emitter is not None and tr.emitter.moves["offload"] == EXPECTED["trtllm-created-late.json"]["offload"]


def test_trtllm_store_into_full_gpu_pool_infers_an_eviction_and_says_so(tmp_path):
    # A partially matched leaf claimed for reuse leaves the radix tree without a `removed` event
    # (claimLeafBlock in kvCacheManager.cpp); the next store then finds the pool full.
    w = EventWriter(tmp_path / "events.jsonl", RunClock())
    report = Report(w)
    tr = TrtllmTranslator(w, report)
    tr.set_pools(2, 0, 32, 0, 0)
    for i, h in enumerate((11, 12, 13)):
        tr.feed({"event_id": i + 1, "window_size": 64, "data": {"type": "stored", "parent_hash": None,
                 "blocks": [{"type": "stored_block", "block_hash": h, "tokens": [], "cache_level": 0, "priority": 35}]}}, i)
    tr.finish(9)
    w.close()
    assert report.counts["inferred_gpu_evict"] == 1
    assert check_log(tmp_path / "events.jsonl") == []


def test_vllm_forms_are_recognised(tmp_path):
    lines, _ = translate(tmp_path, "vllm-v0.9-array-like.jsonl")
    assert lines[0]["config"]["event_forms"] == {"array_like": len(read_dump("vllm-v0.9-array-like.jsonl"))}
    assert summary(lines)["translate"]["counts"]["event_without_medium"] > 0
    lines, _ = translate(tmp_path, "vllm-offload-map.jsonl")
    assert set(lines[0]["config"]["event_forms"]) == {"map"}
    assert lines[0]["config"]["pools_from"] == "inferred (gpu, host)"
    assert summary(lines)["translate"]["counts"]["all_blocks_cleared"] == 1
    # vLLM's batch ts (wall clock) anchors the run clock
    first_ts = read_dump("vllm-offload-map.jsonl")[0]["ts"]
    assert lines[0]["clock"]["unix_ns_at_t0"] == int(round(first_ts * 1e9))


def test_vllm_keep_source_moves(tmp_path):
    lines, _ = translate(tmp_path, "vllm-offload-map.jsonl", "--gpu-blocks", "70", "--host-blocks", "150")
    moves = [ln for ln in lines if ln["type"] == "blocks" and ln["op"] in ("offload", "onboard")]
    assert moves and all(ln.get("keep_source") is True for ln in moves)
    assert lines[0]["config"]["pools_from"] == "options"


def _vllm(tmp_path, batches: list[Any], gpu: int = 4, host: int = 4) -> tuple[VllmTranslator, str]:
    path = str(tmp_path / "events.jsonl")
    w = EventWriter(path, RunClock())
    tr = VllmTranslator(w, Report(w))
    tr.set_pools(gpu, host, 16, 0, 0)
    for b in batches:
        tr.feed_batch(b)
    tr.finish(None)
    w.close()
    return tr, path


def stored(h: list[int], medium: str) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": h, "parent_block_hash": None, "token_ids": [],
            "block_size": 16, "lora_id": None, "medium": medium, "lora_name": None}


def removed(h: list[int], medium: str) -> dict[str, Any]:
    return {"type": "BlockRemoved", "block_hashes": h, "medium": medium}


def test_vllm_gpu_removal_and_cpu_store_in_one_batch_is_one_offload(tmp_path):
    # The scheduler publishes its own events before the connector's in a step's batch, so a block
    # freed on the GPU and stored on the CPU in one step reads "removed GPU, stored CPU".
    tr, path = _vllm(tmp_path, [
        {"ts": 1.0, "events": [stored([1, 2], "GPU")]},
        {"ts": 2.0, "events": [removed([1], "GPU"), stored([3], "GPU"), stored([1], "CPU")]},
    ], gpu=2)
    assert check_log(path) == []
    assert tr.emitter is not None
    assert tr.emitter.moves == {"store": 3, "offload": 1, "onboard": 0, "evict": 0, "hit": 0, "move": 0}
    with open(path) as f:
        off = [json.loads(x) for x in f if '"op":"offload"' in x]
    assert off[0]["ids"] == [0] and "keep_source" not in off[0]


def test_vllm_reference_counts_repeated_announcements(tmp_path):
    # offloading/events.py: chunks re-announce shared hashes; consumers reference-count them
    tr, path = _vllm(tmp_path, [
        {"ts": 1.0, "events": [stored([1], "GPU")]},
        {"ts": 2.0, "events": [stored([1], "CPU"), stored([1], "CPU")]},
        {"ts": 3.0, "events": [removed([1], "CPU")]},
        {"ts": 4.0, "events": [removed([1], "CPU"), removed([1], "GPU"), stored([2], "GPU")]},
    ], gpu=1)
    assert check_log(path) == []
    assert tr.emitter is not None
    assert tr.emitter.moves["offload"] == 1 and tr.emitter.moves["evict"] == 2  # host, then gpu
    assert tr.report.counts["repeated_store_announcement"] == 1


def test_vllm_cpu_store_without_gpu_copy_and_other_ranks_are_reported(tmp_path):
    tr, path = _vllm(tmp_path, [
        {"ts": 1.0, "events": [stored([7], "CPU")], "data_parallel_rank": 0},
        {"ts": 2.0, "events": [stored([8], "GPU")], "data_parallel_rank": 1},
        {"ts": 3.0, "events": [stored([9], "STORAGE"), ["Weird"]], "data_parallel_rank": 0},
        "not a batch",
    ])
    assert check_log(path) == []
    c = tr.report.counts
    assert c["host_store_without_gpu_copy"] == 1
    assert c["other_dp_rank"] == 1
    assert c["other_medium"] == 1
    assert c["unknown_event_type"] == 1
    assert c["malformed_batch"] == 1


def test_cli_summary_on_stderr_and_subcommand(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "kvscope_agent", "translate", "--engine", "tensorrt_llm",
         "--input", os.path.join(DUMPS, "trtllm-no-created-mixed.jsonl"), "--out", str(out)],
        cwd=AGENT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "unknown_event_type: 1" in proc.stderr
    assert "pool_size_inferred: 2" in proc.stderr
    assert (out / "events.jsonl").exists()


def test_cli_bad_options_and_inputs(tmp_path, capsys):
    assert translate_main(["--input", "x", "--out", str(tmp_path / "a")]) == 2
    assert "--engine" in capsys.readouterr().err
    assert translate_main(["--engine", "sglang", "--input", "x", "--out", str(tmp_path / "a")]) == 2
    assert translate_main(["--engine", "vllm", "--input", "x", "--out", str(tmp_path / "a"), "--gpu-blocks", "-3"]) == 2
    assert "--gpu-blocks" in capsys.readouterr().err
    missing = str(tmp_path / "nope.json")
    assert translate_main(["--engine", "vllm", "--input", missing, "--out", str(tmp_path / "b")]) == 1
    assert "cannot read" in capsys.readouterr().err
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not json\n{also not\n")
    assert translate_main(["--engine", "tensorrt_llm", "--input", str(garbage), "--out", str(tmp_path / "c")]) == 1
    assert "no JSON" in capsys.readouterr().err
    assert not (tmp_path / "c" / "events.jsonl").exists()
    # an existing run is never overwritten
    translate(tmp_path, "trtllm-created-late.json")
    again = translate_main(["--engine", "tensorrt_llm", "--input", os.path.join(DUMPS, "trtllm-created-late.json"),
                            "--out", str(tmp_path / "trtllm-created-late.json")])
    assert again == 1 and "exists" in capsys.readouterr().err


def test_bad_dump_lines_are_counted_and_the_rest_translated(tmp_path):
    src = read_dump("trtllm-created-late.json")
    dump = tmp_path / "partly-bad.jsonl"
    dump.write_text("\n".join(json.dumps(e) for e in src[:5]) + "\n{truncated\n" +
                    "\n".join(json.dumps(e) for e in src[5:]) + "\n")
    out = tmp_path / "out"
    assert translate_main(["--engine", "tensorrt_llm", "--input", str(dump), "--out", str(out)]) == 0
    with open(out / "events.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert summary(lines)["translate"]["counts"]["bad_dump_line"] == 1
    assert summary(lines)["blocks_offloaded"] == EXPECTED["trtllm-created-late.json"]["offload"]
    assert check_log(out / "events.jsonl") == []


def test_moves_with_an_ample_gpu_pool_are_warned_and_checked(tmp_path):
    # A faithful translation can still break "nothing is offloaded when the GPU pool holds every
    # block": the engine's requests hold blocks no event names. The translation says so, and
    # check_log reports the rule rather than hiding it.
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, RunClock())
    report = Report(w)
    tr = TrtllmTranslator(w, report)
    tr.set_pools(10, 10, 32, 0, 0)
    blocks = [{"type": "stored_block", "block_hash": h, "tokens": [], "cache_level": 0, "priority": 35} for h in (5, 6)]
    tr.feed({"event_id": 1, "data": {"type": "stored", "parent_hash": None, "blocks": blocks}}, 1)
    tr.feed({"event_id": 2, "data": {"type": "updated", "block_hash": 5,
             "cache_level": {"type": "event_diff", "new_value": 1, "old_value": 0}, "priority": None}}, 2)
    tr.finish(3)
    w.close()
    assert report.counts["moves_with_ample_pool"] == 1
    assert [v.rule for v in check_log(path)] == ["ample_pool_moved"]


# ---- tiers below the host ------------------------------------------------------------------------


def trt_event(eid: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": eid, "window_size": 64, "data": data}


def trt_stored(h: int) -> dict[str, Any]:
    return {"type": "stored", "parent_hash": None,
            "blocks": [{"type": "stored_block", "block_hash": h, "tokens": [], "cache_level": 0, "priority": 35}]}


def trt_level(h: int, old: int, new: int) -> dict[str, Any]:
    return {"type": "updated", "block_hash": h, "priority": None,
            "cache_level": {"type": "event_diff", "new_value": new, "old_value": old}}


def test_trtllm_disk_level_is_a_disk_pool_sized_by_created(tmp_path):
    """KV cache manager v2 with host and disk tiers: `created` has three levels, and a level 2 is
    the disk pool (tier 2)."""
    lines, path = translate(tmp_path, "trtllm-disk-tier.json")
    created = read_dump("trtllm-disk-tier.json")[0]["data"]["num_blocks_per_cache_level"]
    pools = [(ln["pool"], ln["capacity_blocks"], ln["tier"]) for ln in lines if ln["type"] == "pool"]
    assert pools == [("gpu", created[0], 0), ("host", created[1], 1), ("disk", created[2], 2)]
    assert [ln["medium"] for ln in lines if ln["type"] == "pool" and ln["pool"] == "disk"] == ["file"]
    assert lines[0]["config"]["cache_levels"] == ["gpu", "host", "disk"]
    assert summary(lines)["translate"]["moved"]["disk->gpu"] == EXPECTED["trtllm-disk-tier.json"]["disk_to_gpu"]


def test_trtllm_cache_levels_name_a_disk_without_a_host_tier(tmp_path):
    """An engine whose host tier was dropped has two levels, GPU and disk: --cache-levels gpu,disk
    makes level 1 the disk pool (no host pool), a 0 -> 1 update a move gpu -> disk."""
    dump = tmp_path / "gpu-disk.json"
    dump.write_text(json.dumps([
        trt_event(0, {"type": "created", "num_blocks_per_cache_level": [2, 8]}),
        trt_event(1, trt_stored(11)), trt_event(2, trt_stored(12)),
        trt_event(3, trt_level(11, 0, 1)), trt_event(4, trt_stored(13)),
        trt_event(5, trt_level(11, 1, 0)),  # back: the LRU GPU block must give way first
        trt_event(6, {"type": "removed", "block_hashes": [11]}),
    ]))
    out = tmp_path / "out"
    rc = translate_main(["--engine", "tensorrt_llm", "--input", str(dump), "--out", str(out), "--cache-levels", "gpu,disk"])
    assert rc == 0
    path = out / "events.jsonl"
    assert check_log(path) == []
    lines = [json.loads(x) for x in open(path)]
    assert [(ln["pool"], ln["capacity_blocks"]) for ln in lines if ln["type"] == "pool"] == [("gpu", 2), ("host", 0), ("disk", 8)]
    moves = [(ln["from"], ln["to"], ln["ids"]) for ln in lines if ln["type"] == "blocks" and ln["op"] == "move"]
    assert moves == [("gpu", "disk", [0]), ("disk", "gpu", [0])]
    assert summary(lines)["translate"]["counts"]["inferred_gpu_evict"] == 1
    evicts = [(ln["pool"], ln["ids"]) for ln in lines if ln["type"] == "blocks" and ln["op"] == "evict"]
    assert evicts == [("gpu", [1]), ("gpu", [0])]
    # the same dump read with the default levels (gpu, host, disk) would call level 1 the host
    assert translate_main(["--engine", "tensorrt_llm", "--input", str(dump), "--out", str(tmp_path / "x"),
                           "--cache-levels", "host,gpu"]) == 2


def test_trtllm_live_feed_with_three_levels_writes_a_disk_pool(tmp_path):
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, RunClock())
    emit_run_start(w, "tensorrt_llm", "imported", {}, {"hostname": "test", "gpus": []}, 0)
    tr = TrtllmTranslator(w, Report(w))
    feed = [trt_event(0, {"type": "created", "num_blocks_per_cache_level": [1, 1, 4]}),
            trt_event(1, trt_stored(11)), trt_event(2, trt_level(11, 0, 1)), trt_event(3, trt_stored(12)),
            trt_event(4, trt_level(11, 1, 2)), trt_event(5, trt_level(11, 2, 1)),
            trt_event(6, {"type": "removed", "block_hashes": [11]})]
    for i, ev in enumerate(feed):
        tr.feed(ev, i)
        tr.start_pools_from_created(32, 4096, i)
    tr.finish(9)
    w.close()
    assert check_log(path) == []
    lines = [json.loads(x) for x in open(path)]
    assert [(ln["pool"], ln["capacity_blocks"]) for ln in lines if ln["type"] == "pool"] == [("gpu", 1), ("host", 1), ("disk", 4)]
    ops = [(ln["op"], ln.get("from"), ln.get("to"), ln.get("pool")) for ln in lines if ln["type"] == "blocks"]
    assert ops == [("store", None, None, None), ("offload", None, None, None), ("store", None, None, None),
                   ("move", "host", "disk", None), ("move", "disk", "host", None), ("evict", None, None, "host")]


def vllm_stored(h: list[int], medium: str, **tier: Any) -> dict[str, Any]:
    return {**stored(h, medium), **tier}


def test_vllm_storage_demotion_promotion_and_remote_locality(tmp_path):
    """The tiering offload's STORAGE copies are the disk pool, a REMOTE tier's the remote pool: a
    STORAGE store while the CPU copy stays is a move host -> disk (the CPU removal that follows an
    eviction there), a CPU store of a block only on disk a promotion disk -> host, and the GPU
    loads it from the CPU."""
    path = str(tmp_path / "events.jsonl")
    w = EventWriter(path, RunClock())
    emit_run_start(w, "vllm", "imported", {}, {"hostname": "test", "gpus": []}, 0)
    tr = VllmTranslator(w, Report(w))
    tr.set_pools(1, 4, 16, 0, 0, lower={"disk": 8, "remote": 8})
    fs = {"locality": "LOCAL", "ownership": "fs:0"}
    for b in [
        {"ts": 1.0, "events": [stored([1], "GPU")]},
        {"ts": 2.0, "events": [vllm_stored([1], "CPU")]},  # offload, GPU copy stays
        {"ts": 3.0, "events": [vllm_stored([1], "STORAGE", **fs), removed([1], "CPU")]},  # demotion
        {"ts": 4.0, "events": [removed([1], "GPU"), stored([2], "GPU")]},
        {"ts": 5.0, "events": [vllm_stored([1], "CPU")]},  # promotion
        {"ts": 6.0, "events": [removed([2], "GPU"), stored([1], "GPU")]},  # load
        {"ts": 7.0, "events": [vllm_stored([1], "STORAGE", locality="REMOTE", ownership="p2p")]},
        {"ts": 8.0, "events": [{**removed([1], "STORAGE"), **fs}, {**removed([1], "STORAGE"), "locality": "REMOTE"}]},
    ]:
        tr.feed_batch(b)
    tr.finish(None)
    w.close()
    assert check_log(path) == []
    lines = [json.loads(x) for x in open(path)]
    ops = [(ln["op"], ln.get("from"), ln.get("to"), ln.get("pool"), ln.get("keep_source", False))
           for ln in lines if ln["type"] == "blocks"]
    assert ops == [
        ("store", None, None, None, False),
        ("offload", None, None, None, True),
        ("move", "host", "disk", None, True),
        ("evict", None, None, "host", False),
        ("evict", None, None, "gpu", False),
        ("store", None, None, None, False),
        ("move", "disk", "host", None, True),
        ("evict", None, None, "gpu", False),
        ("onboard", None, None, None, True),
        ("move", "host", "remote", None, True),
        ("evict", None, None, "disk", False),
        ("evict", None, None, "remote", False),
    ]
    pools = [(ln["pool"], ln["tier"], ln.get("medium")) for ln in lines if ln["type"] == "pool"]
    assert pools == [("gpu", 0, "device"), ("host", 1, None), ("disk", 2, "file"), ("remote", 3, "remote")]


def test_vllm_storage_medium_without_a_disk_pool_is_reported(tmp_path):
    # a live run whose pools were set up without a tier below the host: STORAGE events are counted, not shown
    tr, path = _vllm(tmp_path, [{"ts": 1.0, "events": [stored([1], "GPU"), stored([1], "STORAGE")]}])
    assert check_log(path) == []
    assert tr.report.counts["other_medium"] == 1
