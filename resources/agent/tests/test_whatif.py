"""The what-if simulator (kvscope_agent/whatif) on the bundled recorded runs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from kvscope_agent.ledger import check_log
from kvscope_agent.whatif.calibrate import calibrate
from kvscope_agent.whatif.costs import CardRates, overlapped_copy_ns
from kvscope_agent.whatif.main import parse_users, whatif
from kvscope_agent.options import OptionError
from kvscope_agent.whatif.profiles import (PROFILE_DIR, ProfileError, builtin_profiles, load_profile_file,
                                           parse_profile, profile_for_gpu, resolve_profile)
from kvscope_agent.whatif.recorded import RecordedRunError, find_logs, read_run
from kvscope_agent.whatif.replay import plan_gpu_pool, shape_of

AGENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(os.path.dirname(AGENT), "samples")
SAMPLE_FILES = sorted(os.path.join(SAMPLES, n) for n in os.listdir(SAMPLES) if n.endswith(".jsonl.gz"))


def _disk_tier(path: str) -> bool:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return bool(json.loads(f.readline()).get("config", {}).get("disk_kv_bytes"))


# The simulator models the GPU and host pools; a run with a disk tier is refused (whatif/replay.py).
TWO_TIER_SAMPLES = [p for p in SAMPLE_FILES if not _disk_tier(p)]
DISK_TIER_SAMPLES = [p for p in SAMPLE_FILES if _disk_tier(p)]
S8_4 = os.path.join(SAMPLES, "h100-llama-3.1-8b-users4-host55e9.jsonl.gz")
S70_4 = os.path.join(SAMPLES, "h100-llama-3.1-70b-fp8-users4-host55e9.jsonl.gz")
S70_8 = os.path.join(SAMPLES, "h100-llama-3.1-70b-fp8-users8-host55e9.jsonl.gz")


def _events(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("path", DISK_TIER_SAMPLES, ids=os.path.basename)
def test_a_bundled_run_with_a_disk_tier_is_refused_with_the_reason(path: str) -> None:
    run = read_run(path)
    with pytest.raises(RecordedRunError, match="disk tier"):
        calibrate([run], resolve_profile("h100-sxm"))


@pytest.mark.parametrize("path", TWO_TIER_SAMPLES, ids=os.path.basename)
def test_self_simulation_reproduces_each_bundled_run_within_3_percent(path: str) -> None:
    run = read_run(path)
    card = profile_for_gpu(run.gpu.get("name"))
    assert card is not None and card.id == "h100-sxm", run.gpu
    report = calibrate([run], card)
    (check,) = report.self_check
    for key in ("e2e_ns", "ttft_ns_mean"):
        meas, sim = check[key]["measured"], check[key]["simulated"]
        assert abs(sim / meas - 1) < 0.03, (key, meas, sim)


def _rows(sizes: list[float], factors: list[float], noise: float = 0.0) -> list[tuple[list[float], float, float]]:
    """Intervals of a made-up run: each holds `c` steps reading 5 ms of weights at bandwidth, of which
    `n` prefill with FLOP time `flop_ns` (ns at the card's peak), beside decode work; its time is the
    cost model's with `factors` (STEP_FACTORS order), ± a fixed pattern of noise."""
    rows = []
    for i in range(60):
        flop_ns = sizes[i % len(sizes)]
        n = 1 + i % 7
        c = 1 + i % 3
        x = [5e6 * c, 1e6 * (1 + i % 5), float(n), n * flop_ns, float(c)]
        y = sum(f * v for f, v in zip(factors, x)) * (1 + noise * ((-1) ** i))
        rows.append((x, y, 1 / y))
    return rows


def test_the_prefill_steps_fixed_cost_is_fitted_only_where_the_runs_prefill_two_sizes() -> None:
    from kvscope_agent.whatif.calibrate import _rss, fit_step_factors

    truth = [1.3, 1.3, 6e6, 1.9, 0.0]  # weights, K/V, prefill step ns, prefill per FLOP, step ns (STEP_FACTORS)
    two = fit_step_factors(_rows([9e6, 37e6], truth, noise=0.002))
    assert "prefill_step_ns" not in two.held
    assert two.factors[2] == pytest.approx(6e6, rel=0.05) and two.factors[3] == pytest.approx(1.9, rel=0.02)

    one_rows = _rows([37e6], truth, noise=0.002)
    one = fit_step_factors(one_rows)
    assert set(one.held) == {"prefill_step_ns", "step_ns"} and "cannot be told apart" in one.held["prefill_step_ns"]
    assert len(one.ends) == 4  # each end of the prefill split, at each end of the step split
    lows, highs = one.ends[:2], one.ends[2:]
    assert all(e[2] == 0.0 for e in lows) and all(e[3] == pytest.approx(1.0) for e in highs)
    assert one.factors[2] == pytest.approx(highs[0][2] / 2)
    # Every split in the range fits these intervals as well as the truth does: the data cannot choose.
    for theta in [one.factors, *one.ends]:
        assert _rss(one_rows, theta) <= 1.2 * _rss(one_rows, truth) + 1e-12


def test_a_steps_fixed_time_and_its_weight_reads_cost_the_same_on_the_runs_card() -> None:
    """Both are one constant a step on the runs' card, so the split is held: from all of the weights
    term at bandwidth to weights_factor at its floor, every split giving each interval the same time."""
    from kvscope_agent.whatif.calibrate import fit_step_factors

    rows = _rows([9e6, 37e6], [3.0, 1.3, 6e6, 1.9, 0.0])
    fit = fit_step_factors(rows)
    assert "step_ns" in fit.held and "HBM bandwidth" in fit.held["step_ns"]
    at_bandwidth, most_fixed = fit.ends
    assert at_bandwidth[4] == 0.0 and most_fixed[0] == pytest.approx(1.0)
    assert fit.factors[4] == pytest.approx(most_fixed[4] / 2) and most_fixed[4] == pytest.approx((at_bandwidth[0] - 1) * 5e6)
    for x, _, _ in rows:
        costs = [sum(t * v for t, v in zip(theta, x)) for theta in (fit.factors, at_bandwidth, most_fixed)]
        assert max(costs) - min(costs) <= 1e-6 * max(costs)
    # An engine at the bandwidth bound leaves (next to) nothing to split.
    near = fit_step_factors(_rows([9e6, 37e6], [1.0, 1.3, 6e6, 1.9, 0.0]))
    assert "step_ns" not in near.held or near.ends[-1][4] < 0.05 * 5e6


def test_no_fitted_factor_claims_the_engine_beat_the_card() -> None:
    """Intervals that would fit best with the weights read faster than HBM allows (a factor 0.8)
    get a fit at the floor: no engine reads faster than its card's bandwidth."""
    from kvscope_agent.whatif.calibrate import STEP_FLOORS, fit_step_factors

    fit = fit_step_factors(_rows([9e6, 37e6], [0.8, 1.5, 4e6, 0.7, 0.0]))
    assert all(v >= f for v, f in zip(fit.factors, STEP_FLOORS)), fit.factors


def test_a_prediction_says_how_far_what_the_runs_could_not_determine_moves_it() -> None:
    """The bundled recompute run prefills every context whole, so its prefill step's fixed cost is
    held; predicting a pool that keeps every user on the GPU (short prefills only) gives a range
    around the prediction. On its own card the step-time split moves nothing; on an H200 (more HBM
    bandwidth) it widens the range. The 8B users-2 run prefills both sizes: that split is measured."""
    from kvscope_agent.whatif.main import predict

    card = resolve_profile("h100-sxm")
    run = read_run(os.path.join(SAMPLES, "h100-llama-3.1-8b-users4-recompute.jsonl.gz"))
    report = calibrate([run], card)
    assert set(report.held) == {"prefill_step_ns", "step_ns"} and len(report.ends) == 4
    big_pool = 4 * 600 * int(run.pools["gpu"]["block_bytes"])  # 4 users' 542-block requests
    doc = predict([run], report, card, card, [4], big_pool, False, None)
    (point,) = doc["points"]
    lo, hi = point["range"]["ttft_ns_mean"]
    assert lo < point["ttft_ns_mean"] < hi and hi > 1.2 * lo, point
    assert set(doc["uncertain"]) == {"prefill_step_ns"} and doc["uncertain"]["prefill_step_ns"].startswith("held at")
    assert len(doc["calibration"]["ends"]) == 4

    h200 = predict([run], report, card, resolve_profile("h200"), [4], big_pool, False, None)
    assert set(h200["uncertain"]) == {"prefill_step_ns", "step_ns"}
    (far,) = h200["points"]
    e_lo, e_hi = far["range"]["e2e_ns"]
    assert e_lo < far["e2e_ns"] < e_hi and e_hi - e_lo > 2 * (point["range"]["e2e_ns"][1] - point["range"]["e2e_ns"][0])

    both = calibrate([read_run(os.path.join(SAMPLES, "h100-llama-3.1-8b-users2-host55e9.jsonl.gz"))], card)
    assert "prefill_step_ns" not in both.held and both.calibration.prefill_step_ns > 0


def test_replay_moves_the_blocks_the_recorded_run_moved() -> None:
    """The engine's own scheduler decides every move: replayed on its own card, the 8B users-4
    run offloads and onboards exactly what it did on the H100 (21,842 and 20,760 blocks)."""
    from kvscope_agent.whatif.calibrate import replay_on_own_card

    run = read_run(S8_4)
    report = calibrate([run], resolve_profile("h100-sxm"))
    rates = CardRates.of(resolve_profile("h100-sxm"), "bf16", report.calibration)
    summary, _, _ = replay_on_own_card(run, rates, report.calibration)
    for key in ("blocks_offloaded", "blocks_onboarded", "blocks_stored", "blocks_evicted", "blocks_hit"):
        assert summary[key] == run.summary[key], key


def test_whatif_writes_valid_simulated_runs_marked_as_such(tmp_path) -> None:
    out = tmp_path / "gh200"
    assert whatif([S70_4, S70_8, "--profile", "gh200-96", "--users", "4,8", "--out", str(out)]) == 0
    doc = json.loads((out / "whatif.json").read_text())
    assert doc["kind"] == "kvscope.whatif" and doc["label"].startswith("SIMULATED")
    assert doc["gpu_pool"]["users_it_holds"] == 7  # the seed: a GH200 (96 GB) keeps 7 users' KV on the GPU
    for u in (4, 8):
        log = out / f"users-{u}" / "events.jsonl"
        assert check_log(log) == []
        ev = _events(str(log))
        start = ev[0]
        assert start["type"] == "run.start" and start["config"]["users"] == u
        sim = start["simulated"]
        assert sim["profile"]["id"] == "gh200-96"
        assert sim["source"]["gpu"] == "NVIDIA H100 80GB HBM3"
        assert set(sim["source"]["run_ids"]) == {read_run(S70_4).run_id, read_run(S70_8).run_id}
        assert start["host"]["gpus"][0]["name"].endswith("(simulated)")
        assert ev[-1]["type"] == "run.end" and ev[-1]["status"] == "ok"
        point = next(p for p in doc["points"] if p["users"] == u)
        assert point["e2e_ns"] == ev[-1]["summary"]["e2e_ns"]
    # 4 users fit the GH200's pool: nothing moves; 8 do not.
    p4, p8 = (next(p for p in doc["points"] if p["users"] == u) for u in (4, 8))
    assert p4["blocks_offloaded"] == 0 and p4["blocks_onboarded"] == 0
    assert p8["blocks_onboarded"] > 0


def test_memory_plan_holds_what_the_recorded_h100_held_and_seven_users_on_gh200() -> None:
    run = read_run(S70_8)
    h100 = plan_gpu_pool(run, resolve_profile("h100-sxm"), 8, None, False)
    assert abs(h100.gpu_blocks - run.pools["gpu"]["capacity_blocks"]) <= 2  # 1,341 recorded
    per_user = 542
    assert plan_gpu_pool(run, resolve_profile("gh200-96"), 8, None, False).gpu_blocks // per_user == 7
    assert plan_gpu_pool(run, resolve_profile("h200"), 8, None, False).gpu_blocks // per_user > 7
    assert plan_gpu_pool(run, resolve_profile("h200"), 8, 7_030_702_080, False).gpu_blocks == 1341
    with pytest.raises(RecordedRunError, match="does not fit"):
        plan_gpu_pool(run, resolve_profile("h100-sxm"), 8, 20_000_000_000, False)


def test_a_faster_link_shortens_ttft_and_more_hbm_bandwidth_shortens_decode(tmp_path) -> None:
    base = json.loads((open(os.path.join(PROFILE_DIR, "h100-sxm.json"), encoding="utf-8")).read())

    def variant(name: str, **changes: float) -> str:
        doc = json.loads(json.dumps(base))
        doc["id"] = name
        for key, v in changes.items():
            section, _, field = key.partition("__")
            target = doc[section] if field else doc
            target[field or section]["value"] = v
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return str(path)

    def run(profile: str) -> dict:
        out = tmp_path / ("out-" + os.path.basename(profile))
        assert whatif([S8_4, "--profile", profile, "--json", "--out", str(out)]) == 0
        return json.loads((out / "whatif.json").read_text())["points"][0]

    same = run("h100-sxm")
    fast_link = run(variant("fastlink", link__h2d_bytes_per_s=550e9, link__d2h_bytes_per_s=550e9,
                            link__both_bytes_per_s=900e9))
    fast_hbm = run(variant("fasthbm", hbm_bytes_per_s=6.7e12))
    assert fast_link["ttft_ns_mean"] < same["ttft_ns_mean"] and fast_link["blocks_onboarded"] == same["blocks_onboarded"]
    assert fast_hbm["e2e_ns"] < 0.7 * same["e2e_ns"]


def test_every_builtin_profile_cites_a_source_for_every_number() -> None:
    profiles = builtin_profiles()
    assert {p.id for p in profiles} >= {"h100-pcie", "h100-sxm", "h200", "gh200-96", "gh200-144", "b200", "gb200"}
    for p in profiles:
        assert p.numbers, p.id
        for key, n in p.numbers.items():
            assert n.value > 0 and len(n.source) > 20, (p.id, key)
    gh = resolve_profile("gh200-96")
    assert gh.value("link.h2d_bytes_per_s") == 375e9 and "2407.07850" in gh.numbers["link.h2d_bytes_per_s"].source
    assert gh.doc["link"]["nominal_bytes_per_s_both"]["value"] == 900e9


def test_card_names_pick_their_profile() -> None:
    assert profile_for_gpu("NVIDIA GH200 480GB").id == "gh200-96"  # not the H200 it contains
    assert profile_for_gpu("NVIDIA H200").id == "h200"
    assert profile_for_gpu("NVIDIA H100 80GB HBM3").id == "h100-sxm"
    assert profile_for_gpu("NVIDIA H100 PCIe").id == "h100-pcie"
    assert profile_for_gpu("NVIDIA A100-SXM4-80GB") is None


def test_a_profile_file_that_is_wrong_says_where(tmp_path) -> None:
    good = json.loads(open(os.path.join(PROFILE_DIR, "h200.json"), encoding="utf-8").read())
    bad = json.loads(json.dumps(good))
    del bad["link"]["h2d_bytes_per_s"]["source"]
    with pytest.raises(ProfileError, match=r"link\.h2d_bytes_per_s\.source"):
        parse_profile(bad, "mine.json")
    bad = json.loads(json.dumps(good))
    bad["hbm_bytes_per_s"]["value"] = -1
    with pytest.raises(ProfileError, match="hbm_bytes_per_s.value must be a positive number"):
        parse_profile(bad, "mine.json")
    with pytest.raises(ProfileError, match="kind must be"):
        parse_profile({**good, "kind": "x"}, "mine.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not JSON"):
        load_profile_file(str(path))
    with pytest.raises(ProfileError, match="built-in profiles are"):
        resolve_profile("nosuchcard")


def test_bad_options_exit_2_and_bad_runs_exit_1(tmp_path, capsys) -> None:
    assert whatif([S8_4, "--profile", "h200", "--users", "8..2"]) == 2
    assert "--users" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert whatif([S8_4, "--profile", "h200", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert whatif([S8_4, "--profile", "h200", "--out", str(tmp_path / "full" / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert whatif([S8_4, "--profile", "nosuchcard"]) == 2
    notrun = tmp_path / "events.jsonl"
    notrun.write_text('{"seq":0,"t":0,"type":"log","level":"info","msg":"x"}\n')
    assert whatif([str(notrun), "--profile", "h200"]) == 1
    assert "no run.start" in capsys.readouterr().err
    assert whatif([S8_4, S70_4, "--profile", "h200"]) == 1
    assert "different models" in capsys.readouterr().err
    assert parse_users("2..4,8") == [2, 3, 4, 8]
    with pytest.raises(OptionError):
        parse_users("0..3")


def test_a_simulated_run_is_not_a_calibration_source(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    assert whatif([S8_4, "--profile", "h200", "--out", str(out)]) == 0
    assert whatif([str(out), "--profile", "gh200-96"]) == 1
    assert "itself simulated" in capsys.readouterr().err
    assert find_logs(str(out)) == [str(out / "users-4" / "events.jsonl")]


def test_overlapped_copies_share_the_link() -> None:
    rates = CardRates(3.35e12, 989e12, 50e9, 50e9, 80e9, 0.0)
    d_end, h_start, h_end = overlapped_copy_ns(2_000_000_000, 2_000_000_000, rates, 64 << 20)
    assert h_start == pytest.approx((64 << 20) / 50e9 * 1e9)
    # together at 80 GB/s, then the onboard's last chunk alone at 50: ~50.8 ms, not 80 serial
    assert 49e6 < h_end < 52e6 and d_end < h_end


def test_simulator_runs_without_torch() -> None:
    """The app runs what-if on the user's machine, where torch may be missing."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from kvscope_agent.whatif.main import whatif\n"
            f"sys.exit(whatif([{S8_4!r}, '--profile', 'gh200-96', '--json']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=AGENT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": AGENT})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["points"][0]["users"] == 4 and doc["profile"]["id"] == "gh200-96"
    assert shape_of(read_run(S8_4)).dtype == "bf16"
