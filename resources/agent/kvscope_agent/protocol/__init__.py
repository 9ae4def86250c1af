"""docs/protocol.md as data, read by the agent: the event schemas (events.schema.json), the
version, line limits, bad-line reasons and rule codes (protocol.json), and the line reader that
turns a log into events and bad lines the way the app's reader does (src/shared/events-reader.ts).

The app reads the same two files (src/shared/protocol.ts, src/shared/ledger.ts), and
test/fixtures/protocol/ holds a log per rule with the verdict both languages must give.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Union

from .schema import Validator

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str) -> dict[str, Any]:
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return json.load(f)


SPEC = _load("protocol.json")
EVENT_SCHEMAS = _load("events.schema.json")

PROTOCOL_VERSION: int = SPEC["version"]
MAX_LINE_BYTES: int = SPEC["max_line_bytes"]
MAX_JSON_DEPTH: int = SPEC["max_json_depth"]
# Rule ttft_parts_sum: the parts add up to the TTFT within this.
TTFT_PARTS_TOLERANCE_NS: int = SPEC["ttft_parts_tolerance_ns"]
RULES: dict[str, str] = SPEC["rules"]
BAD_LINE_REASONS: dict[str, str] = SPEC["bad_lines"]
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_SCHEMAS["events"])
# The `pool` schema's maximum: no engine allocates a pool of more blocks.
MAX_POOL_BLOCKS: int = EVENT_SCHEMAS["events"]["pool"]["allOf"][1]["properties"]["capacity_blocks"]["maximum"]

_validator = Validator(EVENT_SCHEMAS)


def event_schema(type: str) -> dict[str, Any]:
    """The schema of one event type, as the data file writes it."""
    return EVENT_SCHEMAS["events"][type]


# v1's names for two moves, still valid shorthands in v2.
V1_MOVES = {"offload": ("gpu", "host"), "onboard": ("host", "gpu")}


def block_move(ev: dict[str, Any]) -> tuple[str, str] | None:
    """(from, to) of a blocks line that moves blocks (v1's offload and onboard are the moves
    gpu -> host and host -> gpu), else None; `blockMove` in src/shared/protocol.ts."""
    op = ev.get("op")
    if op == "move":
        return ev["from"], ev["to"]
    return V1_MOVES.get(op)


def json_deeper_than(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests objects/arrays more than `limit` deep (brackets inside strings do
    not count), checked before parsing, as `jsonDeeperThan` in src/shared/protocol.ts."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    in_string = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
            if depth > limit:
                return True
        elif c in "}]":
            depth -= 1
        i += 1
    return False


def check_event(value: Any) -> tuple[str, str] | None:
    """Why a parsed line is not a valid event: (bad-line reason, message), or None when it is one."""
    if not isinstance(value, dict):
        return "not_object", "a line must be a JSON object"
    typ = value.get("type")
    if not isinstance(typ, str) or typ not in EVENT_SCHEMAS["events"]:
        return "unknown_type", f'unknown event type "{typ}"'
    err = _validator.check(EVENT_SCHEMAS["events"][typ], value)
    if err is None:
        return None
    path, message = err
    why = ""
    if path == "/capacity_blocks" and message.startswith("must be <="):
        why = f" ({value.get('capacity_blocks')}): no engine allocates a pool of more blocks"
    return "schema", f"{typ}: {path or '/'} {message}{why}"


@dataclass
class BadLine:
    """A line that is not a valid event, located by its 1-based line number and byte offset
    (and its seq when it could be read)."""

    reason: str
    offset: int
    line: int
    seq: Union[int, None]
    message: str

    def __str__(self) -> str:
        seq = f", seq {self.seq}" if self.seq is not None else ""
        return f"bad line {self.line} (offset {self.offset}{seq}): {self.reason}: {self.message}"


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line with its newline) of an events.jsonl, or of a gzipped one
    (.jsonl.gz, as the bundled samples are stored: offsets then count uncompressed bytes)."""
    offset = 0
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        for raw in f:
            yield offset, raw
            offset += len(raw)


_SEQ_RE = re.compile(r'"seq"\s*:\s*(\d+)')


def _seq_in_text(text: str) -> int | None:
    m = _SEQ_RE.search(text)
    return int(m.group(1)) if m else None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(text: str) -> tuple[dict[str, Any] | None, tuple[str, str, int | None] | None]:
    """One line's text (no newline) → (event, None) or (None, (reason, message, seq))."""
    if json_deeper_than(text):
        return None, ("too_deep", f"nested more than {MAX_JSON_DEPTH} levels deep (no event is)", _seq_in_text(text))
    try:
        # JavaScript's JSON.parse refuses NaN and Infinity; so does this.
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as e:
        return None, ("not_json", f"not JSON: {e}", _seq_in_text(text))
    bad = check_event(value)
    if bad is None:
        return value, None
    seq = value.get("seq") if isinstance(value, dict) else None
    if isinstance(seq, float) and seq.is_integer():
        seq = int(seq)
    if not isinstance(seq, int) or isinstance(seq, bool):
        seq = None
    return None, (bad[0], bad[1], seq)


def read_log(path: str | os.PathLike) -> Iterator[Union[dict[str, Any], BadLine]]:
    """The events of a log in file order, with a BadLine in place of each line that is not one.

    As the app's reader: lines end at "\\n" (a "\\r" before it is dropped), an empty line is
    skipped, a line over MAX_LINE_BYTES is refused unread, a last line without a newline is
    `truncated`, bytes that are not UTF-8 read as U+FFFD and a byte order mark opening a line is
    dropped.
    """
    line_no = 0
    for offset, raw in iter_lines(path):
        line_no += 1
        ends = raw.endswith(b"\n")
        body = raw[:-1] if ends else raw
        if len(body) > MAX_LINE_BYTES:
            yield BadLine("too_long", offset, line_no, None, f"line is longer than {MAX_LINE_BYTES} bytes")
            continue
        if not ends:
            text = body.decode("utf-8", errors="replace")
            yield BadLine(
                "truncated", offset, line_no, _seq_in_text(text),
                f"the last line has no newline ({len(text)} characters): the run was cut off mid-line",
            )
            continue
        if body.endswith(b"\r"):
            body = body[:-1]
        if not body:
            continue
        text = body.decode("utf-8", errors="replace")
        if text.startswith("\ufeff"):
            text = text[1:]
        event, bad = parse_line(text)
        if bad is None:
            yield event  # type: ignore[misc]
        else:
            yield BadLine(bad[0], offset, line_no, bad[2], bad[1])
