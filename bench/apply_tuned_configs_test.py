"""bench/apply-tuned-configs.py on copies of the engine's real tables: each tuned configuration
lands in its table, the rest of the source is unchanged, and a table not found as expected leaves
every file as it was."""

from __future__ import annotations

import json
import os
import shutil

from script_loader import load_script

ENGINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resources", "agent", "kvscope_agent", "engine")
FILES = ("fp8_gemv.py", "paged_attention.py")
apply_tuned = load_script("apply-tuned-configs.py")

GEMV = [{"rows": 1, "config": {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 4, "dot": 0}},
        {"rows": 4, "config": {"block_n": 32, "block_k": 256, "num_warps": 4, "num_stages": 3, "dot": 0}}]
ATTN = {"f16": 1, "block_n": 256, "num_warps": 8, "num_stages": 2, "programs_per_sm": 4}
PREFILL = {"block_m": 64, "block_n": 128, "num_warps": 4, "num_stages": 4, "f16": 1}


def _engine_copy(tmp_path):
    d = tmp_path / "engine"
    d.mkdir()
    for f in FILES:
        shutil.copy(os.path.join(ENGINE, f), d / f)
    return d


def _tables(d):
    ns: dict = {}
    src = (d / "fp8_gemv.py").read_text()
    block = src[src.index("GEMV_CONFIGS:"):src.index("]\n", src.index("GEMV_CONFIGS:")) + 1]
    exec(block, {"Any": object}, ns)  # noqa: S102  the table is a literal
    paged = (d / "paged_attention.py").read_text()
    for name in ("DECODE_CONFIGS", "PREFILL_CONFIGS"):
        start = paged.index(f"\n{name}")
        end = paged.index("\n}\n", start) + 3
        exec(paged[start:end], {"Any": object}, ns)  # noqa: S102
    return ns


def test_each_tuned_configuration_lands_in_its_table(tmp_path) -> None:
    d = _engine_copy(tmp_path)
    before = _tables(d)
    (tmp_path / "f.json").write_text(json.dumps({"gemv": {"suggested": GEMV}, "attention": {"suggested": {"config": ATTN}}}))
    (tmp_path / "p.json").write_text(json.dumps({"models": [{"group": 8, "kv": "fp8", "best": {**PREFILL, "extra": 1}}]}))
    assert apply_tuned.main(["--fp8-decode", str(tmp_path / "f.json"), "--prefill", str(tmp_path / "p.json"),
                             "--engine-dir", str(d)]) == 0
    after = _tables(d)
    assert after["GEMV_CONFIGS"] == [(3, GEMV[0]["config"]), (16, GEMV[1]["config"])]
    assert after["DECODE_CONFIGS"]["fp8"] == ATTN
    assert after["DECODE_CONFIGS"]["native"] == before["DECODE_CONFIGS"]["native"]
    assert after["PREFILL_CONFIGS"][(8, "fp8")] == PREFILL  # only the table's keys
    assert {k: v for k, v in after["PREFILL_CONFIGS"].items() if k != (8, "fp8")} == \
        {k: v for k, v in before["PREFILL_CONFIGS"].items() if k != (8, "fp8")}
    assert "# llama-3.1-70b-fp8" in (d / "paged_attention.py").read_text()  # the row's comment is kept


def test_a_shape_without_a_row_gets_one_at_the_table_end(tmp_path) -> None:
    d = _engine_copy(tmp_path)
    before = _tables(d)
    (tmp_path / "p.json").write_text(json.dumps({"models": [{"group": 5, "kv": "native", "best": PREFILL}]}))
    assert apply_tuned.main(["--prefill", str(tmp_path / "p.json"), "--engine-dir", str(d)]) == 0
    after = _tables(d)
    assert after["PREFILL_CONFIGS"] == {**before["PREFILL_CONFIGS"], (5, "native"): PREFILL}


def test_a_table_not_found_leaves_every_file_as_it_was(tmp_path) -> None:
    d = _engine_copy(tmp_path)
    gemv = d / "fp8_gemv.py"
    gemv.write_text(gemv.read_text().replace("GEMV_CONFIGS: list", "GEMV_TABLE: list"))  # a table renamed since
    originals = {f: (d / f).read_text() for f in FILES}
    (tmp_path / "f.json").write_text(json.dumps({"gemv": {"suggested": GEMV}, "attention": {"suggested": {"config": ATTN}}}))
    assert apply_tuned.main(["--fp8-decode", str(tmp_path / "f.json"), "--engine-dir", str(d)]) == 1
    assert {f: (d / f).read_text() for f in FILES} == originals  # DECODE_CONFIGS was found, and still not written
