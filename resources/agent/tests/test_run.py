"""Whole runs of the agent on the CPU (tiny preset, fp32, short contexts): event logs against
docs/protocol.md, offload/onboard/evict behaviour by pool size, greedy tokens with and without reuse,
bad options, SIGTERM and out-of-memory endings, and a sweep in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import AGENT_ROOT
from kvscope_agent.ledger import check_log
from kvscope_agent.lifecycle import CancelState
from kvscope_agent.memory_plan import build
from kvscope_agent.options import parse_options, resolve_device
from kvscope_agent.run_loop import run_one

# 3 users; a user's last request (round 3: 200 + 3 × 24 prompt tokens + 8 output) needs 18
# blocks of 16 tokens: a 40-block pool holds 2 users, a 54-block pool all 3.
SMALL = ["--device", "cpu", "--model", "tiny", "--users", "3", "--rounds", "3", "--context-tokens", "200",
         "--new-tokens", "16", "--output-tokens", "8", "--block-tokens", "16", "--seed", "7"]
BLOCK_BYTES = 8192  # tiny: 16 tokens × 2 layers × 2 × 2 kv heads × 16 × 4 bytes
SHORT_POOL = str(40 * BLOCK_BYTES)
AMPLE_POOL = str(3 * 18 * BLOCK_BYTES)


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_inproc(tmp_path, name, extra, base=SMALL):
    """A run through the same code path as the CLI, keeping the engine to read its tokens."""
    out = str(tmp_path / name)
    opts, _, err = parse_options(base + extra + ["--out", out], sweep=False)
    assert err is None, err
    resolve_device(opts)
    code, built = run_one(opts, None, opts.users[0], opts.host_kv_bytes[0], out, CancelState(),
                          {"on": False, "source": "cupti", "reason": "device cpu"}, build)
    log = os.path.join(out, "events.jsonl")
    return code, built, log


def cli(args, env_extra=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=AGENT_ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "kvscope_agent"] + args, env=env, capture_output=True,
                          text=True, timeout=timeout)


def summary(log):
    end = events(log)[-1]
    assert end["type"] == "run.end"
    return end


def test_short_pool_offloads_and_reuse_keeps_greedy_tokens(tmp_path):
    code, built, log = run_inproc(tmp_path, "short", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    assert code == 0
    assert check_log(log) == []
    end = summary(log)
    s = end["summary"]
    assert end["status"] == "ok"
    assert s["blocks_offloaded"] > 0 and s["blocks_onboarded"] > 0 and s["blocks_evicted"] == 0
    assert s["bytes_h2d"] == s["blocks_onboarded"] * BLOCK_BYTES
    assert s["bytes_d2h"] == s["blocks_offloaded"] * BLOCK_BYTES
    evs = events(log)
    done = [e for e in evs if e["type"] == "req" and e["phase"] == "done" and e["round"] >= 1]
    assert any(e["reused_host_tokens"] > 0 for e in done)
    assert [e["type"] for e in evs if e["type"] == "pool"] == ["pool", "pool"]
    rounds = [e for e in evs if e["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3] and all(len(r["ttft_ns"]) == 3 for r in rounds)
    # E2E over rounds 1..R: first queued of round 1 to last done of round R (docs/protocol.md).
    q1 = min(e["t"] for e in evs if e["type"] == "req" and e["phase"] == "queued" and e["round"] == 1)
    dR = max(e["t"] for e in evs if e["type"] == "req" and e["phase"] == "done" and e["round"] == 3)
    assert s["e2e_ns"] == dR - q1
    with_reuse = built.engine.last_outputs

    # Every round recomputed from scratch (no prefix reuse, nothing cached): same greedy tokens.
    code, built2, log2 = run_inproc(tmp_path, "scratch", ["--gpu-kv-bytes", AMPLE_POOL, "--host-kv-bytes", "0",
                                                          "--no-block-reuse"])
    assert code == 0 and check_log(log2) == []
    assert summary(log2)["summary"]["blocks_offloaded"] == 0
    scratch_done = [e for e in events(log2) if e["type"] == "req" and e["phase"] == "done"]
    assert all(e["computed_tokens"] == e["prompt_tokens"] for e in scratch_done)
    assert built2.engine.last_outputs == with_reuse
    assert len(with_reuse) == 3 * 4 and all(len(v) == 8 for v in with_reuse.values())


def test_one_copying_admission_per_step(tmp_path):
    """A request whose admission copies blocks (onboard, or lazy offload to make room) is the
    only one admitted in its step, so its first token waits for its own copies only: the next
    copying request is scheduled after that first token. Users 4 on a 2-user pool: every timed
    round admits two requests that onboard."""
    code, _, log = run_inproc(tmp_path, "one-per-step", ["--users", "4", "--gpu-kv-bytes", SHORT_POOL,
                                                         "--host-kv-bytes", "1e6"])
    assert code == 0 and check_log(log) == []
    evs = events(log)
    copying = set()  # (user, round) of requests whose admission moved blocks
    for e in evs:
        if e["type"] == "blocks" and e["op"] in ("onboard", "offload"):
            copying.add((e["user"], e["round"]))
    t = {(e["user"], e["round"], e["phase"]): e["t"] for e in evs if e["type"] == "req"}
    checked = 0
    for rnd in range(1, 4):
        onboarding = sorted((t[(u, r, "scheduled")], u) for (u, r) in copying
                            if r == rnd and (u, r, "scheduled") in t and any(
                                e["type"] == "blocks" and e["op"] == "onboard" and e["user"] == u and e["round"] == r
                                for e in evs))
        for (_, a), (sched_b, b) in zip(onboarding, onboarding[1:]):
            assert t[(a, rnd, "first_token")] <= sched_b, (rnd, a, b)
            checked += 1
    assert checked >= 3, "the short pool should make several requests of a round onboard"


def test_decoders_step_before_an_admissions_copies(tmp_path, monkeypatch):
    """When an admission copies blocks while other requests decode, their decode token runs in a
    step of its own launched before the copies, not mixed into the admitted request's prefill
    (on the H100 the mixed step's decode attention held the CPU until the copies ended). Same
    greedy tokens either way; KVSCOPE_DECODE_BEFORE_COPIES=0 (the old mixing) is the control."""
    seen = {}
    for flag in ("1", "0"):
        path = tmp_path / f"steps-{flag}.jsonl"
        monkeypatch.setenv("KVSCOPE_STEP_TRACE", str(path))
        monkeypatch.setenv("KVSCOPE_DECODE_BEFORE_COPIES", flag)
        code, built, log = run_inproc(tmp_path, f"mix{flag}", ["--users", "4", "--gpu-kv-bytes", SHORT_POOL,
                                                               "--host-kv-bytes", "1e6"])
        assert code == 0 and check_log(log) == []
        built.engine._step_trace.flush()
        steps = [json.loads(x) for x in path.read_text().splitlines()][1:]
        onboarded = {(e["user"], e["round"]) for e in events(log) if e["type"] == "blocks" and e["op"] == "onboard"}
        admitting = [(i, s) for i, s in enumerate(steps) if s["admitted"]
                     and any(p[3] > 1 and (p[0], p[1]) in onboarded for p in s["pieces"])]
        mixed = [s for _, s in admitting if any(p[3] == 1 for p in s["pieces"])]
        decode_only = lambda st: not st["admitted"] and all(p[3] == 1 for p in st["pieces"])  # noqa: E731
        before = [i for i, _ in admitting if steps[i - 1].get("decode") == "before_copies"
                  and decode_only(steps[i - 1])]
        # A decode step that would hold the host (here: a token that ends a request or fills a
        # block, so a sync) runs right after the prefill step instead.
        after = [i for i, _ in admitting if i + 1 < len(steps) and steps[i + 1].get("decode") == "after_prefill"
                 and decode_only(steps[i + 1])]
        assert len(before) + len(after) == sum(1 for st in steps if "decode" in st)
        seen[flag] = (len(admitting), len(mixed), len(before), len(after), built.engine.last_outputs)
    n_adm, n_mixed, n_before, n_after, tokens = seen["1"]
    assert n_adm >= 6 and n_mixed == 0 and n_before >= 3 and n_after >= 1
    old_adm, old_mixed, old_before, old_after, old_tokens = seen["0"]
    assert old_mixed >= 3 and old_before == old_after == 0  # mixed: the check can fail
    assert tokens == old_tokens


def test_a_conversations_blocks_move_in_long_runs(tmp_path):
    """Slots are handed out in ascending order and victims offloaded in slot order, so the blocks
    of one conversation stay in ascending runs on the GPU and on the host and an offload or an
    onboard is a few long copies (xfer `runs`), not one copy per block. Before (slots in LRU
    order) this workload averaged 1.30 blocks a copy; the H100 runs of 2026-11-28 issued ~500
    copies for a 512-block admission."""
    code, _, log = run_inproc(tmp_path, "runs", ["--users", "4", "--gpu-kv-bytes", SHORT_POOL,
                                                 "--host-kv-bytes", "1e6"])
    assert code == 0 and check_log(log) == []
    xfers = [e for e in events(log) if e["type"] == "xfer" and e["source"] == "engine"]
    blocks = sum(e["blocks"] for e in xfers)
    runs = sum(e["runs"] for e in xfers)
    assert blocks > 200, "the short pool should move many blocks"
    assert blocks / runs >= 2.5, f"{blocks} blocks in {runs} copies"


def test_slot_order_lru_is_the_old_order_for_an_a_b(tmp_path, monkeypatch):
    """KVSCOPE_SLOT_ORDER=lru hands out slots as before (for a same-card A/B on a GPU): the same
    workload then moves blocks in short runs again; a misspelt value is an error, not a default."""
    monkeypatch.setenv("KVSCOPE_SLOT_ORDER", "lru")
    code, _, log = run_inproc(tmp_path, "lru", ["--users", "4", "--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    assert code == 0 and check_log(log) == []
    xfers = [e for e in events(log) if e["type"] == "xfer" and e["source"] == "engine"]
    assert sum(e["blocks"] for e in xfers) / sum(e["runs"] for e in xfers) < 2.0
    monkeypatch.setenv("KVSCOPE_SLOT_ORDER", "sorted")
    code, _, log = run_inproc(tmp_path, "bad", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    end = summary(log)
    assert code != 0 and end["status"] == "error" and "KVSCOPE_SLOT_ORDER" in end["error"]["message"]


def test_step_trace_writes_a_line_per_step(tmp_path, monkeypatch):
    """KVSCOPE_STEP_TRACE (bench diagnostics): a line naming the run, then one per engine step
    with the host time of admission, copy issue, launch and step, and the pieces it ran."""
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("KVSCOPE_STEP_TRACE", str(path))
    code, built, log = run_inproc(tmp_path, "traced", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    assert code == 0
    built.engine._step_trace.flush()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"run": log}
    steps = lines[1:]
    rounds = [e for e in events(log) if e["type"] == "round"]
    assert len(steps) == sum(r["steps"] for r in rounds)
    for s in steps:
        assert s["step_ns"] >= s["launch_ns"] > 0 and s["admit_ns"] >= 0 and s["alloc"] == {}  # no CUDA counters
        assert all(len(p) == 4 for p in s["pieces"])
        # Eager steps (all of them on the CPU): host ms at each layer's start, rising, within launch.
        lm = s["layer_ms"]
        assert len(lm) == 2 and lm == sorted(lm) and lm[-1] <= s["launch_ns"] / 1e6
        # ... and after each op of layer 0, in order, ending before layer 1 starts.
        names = [n for n, _ in s["layer0_ms"]]
        # (one K/V write for the step's tokens with the projection; on the CPU every piece gathers)
        assert names == ["qkv_write"] + [f"{op}{i}" for i in range(len(s["pieces"])) for op in ("read", "attn")] + ["out"]
        ms = [t for _, t in s["layer0_ms"]]
        assert ms == sorted(ms) and ms[-1] <= lm[1]
    assert 4 <= sum(1 for s in steps if s["admitted"]) <= 3 * 4  # a step admits one or more
    prefill = [p for s in steps for p in s["pieces"] if p[3] > 1]
    assert {(p[0], p[1]) for p in prefill} == {(u, r) for u in range(3) for r in range(4)}


def test_write_through_copies_blocks_once_and_keeps_greedy_tokens(tmp_path):
    code, lazy, _ = run_inproc(tmp_path, "lazy", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    code, wt, log = run_inproc(tmp_path, "wt", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6",
                                                  "--offload-policy", "write-through"])
    assert code == 0 and check_log(log) == []
    evs = events(log)
    assert evs[0]["config"]["offload_policy"] == "write-through"
    moves = [e for e in evs if e["type"] == "blocks" and e["op"] in ("offload", "onboard", "evict")]
    # Once the pool is under pressure, blocks are written through as computed (keep_source);
    # blocks cached before that are offloaded lazily on eviction.
    assert any(e["op"] == "offload" and e.get("keep_source") for e in moves)
    assert all(e.get("keep_source") for e in moves if e["op"] == "onboard")
    # The host pool (122 blocks) holds every block (54): a block crosses to the host at most
    # once, and evicting a block that is already on the host costs no copy.
    offloaded = [i for e in moves if e["op"] == "offload" for i in e["ids"]]
    assert len(offloaded) == len(set(offloaded))
    assert any(e["op"] == "evict" and e["pool"] == "gpu" for e in moves)
    lazy_log = events(tmp_path / "lazy" / "events.jsonl")
    lazy_off = sum(len(e["ids"]) for e in lazy_log if e["type"] == "blocks" and e["op"] == "offload")
    assert len(offloaded) < lazy_off
    assert summary(log)["summary"]["blocks_onboarded"] > 0
    assert wt.engine.last_outputs == lazy.engine.last_outputs


def test_lazy_keep_offloads_only_what_the_host_lacks(tmp_path):
    """lazy-keep: blocks go to the host only when evicted (as lazy), but an onboarded block's host
    copy stays, so evicting it again unchanged costs no copy: each block crosses to the host at
    most once while the host pool holds it (122 blocks here, more than the 54 the run makes),
    and every later eviction of a block with a host copy is a plain GPU evict."""
    users = ["--users", "4", "--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"]
    _, lazy, lazy_log = run_inproc(tmp_path, "lazy", users)
    code, keep, log = run_inproc(tmp_path, "keep", users + ["--offload-policy", "lazy-keep"])
    assert code == 0 and check_log(log) == []
    evs = events(log)
    assert evs[0]["config"]["offload_policy"] == "lazy-keep"
    moves = [e for e in evs if e["type"] == "blocks" and e["op"] in ("offload", "onboard", "evict")]
    offloads = [e for e in moves if e["op"] == "offload"]
    assert offloads and not any(e.get("keep_source") for e in offloads)  # copied at eviction only
    onboards = [e for e in moves if e["op"] == "onboard"]
    assert onboards and all(e.get("keep_source") for e in onboards)
    offloaded = [i for e in offloads for i in e["ids"]]
    assert len(offloaded) == len(set(offloaded))
    lazy_offloaded = [i for e in events(lazy_log) if e["type"] == "blocks" and e["op"] == "offload" for i in e["ids"]]
    assert len(lazy_offloaded) > len(set(lazy_offloaded))  # lazy copies the same blocks out again
    assert len(offloaded) < len(lazy_offloaded)
    s = summary(log)["summary"]
    assert s["bytes_d2h"] == s["blocks_offloaded"] * BLOCK_BYTES and s["blocks_onboarded"] > 0
    assert keep.engine.last_outputs == lazy.engine.last_outputs


@pytest.mark.parametrize("policy", ["lazy", "lazy-keep", "write-through"])
def test_ample_pool_offloads_nothing(tmp_path, policy):
    code, _, log = run_inproc(tmp_path, "ample", ["--gpu-kv-bytes", AMPLE_POOL, "--host-kv-bytes", "1e6",
                                                  "--offload-policy", policy])
    assert code == 0 and check_log(log) == []
    s = summary(log)["summary"]
    assert s["blocks_offloaded"] == s["blocks_onboarded"] == s["blocks_evicted"] == 0
    assert s["blocks_hit"] > 0


def test_no_host_pool_evicts_and_recomputes(tmp_path):
    code, built, log = run_inproc(tmp_path, "recompute", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "0"])
    assert code == 0 and check_log(log) == []
    evs = events(log)
    s = evs[-1]["summary"]
    assert s["blocks_offloaded"] == 0 and s["blocks_onboarded"] == 0 and s["blocks_evicted"] > 0
    assert not [e for e in evs if e["type"] == "blocks" and e["op"] in ("offload", "onboard")]
    host = [e for e in evs if e["type"] == "pool" and e["pool"] == "host"][0]
    assert host["capacity_blocks"] == 0
    # Some request of a timed round recomputed more than its new tokens (its prefix was dropped).
    done = [e for e in evs if e["type"] == "req" and e["phase"] == "done" and e["round"] >= 1]
    assert max(e["computed_tokens"] for e in done) > 16 + 8 + 16
    scratch = built.engine.last_outputs
    # Recompute gives the same greedy tokens as reuse from the host pool.
    _, built_h, _ = run_inproc(tmp_path, "host", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    assert built_h.engine.last_outputs == scratch


@pytest.mark.parametrize("policy", ["lazy", "lazy-keep", "write-through"])
def test_small_host_pool_evicts_lru_host_blocks_and_stays_correct(tmp_path, policy):
    # 3 host blocks: the host pool overflows within one batch of victims (the case that once
    # announced an eviction before the offload it undid).
    code, built, log = run_inproc(tmp_path, "tinyhost", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes",
                                                         str(3 * BLOCK_BYTES), "--offload-policy", policy])
    assert code == 0 and check_log(log) == []
    evs = events(log)
    host_evicts = [e for e in evs if e["type"] == "blocks" and e["op"] == "evict" and e["pool"] == "host"]
    assert host_evicts
    _, ref, _ = run_inproc(tmp_path, "ref", ["--gpu-kv-bytes", AMPLE_POOL, "--host-kv-bytes", "0"])
    assert built.engine.last_outputs == ref.engine.last_outputs


@pytest.mark.parametrize(
    "args,option",
    [
        (["--users", "-1"], "--users"),
        (["--context-tokens", "70000"], "--context-tokens"),  # tiny's limit is 65536 positions
        (["--gpu-kv-bytes", "10000"], "--gpu-kv-bytes"),  # not one request's blocks
        (["--host-kv-bytes", "lots"], "--host-kv-bytes"),
        (["--model", "no-such-model"], "--model"),
        (["--offload-policy", "sometimes"], "--offload-policy"),
        (["--decode-graphs", "maybe"], "--decode-graphs"),
        (["--copy-overlap", "yes"], "--copy-overlap"),
    ],
)
def test_bad_option_exits_2_naming_it_and_logs_run_end(tmp_path, args, option):
    out = tmp_path / "bad"
    base = [a for a in SMALL]
    r = cli(["run"] + base + args + ["--out", str(out)])
    assert r.returncode == 2, r.stderr
    assert option in r.stderr
    evs = events(out / "events.jsonl")
    end = evs[-1]
    assert end["type"] == "run.end" and end["status"] == "error"
    assert end["error"]["code"] == "bad_option" and option in end["error"]["message"]
    assert check_log(out / "events.jsonl") == []


def test_run_with_a_real_engine_goes_to_the_engine_runner(tmp_path):
    # vLLM is not installed here: the engines runner (engines/runner.py) ends the log with
    # engine_unavailable; the built-in engine's run would have refused --engine vllm as a bad option.
    out = tmp_path / "vllm"
    r = cli(["run", "--engine=vllm", "--model", "some/model", "--users", "1", "--out", str(out)])
    assert r.returncode == 1, r.stderr
    end = events(out / "events.jsonl")[-1]
    assert end["status"] == "error" and end["error"]["code"] == "engine_unavailable"
    r = cli(["run", "--engine", "nonsense", "--out", str(tmp_path / "bad")])
    assert r.returncode == 2 and "--engine" in r.stderr


def test_bad_option_without_out_dir_still_exits_2():
    r = cli(["run", "--users", "2"])
    assert r.returncode == 2 and "--out" in r.stderr


def _python_without_torch():
    import shutil

    for cand in ("/root/.pyenv/shims/python3", shutil.which("python3") or "", "/usr/local/bin/python3"):
        if cand and os.path.exists(cand) and cand != sys.executable:
            r = subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 9); import torch"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "No module named 'torch'" in r.stderr:
                return cand
    return None


def test_host_without_torch_gets_a_clear_error_in_the_log(tmp_path):
    py = _python_without_torch()
    if py is None:
        pytest.skip("no Python >= 3.9 without torch on this machine (the real part this test needs)")
    out = tmp_path / "notorch"
    r = subprocess.run([py, "-m", "kvscope_agent", "run", "--out", str(out)], env=dict(os.environ, PYTHONPATH=AGENT_ROOT),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "PyTorch is not importable" in r.stderr
    end = events(out / "events.jsonl")[-1]
    assert end["status"] == "error" and end["error"]["code"] == "no_torch"
    # The error names the interpreters here that do import torch (this test's own is one).
    hint = r.stderr.split("interpreters on this host that import it: ", 1)
    assert len(hint) == 2, r.stderr
    listed = hint[1].split(";")[0].split(", ")
    assert listed and all(subprocess.run([p, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
                          for p in listed), listed


def test_simulated_gpu_oom_ends_with_gpu_oom_and_sizes(tmp_path):
    # KVSCOPE_SIMULATE_GPU_OOM=1 makes the GPU pool allocation raise what torch raises when
    # cudaMalloc fails (there is no GPU here to exhaust): it tests the handling, not the GPU.
    out = tmp_path / "oom"
    r = cli(["run"] + SMALL + ["--gpu-kv-bytes", SHORT_POOL, "--out", str(out)], {"KVSCOPE_SIMULATE_GPU_OOM": "1"})
    assert r.returncode == 1, r.stderr
    end = events(out / "events.jsonl")[-1]
    assert end["status"] == "error" and end["error"]["code"] == "gpu_oom"
    msg = end["error"]["message"]
    assert "simulated" in msg and str(40 * BLOCK_BYTES) in msg and "weights" in msg
    assert check_log(out / "events.jsonl") == []


def test_sigterm_cancels_with_a_complete_flushed_log(tmp_path):
    out = tmp_path / "cancel"
    env = dict(os.environ, PYTHONPATH=AGENT_ROOT)
    args = [a for a in SMALL]
    args[args.index("--rounds") + 1] = "1000"  # far more than it will run (200 + 1000 × 24 < 65536)
    proc = subprocess.Popen([sys.executable, "-m", "kvscope_agent", "run"] + args + ["--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "events.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and b'"round":2,' in log.read_bytes():
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended early: {proc.communicate()[1]}")
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached round 2")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    evs = events(log)
    assert evs[-1]["type"] == "run.end" and evs[-1]["status"] == "cancelled"
    assert [e["seq"] for e in evs] == list(range(len(evs)))
    assert check_log(log) == []
    phases = [(e["name"], e["state"]) for e in evs if e["type"] == "phase"]
    assert ("rounds", "end") in phases and phases[-1] == ("teardown", "end")


def test_sweep_runs_each_user_count_into_its_own_log(tmp_path):
    out = tmp_path / "sweep"
    i = SMALL.index("--users")
    args = SMALL[:i] + SMALL[i + 2 :]
    r = cli(["sweep"] + args + ["--users", "1,3", "--host-kv-bytes", "1e6,0", "--gpu-kv-bytes", SHORT_POOL,
                                "--out", str(out)])
    assert r.returncode == 0, r.stderr
    for host in ("host-1e6", "host-0"):
        for users in (1, 3):
            log = out / host / f"users-{users}" / "events.jsonl"
            evs = events(log)
            assert evs[0]["type"] == "run.start" and evs[0]["config"]["users"] == users
            assert evs[-1]["status"] == "ok"
            assert check_log(log) == []
    # The engine's copy records are timed on each run's own clock, also in runs that reuse the
    # pools: a copy ends before the line reporting it and after the run started.
    later = events(out / "host-1e6" / "users-3" / "events.jsonl")
    copies = [e for e in later if e["type"] == "xfer" and e["source"] == "engine"]
    assert copies, "the short pool offloads in this run"
    assert all(0 <= e["start"] <= e["end"] <= e["t"] for e in copies), [
        (e["start"], e["end"], e["t"]) for e in copies if not 0 <= e["start"] <= e["end"] <= e["t"]][:3]
    reused = events(out / "host-0" / "users-3" / "events.jsonl")
    assert any(e["type"] == "log" and "reused" in e["msg"] for e in reused)
    assert reused[-1]["summary"]["blocks_evicted"] > 0 and reused[-1]["summary"]["blocks_offloaded"] == 0


def test_tracing_that_cannot_start_is_a_warning_not_a_failure():
    from kvscope_agent.tracing import tracing_off_warning

    missing = {"on": False, "source": "cupti", "reason": "no C compiler (cc, gcc) on PATH: install gcc"}
    msg = tracing_off_warning(True, missing)
    assert msg is not None and "no C compiler" in msg and "install gcc" in msg
    # Off on purpose, on the CPU, or on: nothing to warn about.
    assert tracing_off_warning(False, missing) is None
    assert tracing_off_warning(True, {"on": False, "reason": "--trace off"}) is None
    assert tracing_off_warning(True, {"on": False, "reason": "device cpu"}) is None
    assert tracing_off_warning(True, {"on": True, "reason": "built"}) is None


def test_round_lines_carry_allocator_counters_only_on_cuda(monkeypatch):
    # The offload sweep's write-through stall may be an allocation that synchronises: round lines carry
    # what the caching allocators did in the round, as differences, when there is a GPU.
    import types

    import torch

    from kvscope_agent.engine.alloc_stats import alloc_counters, alloc_delta

    assert alloc_counters(types.SimpleNamespace(cuda=False, device=torch.device("cpu"))) == {}
    stats = {"num_device_alloc": 10, "num_device_free": 2, "num_sync_all_streams": 0, "num_alloc_retries": 0,
             "allocated_bytes.all.current": 5}
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device=None: dict(stats), raising=False)
    monkeypatch.setattr(torch.cuda, "host_memory_stats", lambda: {"num_host_alloc": 7}, raising=False)
    gpu = types.SimpleNamespace(cuda=True, device="cuda:0")
    before = alloc_counters(gpu)
    assert before == {"num_device_alloc": 10, "num_device_free": 2, "num_sync_all_streams": 0,
                      "num_alloc_retries": 0, "num_host_alloc": 7}
    stats["num_device_alloc"] = 13
    stats["num_sync_all_streams"] = 1
    assert alloc_delta(before, alloc_counters(gpu)) == {"device_alloc": 3, "device_free": 0, "sync_all_streams": 1,
                                                        "alloc_retries": 0, "host_alloc": 0}
    # A torch without a counter: left out, not guessed.
    del stats["num_alloc_retries"]
    assert "num_alloc_retries" not in alloc_counters(gpu)


def test_trace_capability_says_how_cuda_graphs_are_traced(monkeypatch):
    # run.start reports what kvscope_cupti.c will do with KVSCOPE_TRACE_GRAPH_LEVEL: unset or 1 ->
    # each graph launch one record ("launch", the default since the H100 overhead runs), 0 -> every
    # node ("nodes"); a value the library rejects (it keeps its default) reads as the default.
    from kvscope_agent.tracing import trace_graph_level

    for raw, want in ((None, "launch"), ("", "launch"), ("1", "launch"), ("0", "nodes"), (" 0", "nodes"),
                      ("00", "nodes"), ("2", "launch"), ("yes", "launch")):
        if raw is None:
            monkeypatch.delenv("KVSCOPE_TRACE_GRAPH_LEVEL", raising=False)
        else:
            monkeypatch.setenv("KVSCOPE_TRACE_GRAPH_LEVEL", raw)
        assert trace_graph_level() == want, (raw, trace_graph_level())


def test_telemetry_capability_names_its_sources_or_why_it_is_off(monkeypatch):
    from kvscope_agent import telemetry
    from kvscope_agent.tracing import telemetry_capability

    assert telemetry_capability([], 100)["reason"] == "device cpu"
    monkeypatch.setattr(telemetry, "available_sources", lambda ms: {"on": ms > 0, "source": "nvml", "sample_ms": ms,
                                                                    "pcie_source": "nvml", "reason": ""})
    cap = telemetry_capability([0], 100)
    assert cap["on"] is True and cap["source"] == "nvml" and cap["pcie_source"] == "nvml"


def test_no_trace_is_trace_off():
    opts, _, err = parse_options(["--model", "tiny", "--device", "cpu", "--no-trace", "--out", "/tmp/x-no-trace"], sweep=False)
    assert err is None and opts is not None and opts.trace is False
    opts, _, err = parse_options(["--model", "tiny", "--device", "cpu", "--out", "/tmp/x-trace"], sweep=False)
    assert err is None and opts is not None and opts.trace is True


def test_sync_debug_records_sync_warnings_and_shows_the_others():
    """KVSCOPE_SYNC_DEBUG's warning hook (on CUDA only, so called directly here): a warning about
    a synchronising call goes into the current step's record, naming the engine frames above it;
    any other warning reaches the previous showwarning untouched."""
    import types

    from kvscope_agent.engine.scheduler import Engine

    shown = []
    fake = types.SimpleNamespace(_step_rec={}, _show_warning=lambda *a: shown.append(str(a[0])))
    # A caller whose frame is in an engine file (the hook keeps only kvscope_agent frames).
    code = compile("def flush(hook, w):\n    hook(w, UserWarning, 'x.py', 1)\n", "/x/kvscope_agent/engine/fake.py", "exec")
    ns: dict = {}
    exec(code, ns)
    ns["flush"](lambda *a: Engine._note_sync(fake, *a), UserWarning("called a synchronizing CUDA operation"))
    Engine._note_sync(fake, UserWarning("something else"), UserWarning, __file__, 2)
    assert fake._step_rec == {"syncs": ["fake.py:2:flush"]} and shown == ["something else"]


def test_a_sweeps_later_run_reads_past_the_trace_records_earlier_runs_left(tmp_path):
    """A sweep shares one trace folder across its runs (CPU runs here, with the C writer's
    self-test records standing in for CUPTI's): the first run logs what it finds; a later run
    first reads past those records, then tails. The H100 sweep of 2026-11-28 crashed right there
    (the discarding writer lacked emit_bodies) on every run after the first."""
    from kvscope_agent.tracer import build as tracer_build

    try:
        exe = tracer_build.build_selftest(str(tmp_path / "selftest"))
    except tracer_build.TracerBuildError as e:
        pytest.skip(f"no C compiler to build the trace format's self-test writer: {e}")
    trace = tmp_path / "trace"
    trace.mkdir()
    subprocess.run([exe, str(trace / "cupti-4242.bin")], check=True, capture_output=True)
    info = {"on": True, "source": "cupti", "dir": str(trace)}
    opts, _, err = parse_options(SMALL + ["--out", str(tmp_path / "sweep")], sweep=True)
    assert err is None, err
    resolve_device(opts)
    built = None
    xfers = []
    for i in range(2):
        out = str(tmp_path / "sweep" / f"run-{i}")
        code, built = run_one(opts, built, opts.users[0], opts.host_kv_bytes[0], out, CancelState(), info, build)
        log = os.path.join(out, "events.jsonl")
        assert code == 0 and summary(log)["status"] == "ok" and check_log(log) == []
        xfers.append([e for e in events(log) if e["type"] == "xfer" and e.get("source") == "cupti"])
    assert len(xfers[0]) == 6 and xfers[1] == []


def test_plain_copy_check_runs_inside_setup_before_any_block(tmp_path, monkeypatch):
    """The app tells the start-up plain-copy check's copies from KV copies by time alone: a copy
    that starts before `setup` ends is a start-up copy (docs/protocol.md "Start-up copies"). So the
    check must run inside the setup phase, before the first block line. On the CPU the real check
    copies nothing (no CUDA), so it is stood in for by one that notes the run clock when called."""
    from kvscope_agent.engine.kv_cache import PagedKVCache

    called = []

    def noting(self, blocks, reps=3):
        called.append(self.clock_now())
        return None

    monkeypatch.setattr(PagedKVCache, "measure_plain_copy", noting)
    code, _, log = run_inproc(tmp_path, "plain", ["--gpu-kv-bytes", SHORT_POOL, "--host-kv-bytes", "1e6"])
    assert code == 0
    assert len(called) == 1
    evs = events(log)
    setup = {e["state"]: e["t"] for e in evs if e["type"] == "phase" and e["name"] == "setup"}
    first_block = min(e["t"] for e in evs if e["type"] == "blocks")
    assert setup["begin"] <= called[0] <= setup["end"] <= first_block
