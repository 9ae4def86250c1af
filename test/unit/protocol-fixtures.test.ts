/**
 * The app's validator (`kvscope validate`: the line reader, the schemas, the ledger) against
 * test/fixtures/protocol/: every log gives exactly the verdict its sidecar states. The agent's
 * validator is held to the same files by resources/agent/tests/test_protocol_fixtures.py.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateLog } from '../../src/cli/commands/validate';
import { RULE_TEXT } from '../../src/shared/ledger';
import { BAD_LINE_TEXT } from '../../src/shared/protocol';

const DIR = 'test/fixtures/protocol';
const LOG = /\.jsonl(\.gz)?$/;
const logs = readdirSync(DIR)
  .filter((f) => LOG.test(f))
  .sort();

interface Verdict {
  about: string;
  bad_lines: Array<{ reason: string; line: number; seq: number | null }>;
  violations: Array<{ rule: string; seq: number | null }>;
}
const verdictOf = (log: string): Verdict => JSON.parse(readFileSync(join(DIR, log.replace(LOG, '.verdict.json')), 'utf8')) as Verdict;

describe('protocol fixtures', () => {
  it.each(logs)('%s gives its verdict', async (log) => {
    const want = verdictOf(log);
    const r = await validateLog(join(DIR, log));
    expect(r.badLines.map((b) => ({ reason: b.reason, line: b.line, seq: b.seq }))).toEqual(want.bad_lines);
    expect(r.violations.map((v) => ({ rule: v.rule, seq: v.seq }))).toEqual(want.violations);
    expect(r.valid).toBe(want.bad_lines.length === 0 && want.violations.length === 0);
  });

  it('has a log for every rule code and bad-line reason of protocol.json', () => {
    const rules = new Set(logs.flatMap((l) => verdictOf(l).violations.map((v) => v.rule)));
    const reasons = new Set(logs.flatMap((l) => verdictOf(l).bad_lines.map((b) => b.reason)));
    expect(Object.keys(RULE_TEXT).filter((c) => !rules.has(c))).toEqual([]);
    expect(Object.keys(BAD_LINE_TEXT).filter((c) => !reasons.has(c))).toEqual([]);
    expect([...rules].filter((c) => !(c in RULE_TEXT))).toEqual([]);
    expect([...reasons].filter((c) => !(c in BAD_LINE_TEXT))).toEqual([]);
  });

  it("docs/protocol.md's rule table names exactly protocol.json's codes", () => {
    const doc = readFileSync('docs/protocol.md', 'utf8');
    const section = doc.split('## Rules every reader checks')[1]!.split('\n## ')[0]!;
    const firstCells = section.split('\n').filter((row) => row.startsWith('| `')).map((row) => row.split('|')[1]!);
    const inTable = new Set(firstCells.flatMap((cell) => [...cell.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!)));
    expect([...inTable].sort()).toEqual(Object.keys(RULE_TEXT).sort());
  });
});
