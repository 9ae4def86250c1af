"""kvscope_agent/protocol: the JSON Schema subset validator reads events.schema.json as Ajv does
(src/shared/protocol.ts), and refuses a schema it cannot check; the line reader as the app's."""

from __future__ import annotations

import gzip

import pytest

from kvscope_agent.protocol import EVENT_SCHEMAS, MAX_POOL_BLOCKS, BadLine, block_move, check_event, json_deeper_than, read_log
from kvscope_agent.protocol.schema import SchemaUnsupported, Validator


def test_schema_subset_refuses_what_it_does_not_implement():
    with pytest.raises(SchemaUnsupported, match="oneOf"):
        Validator({"events": {"x": {"oneOf": [{"type": "string"}]}}})
    with pytest.raises(SchemaUnsupported, match="anchored"):
        Validator({"events": {"x": {"pattern": "^gpu"}}})
    with pytest.raises(SchemaUnsupported, match=r"\$ref"):
        Validator({"events": {"x": {"$ref": "#/$defs/missing"}}})
    Validator(EVENT_SCHEMAS)  # the real document is within the subset


def test_numbers_as_javascript_reads_them():
    line = {"seq": 0, "t": 0, "type": "gpu", "index": 0, "mem_used_bytes": None, "util_pct": 1.5, "source": "nvml"}
    assert check_event(line) is None
    assert check_event({**line, "index": 1.0}) is None  # JSON has one number type: 1.0 is an integer
    assert check_event({**line, "index": True})[0] == "schema"  # true is not a number
    assert check_event({**line, "index": -1}) == ("schema", "gpu: /index must be >= 0")
    assert check_event({**line, "source": "smi"}) == ("schema", "gpu: /source must be equal to one of the allowed values")
    assert check_event({**line, "util_pct": "5"}) == ("schema", "gpu: /util_pct must be number,null")


def test_pool_size_limit_comes_from_the_schema():
    pool = {"seq": 0, "t": 0, "type": "pool", "pool": "host", "block_tokens": 16, "block_bytes": 1}
    assert check_event({**pool, "capacity_blocks": MAX_POOL_BLOCKS}) is None
    reason, message = check_event({**pool, "capacity_blocks": 2_000_000_000})
    assert reason == "schema" and message.endswith("(2000000000): no engine allocates a pool of more blocks")


def test_nesting_depth_counts_brackets_outside_strings_only():
    nest = lambda n: "[" * n + "]" * n  # noqa: E731
    assert not json_deeper_than(nest(64)) and json_deeper_than(nest(65))
    assert not json_deeper_than('{"msg":"' + "{" * 500 + '\\"[[["}')
    assert json_deeper_than('{"a":"\\\\",' + '"b":{' * 70 + "}" * 71)


def test_reader_reads_gzip_and_reports_a_cut_off_last_line(tmp_path):
    p = tmp_path / "e.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write(b'{"seq":0,"t":0,"type":"log","level":"info","msg":"a"}\n{"seq":1,"t"')
    items = list(read_log(p))
    assert items[0]["msg"] == "a"
    assert isinstance(items[1], BadLine) and (items[1].reason, items[1].line, items[1].seq) == ("truncated", 2, 1)


def test_if_then_else_as_ajv_reads_it():
    v = Validator({"events": {"x": {"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}, "else": {"required": ["c"]}}}})
    schema = {"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}, "else": {"required": ["c"]}}
    assert v.check(schema, {"a": 1, "b": 0}) is None and v.check(schema, {"a": 2, "c": 0}) is None
    assert v.check(schema, {"a": 1, "c": 0}) == ("", "must have required property 'b'")
    assert v.check(schema, {"a": 2, "b": 0}) == ("", "must have required property 'c'")
    with pytest.raises(SchemaUnsupported, match="without if"):
        Validator({"events": {"x": {"else": {}}}})


def test_v2_pools_and_moves():
    pool = {"seq": 0, "t": 0, "type": "pool", "capacity_blocks": 1, "block_tokens": 1, "block_bytes": 1}
    assert check_event({**pool, "pool": "host"}) is None  # gpu and host: tier 0 and 1 when left out
    assert check_event({**pool, "pool": "disk"}) == ("schema", "pool: / must have required property 'tier'")
    assert check_event({**pool, "pool": "disk", "tier": 2}) is None
    assert check_event({**pool, "pool": "Disk", "tier": 2})[0] == "schema"
    assert check_event({**pool, "pool": "disk\n", "tier": 2})[0] == "schema"  # `$` is JavaScript's
    assert block_move({"op": "offload"}) == ("gpu", "host") and block_move({"op": "onboard"}) == ("host", "gpu")
    assert block_move({"op": "move", "from": "disk", "to": "host"}) == ("disk", "host")
    assert block_move({"op": "evict", "pool": "disk"}) is None
