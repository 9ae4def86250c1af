"""The agent's validator against test/fixtures/protocol/: every log gives exactly the verdict its
sidecar states (the app's validator is held to the same files by test/unit/protocol-fixtures.test.ts),
and every rule code and bad-line reason of kvscope_agent/protocol/protocol.json has a log."""

from __future__ import annotations

import json
import os
import re

import pytest

from kvscope_agent.ledger import validate_log
from kvscope_agent.protocol import BAD_LINE_REASONS, RULES

from conftest import AGENT_ROOT

REPO = os.path.dirname(os.path.dirname(AGENT_ROOT))
FIXTURES = os.path.join(REPO, "test", "fixtures", "protocol")
LOGS = sorted(f for f in os.listdir(FIXTURES) if re.search(r"\.jsonl(\.gz)?$", f))


def verdict_of(log: str) -> dict:
    with open(os.path.join(FIXTURES, re.sub(r"\.jsonl(\.gz)?$", ".verdict.json", log)), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("log", LOGS)
def test_fixture_gives_its_verdict(log):
    want = verdict_of(log)
    report = validate_log(os.path.join(FIXTURES, log))
    assert [dict(reason=b.reason, line=b.line, seq=b.seq) for b in report.bad_lines] == want["bad_lines"]
    assert [dict(rule=v.rule, seq=v.seq) for v in report.violations] == want["violations"]
    assert report.valid == (not want["bad_lines"] and not want["violations"])


def test_every_rule_and_bad_line_reason_has_a_fixture():
    rules = {v["rule"] for log in LOGS for v in verdict_of(log)["violations"]}
    reasons = {b["reason"] for log in LOGS for b in verdict_of(log)["bad_lines"]}
    assert sorted(set(RULES) - rules) == [], "rule codes with no log in test/fixtures/protocol"
    assert sorted(set(BAD_LINE_REASONS) - reasons) == [], "bad-line reasons with no log in test/fixtures/protocol"
    assert rules <= set(RULES) and reasons <= set(BAD_LINE_REASONS)


def test_docs_list_every_rule_code():
    """docs/protocol.md's rule table names exactly protocol.json's codes."""
    with open(os.path.join(REPO, "docs", "protocol.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("## Rules every reader checks", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    in_table = {code for cell in first_cells for code in re.findall(r"`([a-z_]+)`", cell)}
    assert in_table == set(RULES)
