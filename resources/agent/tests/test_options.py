"""The workload option table (kvscope_agent/workload_options.json) against the agent's parsers: the
run and sweep parsers have exactly its options, each value is checked against its row's type and
bounds (the error names the flag), the defaults reach run.start's config, and the engines runner
takes exactly the options the table says it takes. The app's side of the table is held to it by
test/unit/workload-options.test.ts."""

from __future__ import annotations

import re

import pytest

from kvscope_agent.engine import OFFLOAD_POLICIES, default_copy_overlap
from kvscope_agent.options import BY_NAME, ENGINES, OPTIONS, OptionError, check_text, default, flag
from kvscope_agent.options import build_parser, parse_options

TYPES = {"int", "number", "bytes", "choice", "on_off", "text"}
BASE = ["--device", "cpu", "--model", "tiny", "--out", "/tmp/kvscope-options-test"]


def run_rows(command="run"):
    return [o for o in OPTIONS if command in o["commands"]]


def text_of(o, value):
    if o["type"] == "on_off":
        return value if value == "auto" else ("on" if value else "off")
    if isinstance(value, float) and value.is_integer() and o["type"] != "number":
        return str(int(value))
    return str(value)


def parse_error(args, sweep=False):
    _, _, err = parse_options(BASE + args, sweep)
    return err


@pytest.mark.parametrize("o", OPTIONS, ids=[o["name"] for o in OPTIONS])
def test_every_row_is_complete_and_its_default_passes_its_own_check(o):
    assert re.fullmatch(r"[a-z][a-z0-9_]*", o["name"])
    assert o["type"] in TYPES
    assert o["label"] and o["help"]
    assert o["engines"] and set(o["engines"]) <= set(ENGINES)
    assert o["commands"] and set(o["commands"]) <= {"run", "sweep"}
    if o["type"] == "choice":
        assert o["choices"] and set(o.get("choice_help", {})) <= set(o["choices"])
    if o.get("min") is not None and o.get("max") is not None:
        assert o["min"] < o["max"]
    if o["default"] is None:
        assert o.get("default_help"), "a row without a default says what the agent does instead"
    else:
        assert check_text(o["name"], text_of(o, default(o["name"]))) == default(o["name"])


@pytest.mark.parametrize("sweep", [False, True])
def test_the_parser_has_exactly_the_table_options(sweep):
    parser = build_parser(sweep)
    flags = {s for a in parser._actions for s in a.option_strings}
    rows = run_rows("sweep" if sweep else "run")
    expected = {"-h", "--help", "--out"} | {flag(o["name"]) for o in rows} | {o["off_flag"] for o in rows if o.get("off_flag")}
    assert flags == expected
    text = parser.format_help()
    for o in rows:
        shown = o.get("sweep_default") if sweep and o.get("sweep_default") else o.get("default_help", o["default"])
        if o["type"] == "bytes" and isinstance(shown, int) and shown and shown % 10**9 == 0:  # 0 stays 0, as _help writes it
            shown = f"{shown // 10**9}e9"
        assert f"(default: {shown})" in " ".join(text.split()), o["name"]


def test_defaults_reach_the_run_config():
    opts, _, err = parse_options(BASE, sweep=False)
    assert err is None, err
    config = opts.config(opts.users[0], opts.host_kv_bytes[0])
    for o in run_rows():
        if o["default"] is None or o["name"] not in config:
            continue
        want = default(o["name"])
        if o.get("auto") and want == "auto":  # --copy-overlap auto: the policy's choice, resolved into the config
            want = default_copy_overlap(config["offload_policy"])
        assert config[o["name"]] == want, o["name"]
    assert set(config) >= {o["name"] for o in run_rows() if o["name"] not in ("model", "device")}


NUMERIC = [o for o in run_rows() if o["type"] in ("int", "bytes", "number")]


@pytest.mark.parametrize("o", NUMERIC, ids=[o["name"] for o in NUMERIC])
def test_numbers_are_held_to_their_bounds_naming_the_flag(o):
    name, f = o["name"], flag(o["name"])
    lo, hi = o.get("min"), o.get("max")
    if lo is not None:
        below = lo if o.get("min_exclusive") else lo - 1
        err = parse_error([f, text_of(o, below)])
        assert isinstance(err, OptionError) and err.option == f, (name, err)
        if not o.get("min_exclusive"):
            assert parse_error([f, text_of(o, lo)]) is None
    if hi is not None:
        assert parse_error([f, text_of(o, hi)]) is None
        err = parse_error([f, text_of(o, hi + 1)])
        assert isinstance(err, OptionError) and err.option == f, (name, err)
    err = parse_error([f, "lots"])
    assert isinstance(err, OptionError) and err.option == f


CHOICES = [o for o in run_rows() if o["type"] in ("choice", "on_off")]


@pytest.mark.parametrize("o", CHOICES, ids=[o["name"] for o in CHOICES])
def test_choices_take_exactly_the_tables_words(o):
    f = flag(o["name"])
    words = o["choices"] if o["type"] == "choice" else (["auto", "on", "off"] if o.get("auto") else ["on", "off"])
    for w in words:
        args = [f, w] if o["name"] != "engine" or w == "torch" else None
        if args:
            assert parse_error(args) is None, (o["name"], w)
    err = parse_error([f, "sometimes"])
    assert isinstance(err, OptionError) and err.option == f


def test_an_off_flag_is_the_same_as_off():
    for o in run_rows():
        if o.get("off_flag"):
            opts, _, err = parse_options(BASE + [o["off_flag"]], sweep=False)
            assert err is None and getattr(opts, o["name"]) is False, o["name"]


def test_text_options_take_their_pattern():
    assert parse_error(["--device", "cuda:1"]) is None
    err = parse_error(["--device", "gpu"])
    assert err.option == "--device" and "cpu, cuda or cuda:N" in str(err)


def test_the_offload_policies_are_the_tables():
    assert OFFLOAD_POLICIES == tuple(BY_NAME["offload_policy"]["choices"])


def test_a_sweep_takes_lists_where_the_table_says():
    opts, _, err = parse_options(BASE + ["--users", "2,4", "--host-kv-bytes", "55e9,0"], sweep=True)
    assert err is None, err
    assert opts.users == [2, 4] and opts.host_kv_bytes == [55_000_000_000, 0]
    opts, _, err = parse_options(BASE, sweep=True)
    assert opts.users == [int(u) for u in BY_NAME["users"]["sweep_default"].split(",")]
    assert parse_error(["--deadline-s", "5"], sweep=False).option == "--deadline-s"  # a sweep's only
    assert parse_error(["--users", "2,0"], sweep=True).option == "--users"


def test_the_engines_runner_takes_the_options_its_engine_takes(tmp_path, capsys):
    from kvscope_agent.engines.runner import main_run_engine

    for o in run_rows():
        if "vllm" in o["engines"]:
            continue
        word = o.get("choices", ["on"])[0] if o["type"] in ("choice", "on_off") else str(o["default"])
        out = tmp_path / o["name"]
        assert main_run_engine(["--engine", "vllm", "--model", "m", "--out", str(out), flag(o["name"]), word]) == 2
        assert flag(o["name"]) in capsys.readouterr().err
